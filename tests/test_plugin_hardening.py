"""The plugin's sockets against callers that misbehave (the "integrity" issue).

Idle and slow connections, floods of them, bodies json cannot decode, crashing handlers and
text made to forge log lines: the plugin keeps answering real calls, holds a bounded number
of threads and file descriptors, answers errors in one line without internal detail, and
writes one log line per record. Timeouts and caps are made small here so the file stays fast;
one test runs the plugin as its own process, with production settings and systemd's default
limit of 1,024 file descriptors.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

import calico_lib
from calico_lib import IPPool, keys
from calico_lib.errors import CalicoError
from calico_lib.logsafe import SafeFormatter
from calico_lib.plugin import server
from calico_lib.plugin.driver import Driver
from tests import processes
from tests.dockerlab import post, serving
from tests.test_plugin_protocol import (
    HOST,
    NET,
    POOL4,
    FakeDocker,
    Plugin,
    Recorder,
    create_network,
    error_message,
    join,
)

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOGGER = "calico-docker-plugin"


@dataclass
class Served:
    plugin: Plugin
    servers: dict[str, Any]  # socket name -> its server

    def net(self) -> str:
        return self.plugin.socket("calico.sock")

    def ipam(self) -> str:
        return self.plugin.socket("calico-ipam.sock")


@pytest.fixture
def served(tmp_path) -> Iterator[Served]:
    """The plugin of test_plugin_protocol, with its servers at hand."""
    client = calico_lib.connect("sqlite:///" + str((tmp_path / "calico.db").resolve()))
    client.add_pool(IPPool(POOL4))
    docker, hooks = FakeDocker(), Recorder()
    docker.names[NET] = "net1"
    driver = Driver(client, HOST, docker, reconcile=hooks.reconcile,  # type: ignore[arg-type]
                    create_veth=hooks.create_veth, delete_veth=hooks.delete_veth)
    with client, serving(driver, "calico-hard-") as (plugins, servers):
        yield Served(Plugin(client, docker, hooks, plugins),
                     {os.path.basename(s.server_address): s for s in servers})


def connect(path: str, timeout: float = 5.0) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    sock.connect(path)
    return sock


def open_files_for(count: int) -> None:
    """Let this process hold ``count`` more file descriptors (clients and servers)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = count + 512
    if soft != resource.RLIM_INFINITY and soft < wanted:
        if hard != resource.RLIM_INFINITY and hard < wanted:
            pytest.skip(f"needs {wanted} open files, the hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def timed_activate(path: str, implements: str) -> float:
    """Seconds a Plugin.Activate takes from a fresh client; asserts its answer."""
    start = time.monotonic()
    assert post(path, "/Plugin.Activate", timeout=10) == (200, {"Implements": [implements]})
    return time.monotonic() - start


def closed_by_server(sock: socket.socket, within: float) -> bool:
    """True when the server closes ``sock`` (a read gives end of file) within ``within`` s;
    what it sent before is skipped."""
    deadline = time.monotonic() + within
    try:
        while True:
            sock.settimeout(max(0.001, deadline - time.monotonic()))
            if sock.recv(65536) == b"":
                return True
    except TimeoutError:
        return False
    except ConnectionError:
        return True


def read_until_closed(sock: socket.socket, within: float) -> bytes:
    """Everything the server sends until it closes ``sock``; fails if it stays open."""
    sock.settimeout(within)
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


# ------------------------------------------------------------------------------ idle floods


@pytest.mark.slow
def test_idle_connections_do_not_delay_calls_and_are_closed(served: Served,
                                                            monkeypatch) -> None:
    monkeypatch.setattr(server, "READ_TIMEOUT", 1.5)
    # a keep-alive connection that made a call, then 200 that never send anything
    keep_alive = connect(served.net())
    keep_alive.sendall(b"POST /Plugin.Activate HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
    assert keep_alive.recv(4096).startswith(b"HTTP/1.1 200")
    idle = [connect(served.net()) for _ in range(200)]
    try:
        # answered at once, not after the idle connections time out
        assert timed_activate(served.net(), "NetworkDriver") < 1.0
        assert timed_activate(served.ipam(), "IpamDriver") < 1.0
        # then the server closes every idle connection (those over the cap at once)
        deadline = time.monotonic() + server.READ_TIMEOUT + 3
        for sock in [keep_alive, *idle]:
            assert closed_by_server(sock, max(0.1, deadline - time.monotonic()))
    finally:
        for sock in [keep_alive, *idle]:
            sock.close()
    assert served.plugin.alive()


@pytest.mark.slow  # seconds: left out of make test-fast
def test_a_flood_of_1100_connections_leaves_threads_bounded(served: Served,
                                                             monkeypatch) -> None:
    cap = 16
    monkeypatch.setattr(server, "MAX_CONNECTIONS", cap)
    monkeypatch.setattr(server, "READ_TIMEOUT", 5.0)  # longer than the test waits
    open_files_for(1100 + 2 * cap)
    baseline = threading.active_count()
    flood = []
    try:
        for n in range(1100):
            flood.append(connect(served.net() if n % 2 else served.ipam()))
        assert timed_activate(served.net(), "NetworkDriver") < 2.0
        assert timed_activate(served.ipam(), "IpamDriver") < 2.0
        # one thread per served connection, at most `cap` per socket
        deadline = time.monotonic() + 2
        while threading.active_count() > baseline + 2 * cap and time.monotonic() < deadline:
            time.sleep(0.05)
        assert threading.active_count() <= baseline + 2 * cap
        # and the connections over the cap were closed, not kept open
        closed = sum(closed_by_server(sock, 0.01) for sock in flood)
        assert closed >= len(flood) - 2 * cap
    finally:
        for sock in flood:
            sock.close()
    assert served.plugin.alive()


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _threads(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("Threads:"))


@pytest.mark.slow
def test_the_plugin_process_survives_a_flood_at_systemds_fd_limit(tmp_path) -> None:
    """The issue's case: 1,100 idle connections to a plugin limited to 1,024 descriptors."""
    open_files_for(1100)
    socket_dir = tempfile.mkdtemp(prefix="calico-hard-")
    stderr_path = tmp_path / "plugin.log"
    argv = ["--socket-dir", socket_dir, "--hostname", HOST, "--datastore",
            "sqlite:///" + str((tmp_path / "calico.db").resolve()),
            "--docker-socket", str(tmp_path / "no-docker.sock"), "--lock-file",
            str(tmp_path / "lock")]
    code = f"import sys; from calico_lib.plugin import server; sys.exit(server.main({argv!r}))"

    def systemd_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))

    env = {**os.environ, "PYTHONPATH": REPO_ROOT}
    sockets = [os.path.join(socket_dir, name) for name in ("calico.sock", "calico-ipam.sock")]
    flood: list[socket.socket] = []
    with open(stderr_path, "wb") as stderr:
        proc = subprocess.Popen([sys.executable, "-c", code], stderr=stderr, env=env,
                                preexec_fn=systemd_limit)
    try:
        deadline = time.monotonic() + 20
        while not all(map(os.path.exists, sockets)):
            assert proc.poll() is None and time.monotonic() < deadline, stderr_path.read_text()
            time.sleep(0.05)
        for n in range(1100):
            flood.append(connect(sockets[n % 2]))
        assert timed_activate(sockets[0], "NetworkDriver") < 3.0
        assert timed_activate(sockets[1], "IpamDriver") < 3.0
        assert _threads(proc.pid) <= 2 * server.MAX_CONNECTIONS + 16
        # flooded, the plugin idles: no accept() retried in a busy loop
        before = _cpu_seconds(proc.pid)
        time.sleep(1.0)
        assert _cpu_seconds(proc.pid) - before < 0.3
        assert len(os.listdir(f"/proc/{proc.pid}/fd")) < 1024 - 64
        # an endpoint id made to forge a log line (the error log names its first 12 chars)
        status, answer = post(sockets[0], "/NetworkDriver.Join", join(NET, "\n20 forged!"))
        assert status == 500 and "'\\n20 forged!'" in answer["Err"]
        assert answer["Err"].isprintable()
    finally:
        for sock in flood:
            sock.close()
        processes.stop(proc)
        shutil.rmtree(socket_dir, ignore_errors=True)
    # its log (written by logsafe): one record per line, each starting with the date
    lines = stderr_path.read_text().splitlines()
    assert lines and all(line[:2] == "20" and " calico-docker-plugin " in line
                         for line in lines), lines
    assert any("EndpointID: '\\n20 forged!' is not allowed" in line for line in lines), lines


# ------------------------------------------------------------------------------ slow callers


def test_partial_requests_are_closed_after_the_read_timeout(served: Served,
                                                             monkeypatch) -> None:
    monkeypatch.setattr(server, "READ_TIMEOUT", 0.5)
    partial = [
        # headers sent, body never completed
        b"POST /NetworkDriver.CreateNetwork HTTP/1.1\r\nContent-Length: 100\r\n\r\n{",
        # headers never completed
        b"POST /Plugin.Activate HTTP/1.1\r\nContent-Length: 0\r\n",
        b"POST /Plugin.Activate HTTP/1.1\r\n",
    ]
    socks = [connect(served.net()) for _ in partial]
    try:
        start = time.monotonic()
        for sock, data in zip(socks, partial, strict=True):
            sock.sendall(data)
        for sock in socks:
            assert closed_by_server(sock, 3.0)
        assert time.monotonic() - start >= 0.4  # closed for being slow, not at once
    finally:
        for sock in socks:
            sock.close()
    assert served.plugin.alive()


def test_a_request_trickling_in_is_closed_at_the_read_timeout(served: Served,
                                                               monkeypatch) -> None:
    """slowloris: a byte every 0.1 s never lets a per-read timeout expire."""
    monkeypatch.setattr(server, "READ_TIMEOUT", 0.5)
    sock = connect(served.net())
    try:
        start = time.monotonic()
        sock.sendall(b"POST /Plugin.Activate HTTP/1.1\r\nX-Slow: ")
        closed_after = None
        while closed_after is None and time.monotonic() - start < 4:
            try:
                sock.sendall(b"x")
                if closed_by_server(sock, 0.1):
                    closed_after = time.monotonic() - start
            except (BrokenPipeError, ConnectionResetError):
                closed_after = time.monotonic() - start
        assert closed_after is not None and closed_after < 2.0
    finally:
        sock.close()
    assert served.plugin.alive()


# ------------------------------------------------------------------------------ bad bodies


@pytest.mark.parametrize("raw", [
    b"[" * 100_000,
    b'{"a":' * 100_000,
    b"[" * 100_000 + b"]" * 100_000,  # valid JSON, too deep for json
    b'{"a": ' + b"[" * 5_000 + b"]" * 5_000 + b"}",
])
def test_deep_nesting_gets_a_one_line_400(served: Served, raw: bytes) -> None:
    for path, kind in ((served.net(), "net"), (served.ipam(), "ipam")):
        call = "/NetworkDriver.CreateNetwork" if kind == "net" else "/IpamDriver.RequestPool"
        status, answer = post(path, call, raw=raw)
        message = error_message(kind, answer)
        assert status == 400 and "JSON" in message and "\n" not in message, answer
        assert "Traceback" not in message
    assert served.plugin.alive()


def test_a_short_content_length_gets_one_answer_and_a_closed_connection(
        served: Served) -> None:
    body = b'{"NetworkID": "x"}'
    sock = connect(served.net())
    try:
        sock.sendall(b"POST /NetworkDriver.CreateNetwork HTTP/1.1\r\nContent-Length: 5\r\n\r\n"
                     + body)
        reply = read_until_closed(sock, 5.0)
    finally:
        sock.close()
    # the rest of the body is not read as a second request
    assert reply.count(b"HTTP/1.1 ") == 1 and reply.startswith(b"HTTP/1.1 400"), reply
    assert b"bad JSON body" in reply
    assert served.plugin.alive()


def test_http_errors_are_json_in_the_error_field(served: Served) -> None:
    sock = connect(served.ipam())
    try:
        sock.sendall(b"GET /Plugin.Activate HTTP/1.1\r\n\r\n")
        reply = read_until_closed(sock, 5.0)
    finally:
        sock.close()
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 501")
    assert b"application/vnd.docker.plugins.v1.2+json" in head
    assert body.startswith(b'{"Error": "Unsupported method'), body


# ------------------------------------------------------------------------------ crashes


def test_a_crash_answers_a_fixed_message_and_logs_the_detail(served: Served,
                                                             caplog) -> None:
    def crash(body: dict[str, Any]) -> dict[str, Any]:
        raise KeyError("secret internal detail")

    for name, kind, call in (("calico.sock", "net", "/NetworkDriver.CreateNetwork"),
                             ("calico-ipam.sock", "ipam", "/IpamDriver.RequestPool")):
        served.servers[name].handlers[call] = crash
        with caplog.at_level(logging.ERROR, logger=LOGGER):
            status, answer = post(served.plugin.socket(name), call, {})
        assert status == 500
        assert error_message(kind, answer) == server.INTERNAL_ERROR
        assert "secret" not in str(answer) and "KeyError" not in str(answer)
        [record] = [r for r in caplog.records if r.exc_info]
        assert record.getMessage() == f"{call} crashed"
        assert "secret internal detail" in caplog.text  # the operator sees it
        caplog.clear()
    # a CalicoError's message, meant for the user, is still said as is
    message = served.plugin.error("net", "Join", join(NET, "e" * 64))
    assert "CreateEndpoint" in message
    assert served.plugin.alive()


# ------------------------------------------------------------------------------ logs


FORGED = "2024-01-01 00:00:00,000 calico-docker-plugin CRITICAL forged"


def test_requests_cannot_forge_log_lines(served: Served, caplog) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    # an endpoint id carrying a newline and a fake record (the error names its 12 first
    # characters); a path with a terminal escape; a request line split by a lone \r
    served.plugin.error("net", "Join", join(NET, "\nCRITICAL x\u2028y"))
    post(served.net(), "/Plugin.Nope\x1b[2K\x00", raw=b"")
    sock = connect(served.net())
    try:
        sock.sendall(f"POST /Plugin.Activate\r{FORGED} HTTP/1.1\r\n\r\n".encode())
        read_until_closed(sock, 5.0)
    finally:
        sock.close()

    def crash(body: dict[str, Any]) -> dict[str, Any]:
        raise ValueError("first\n" + FORGED)

    served.servers["calico.sock"].handlers["/Plugin.Activate"] = crash
    post(served.net(), "/Plugin.Activate", raw=b"")

    def refuse(body: dict[str, Any]) -> dict[str, Any]:  # a message with raw breaks
        raise CalicoError("first\n" + FORGED + "\u2028")

    served.servers["calico.sock"].handlers["/Plugin.Activate"] = refuse
    status, answer = post(served.net(), "/Plugin.Activate", raw=b"")
    assert status == 500 and answer["Err"].isprintable()

    formatter = SafeFormatter("%(asctime)s calico-docker-plugin %(levelname)s %(message)s")
    records = [r for r in caplog.records if r.name == LOGGER]
    texts = [formatter.format(r) for r in records]
    raw_messages = "".join(r.getMessage() for r in records)
    for needle in ("\n", "\r", "\x1b", "\x00", "\u2028"):  # the attacks got to the log
        assert needle in raw_messages, repr(needle)
    for record, text in zip(records, texts, strict=True):
        lines = text.splitlines()
        if not record.exc_info:
            assert lines == [text], text  # one record, one line
        else:  # a traceback: more lines, each indented, none a record of its own
            assert lines[0] == text.split("\n")[0] and lines == text.split("\n")
            assert all(line.startswith("  ") for line in lines[1:]), text
        assert not any(line.startswith(FORGED) for line in lines), text
    joined = "\n".join(texts)
    assert "EndpointID: '\\nCRITICAL x\\u2028y' is not allowed" in joined
    assert "\\x1b[2K\\x00" in joined and "Activate\\r2024-01-01" in joined


def test_safe_formatter_escapes_every_line_break() -> None:
    formatter = SafeFormatter("%(levelname)s %(message)s")
    breaks = "a\nb\rc\x0bd\x0ce\x1cf\x1dg\x1eh\x85i\u2028j\u2029k\tl\x7fm\x00n"
    record = logging.LogRecord(LOGGER, logging.INFO, __file__, 1, "%s|%s", ("/x\ny", breaks),
                               None)
    assert formatter.format(record) == (
        "INFO /x\\ny|a\\nb\\rc\\x0bd\\x0ce\\x1cf\\x1dg\\x1eh\\x85i\\u2028j\\u2029k\\tl\\x7fm"
        "\\x00n")
    assert "\\" not in formatter.format(logging.LogRecord(
        LOGGER, logging.INFO, __file__, 1, "plain text: ünïcode ok", None, None))


def test_configure_writes_one_line_records() -> None:
    code = ("import logging; from calico_lib import logsafe; "
            "logsafe.configure('INFO', 'prog'); "
            "logging.getLogger('x').warning('a\\nb %s', 'c\\u2028d'); "
            "logging.getLogger('x').debug('hidden')")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": REPO_ROOT}, timeout=30,
                            check=True)
    [line] = result.stderr.splitlines()
    assert line.endswith(" prog WARNING a\\nb c\\u2028d") and line[:2] == "20", line


# ------------------------------------------------------------------------------ network names
# The plugin learns each new network's name from Docker after CreateNetwork answered (issue
# 20): one thread for all of them, ending when none is left; what other hosts wrote in their
# network records never breaks an operator's `profile list` or `profile show`.


def naming_threads(served: Served) -> list[threading.Thread]:
    """The served driver's threads learning network names (others' may still run)."""
    driver = served.servers["calico.sock"].handlers["/NetworkDriver.CreateNetwork"].__self__
    thread = driver._naming_thread
    return [thread] if thread is not None and thread.is_alive() else []


def wait_for(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


def test_one_thread_learns_every_new_networks_name(served: Served, caplog) -> None:
    plugin, docker = served.plugin, served.plugin.docker
    ids = [f"{n:02x}" + "e" * 62 for n in range(1, 41)]
    docker.stored = set()  # Docker answers 404 for them all, for now
    docker.names.update({i: f"net-{n}" for n, i in enumerate(ids)})
    broken = ids[0]
    answer = docker.network_name

    def network_name(network_id: str) -> str | None:
        if network_id == broken:
            raise RuntimeError("a Docker answer nobody expected")
        return answer(network_id)

    docker.network_name = network_name  # type: ignore[method-assign]
    with caplog.at_level(logging.INFO, logger=LOGGER):
        for network_id in ids:
            assert post(served.net(), "/NetworkDriver.CreateNetwork",
                        create_network(network_id)) == (200, {})
        assert len(naming_threads(served)) == 1  # one for them all
        docker.stored.update(ids)

        def names() -> list[str | None]:
            return [plugin.client.store.get(keys.docker_network(HOST, i)) and
                    json.loads(plugin.client.store.get(keys.docker_network(HOST, i)).value
                               ).get("name") for i in ids]

        wait_for(lambda: names()[1:] == [f"net-{n}" for n in range(1, 40)], 10,
                 "the networks were not named")
        wait_for(lambda: not naming_threads(served), 5, "the naming thread did not end")
    assert names()[0] is None  # its first CreateEndpoint asks again
    assert "learning the name of network 01eeeeeeeeee crashed" in caplog.text
    assert [p.name for p in plugin.client.list_profiles()] == sorted(
        f"net-{n}" for n in range(1, 40))


def test_other_hosts_network_records_cannot_break_profile_commands(served: Served) -> None:
    """A host may write its own network records only; whatever it writes there, an
    operator's profile commands still answer (a name no profile can have is left out)."""
    client = served.plugin.client
    bad = {"a": {"id": "a", "name": "web\nforged"}, "b": {"id": "b", "name": 5},
           "c": [1, 2], "d": {"id": "d", "name": "-x"}, "e": {"id": "e", "created": "soon"},
           "f": {"id": "f", "name": "ok-net"}}
    for network_id, record in bad.items():
        client.store.put(keys.docker_network("other-host", network_id), json.dumps(record))
    client.store.put(keys.docker_network("other-host", "g"), "{not json")
    started = time.monotonic()
    assert [p.name for p in client.list_profiles()] == ["ok-net"]
    with pytest.raises(calico_lib.NotFoundError):
        client.get_profile("web")
    assert time.monotonic() - started < 1  # nothing was waited for
    client.add_rule("ok-net", "outbound", calico_lib.Rule(action="deny", protocol="udp"))
    assert client.get_profile("ok-net", stored_only=True).docker_network
