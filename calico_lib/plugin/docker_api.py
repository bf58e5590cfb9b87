"""The little of Docker's Engine API the plugin needs: a network's name by its id."""

from __future__ import annotations

import http.client
import json
import socket
from typing import Any

DEFAULT_DOCKER_SOCKET = "/var/run/docker.sock"


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.path)


class DockerAPI:
    def __init__(self, socket_path: str = DEFAULT_DOCKER_SOCKET, timeout: float = 10.0) -> None:
        self.socket_path = socket_path
        self.timeout = timeout

    def get(self, path: str) -> Any | None:
        """GET ``path``; None on 404 or when Docker cannot be reached."""
        conn = _UnixConnection(self.socket_path, self.timeout)
        try:
            conn.request("GET", path, headers={"Host": "docker"})
            reply = conn.getresponse()
            body = reply.read()
            if reply.status != 200:
                return None
            return json.loads(body)
        except (OSError, ValueError, http.client.HTTPException):
            return None
        finally:
            conn.close()

    def network_name(self, network_id: str) -> str | None:
        data = self.get(f"/networks/{network_id}")
        return data.get("Name") if isinstance(data, dict) else None

    def endpoint_ids(self) -> set[str] | None:
        """Every endpoint id Docker has on its networks (None if Docker is unreachable)."""
        networks = self.get("/networks")
        if not isinstance(networks, list):
            return None
        ids: set[str] = set()
        for summary in networks:
            detail = self.get(f"/networks/{summary.get('Id', '')}")
            containers = (detail or {}).get("Containers") or {}
            ids.update(c.get("EndpointID", "") for c in containers.values())
        return {i for i in ids if i}
