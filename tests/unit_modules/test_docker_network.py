"""docker_network against a fake Docker Engine API on a unix socket."""

from __future__ import annotations

import json
import socketserver
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from ansible_collections.calico.docker.plugins.modules import docker_network
from tests.unit_modules.helpers import failed, ok


class FakeDocker:
    """The networks part of Docker's API, as much as docker_network uses."""

    def __init__(self) -> None:
        self.networks: dict[str, dict[str, Any]] = {}
        self.requests: list[tuple[str, str, Any]] = []

    def add(self, name: str, driver: str = "calico", ipv6: bool = False,
            subnets: list[str] | None = None, containers: int = 0) -> dict[str, Any]:
        config = [{"Subnet": s} for s in subnets or []] or (
            [{"Subnet": "0.0.0.0/0"}] + ([{"Subnet": "::/0"}] if ipv6 else []))
        net = {"Name": name, "Id": uuid.uuid4().hex, "Driver": driver, "EnableIPv6": ipv6,
               "IPAM": {"Driver": "calico-ipam" if driver == "calico" else "default",
                        "Config": config, "Options": {}},
               "Containers": {uuid.uuid4().hex: {"Name": f"c{i}"} for i in range(containers)}}
        self.networks[net["Id"]] = net
        return net

    def by_name(self, name: str) -> dict[str, Any] | None:
        return next((n for n in self.networks.values() if n["Name"] == name), None)

    def handle(self, method: str, target: str, body: Any) -> tuple[int, Any]:
        self.requests.append((method, target, body))
        url = urlsplit(target)
        parts = url.path.strip("/").split("/")
        if method == "GET" and parts == ["networks"]:
            filters = json.loads(parse_qs(url.query).get("filters", ["{}"])[0])
            names = list(filters.get("name", {}))
            return 200, [n for n in self.networks.values()
                         if not names or any(x in n["Name"] for x in names)]
        if method == "GET" and len(parts) == 2 and parts[0] == "networks":
            net = self.networks.get(parts[1])
            return (200, net) if net else (404, {"message": f"network {parts[1]} not found"})
        if method == "POST" and parts == ["networks", "create"]:
            if self.by_name(body["Name"]):
                return 409, {"message": f"network with name {body['Name']} already exists"}
            net = self.add(body["Name"], body["Driver"], body.get("EnableIPv6", False),
                           [c["Subnet"] for c in body["IPAM"].get("Config") or []])
            net["IPAM"]["Driver"] = body["IPAM"]["Driver"]
            return 201, {"Id": net["Id"], "Warning": ""}
        if method == "DELETE" and len(parts) == 2 and parts[0] == "networks":
            net = self.networks.get(parts[1])
            if net is None:
                return 404, {"message": f"network {parts[1]} not found"}
            if net["Containers"]:
                return 403, {"message": f"error while removing network: network "
                                        f"{net['Name']} id {net['Id']} has active endpoints"}
            del self.networks[parts[1]]
            return 204, None
        return 404, {"message": "page not found"}

    def writes(self) -> list[tuple[str, str, Any]]:
        return [r for r in self.requests if r[0] != "GET"]


@contextmanager
def serve_engine(fake: FakeDocker, path: str) -> Iterator[str]:
    """``fake`` as the Docker Engine API on a unix socket at ``path``; its docker_host URL."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length)) if length else None
            status, answer = fake.handle(self.command, self.path, body)
            data = b"" if answer is None else json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_DELETE = _serve  # noqa: N815

        def log_message(self, *args: Any) -> None:
            pass

    server = socketserver.ThreadingUnixStreamServer(path, Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"unix://{path}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def docker(tmp_path) -> Iterator[tuple[FakeDocker, str]]:
    fake = FakeDocker()
    with serve_engine(fake, str(tmp_path / "docker.sock")) as url:
        yield fake, url


@pytest.mark.parametrize("args, field", [
    ({"docker_host": "tcp://10.0.0.1:2375"}, "docker_host"),
    ({"subnet": ["10.65.0.0/33"]}, "subnet"),
    ({"subnet": ["fd00:65::/48"]}, "subnet"),  # IPv6 pool without ipv6: true
    ({"ipv6": "sometimes"}, "ipv6"),
    ({"state": "gone"}, "state"),
])
def test_bad_arguments_name_the_field(docker, args, field) -> None:
    fake, host = docker
    msg = failed(docker_network, dict({"name": "frontend", "docker_host": host}, **args))
    assert field in msg
    assert fake.writes() == []


def test_create_then_no_change(docker) -> None:
    fake, host = docker
    fake.add("frontend-old")  # a name filter matches it too: it must not be mistaken
    args = {"name": "frontend", "subnet": ["fd00:65::/48", "10.65.0.0/16"], "ipv6": True,
            "docker_host": host}
    first = ok(docker_network, args)
    assert first["changed"] is True
    assert fake.writes() == [("POST", "/networks/create", {
        "Name": "frontend", "Driver": "calico", "EnableIPv6": True,
        "IPAM": {"Driver": "calico-ipam",
                 "Config": [{"Subnet": "10.65.0.0/16"}, {"Subnet": "fd00:65::/48"}]}})]
    assert first["diff"]["before"] == {}
    after = first["diff"]["after"]
    assert after["id"] == fake.by_name("frontend")["Id"]
    assert (after["driver"], after["ipam_driver"], after["ipv6"], after["subnets"]) == (
        "calico", "calico-ipam", True, ["10.65.0.0/16", "fd00:65::/48"])
    second = ok(docker_network, args)
    assert second["changed"] is False
    assert len(fake.writes()) == 1


def test_any_pool_network_is_stable(docker) -> None:
    fake, host = docker
    assert ok(docker_network, {"name": "backend", "docker_host": host})["changed"] is True
    assert fake.writes()[0][2]["IPAM"]["Config"] == []
    out = ok(docker_network, {"name": "backend", "docker_host": host})
    assert out["changed"] is False and out["network"]["subnets"] == []


def test_check_mode_reports_and_changes_nothing(docker) -> None:
    fake, host = docker
    out = ok(docker_network, {"name": "frontend", "docker_host": host}, check=True)
    assert out["changed"] is True and out["diff"]["after"]["driver"] == "calico"
    fake.add("other", ipv6=False)
    out = ok(docker_network, {"name": "other", "ipv6": True, "recreate": True,
                              "docker_host": host}, check=True)
    assert out["changed"] is True
    out = ok(docker_network, {"name": "other", "state": "absent", "docker_host": host},
             check=True)
    assert out["changed"] is True
    assert fake.writes() == []


def test_other_settings_fail_unless_recreate(docker) -> None:
    fake, host = docker
    old = fake.add("frontend", subnets=["10.65.0.0/16"], containers=1)
    msg = failed(docker_network, {"name": "frontend", "subnet": ["10.66.0.0/16"],
                                  "docker_host": host})
    assert "subnets" in msg and "10.66.0.0/16" in msg and "recreate" in msg
    assert "1 container(s)" in msg
    msg = failed(docker_network, {"name": "frontend", "subnet": ["10.66.0.0/16"],
                                  "recreate": True, "docker_host": host})
    assert "active endpoints" in msg  # Docker's own refusal, while containers are attached
    old["Containers"] = {}
    out = ok(docker_network, {"name": "frontend", "subnet": ["10.66.0.0/16"],
                              "recreate": True, "docker_host": host})
    assert out["changed"] is True
    assert out["diff"]["before"]["subnets"] == ["10.65.0.0/16"]
    assert out["diff"]["after"]["subnets"] == ["10.66.0.0/16"]
    # the refused DELETE, then the replacement
    assert [w[0] for w in fake.writes()] == ["DELETE", "DELETE", "POST"]


def test_another_driver_is_a_difference(docker) -> None:
    fake, host = docker
    fake.add("frontend", driver="bridge")
    msg = failed(docker_network, {"name": "frontend", "docker_host": host})
    assert "driver is 'bridge', wanted 'calico'" in msg


def test_absent(docker) -> None:
    fake, host = docker
    fake.add("frontend")
    out = ok(docker_network, {"name": "frontend", "state": "absent", "docker_host": host})
    assert out["changed"] is True and out["diff"]["after"] == {}
    assert fake.by_name("frontend") is None
    out = ok(docker_network, {"name": "frontend", "state": "absent", "docker_host": host})
    assert out["changed"] is False


def test_docker_unreachable(tmp_path) -> None:
    msg = failed(docker_network, {"name": "frontend",
                                  "docker_host": f"unix://{tmp_path}/none.sock"})
    assert "cannot reach Docker" in msg


@pytest.mark.parametrize("name", ["web\n", "x" * 129, "web name", "-web", "w\u0435b", ""],
                         ids=repr)
def test_names_no_profile_can_have_are_refused_before_docker(docker, name) -> None:
    """A network's containers join the profile of its name: a name no profile can have
    (a YAML block scalar's newline, too long, a space) would make a network no container
    can join. Refused in one line naming the option, the value escaped; Docker is not
    asked."""
    fake, host = docker
    msg = failed(docker_network, {"name": name, "docker_host": host})
    assert msg.startswith("name: ") and msg.isprintable(), msg
    assert "at most 128 characters" in msg
    assert fake.requests == []


def test_a_long_name_is_quoted_shortened(docker) -> None:
    fake, host = docker
    msg = failed(docker_network, {"name": "x" * 5000, "docker_host": host})
    assert "'" + "x" * 60 + "... " in msg and "x" * 61 not in msg


def test_absent_takes_any_name(docker) -> None:
    """Removing is never refused for its name (a network made outside Ansible)."""
    fake, host = docker
    fake.add("web name")
    out = ok(docker_network, {"name": "web name", "state": "absent", "docker_host": host})
    assert out["changed"] is True and fake.by_name("web name") is None


@pytest.mark.parametrize("args, field", [
    ({"state": "present\n"}, "state"),
    ({"ipv6": "maybe\n"}, "ipv6"),
    ({"colour\nforged": 1}, "colour"),
    ({"subnet": ["10.65.0.0/33\n"]}, "subnet"),
    ({"docker_host": "unix:///nonexistent\nforged"}, "docker_host"),
    ({"docker_host": "tcp://x\u2028y"}, "docker_host"),
], ids=["state", "bool", "unsupported", "subnet", "unreachable", "scheme"])
def test_refusals_are_one_printable_line(docker, args, field) -> None:
    """Ansible's own argument checks quote values raw; the module's failures are one
    printable line all the same (the value escaped)."""
    fake, host = docker
    msg = failed(docker_network, dict({"name": "web", "docker_host": host}, **args))
    assert msg.isprintable() and field in msg, msg
    assert fake.writes() == []
