"""calico-docker-plugin: serves calico.sock (NetworkDriver) and calico-ipam.sock
(IpamDriver) in --socket-dir, HTTP POST + JSON over unix sockets, one thread per call."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import socket
import socketserver
import sys
import threading
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler
from typing import Any

from ..agent import resolve_hostname
from ..client import connect
from ..dataplane.veth import create_veth, delete_veth
from ..errors import CalicoError
from ..reconcile import DEFAULT_LOCK_FILE, Dataplane, reconcile
from .docker_api import DEFAULT_DOCKER_SOCKET, DockerAPI
from .driver import Driver

log = logging.getLogger("calico-docker-plugin")
MAX_BODY = 1 << 20
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
    daemon_threads = True
    # socketserver's default listen backlog is 5: a burst of concurrent calls (20 `docker
    # run`s at once) then fails to connect with EAGAIN, which Go (Docker) gets at once on a
    # unix socket and answers with seconds of retry backoff.
    request_queue_size = socket.SOMAXCONN
    handlers: dict[str, Handler]
    error_field: str

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError):  # the caller hung up
            log.debug("a caller went away before its answer: %s", sys.exc_info()[1])
        else:  # socketserver's default prints a bare traceback to stderr
            log.exception("serving a call failed")


class _Request(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:  # noqa: N802 - the name http.server calls
        handler = self.server.handlers.get(self.path)
        if handler is None:
            return self._answer(404, {self.server.error_field: f"unknown call {self.path}"})
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_BODY:
            self.close_connection = True
            return self._answer(400, {self.server.error_field: "request body too large"})
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw.strip() else {}
            if not isinstance(body, dict):
                raise ValueError("not a JSON object")
        except ValueError as exc:
            return self._answer(400, {self.server.error_field: f"bad JSON body: {exc}"})
        try:
            answer = handler(body)
        except CalicoError as exc:
            log.warning("%s failed: %s", self.path, exc)
            return self._answer(500, {self.server.error_field: str(exc)})
        except Exception as exc:  # a bug: answer Docker, keep serving, log it whole
            log.exception("%s crashed", self.path)
            return self._answer(500, {self.server.error_field: f"internal error: {exc}"})
        log.debug("%s ok", self.path)
        self._answer(200, answer)

    def _answer(self, status: int, body: dict[str, Any]) -> None:
        if status != 200 and "Err" not in body:
            # Docker's plugin client takes the message of a failed call from "Err" and
            # otherwise shows the raw JSON body: IPAM errors carry "Err" besides "Error".
            body = {**body, "Err": body[self.server.error_field]}
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/vnd.docker.plugins.v1.2+json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        log.debug(format, *args)


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
            server = _Server(path, _Request)
            server.handlers, server.error_field = handlers, error_field
            threading.Thread(target=server.serve_forever, name=name, daemon=True).start()
            servers.append(server)
    finally:
        os.umask(old_umask)
    return servers


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="calico-docker-plugin",
                                     description="Docker network and IPAM driver for Calico.")
    parser.add_argument("--socket-dir", default="/run/docker/plugins", metavar="DIR")
    parser.add_argument("--datastore", metavar="URL")
    parser.add_argument("--hostname")
    parser.add_argument("--docker-socket", default=DEFAULT_DOCKER_SOCKET, metavar="PATH")
    parser.add_argument("--lock-file", default=DEFAULT_LOCK_FILE)
    parser.add_argument("--log-level", default="INFO",
                        choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, stream=sys.stderr,
                        format="%(asctime)s calico-docker-plugin %(levelname)s %(message)s")
    try:
        client = connect(args.datastore)
    except CalicoError as exc:
        log.error("%s", exc)
        return exc.exit_code
    hostname = resolve_hostname(args.hostname)

    dataplane = Dataplane()  # routes and firewall only: BIRD is the agent's

    def program() -> None:
        report = reconcile(client.store, hostname, args.lock_file, dataplane=dataplane,
                           verify=False)
        log.info("%s", report.summary())

    driver = Driver(client, hostname, DockerAPI(args.docker_socket), reconcile=program,
                    create_veth=create_veth, delete_veth=delete_veth)
    servers = serve(driver, args.socket_dir)
    log.info("serving calico.sock and calico-ipam.sock in %s for host %s (%s)",
             args.socket_dir, hostname, client.store.url)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    for server in servers:
        server.shutdown()
        server.server_close()
        os.unlink(server.server_address)  # type: ignore[arg-type]
    return 0


if __name__ == "__main__":
    sys.exit(main())
