"""docker_network against a fake Docker Engine API on a unix socket (and over TCP).

Over TLS, with a throwaway CA: tests/test_docker_network_tls.py (the project's CA helper,
tests/pki.py), with this file's fake engine."""

from __future__ import annotations

import json
import socketserver
import ssl
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from ansible_collections.calico.docker.plugins.modules import docker_network
from ansible_collections.calico.docker.tests.unit.plugins.modules.helpers import call, failed, ok


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


def _handler(fake: FakeDocker) -> type[BaseHTTPRequestHandler]:
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
            if data:  # nothing after a 204's headers: the client may have closed already
                self.wfile.write(data)

        do_GET = do_POST = do_DELETE = _serve  # noqa: N815

        def log_message(self, *args: Any) -> None:
            pass

    return Handler


@contextmanager
def _serving(server: socketserver.BaseServer) -> Iterator[None]:
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def serve_engine(fake: FakeDocker, path: str) -> Iterator[str]:
    """``fake`` as the Docker Engine API on a unix socket at ``path``; its docker_host URL."""
    with _serving(socketserver.ThreadingUnixStreamServer(path, _handler(fake))):
        yield f"unix://{path}"


class _TLSServer(socketserver.ThreadingTCPServer):
    """The TLS handshake in the request's thread, so a refused client blocks nothing."""

    daemon_threads = True
    context: ssl.SSLContext | None = None

    def finish_request(self, request: Any, client_address: Any) -> None:
        if self.context is not None:
            try:
                request = self.context.wrap_socket(request, server_side=True)
            except (OSError, ssl.SSLError):
                return
        super().finish_request(request, client_address)


@contextmanager
def serve_engine_tcp(fake: FakeDocker, context: ssl.SSLContext | None = None
                     ) -> Iterator[str]:
    """``fake`` on 127.0.0.1 over TCP (TLS with ``context``); its docker_host URL."""
    server = _TLSServer(("127.0.0.1", 0), _handler(fake))
    server.context = context
    with _serving(server):
        yield f"tcp://127.0.0.1:{server.server_address[1]}"


@pytest.fixture(autouse=True)
def no_docker_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests name their Docker; never this machine's (DOCKER_* as community.docker reads
    them, and the default socket: a test that falls back to it reaches nothing)."""
    for name in ("DOCKER_HOST", "DOCKER_TLS", "DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(docker_network, "DEFAULT_DOCKER_HOST",
                        "unix:///nonexistent/default-docker.sock")


@pytest.fixture
def docker(tmp_path) -> Iterator[tuple[FakeDocker, str]]:
    fake = FakeDocker()
    with serve_engine(fake, str(tmp_path / "docker.sock")) as url:
        yield fake, url


@pytest.mark.parametrize("args, field", [
    ({"docker_host": "ssh://root@10.0.0.1"}, "docker_host"),
    ({"docker_host": "tcp://10.0.0.1"}, "docker_host"),  # no port
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
    # refused before Docker is asked (Docker's own refusal, the same in check mode)
    assert msg.startswith("name: ") and "1 container(s) attached" in msg, msg
    assert "active endpoints" in msg and "not recreated" in msg, msg
    assert fake.writes() == []
    old["Containers"] = {}
    out = ok(docker_network, {"name": "frontend", "subnet": ["10.66.0.0/16"],
                              "recreate": True, "docker_host": host})
    assert out["changed"] is True
    assert out["diff"]["before"]["subnets"] == ["10.65.0.0/16"]
    assert out["diff"]["after"]["subnets"] == ["10.66.0.0/16"]
    # the DELETE, then the replacement
    assert [w[0] for w in fake.writes()] == ["DELETE", "POST"]


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


# ------------------------------------------------------------ another driver's network

def _foreign(fake: FakeDocker, kind: str, containers: int = 0) -> dict[str, Any]:
    """A network named frontend that is not this module's: another driver, or the calico
    driver on another IPAM driver."""
    if kind == "bridge":
        return fake.add("frontend", driver="bridge", containers=containers)
    net = fake.add("frontend", containers=containers)
    net["IPAM"]["Driver"] = "default"
    return net


@pytest.mark.parametrize("kind", ["bridge", "calico-on-default-ipam"])
@pytest.mark.parametrize("args", [
    {"state": "absent"},
    {"recreate": True},
    {"recreate": True, "subnet": ["10.66.0.0/16"], "ipv6": True},
], ids=["absent", "recreate", "recreate-other-settings"])
def test_another_drivers_network_is_neither_deleted_nor_recreated(docker, kind, args
                                                                  ) -> None:
    """Only calico networks (calico driver, calico-ipam) are removed or replaced: a
    same-named network of another driver makes the module fail, naming the field, in check
    mode exactly as in the real run, and Docker is sent nothing."""
    fake, host = docker
    net = _foreign(fake, kind)
    full = dict({"name": "frontend", "docker_host": host}, **args)
    checked = failed(docker_network, full, check=True)
    real = failed(docker_network, full)
    assert checked == real
    assert real.startswith("name: network 'frontend' is not a calico network ("), real
    assert "nothing deleted" in real
    assert fake.writes() == []
    assert fake.networks == {net["Id"]: net}


def test_another_drivers_network_is_refused_before_its_containers(docker) -> None:
    fake, host = docker
    _foreign(fake, "bridge", containers=2)
    msg = failed(docker_network, {"name": "frontend", "state": "absent", "docker_host": host})
    assert "is not a calico network (driver is 'bridge', wanted 'calico'; ipam_driver is " \
           "'default', wanted 'calico-ipam')" in msg, msg
    assert fake.writes() == []


def test_two_networks_of_one_name_are_left_alone(docker) -> None:
    """Docker can hold two networks of one name: which one the task means is unknown."""
    fake, host = docker
    fake.add("frontend")
    fake.add("frontend", driver="bridge")
    for args, check in [({"state": "absent"}, True), ({"state": "absent"}, False),
                        ({"recreate": True, "ipv6": True}, False)]:
        msg = failed(docker_network, dict({"name": "frontend", "docker_host": host}, **args),
                     check=check)
        assert msg.startswith("name: 2 Docker networks are named 'frontend'"), msg
    assert fake.writes() == [] and len(fake.networks) == 2


# ------------------------------------------------------------ containers attached

@pytest.mark.parametrize("args, doing", [
    ({"state": "absent"}, "nothing deleted"),
    ({"recreate": True, "ipv6": True}, "not recreated (ipv6 is False, wanted True)"),
], ids=["absent", "recreate"])
def test_containers_attached_check_mode_fails_like_the_real_run(docker, args, doing) -> None:
    fake, host = docker
    net = fake.add("frontend", containers=2)
    full = dict({"name": "frontend", "docker_host": host}, **args)
    checked = failed(docker_network, full, check=True)
    real = failed(docker_network, full)
    assert checked == real == (
        f"name: network 'frontend' has 2 container(s) attached and Docker removes no "
        f"network with active endpoints; {doing}: disconnect them first")
    assert fake.writes() == [] and fake.networks == {net["Id"]: net}
    net["Containers"] = {}  # disconnected: both go ahead
    assert ok(docker_network, full, check=True)["changed"] is True
    assert ok(docker_network, full)["changed"] is True


def test_dockers_own_refusal_still_stops_a_race(docker, monkeypatch) -> None:
    """A container attached between the module's read and its DELETE: Docker refuses."""
    fake, host = docker
    net = fake.add("frontend")
    handle = fake.handle

    def attach_first(method: str, target: str, body: Any) -> tuple[int, Any]:
        if method == "DELETE":
            net["Containers"] = {"c": {"Name": "late"}}
        return handle(method, target, body)

    monkeypatch.setattr(fake, "handle", attach_first)
    msg = failed(docker_network, {"name": "frontend", "state": "absent", "docker_host": host})
    assert "active endpoints" in msg and "(HTTP 403)" in msg
    assert fake.by_name("frontend") is net


# ------------------------------------------------------------ docker_host forms

def test_docker_host_forms_of_a_unix_socket(tmp_path) -> None:
    """unix:///path, a plain path, and unix://path (unix:///path, as the Docker SDK for
    Python reads it, never a path relative to the module's directory)."""
    fake = FakeDocker()
    path = str(tmp_path / "docker.sock")
    assert path.startswith("/")
    with serve_engine(fake, path):
        for host in (f"unix://{path}", path, f"unix://{path[1:]}"):
            out = ok(docker_network, {"name": "frontend", "docker_host": host})
            assert out["network"]["driver"] == "calico", host
            ok(docker_network, {"name": "frontend", "state": "absent", "docker_host": host})
    assert [w[0] for w in fake.writes()] == ["POST", "DELETE"] * 3


def test_docker_host_alias_docker_url(docker) -> None:
    fake, host = docker
    assert ok(docker_network, {"name": "frontend", "docker_url": host})["changed"] is True


def test_docker_host_tcp_without_tls() -> None:
    fake = FakeDocker()
    with serve_engine_tcp(fake) as host:
        out = ok(docker_network, {"name": "frontend", "docker_host": host})
        assert out["changed"] is True and fake.by_name("frontend") is not None
        assert ok(docker_network, {"name": "frontend", "docker_host": host})["changed"] is False


def test_docker_host_from_the_environment(docker, monkeypatch, tmp_path) -> None:
    """DOCKER_HOST when the task gives no docker_host; the task's wins over it."""
    fake, host = docker
    monkeypatch.setenv("DOCKER_HOST", host)
    assert ok(docker_network, {"name": "frontend"})["changed"] is True
    assert fake.by_name("frontend") is not None
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/none.sock")
    assert ok(docker_network, {"name": "frontend", "docker_host": host})["changed"] is False
    msg = failed(docker_network, {"name": "frontend"})
    assert msg.startswith("docker_host: cannot reach Docker at '") and "No such file" in msg
    monkeypatch.setenv("DOCKER_HOST", host)
    for empty in (None, ""):  # null or "" in the task: as if not given
        out = ok(docker_network, {"name": "frontend", "docker_host": empty})
        assert out["changed"] is False
    for unset in ("", None):  # empty counts as unset, as in Docker's CLI: the default
        if unset is None:
            monkeypatch.delenv("DOCKER_HOST")
        else:
            monkeypatch.setenv("DOCKER_HOST", unset)
        msg = failed(docker_network, {"name": "frontend"})
        assert msg.startswith("docker_host: cannot reach Docker at '") and \
            "default-docker.sock" in msg, msg
    monkeypatch.setenv("DOCKER_HOST", "ssh://root@docker1")
    msg = failed(docker_network, {"name": "frontend"})
    assert msg.startswith("docker_host: 'ssh://root@docker1' has the scheme 'ssh'"), msg


def test_an_empty_environment_variable_is_unset(monkeypatch) -> None:
    from ansible.module_utils.basic import AnsibleFallbackNotFound

    from ansible_collections.calico.docker.plugins.module_utils.docker_api import (
        env_fallback_set,
    )
    monkeypatch.setenv("DOCKER_HOST", "")
    with pytest.raises(AnsibleFallbackNotFound):
        env_fallback_set("DOCKER_HOST")
    monkeypatch.setenv("DOCKER_HOST", "tcp://10.0.0.1:2376")
    assert env_fallback_set("DOCKER_HOST") == "tcp://10.0.0.1:2376"


@pytest.mark.parametrize("value, why", [
    ("ssh://root@10.0.0.1", "has the scheme 'ssh', which is not supported"),
    ("http://10.0.0.1:2375", "has the scheme 'http', which is not supported"),
    ("tcp://10.0.0.1", "names no port"),
    ("tcp://10.0.0.1:0", "names no port"),
    ("tcp://10.0.0.1:99999", "has no valid port"),
    ("tcp://10.0.0.1:port", "has no valid port"),
    ("tcp://:2375", "names no valid host"),
    ("tcp://a b:2375", "names no valid host"),
    ("tcp://10.0.0.1:2375/v1.41", "has more than a host and a port"),
    ("tcp://user:pw@10.0.0.1:2375", "has more than a host and a port"),
    ("tcp://10.0.0.1:2375?x=1", "has more than a host and a port"),
    ("var/run/docker.sock", "is neither an absolute socket path nor a URL"),
    ("unix://", "names no socket"),
    (" /var/run/docker.sock", "has spaces or control characters"),
    ("unix:///var/run/docker.sock\n", "has spaces or control characters"),
])
def test_bad_docker_host_is_refused_naming_it(docker, value, why) -> None:
    fake, host = docker
    msg = failed(docker_network, {"name": "frontend", "docker_host": value})
    assert msg.startswith("docker_host: ") and why in msg, msg
    assert "tcp://host:port" in msg and msg.isprintable()
    assert fake.requests == []


def _strip_ids(value: Any) -> Any:
    """A result without Docker's network ids (a network made for real gets a new one)."""
    if isinstance(value, dict):
        return {k: _strip_ids(v) for k, v in value.items() if k != "id"}
    if isinstance(value, list):
        return [_strip_ids(v) for v in value]
    return value


def _seed(fake: FakeDocker, setup: str) -> None:
    if setup == "frontend":
        fake.add("frontend")
    elif setup == "frontend-v6":
        fake.add("frontend", ipv6=True, subnets=["10.65.0.0/16", "fd00:65::/64"])
    elif setup == "busy":
        fake.add("frontend", containers=2)
    elif setup in ("bridge", "calico-on-default-ipam"):
        _foreign(fake, setup)


@pytest.mark.parametrize("setup, args, fails, changed", [
    ("", {}, False, True),
    ("", {"subnet": ["10.65.0.0/16", "fd00:65::/64"], "ipv6": True}, False, True),
    ("frontend", {}, False, False),
    ("frontend", {"ipv6": True}, True, False),
    ("frontend", {"ipv6": True, "recreate": True}, False, True),
    ("frontend-v6", {"subnet": ["10.65.0.0/16", "fd00:65::/64"], "ipv6": True}, False, False),
    ("frontend", {"state": "absent"}, False, True),
    ("", {"state": "absent"}, False, False),
    ("busy", {"state": "absent"}, True, False),
    ("busy", {"recreate": True, "ipv6": True}, True, False),
    ("bridge", {"state": "absent"}, True, False),
    ("calico-on-default-ipam", {"recreate": True}, True, False),
    ("", {"subnet": ["10.65.0.0/33"]}, True, False),
])
def test_check_mode_predicts_the_real_run(tmp_path, setup, args, fails, changed) -> None:
    """Issue 20: the same task on two identical Dockers, in check mode on one and for real
    on the other: the same failure or the same ``changed`` and diff; check mode sends
    Docker nothing, the real run writes exactly when it said it changed."""
    check_fake, real_fake = FakeDocker(), FakeDocker()
    for fake in (check_fake, real_fake):
        _seed(fake, setup)
    with serve_engine(check_fake, str(tmp_path / "check.sock")) as check_host, \
            serve_engine(real_fake, str(tmp_path / "real.sock")) as real_host:
        base = dict({"name": "frontend"}, **args)
        preview = call(docker_network, dict(base, docker_host=check_host), check=True)
        real = call(docker_network, dict(base, docker_host=real_host))
    assert bool(real.get("failed")) is fails, real
    assert check_fake.writes() == []
    if fails:
        assert preview.get("failed") and preview["msg"] == real["msg"]
        assert real_fake.writes() == []
        return
    assert real["changed"] is changed
    assert (preview["changed"], _strip_ids(preview["diff"])) == (
        real["changed"], _strip_ids(real["diff"]))
    assert bool(real_fake.writes()) is changed
