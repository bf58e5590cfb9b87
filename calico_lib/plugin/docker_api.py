"""The little of Docker's Engine API the plugin and ``ipam gc --docker`` need: a network's
name by its id, and the endpoints on Docker's networks.

Every failure raises ``DockerError`` (one line naming the URL path): an answer that is not
200, a body that is not the JSON expected, or a socket that cannot be reached. A caller
deciding what to free must never take a failed answer for "no containers".
"""

from __future__ import annotations

import http.client
import json
import socket
import struct
from typing import Any
from urllib.parse import quote

from ..errors import CalicoError

DEFAULT_DOCKER_SOCKET = "/var/run/docker.sock"


class DockerError(CalicoError):
    """Docker did not answer a request as expected; nothing was decided from it."""


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

    def get(self, path: str) -> Any:
        """GET ``path`` and decode the JSON answer; DockerError on anything else."""
        conn = _UnixConnection(self.socket_path, self.timeout)
        try:
            conn.request("GET", path, headers={"Host": "docker"})
            reply = conn.getresponse()
            body = reply.read()
        except (OSError, http.client.HTTPException) as exc:
            reason = " ".join(str(exc).split()) or type(exc).__name__
            raise DockerError(f"docker: GET {path}: cannot reach Docker at "
                              f"{self.socket_path}: {reason}") from None
        finally:
            conn.close()
        if reply.status != 200:
            raise DockerError(f"docker: GET {path}: HTTP {reply.status}: "
                              f"{_message(body) or reply.reason}")
        try:
            return json.loads(body)
        except (ValueError, RecursionError):
            raise DockerError(f"docker: GET {path}: the answer is not JSON") from None

    def daemon_pid(self) -> int | None:
        """The pid of the process serving the socket (its SO_PEERCRED; None: unknown, e.g.
        in another pid namespace)."""
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(self.timeout)
                sock.connect(self.socket_path)
                creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                        struct.calcsize("3i"))
        except OSError:
            return None
        return struct.unpack("3i", creds)[0] or None

    def network(self, network_id: str) -> dict[str, Any]:
        path = f"/networks/{quote(network_id, safe='')}"
        data = self.get(path)
        if not isinstance(data, dict):
            raise DockerError(f"docker: GET {path}: the answer is not a network")
        return data

    def network_name(self, network_id: str) -> str:
        name = self.network(network_id).get("Name")
        if not isinstance(name, str) or not name:
            raise DockerError(f"docker: GET /networks/{network_id}: the network has no name")
        return name

    def container_endpoint_ids(self, container: str) -> list[str]:
        """The endpoint ids of a container (by name or id) on its networks."""
        path = f"/containers/{quote(container, safe='')}/json"
        data = self.get(path)
        networks = data.get("NetworkSettings", {}).get("Networks") if isinstance(
            data, dict) else None
        if not isinstance(networks, dict):
            raise DockerError(f"docker: GET {path}: the answer is not a container")
        return [n["EndpointID"] for n in networks.values()
                if isinstance(n, dict) and isinstance(n.get("EndpointID"), str)
                and n["EndpointID"]]

    def endpoint_ids(self) -> set[str]:
        """Every endpoint id on Docker's networks; DockerError if any network's answer
        failed (a partial list would make live endpoints look gone)."""
        networks = self.get("/networks")
        if not isinstance(networks, list) or not all(
                isinstance(n, dict) and isinstance(n.get("Id"), str) and n["Id"]
                for n in networks):
            raise DockerError("docker: GET /networks: the answer is not a list of networks")
        ids: set[str] = set()
        for summary in networks:
            containers = self.network(summary["Id"]).get("Containers") or {}
            if not isinstance(containers, dict) or not all(
                    isinstance(c, dict) for c in containers.values()):
                raise DockerError(f"docker: GET /networks/{summary['Id']}: Containers is "
                                  "not a mapping")
            for container in containers.values():
                endpoint_id = container.get("EndpointID")
                if isinstance(endpoint_id, str) and endpoint_id:
                    ids.add(endpoint_id)
        return ids


def _message(body: bytes) -> str:
    """Docker's error message from an error body, on one line."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        data = body.decode(errors="replace")
    text = data.get("message") if isinstance(data, dict) else data
    return " ".join(str(text or "").split())[:200]
