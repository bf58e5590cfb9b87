"""A real dockerd in a network namespace, with calico-docker-plugin serving it (issue 5).

    with DockerLab() as lab:                # netns + dockerd + image + plugin
        lab.network("net1")                 # docker network create -d calico
                                            #   --ipam-driver calico-ipam net1
        lab.run("web1", "net1")             # docker run -d --name web1 --net net1 ... sleep
        lab.run("web2", "net1")
        assert lab.ping("web1", lab.address("web2", "net1"))
        with lab.client() as client: ...    # calico_lib.Client on the lab's datastore

What it sets up (every name starts with ``caldock-`` and a random tag):
  * a network namespace (the "host") with lo up and an uplink veth carrying 198.18.0.2/24 and
    2001:db8:fe::2/64 and default routes (proxy ARP answers for 169.254.1.1 only when the
    host has a route to it);
  * a fresh SQLite datastore in the lab's temporary directory, with the lab's pools
    (default 10.65.0.0/16 and fd00:65::/64);
  * dockerd 20.10 run with ``nsenter --net`` inside the namespace (``ip netns exec`` would
    remount /sys and hide the cgroups), with its own --data-root, --exec-root, socket and pid
    file, no bridge and no iptables;
  * the image ``calico-test-busybox``: a static busybox in an otherwise empty root;
  * the plugin, ``python -m calico_lib.plugin.server``, run with ``ip netns exec`` in the
    same namespace (it creates veths and programs iptables there) and serving in
    /run/docker/plugins: Docker looks for plugins at that fixed path only. ``ip netns
    exec`` also gives it a mount namespace of its own, which (the root being private
    here) does not receive dockerd's later mounts: the plugin reads containers' network
    namespaces as dockerd sees them (/proc/<dockerd>/root/<SandboxKey>). Its Docker sync
    runs every ``sync_interval`` seconds with ``sync_grace`` (the plugin's defaults
    unless given).

Lifecycle events, as they happen to a host: ``kill_plugin`` / ``restart_plugin`` (kill -9
and start, optionally with another Docker socket or sync options), ``restart_dockerd``
(``systemctl restart docker``: containers stopped cleanly), ``reboot`` (every process dies
at once, the exec root goes, the data root and the datastore stay; the plugin starts
before dockerd). ``wait_for_sync`` waits for the plugin's next sync passes.

``close()`` (also on a failed start) undoes all of it whatever state things are in: removes
every container, stops the plugin, stops dockerd by its pid file and waits for it, kills any
process left in the namespace or started from the lab's directory (containerd, shims),
unmounts everything under the lab's directory, deletes the namespace, the directory and the
plugin sockets. With $DOCKERLAB_LOGS set to a directory, the dockerd and plugin logs are
copied there first.

The module also has ``post()``: one HTTP POST over a unix socket shaped the way Docker's
plugin client sends it (the protocol tests and the benchmark use it), and ``serving()``: the
plugin's servers in this process on a driver a test made (no dockerd, no root).
"""

from __future__ import annotations

import http.client
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import calico_lib

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PLUGIN_DIR = "/run/docker/plugins"
PLUGIN_SOCKETS = ("calico.sock", "calico-ipam.sock")
IMAGE = "calico-test-busybox"
#: busybox applets linked in the image
APPLETS = ("sh", "ping", "ping6", "ip", "nc", "sleep", "cat", "echo", "ifconfig", "route",
           "wget", "httpd", "hostname", "ls", "mkdir", "true", "false")
DOCKER_ACCEPT = "application/vnd.docker.plugins.v1.2+json"
POOL4 = "10.65.0.0/16"
POOL6 = "fd00:65::/64"
UPLINK4, OUTSIDE4 = "198.18.0.2", "198.18.0.254"
UPLINK6, OUTSIDE6 = "2001:db8:fe::2", "2001:db8:fe::fe"
PLUGIN_START_MARK = "----- plugin start #"
#: what the plugin logs (DEBUG) for each sync pass in which Docker answered everything
SYNC_PASS = "docker sync: Docker lists"


class CommandFailed(AssertionError):
    """A lab command exited non-zero; the message names it, its code and its output."""


# ----------------------------------------------------------------------- unix-socket HTTP


def docker_body(body: Any) -> bytes:
    """A request body as Docker's plugin client encodes it (Go's json.Encoder: compact, a
    trailing newline; no body at all for calls without arguments)."""
    if body is None:
        return b""
    return (json.dumps(body, separators=(",", ":")) + "\n").encode()


def post(socket_path: str, path: str, body: Any = None, *, raw: bytes | None = None,
         headers: dict[str, str] | None = None, timeout: float = 30.0
         ) -> tuple[int, Any]:
    """POST the way Docker 20.10's plugin client does (recorded from a real dockerd): an
    empty Host, Go's User-Agent, ``Accept: application/vnd.docker.plugins.v1.2+json``, a
    Content-Length and no Content-Type.

    ``body`` is encoded like Docker encodes it (None: no body); ``raw`` is sent as is
    instead. ``headers`` add to or replace those. Returns (status, decoded JSON answer), the
    answer being the raw text when it is not JSON.
    """
    data = raw if raw is not None else docker_body(body)
    sent = {"Host": "", "User-Agent": "Go-http-client/1.1", "Content-Length": str(len(data)),
            "Accept": DOCKER_ACCEPT}
    sent.update(headers or {})
    head = f"POST {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in sent.items())
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(socket_path)
        # one write, as Go's client does for a small request: a server that answers
        # before reading the body (a refused Content-Length) cannot make it fail half-way
        sock.sendall(head.encode("latin-1") + b"\r\n" + data)
        reply = http.client.HTTPResponse(sock, method="POST")
        reply.begin()
        text = reply.read().decode(errors="replace")
    finally:
        sock.close()
    try:
        return reply.status, json.loads(text)
    except ValueError:
        return reply.status, text


@contextmanager
def serving(driver: Any, prefix: str = "calico-plugin-") -> Iterator[tuple[str, list[Any]]]:
    """``calico_lib.plugin.server.serve(driver)`` in this process, its sockets in a new short
    folder (a socket path holds at most 107 bytes: pytest's tmp_path is too long); yields
    (that folder, the servers). Afterwards the servers are shut down and the folder is
    removed."""
    from calico_lib.plugin.server import serve

    root = tempfile.mkdtemp(prefix=prefix)
    plugins = os.path.join(root, "plugins")
    try:
        servers = serve(driver, plugins)
        try:
            yield plugins, servers
        finally:
            stoppers = [threading.Thread(target=server.shutdown) for server in servers]
            for thread in stoppers:
                thread.start()
            for thread, server in zip(stoppers, servers, strict=True):
                while thread.is_alive():  # serve_forever looks every 0.5 s: wake it now
                    _knock(server.server_address)
                    thread.join(0.05)
                server.server_close()
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _knock(path: str) -> None:
    """Connect to a unix socket and hang up: its server's select() returns at once."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        try:
            sock.connect(path)
        except OSError:
            pass


class FaultyDocker:
    """A unix-socket proxy in front of a real dockerd that answers chosen GET paths with an
    error status (as a dockerd under load or mid-restart does) and passes everything else
    through. ``with FaultyDocker(lab.docker_socket, {"/networks/ID": 500}) as proxy:`` then
    point a client at ``proxy.path``."""

    def __init__(self, upstream: str, faults: dict[str, int]) -> None:
        self.upstream, self.faults = upstream, dict(faults)
        self.directory = tempfile.mkdtemp(prefix="caldock-proxy-")
        self.path = os.path.join(self.directory, "docker.sock")
        self.seen: list[str] = []
        self._server: Any = None

    def __enter__(self) -> FaultyDocker:
        import socketserver
        from http.server import BaseHTTPRequestHandler

        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 - the name http.server calls
                proxy.seen.append(self.path)
                status = proxy.faults.get(self.path.split("?")[0])
                if status is not None:
                    body = json.dumps({"message": "injected fault"}).encode()
                else:
                    conn = http.client.HTTPConnection("docker", timeout=30)
                    conn.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                    conn.sock.connect(proxy.upstream)
                    try:
                        conn.request("GET", self.path, headers={"Host": "docker"})
                        reply = conn.getresponse()
                        status, body = reply.status, reply.read()
                    finally:
                        conn.close()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
            daemon_threads = True

        self._server = Server(self.path, Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        shutil.rmtree(self.directory, ignore_errors=True)


# ----------------------------------------------------------------------- process helpers


def run(argv: Sequence[str], timeout: float = 30.0, check: bool = True,
        input: bytes | str | None = None,  # noqa: A002
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    text_input = input.decode() if isinstance(input, bytes) else input
    try:
        proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout,
                              input=text_input, env=env, check=False)
    except subprocess.TimeoutExpired as exc:
        raise CommandFailed(f"{' '.join(argv)}: timed out after {timeout}s; stdout: "
                            f"{exc.stdout!r} stderr: {exc.stderr!r}") from None
    if check and proc.returncode != 0:
        raise CommandFailed(f"{' '.join(argv)}: exit {proc.returncode}\nstdout: "
                            f"{proc.stdout.strip()}\nstderr: {proc.stderr.strip()}")
    return proc


def python_env() -> dict[str, str]:
    """The environment for ``python -m calico_lib...`` children: this checkout first."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("CALICO_DATASTORE", "CALICO_HOSTNAME")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (REPO_ROOT, env.get("PYTHONPATH")) if p)
    return env


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _kill_and_wait(pids: Sequence[int], timeout: float = 10.0) -> None:
    """SIGKILL these pids and wait (up to ``timeout``) until they are gone."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)


def _pids_mentioning(text: str) -> list[int]:
    """Processes whose command line contains ``text`` (the lab's own unique directory)."""
    found = []
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                cmdline = handle.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            found.append(int(entry))
    return found


def _cgroup_pids(container_id: str) -> set[int]:
    """The processes of a Docker container, from its cgroup (cgroupfs driver, v1 or v2)."""
    pids: set[int] = set()
    for path in (f"/sys/fs/cgroup/pids/docker/{container_id}/cgroup.procs",
                 f"/sys/fs/cgroup/memory/docker/{container_id}/cgroup.procs",
                 f"/sys/fs/cgroup/docker/{container_id}/cgroup.procs"):
        try:
            with open(path) as handle:
                pids.update(int(p) for p in handle.read().split())
        except (OSError, ValueError):
            continue
    return pids


def _mounts_under(path: str) -> list[str]:
    """Mount points at or below ``path``, deepest first."""
    points = []
    with open("/proc/self/mountinfo") as handle:
        for line in handle:
            point = line.split()[4].replace("\\040", " ")
            if point == path or point.startswith(path.rstrip("/") + "/"):
                points.append(point)
    return sorted(set(points), key=lambda p: p.count("/"), reverse=True)


def missing_requirements() -> str | None:
    """Why a DockerLab cannot run here, or None."""
    if os.geteuid() != 0:
        return "the Docker end-to-end tests need root"
    for tool in ("dockerd", "docker", "containerd", "runc", "ip", "nsenter", "iptables",
                 "ipset"):
        if shutil.which(tool) is None:
            return f"the Docker end-to-end tests need {tool} on PATH (apt-get install docker.io)"
    if busybox_path() is None:
        return "the Docker end-to-end tests need a static busybox (apt-get install " \
               "busybox-static)"
    return None


def busybox_path() -> str | None:
    for candidate in ("/bin/busybox", "/usr/bin/busybox"):
        if os.path.exists(candidate):
            return candidate
    return None


def busybox_image_tar() -> bytes:
    """An image root holding only a static busybox and its applet links, as a tar stream."""
    busybox = busybox_path()
    if busybox is None:
        raise CommandFailed("no busybox binary (apt-get install busybox-static)")
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name in ("bin", "tmp", "www", "etc"):
            info = tarfile.TarInfo(name)
            info.type, info.mode = tarfile.DIRTYPE, 0o1777 if name == "tmp" else 0o755
            tar.addfile(info)
        tar.add(busybox, arcname="bin/busybox")
        for applet in APPLETS:
            info = tarfile.TarInfo(f"bin/{applet}")
            info.type, info.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(info)
        page = b"calico\n"
        info = tarfile.TarInfo("www/index.html")
        info.size, info.mode = len(page), 0o644
        tar.addfile(info, io.BytesIO(page))
    return out.getvalue()


# ----------------------------------------------------------------------- the lab


class DockerLab:
    def __init__(self, hostname: str = "dockhost", pools: Sequence[str] = (POOL4, POOL6),
                 socket_dir: str = PLUGIN_DIR, sync_interval: float = 10.0,
                 sync_grace: float = 30.0, datastore_url: str = "") -> None:
        self.tag = "caldock-" + uuid.uuid4().hex[:6]
        self.ns = self.tag
        self.hostname = hostname
        self.pools = list(pools)
        self.socket_dir = socket_dir
        #: the plugin's --docker-sync-interval and --docker-sync-grace (start_plugin's default)
        self.sync_interval, self.sync_grace = sync_interval, sync_grace
        self.workdir = ""
        self.docker_socket = ""
        self.pid_file = ""
        #: given: a datastore the namespace can reach (e.g. etcd); else a fresh SQLite file
        self.datastore_url = datastore_url
        self.lock_file = ""
        self.dockerd: subprocess.Popen[bytes] | None = None
        self.plugin: subprocess.Popen[bytes] | None = None
        self._ns_made = False
        self._plugin_started = 0

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> DockerLab:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        reason = missing_requirements()
        if reason:
            raise CommandFailed(reason)
        self.workdir = tempfile.mkdtemp(prefix=f"{self.tag}-")
        os.chmod(self.workdir, 0o711)
        self.docker_socket = os.path.join(self.workdir, "docker.sock")
        self.pid_file = os.path.join(self.workdir, "docker.pid")
        self.datastore_url = self.datastore_url or \
            "sqlite:///" + os.path.join(self.workdir, "calico.db")
        self.lock_file = os.path.join(self.workdir, "dataplane.lock")
        self._make_namespace()
        self._add_pools()
        self.start_plugin()
        self._start_dockerd()
        self.docker("import", "-", IMAGE, input_bytes=busybox_image_tar(), timeout=60)

    def _make_namespace(self) -> None:
        run(["ip", "netns", "add", self.ns])
        self._ns_made = True
        ip = ["ip", "-n", self.ns]
        run([*ip, "link", "set", "lo", "up"])
        run([*ip, "link", "add", "up0", "type", "veth", "peer", "name", "up1"])
        run([*ip, "addr", "add", f"{UPLINK4}/24", "dev", "up0"])
        run([*ip, "addr", "add", f"{UPLINK6}/64", "dev", "up0", "nodad"])
        run([*ip, "link", "set", "up0", "up"])
        run([*ip, "link", "set", "up1", "up"])
        run([*ip, "route", "add", "default", "via", OUTSIDE4, "dev", "up0"])
        run([*ip, "-6", "route", "add", "default", "via", OUTSIDE6, "dev", "up0"])

    def _add_pools(self) -> None:
        with calico_lib.connect(self.datastore_url) as client:
            for cidr in self.pools:
                client.add_pool(calico_lib.IPPool(cidr))

    def client(self) -> calico_lib.Client:
        """A calico_lib Client on the lab's datastore (close it, or use it with ``with``)."""
        return calico_lib.connect(self.datastore_url)

    def _start_dockerd(self) -> None:
        log = open(os.path.join(self.workdir, "dockerd.log"), "ab")
        try:
            self.dockerd = subprocess.Popen(
                ["nsenter", f"--net=/run/netns/{self.ns}", "dockerd",
                 "--data-root", os.path.join(self.workdir, "data"),
                 "--exec-root", os.path.join(self.workdir, "exec"),
                 "-H", f"unix://{self.docker_socket}", "-p", self.pid_file,
                 "--bridge=none", "--iptables=false", "--ip6tables=false",
                 "--ip-masq=false"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
        finally:
            log.close()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.dockerd.poll() is not None:
                raise CommandFailed(f"dockerd exited {self.dockerd.returncode}\n"
                                    f"{self.tail('dockerd.log')}")
            if os.path.exists(self.docker_socket) and self.docker(
                    "info", "--format", "{{.ServerVersion}}", check=False,
                    timeout=10).returncode == 0:
                return
            time.sleep(0.2)
        raise CommandFailed(f"dockerd did not answer within 60 s\n{self.tail('dockerd.log')}")

    def start_plugin(self, timeout: float = 20.0, *, docker_socket: str = "",
                     sync_interval: float | None = None, sync_grace: float | None = None
                     ) -> None:
        """Start calico-docker-plugin in the namespace; returns once both sockets answer.
        ``docker_socket`` (e.g. a FaultyDocker proxy) replaces the lab's
        dockerd socket; the sync options default to the lab's."""
        if self.plugin is not None and self.plugin.poll() is None:
            raise CommandFailed("the plugin is already running")
        if any(self._activates(name) for name in PLUGIN_SOCKETS):  # stale files are fine
            raise CommandFailed(f"another calico plugin is serving in {self.socket_dir} "
                                "(another test run?): not taking its sockets over")
        self._plugin_started += 1
        interval = self.sync_interval if sync_interval is None else sync_interval
        grace = self.sync_grace if sync_grace is None else sync_grace
        log = open(os.path.join(self.workdir, "plugin.log"), "ab")
        try:
            log.write(f"{PLUGIN_START_MARK}{self._plugin_started}\n".encode())
            log.flush()
            self.plugin = subprocess.Popen(
                ["ip", "netns", "exec", self.ns, sys.executable, "-m",
                 "calico_lib.plugin.server", "--socket-dir", self.socket_dir,
                 "--datastore", self.datastore_url, "--hostname", self.hostname,
                 "--docker-socket", docker_socket or self.docker_socket,
                 "--lock-file", self.lock_file, "--log-level", "DEBUG",
                 "--docker-sync-interval", str(interval), "--docker-sync-grace", str(grace)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=python_env(),
                start_new_session=True)
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.plugin.poll() is not None:
                raise CommandFailed(f"the plugin exited {self.plugin.returncode}\n"
                                    f"{self.tail('plugin.log')}")
            if all(self._activates(name) for name in PLUGIN_SOCKETS):
                return
            time.sleep(0.05)
        raise CommandFailed(f"the plugin did not answer within {timeout} s\n"
                            f"{self.tail('plugin.log')}")

    def restart_plugin(self, **options: Any) -> None:
        """Kill the plugin (-9, as a crash would) and start it again with ``options``
        (start_plugin's)."""
        self.kill_plugin(signal.SIGKILL)
        self.start_plugin(**options)

    def plugin_log_since_start(self) -> str:
        """The plugin's log since its last start."""
        return self.log().rsplit(PLUGIN_START_MARK, 1)[-1]

    def sync_passes(self) -> int:
        """Sync passes in which the running plugin heard Docker's whole answer."""
        return self.plugin_log_since_start().count(SYNC_PASS)

    def wait_for_sync(self, passes: int = 1, timeout: float = 30.0) -> float:
        """Wait until the running plugin completed ``passes`` more sync passes (the first
        may have started before the call: wait for two to be sure one started after);
        the seconds waited."""
        started = time.monotonic()
        goal = self.sync_passes() + passes
        while self.sync_passes() < goal:
            if time.monotonic() - started > timeout:
                raise CommandFailed(f"no {passes} sync pass(es) within {timeout} s\n"
                                    f"{self.tail('plugin.log')}")
            time.sleep(0.1)
        return time.monotonic() - started

    def _activates(self, name: str) -> bool:
        try:
            status, _ = post(self.plugin_socket(name), "/Plugin.Activate", raw=b"",
                             timeout=2)
        except OSError:
            return False
        return status == 200

    def plugin_socket(self, name: str = "calico.sock") -> str:
        return os.path.join(self.socket_dir, name)

    def kill_plugin(self, sig: int = signal.SIGKILL, timeout: float = 10.0) -> int | None:
        """Signal the plugin and wait for it; its exit code (None if it was not running)."""
        if self.plugin is None:
            return None
        if self.plugin.poll() is None:
            self.plugin.send_signal(sig)
            try:
                self.plugin.wait(timeout)
            except subprocess.TimeoutExpired:
                self.plugin.kill()
                self.plugin.wait(timeout)
        return self.plugin.returncode

    def close(self) -> None:
        """Undo everything, whatever state the lab is in; never raises."""
        steps = [self._remove_containers, self._stop_plugin, self._stop_dockerd,
                 self._kill_leftovers, self._unmount, self._delete_namespace,
                 self._remove_files]
        for step in steps:
            try:
                step()
            except Exception as exc:  # noqa: BLE001 - the next steps must still run
                print(f"dockerlab cleanup: {step.__name__}: {exc}", file=sys.stderr)

    def _remove_containers(self) -> None:
        if self.dockerd is None or self.dockerd.poll() is not None:
            return
        if self.plugin is None or self.plugin.poll() is not None:
            self.start_plugin()  # so that Docker can tell it about the removals
        self.rm_all()

    def _stop_plugin(self) -> None:
        if self.plugin is not None and self.plugin.poll() is None:
            self.kill_plugin(signal.SIGTERM)

    def _stop_dockerd(self) -> None:
        self.stop_dockerd()

    def stop_dockerd(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> None:
        """Stop dockerd by its pid file with ``sig`` and wait for it: SIGTERM stops the
        containers first (each within its stop timeout), SIGKILL leaves them running."""
        pid = None
        try:
            with open(self.pid_file) as handle:
                pid = int(handle.read().strip())
        except (OSError, ValueError):
            pass
        if pid is None and self.dockerd is not None and self.dockerd.poll() is None:
            pid = self.dockerd.pid  # nsenter execs dockerd: the same process
        if pid is not None and _alive(pid):
            os.kill(pid, sig)
            deadline = time.monotonic() + timeout
            while _alive(pid) and time.monotonic() < deadline:
                if self.dockerd is not None:
                    self.dockerd.poll()  # reap it when it is our child
                time.sleep(0.1)
            if _alive(pid):
                _kill_and_wait([pid])
        if self.dockerd is not None:
            try:
                self.dockerd.wait(10)
            except subprocess.TimeoutExpired:
                self.dockerd.kill()
                self.dockerd.wait(10)

    def start_dockerd(self) -> None:
        """Start dockerd (again); returns once it answers."""
        self._start_dockerd()

    def restart_dockerd(self) -> None:
        """``systemctl restart docker``: a clean stop (containers stopped), then a start."""
        self.stop_dockerd()
        self.start_dockerd()

    def reboot(self) -> None:
        """What a host's power cut and boot do to Docker and the plugin: every process of
        the lab dies at once (plugin, dockerd, containerd, shims, containers); the
        container namespaces and every mount go, and so does the exec root (/run is a
        tmpfs); the data root (Docker's record of networks, containers and endpoints) and
        the datastore stay. Then the plugin starts, and dockerd after it (the plugin's
        unit is ordered before docker.service)."""
        ids = self.docker("ps", "-q", "--no-trunc", check=False).stdout.split()
        self.kill_plugin(signal.SIGKILL)
        self.stop_dockerd(signal.SIGKILL)
        pids = set(_pids_mentioning(self.workdir))  # containerd, shims
        for container in ids:  # every process of every container (they were not ours)
            pids.update(_cgroup_pids(container))
        pids.discard(os.getpid())
        _kill_and_wait(sorted(pids))
        self._unmount()
        shutil.rmtree(os.path.join(self.workdir, "exec"), ignore_errors=True)
        self.start_plugin()
        self.start_dockerd()

    def _kill_leftovers(self) -> None:
        """containerd, containerd-shim and anything else the lab left running."""
        pids = set(_pids_mentioning(self.workdir)) if self.workdir else set()
        if self._ns_made:
            listed = run(["ip", "netns", "pids", self.ns], check=False).stdout.split()
            pids.update(int(p) for p in listed if p.isdigit())
        pids.discard(os.getpid())
        if pids:
            _kill_and_wait(sorted(pids))

    def _unmount(self) -> None:
        if not self.workdir:
            return
        for point in _mounts_under(self.workdir):
            if run(["umount", point], check=False).returncode != 0:
                run(["umount", "-l", point], check=False)

    def _delete_namespace(self) -> None:
        if self._ns_made:
            run(["ip", "netns", "del", self.ns], check=False)
            self._ns_made = False

    def _remove_files(self) -> None:
        keep = os.environ.get("DOCKERLAB_LOGS")  # a directory to copy the logs to
        if keep and self.workdir:
            os.makedirs(keep, exist_ok=True)
            for name in ("dockerd.log", "plugin.log"):
                if os.path.exists(os.path.join(self.workdir, name)):
                    shutil.copy(os.path.join(self.workdir, name),
                                os.path.join(keep, f"{self.tag}-{name}"))
        if self.workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
        if self._plugin_started:
            for name in PLUGIN_SOCKETS:
                try:
                    os.unlink(self.plugin_socket(name))
                except FileNotFoundError:
                    pass

    # ------------------------------------------------------------------ commands

    def docker(self, *args: str, check: bool = True, timeout: float = 60.0,
               input_bytes: bytes | None = None) -> subprocess.CompletedProcess[str]:
        """``docker -H unix://<lab socket> ARGS``; raises CommandFailed on failure."""
        argv = ["docker", "-H", f"unix://{self.docker_socket}", *args]
        env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
        if input_bytes is not None:
            try:
                proc = subprocess.run(argv, input=input_bytes, capture_output=True,
                                      timeout=timeout, env=env, check=False)
            except subprocess.TimeoutExpired:
                raise CommandFailed(f"{' '.join(argv)}: timed out after {timeout}s") from None
            result = subprocess.CompletedProcess(argv, proc.returncode,
                                                 proc.stdout.decode(errors="replace"),
                                                 proc.stderr.decode(errors="replace"))
            if check and result.returncode != 0:
                raise CommandFailed(f"{' '.join(argv)}: exit {result.returncode}\n"
                                    f"stderr: {result.stderr.strip()}")
            return result
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                                  env=env, check=False)
        except subprocess.TimeoutExpired as exc:
            raise CommandFailed(f"{' '.join(argv)}: timed out after {timeout}s; stderr: "
                                f"{exc.stderr!r}\n{self.tail('plugin.log')}") from None
        if check and proc.returncode != 0:
            raise CommandFailed(f"{' '.join(argv)}: exit {proc.returncode}\nstdout: "
                                f"{proc.stdout.strip()}\nstderr: {proc.stderr.strip()}\n"
                                f"{self.tail('plugin.log')}")
        return proc

    def network(self, name: str, *extra: str, check: bool = True
                ) -> subprocess.CompletedProcess[str]:
        """``docker network create -d calico --ipam-driver calico-ipam EXTRA NAME``."""
        return self.docker("network", "create", "-d", "calico", "--ipam-driver",
                           "calico-ipam", *extra, name, check=check)

    def network_id(self, name: str) -> str:
        return self.docker("network", "inspect", "-f", "{{.Id}}", name).stdout.strip()

    def run(self, name: str, network: str, *extra: str, command: Sequence[str] = ("sleep",
            "3600"), check: bool = True) -> subprocess.CompletedProcess[str]:
        """``docker run -d --name NAME --net NETWORK EXTRA busybox COMMAND``."""
        return self.docker("run", "-d", "--name", name, "--net", network, *extra, IMAGE,
                           *command, check=check)

    def exec(self, container: str, *argv: str, check: bool = False, timeout: float = 30.0
             ) -> subprocess.CompletedProcess[str]:
        return self.docker("exec", container, *argv, check=check, timeout=timeout)

    def inspect(self, container: str) -> dict[str, Any]:
        return json.loads(self.docker("inspect", container).stdout)[0]

    def address(self, container: str, network: str, v6: bool = False) -> str:
        settings = self.inspect(container)["NetworkSettings"]["Networks"][network]
        return settings["GlobalIPv6Address" if v6 else "IPAddress"]

    def endpoint_id(self, container: str, network: str) -> str:
        return self.inspect(container)["NetworkSettings"]["Networks"][network]["EndpointID"]

    def ping(self, container: str, address: str, count: int = 2, wait: float = 2) -> bool:
        """True when ``container`` got at least one echo reply from ``address``."""
        argv = ["ping", "-c", str(count), "-i", "0.2", "-W", str(wait), address]
        if ":" in address:
            argv.insert(1, "-6")
        return self.exec(container, *argv, timeout=20).returncode == 0

    def tcp(self, container: str, address: str, port: int, timeout: int = 1) -> bool:
        """True when ``container`` can open a TCP connection to ``address``:``port``."""
        return self.exec(container, "nc", "-w", str(timeout), address, str(port),
                         timeout=timeout + 20).returncode == 0

    def containers(self) -> list[str]:
        return self.docker("ps", "-aq", check=False, timeout=30).stdout.split()

    def rm_all(self) -> None:
        ids = self.containers()
        if ids:
            self.docker("rm", "-f", *ids, timeout=120)

    def agent_once(self) -> str:
        """``calico_lib.agent --once`` in the namespace (applies profile changes); stderr."""
        proc = run(["ip", "netns", "exec", self.ns, sys.executable, "-m", "calico_lib.agent",
                    "--once", "--datastore", self.datastore_url, "--hostname", self.hostname,
                    "--lock-file", self.lock_file, "--bird-config", "none"],
                   timeout=60, env=python_env())
        return proc.stderr

    def calicoctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """``calicoctl ARGS --datastore URL``, run in the lab's namespace."""
        return run(["ip", "netns", "exec", self.ns, sys.executable, "-m", "calico_lib.cli",
                    *args, "--datastore", self.datastore_url], timeout=60, check=check,
                   env=python_env())

    # ------------------------------------------------------------------ diagnostics

    def log(self, name: str = "plugin.log") -> str:
        """The whole text of one of the lab's logs (plugin.log, dockerd.log)."""
        with open(os.path.join(self.workdir, name), errors="replace") as handle:
            return handle.read()

    def tail(self, name: str, lines: int = 40) -> str:
        try:
            with open(os.path.join(self.workdir, name), errors="replace") as handle:
                text = handle.read().splitlines()[-lines:]
        except OSError:
            return f"----- {name}: none"
        return f"----- last lines of {name}\n" + "\n".join(text)

    def diagnostics(self) -> str:
        parts = [self.tail("plugin.log"), self.tail("dockerd.log", 20)]
        for argv in (["iptables-save"], ["ip", "-4", "route"], ["ip", "-6", "route"]):
            proc = run(["ip", "netns", "exec", self.ns, *argv], check=False)
            parts.append(f"----- {' '.join(argv)}\n{proc.stdout.rstrip()}")
        return "\n".join(parts)
