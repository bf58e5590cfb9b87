# Copyright: Calico for Docker contributors
# Apache License 2.0 (see LICENSE)
"""The little of Docker's Engine API the docker_network module needs, over the unix socket.

Standard library only: it runs with whatever Python the managed host has.
"""

from __future__ import annotations

import http.client
import json
import socket
from urllib.parse import quote

from ansible_collections.calico.docker.plugins.module_utils.messages import one_line, show

DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock"


class DockerError(Exception):
    """Docker refused a request or cannot be reached; the message is one line."""

    def __init__(self, message, status=None):
        super().__init__(one_line(message))
        self.status = status


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout):
        super().__init__("localhost", timeout=timeout)
        self.socket_path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.socket_path)


def socket_path(docker_host):
    """The socket path of a C(unix://) docker_host URL."""
    if not isinstance(docker_host, str) or not docker_host.startswith("unix://") \
            or len(docker_host) <= len("unix://"):
        raise DockerError(f"docker_host: {show(docker_host)} is not supported; use "
                          "unix:///path/to/docker.sock")
    return docker_host[len("unix://"):]


class DockerAPI:
    def __init__(self, docker_host=DEFAULT_DOCKER_HOST, timeout=60.0):
        self.path = socket_path(docker_host)
        self.timeout = timeout

    def request(self, method, path, body=None):
        """The decoded JSON answer (None when empty); DockerError on an error status."""
        conn = _UnixConnection(self.path, self.timeout)
        headers = {"Host": "docker"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        try:
            conn.request(method, path, body=data, headers=headers)
            reply = conn.getresponse()
            raw = reply.read()
        except (OSError, http.client.HTTPException) as exc:
            reason = " ".join(str(exc).split()) or type(exc).__name__
            raise DockerError(f"docker_host: cannot reach Docker at {show(self.path)}: "
                              f"{reason}") from None
        finally:
            conn.close()
        try:
            answer = json.loads(raw) if raw.strip() else None
        except ValueError:
            answer = raw.decode(errors="replace").strip()
        if reply.status >= 400:
            message = answer.get("message") if isinstance(answer, dict) else answer
            raise DockerError(f"Docker: {method} {path.split('?')[0]}: "
                              f"{message or reply.reason} (HTTP {reply.status})", reply.status)
        return answer

    # ---------------------------------------------------------------- networks

    def find_network(self, name):
        """The full description of the network called exactly ``name``, or None."""
        filters = quote(json.dumps({"name": {name: True}}))
        for summary in self.request("GET", f"/networks?filters={filters}") or []:
            if summary.get("Name") == name:
                return self.request("GET", f"/networks/{summary['Id']}")
        return None

    def create_network(self, spec):
        return self.request("POST", "/networks/create", spec)

    def remove_network(self, network_id):
        self.request("DELETE", f"/networks/{network_id}")
