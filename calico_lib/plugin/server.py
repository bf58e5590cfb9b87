"""calico-docker-plugin: serves calico.sock (NetworkDriver) and calico-ipam.sock
(IpamDriver) in --socket-dir, HTTP POST + JSON over unix sockets, one thread per connection.

Callers are not trusted to behave: each socket serves at most MAX_CONNECTIONS connections at
once, a request must arrive whole within READ_TIMEOUT, and answers never carry internal
exception text.
"""

from __future__ import annotations

import argparse
import errno
import io
import json
import logging
import os
import signal
import socket
import socketserver
import sys
import threading
import time
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler
from typing import Any

from .. import datastore, logsafe, metrics
from ..client import connect
from ..dataplane.routes import apply_route_changes
from ..dataplane.tunnel import veth_mtu
from ..dataplane.veth import (
    add_address,
    create_veth,
    delete_veth,
    gateway_prefixes,
    unjoined_veths,
)
from ..errors import CalicoError
from ..hostname import resolve_hostname
from ..model import show
from ..reconcile import DEFAULT_LOCK_FILE, Dataplane, reconcile
from ..render.routes import RouteSpec
from .docker_api import DEFAULT_DOCKER_SOCKET, DockerAPI
from .docker_sync import Syncer
from .driver import Driver

log = logging.getLogger("calico-docker-plugin")
MAX_BODY = 1 << 20
#: seconds a connection has to deliver its next request whole (idle keep-alive time
#: included); Docker's client retries a call on a connection closed while idle
READ_TIMEOUT = 10.0
#: connections served at once per socket (one thread each)
MAX_CONNECTIONS = 128
INTERNAL_ERROR = "internal error (see the plugin's log)"
#: the longest error message an answer carries
MAX_MESSAGE = 1024
Handler = Callable[[dict[str, Any]], dict[str, Any]]


def routes(driver: Driver) -> dict[str, tuple[dict[str, Handler], str]]:
    """Per socket: the URL paths it serves, and the error field Docker reads there."""
    network = {
        "/Plugin.Activate": lambda body: {"Implements": ["NetworkDriver"]},
        "/NetworkDriver.GetCapabilities": driver.capabilities,
        "/NetworkDriver.CreateNetwork": driver.create_network,
        "/NetworkDriver.DeleteNetwork": driver.delete_network,
        "/NetworkDriver.CreateEndpoint": driver.create_endpoint,
        "/NetworkDriver.DeleteEndpoint": driver.delete_endpoint,
        "/NetworkDriver.EndpointOperInfo": driver.endpoint_info,
        "/NetworkDriver.Join": driver.join,
        "/NetworkDriver.Leave": driver.leave,
        "/NetworkDriver.DiscoverNew": driver.nothing,
        "/NetworkDriver.DiscoverDelete": driver.nothing,
        "/NetworkDriver.ProgramExternalConnectivity": driver.nothing,
        "/NetworkDriver.RevokeExternalConnectivity": driver.nothing,
    }
    ipam = {
        "/Plugin.Activate": lambda body: {"Implements": ["IpamDriver"]},
        "/IpamDriver.GetCapabilities": driver.ipam_capabilities,
        "/IpamDriver.GetDefaultAddressSpaces": driver.address_spaces,
        "/IpamDriver.RequestPool": driver.request_pool,
        "/IpamDriver.ReleasePool": driver.release_pool,
        "/IpamDriver.RequestAddress": driver.request_address,
        "/IpamDriver.ReleaseAddress": driver.release_address,
    }
    return {"calico.sock": (network, "Err"), "calico-ipam.sock": (ipam, "Error")}


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """One thread per connection, at most MAX_CONNECTIONS of them.

    A connection holds a slot from accept to close. At the cap, a new connection takes the
    slot of the connection that has waited longest without a call in progress (idle
    keep-alive, or a request still arriving): a flood of idle connections cannot keep real
    calls out. When every slot is in a call, the new connection is closed at once (Docker
    retries a call whose connection closed)."""

    daemon_threads = True
    # socketserver's default listen backlog is 5: a burst of concurrent calls (20 `docker
    # run`s at once) then fails to connect with EAGAIN, which Go (Docker) gets at once on a
    # unix socket and answers with seconds of retry backoff.
    request_queue_size = socket.SOMAXCONN

    def __init__(self, path: str, handlers: dict[str, Handler], error_field: str) -> None:
        super().__init__(path, _Request)
        self.handlers, self.error_field = handlers, error_field
        self.lock = threading.Lock()
        self.served: set[socket.socket] = set()  # connections holding a slot
        self.waiting: dict[socket.socket, None] = {}  # those not in a call, oldest first

    def get_request(self) -> tuple[Any, Any]:
        try:
            return super().get_request()
        except OSError as exc:
            if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                # the pending connection stays and the socket stays readable: without a
                # pause, serve_forever would retry accept() in a busy loop
                log.warning("%s: cannot accept a connection: %s", self.server_address, exc)
                time.sleep(0.2)
            raise

    def process_request(self, request: Any, client_address: Any) -> None:
        if self._admit(request):
            super().process_request(request, client_address)  # its own thread
        else:
            log.warning("%s: all %d connections are in calls: closing a new one",
                        self.server_address, MAX_CONNECTIONS)
            self.shutdown_request(request)

    def _admit(self, conn: socket.socket) -> bool:
        with self.lock:
            if len(self.served) >= MAX_CONNECTIONS:
                if not self.waiting:
                    return False
                oldest = next(iter(self.waiting))
                self._release(oldest)
                log.debug("%s: at %d connections, closing the longest idle one",
                          self.server_address, MAX_CONNECTIONS)
                try:  # wakes its thread (a read returns end of file); it then ends
                    oldest.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            self.served.add(conn)
            self.waiting[conn] = None
            return True

    def _release(self, conn: socket.socket) -> None:
        self.served.discard(conn)
        self.waiting.pop(conn, None)

    def start_call(self, conn: socket.socket) -> bool:
        """Mark ``conn`` busy (not to be closed for a newer one); False if already closed."""
        with self.lock:
            if conn not in self.served:
                return False
            del self.waiting[conn]
            return True

    def end_call(self, conn: socket.socket) -> None:
        with self.lock:
            if conn in self.served:
                self.waiting[conn] = None  # the most recent: the last to be closed

    def shutdown_request(self, request: Any) -> None:
        with self.lock:  # before the close: _admit must never shut down a reused fd
            self._release(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, OSError):  # the caller hung up, was too slow, or was closed
            log.debug("a connection ended early: %s", exc)
        else:  # socketserver's default prints a bare traceback to stderr
            log.exception("serving a call failed")


class _DeadlineReader(io.RawIOBase):
    """Reads a socket until ``deadline`` (time.monotonic()): a request that trickles in a
    byte at a time cannot hold its connection longer than one that sends nothing."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__()
        self.sock = sock
        self.deadline = 0.0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("no complete request in time")
        self.sock.settimeout(left)
        return self.sock.recv_into(buffer)


class _Request(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        self.rfile.close()  # replaced by a reader with a deadline per request
        self.reader = _DeadlineReader(self.connection)
        self.rfile = io.BufferedReader(self.reader)

    def handle_one_request(self) -> None:
        self.reader.deadline = time.monotonic() + READ_TIMEOUT
        try:
            super().handle_one_request()
        except TimeoutError:  # http.server handles it only while waiting for the first line
            log.debug("%s: no complete request in %s s", self.server.server_address,
                      READ_TIMEOUT)
            self.close_connection = True

    def do_POST(self) -> None:  # noqa: N802 - the name http.server calls
        handler = self.server.handlers.get(self.path)
        if handler is None:
            self.close_connection = True  # its body is left unread
            return self._answer(404, {self.server.error_field:
                                      f"path: unknown call {show(self.path)}"})
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_BODY:
            self.close_connection = True
            return self._answer(400, {self.server.error_field: "request body too large"})
        raw = self.rfile.read(length) if length else b""
        if len(raw) < length or not self.server.start_call(self.connection):
            self.close_connection = True  # the caller hung up, or was closed for a newer one
            return
        call, start = self.path[1:], time.perf_counter()  # a known path: a bounded label
        self.answered = 0  # the status _answer sent
        try:
            self._call(handler, raw)
        finally:
            self.server.end_call(self.connection)
            metrics.PLUGIN_REQUEST_DURATION.labels(call).observe(time.perf_counter() - start)
            if self.answered != 200:
                metrics.PLUGIN_REQUEST_ERRORS.labels(call).inc()

    def _call(self, handler: Handler, raw: bytes) -> None:
        field = self.server.error_field
        try:
            body = json.loads(raw) if raw.strip() else {}
            problem = "" if isinstance(body, dict) else "not a JSON object"
        except RecursionError:  # json's answer to deep nesting, not a ValueError
            problem = "nested too deeply"
        except ValueError as exc:  # the decoder's messages are one line, about the input
            problem = str(exc)
        if problem:
            self.close_connection = True  # after a wrong Content-Length, the stream is lost
            return self._answer(400, {field: f"bad JSON body: {problem}"})
        try:
            answer = handler(body)
        except CalicoError as exc:  # meant for the user: one line, said as is
            log.warning("%s failed: %s", self.path, exc)
            return self._answer(500, {field: str(exc)})
        except Exception:  # a bug: log it whole, tell Docker only where to look
            log.exception("%s crashed", self.path)
            return self._answer(500, {field: INTERNAL_ERROR})
        log.debug("%s ok", self.path)
        self._answer(200, answer)

    def send_error(self, code: int, message: str | None = None,
                   explain: str | None = None) -> None:
        """http.server's own refusals (a bad request line, a GET, ...) as JSON errors."""
        self.log_error("code %d, message %s", code, message)
        self.close_connection = True
        text = message or self.responses.get(code, ("error",))[0]
        self._answer(code, {self.server.error_field: text})

    def _answer(self, status: int, body: dict[str, Any]) -> None:
        self.answered = status
        if status != 200:  # every refusal quotes its values; this keeps any slip one line
            field = self.server.error_field
            body = {**body, field: one_line(str(body[field]))}
        if status != 200 and "Err" not in body:
            # Docker's plugin client takes the message of a failed call from "Err" and
            # otherwise shows the raw JSON body: IPAM errors carry "Err" besides "Error".
            body = {**body, "Err": body[self.server.error_field]}
        data = json.dumps(body).encode()
        self.connection.settimeout(READ_TIMEOUT)  # a caller that does not read is dropped
        self.send_response(status)
        self.send_header("Content-Type", "application/vnd.docker.plugins.v1.2+json")
        self.send_header("Content-Length", str(len(data)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        log.debug(format, *args)


def one_line(message: str) -> str:
    """An error message as an answer carries it: one printable line (control, separator
    and invisible characters escaped), at most MAX_MESSAGE characters."""
    if not message.isprintable():
        message = repr(message)[1:-1]
    return message if len(message) <= MAX_MESSAGE else message[:MAX_MESSAGE - 3] + "..."


def serve(driver: Driver, socket_dir: str) -> list[_Server]:
    """Start one server thread per socket; returns the servers (call .shutdown())."""
    os.makedirs(socket_dir, exist_ok=True)
    servers = []
    old_umask = os.umask(0o177)  # sockets are root-only: srw-------
    try:
        for name, (handlers, error_field) in routes(driver).items():
            path = os.path.join(socket_dir, name)
            if os.path.exists(path):
                os.unlink(path)
            server = _Server(path, handlers, error_field)
            metrics.plugin_calls(call[1:] for call in handlers)
            threading.Thread(target=server.serve_forever, name=name, daemon=True).start()
            servers.append(server)
    finally:
        os.umask(old_umask)
    return servers


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="calico-docker-plugin",
                                     description="Docker network and IPAM driver for Calico.")
    parser.add_argument("--socket-dir", default="/run/docker/plugins", metavar="DIR")
    datastore.add_arguments(parser)
    parser.add_argument("--hostname")
    parser.add_argument("--docker-socket", default=DEFAULT_DOCKER_SOCKET, metavar="PATH")
    parser.add_argument("--lock-file", default=DEFAULT_LOCK_FILE)
    parser.add_argument("--docker-sync-interval", type=float, default=10.0, metavar="SECONDS",
                        help="compare this host's endpoints with Docker's this often and "
                             "free what Docker forgot (default 10; 0: never)")
    parser.add_argument("--docker-sync-grace", type=float, default=30.0, metavar="SECONDS",
                        help="never free an endpoint or address younger than this "
                             "(default 30: Docker may not list a container it is creating)")
    parser.add_argument("--log-level", default="INFO",
                        choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    parser.add_argument("--metrics-address", metavar="HOST:PORT",
                        help="serve Prometheus metrics at http://HOST:PORT/metrics "
                             "([IPV6]:PORT for IPv6): the plugin's calls, IPAM, and the "
                             "dataplane it programs (default: off)")
    return parser


class Programmer:
    """Programs this host's dataplane in a background thread, so that no Docker call
    waits for it: requests that arrive while an apply runs are served together by the
    next one (50 containers starting at once cost a few applies, not 50). A failed apply
    is retried after a short pause; the agent's resync repairs whatever is left. Its
    applies move this process's calico_agent_* metrics (the same reconcile as the agent's)."""

    RETRY = 1.0

    def __init__(self, apply: Callable[[], Any]) -> None:
        self._apply = apply
        self._wanted = threading.Event()
        self._stopping = False
        #: applies that finished, successful or not (tests wait on it)
        self.done = 0
        self._thread = threading.Thread(target=self._run, name="programmer", daemon=True)
        self._thread.start()

    def request(self) -> None:
        self._wanted.set()

    def halt(self) -> None:
        self._stopping = True
        self._wanted.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while True:
            self._wanted.wait()
            if self._stopping:
                return
            self._wanted.clear()
            try:
                log.info("%s", self._apply().summary())
            except Exception as exc:  # noqa: BLE001 - the thread must outlive any failure
                if isinstance(exc, CalicoError):
                    log.error("programming the dataplane failed: %s (retrying)", exc)
                else:
                    log.exception("programming the dataplane crashed (retrying)")
                self._wanted.set()
                time.sleep(self.RETRY)
            self.done += 1


def add_routes(interface: str, nets: list[str]) -> None:
    """The host routes of a joining container (the agent's and the background apply's
    memory take them as theirs: the same protocol-80 routes)."""
    report = apply_route_changes([], [RouteSpec(net, interface) for net in nets])
    if report.missing_interfaces:
        raise CalicoError(f"interface {interface} vanished while its routes were added")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logsafe.configure(args.log_level, "calico-docker-plugin")
    # pyroute2 logs every netlink message at DEBUG: the plugin's own lines would drown
    logging.getLogger("pyroute2").setLevel(max(logging.INFO, logging.getLogger().level))
    try:
        if args.metrics_address:
            metrics.serve(args.metrics_address)
        client = connect(**datastore.options(args))
    except CalicoError as exc:
        log.error("%s", exc)
        return exc.exit_code
    hostname = resolve_hostname(args.hostname)

    dataplane = Dataplane()  # routes and firewall only: BIRD is the agent's
    programmer = Programmer(lambda: reconcile(client.store, hostname, args.lock_file,
                                              dataplane=dataplane, verify=False))
    program = programmer.request

    docker = DockerAPI(args.docker_socket)
    syncer = Syncer(client, hostname, docker, args.docker_sync_interval,
                    args.docker_sync_grace, after_change=program,
                    list_unjoined=unjoined_veths, delete_link=delete_veth)
    driver = Driver(client, hostname, docker, reconcile=program,
                    create_veth=create_veth, delete_veth=delete_veth,
                    gateway_prefixes=gateway_prefixes, add_address=add_address,
                    forgotten=syncer.forgotten if args.docker_sync_interval > 0 else None,
                    add_routes=add_routes, veth_mtu=veth_mtu)
    # an endpoint the sync freed may still have its veth (its DeleteEndpoint failed)
    syncer.after_free = lambda ids: [driver.delete_own_veth(i, "docker sync") for i in ids]
    servers = serve(driver, args.socket_dir)
    if args.docker_sync_interval > 0:
        syncer.start()
    log.info("serving calico.sock and calico-ipam.sock in %s for host %s (%s)",
             args.socket_dir, hostname, client.store.url)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    syncer.halt()
    programmer.halt()
    for server in servers:
        server.shutdown()
        server.server_close()
        os.unlink(server.server_address)  # type: ignore[arg-type]
    return 0


if __name__ == "__main__":
    sys.exit(main())
