"""A throwaway etcd server for tests.

Usage::

    with EtcdServer() as etcd:
        client = make_client(etcd.url)   # etcd://127.0.0.1:PORT
        etcd.pause()                     # etcd becomes unreachable (SIGSTOP)
        etcd.resume()                    # ... and comes back (SIGCONT)
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

HOST = "127.0.0.1"
START_TIMEOUT = 20.0


def _free_port(host: str = HOST) -> int:
    """Return a TCP port on ``host`` that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _temp_parent() -> str | None:
    """Prefer tmpfs (/dev/shm): etcd fsyncs a lot and tmpfs keeps it fast."""
    shm = "/dev/shm"
    if os.path.isdir(shm) and os.access(shm, os.W_OK | os.X_OK):
        return shm
    return None  # the default temp dir


def _stopped(task: Path) -> bool:
    """Whether a /proc task is in the stopped state (or gone)."""
    try:
        stat = (task / "stat").read_text()
    except OSError:
        return True
    return stat[stat.rindex(")") + 2] in "tT"


class EtcdServer:
    """An etcd process on free loopback ports, with its data in a temp dir.

    A context manager: ``__enter__`` starts etcd and waits until it is healthy,
    ``__exit__`` always stops it and removes its data.
    """

    def __init__(self, host: str = HOST, tls: bool = False) -> None:
        """``host``: the address to listen on (the loopback unless a test needs etcd
        reachable from a network namespace). ``tls``: client and peer TLS with
        --client-cert-auth, from a throwaway PKI (``self.pki``; ``self.client`` is a client
        certificate it signed, ``self.root`` one for etcd's administrator)."""
        self.host: str = host
        self.tls = tls
        self.pki: Any = None
        self.client: Any = None
        self.root: Any = None
        self.port: int = 0
        self.peer_port: int = 0
        self.url: str = ""
        self._proc: subprocess.Popen[bytes] | None = None
        self._tmpdir: str | None = None
        self._log: Path | None = None

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> EtcdServer:
        """Start etcd and wait until it reports healthy; return self."""
        binary = shutil.which("etcd")
        if binary is None:
            raise RuntimeError("etcd not found: run `make deps`")

        # Both sockets are closed again, so retry on the (unlikely) collision.
        self.port = _free_port(self.host)
        self.peer_port = _free_port(self.host)
        while self.peer_port == self.port:
            self.peer_port = _free_port(self.host)
        scheme = "https" if self.tls else "http"
        self.url = f"{'etcds' if self.tls else 'etcd'}://{self.host}:{self.port}"

        self._tmpdir = tempfile.mkdtemp(prefix="etcd-test-", dir=_temp_parent())
        self._log = Path(self._tmpdir) / "etcd.log"
        client = f"{scheme}://{self.host}:{self.port}"
        peer = f"{scheme}://{self.host}:{self.peer_port}"
        cmd = [
            binary,
            "--name", "test",
            "--data-dir", str(Path(self._tmpdir) / "data"),
            "--listen-client-urls", client,
            "--advertise-client-urls", client,
            "--listen-peer-urls", peer,
            "--initial-advertise-peer-urls", peer,
            "--initial-cluster", f"test={peer}",
            "--log-level", "error",
        ]  # fmt: skip
        if self.tls:
            from tests.pki import Pki

            self.pki = Pki(Path(self._tmpdir) / "pki")
            server = self.pki.issue("etcd", sans=[self.host, "localhost"], server=True)
            self.client = self.pki.issue("calico-operator")
            self.root = self.pki.issue("root")
            cmd += ["--client-cert-auth", "--trusted-ca-file", self.pki.ca,
                    "--cert-file", server.cert, "--key-file", server.key,
                    "--peer-client-cert-auth", "--peer-trusted-ca-file", self.pki.ca,
                    "--peer-cert-file", server.cert, "--peer-key-file", server.key]
        with open(self._log, "wb") as log:
            self._proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
        try:
            self._wait_healthy()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_healthy(self) -> None:
        """Poll /health until etcd answers healthy, dies, or time runs out."""
        assert self._proc is not None
        deadline = time.monotonic() + START_TIMEOUT
        health = f"{'https' if self.tls else 'http'}://{self.host}:{self.port}/health"
        context = None
        if self.tls:
            context = ssl.create_default_context(cafile=self.pki.ca)
            context.load_cert_chain(self.client.cert, self.client.key)
        while True:
            if self._proc.poll() is not None:
                raise RuntimeError(
                    f"etcd exited with code {self._proc.returncode}:\n{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(health, timeout=1, context=context) as resp:
                    if json.loads(resp.read()).get("health") == "true":
                        return
            except (OSError, ValueError):
                pass  # not listening yet, or not ready
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"etcd not healthy after {START_TIMEOUT:.0f} s:\n{self.log_tail()}"
                )
            time.sleep(0.1)

    def stop(self) -> None:
        """Stop etcd and remove its data directory. Safe to call twice."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            try:
                proc.send_signal(signal.SIGCONT)  # a paused etcd can't exit
                proc.terminate()
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None

    def pause(self) -> None:
        """Freeze etcd (SIGSTOP): connections hang as if it were unreachable.

        Returns only once every etcd thread is stopped: the signal is asynchronous and, on a
        loaded machine, a request sent right after kill() could still be served."""
        self._signal(signal.SIGSTOP)
        assert self._proc is not None
        tasks = Path(f"/proc/{self._proc.pid}/task")
        deadline = time.monotonic() + 10.0
        while not all(_stopped(task) for task in tasks.iterdir()):
            if time.monotonic() > deadline:
                raise RuntimeError("etcd did not stop within 10 s of SIGSTOP")
            time.sleep(0.01)

    def resume(self) -> None:
        """Unfreeze etcd after :meth:`pause` (SIGCONT)."""
        self._signal(signal.SIGCONT)

    def _signal(self, sig: signal.Signals) -> None:
        if self._proc is None or self._proc.poll() is not None:
            raise RuntimeError("etcd is not running")
        self._proc.send_signal(sig)

    def log_tail(self, lines: int = 20) -> str:
        """Return the last lines of etcd's log (for error messages)."""
        if self._log is None or not self._log.exists():
            return "(no log)"
        text = self._log.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:]) or "(empty log)"

    # -- context manager -----------------------------------------------------

    def __enter__(self) -> EtcdServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
