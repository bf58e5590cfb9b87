"""A small network-namespace lab for packet-level tests of the agent.

    with Lab() as lab:
        host = lab.host("host1")                    # uplink 198.18.0.2 to the "outside"
        a = lab.container(host, "a", ipv4=["10.65.1.1"], ipv6=["fd00:65::1:1"])
        b = lab.container(host, "b", ipv4=["10.65.1.2"])
        ...register a and b as endpoints, then:
        lab.agent(host, url)                         # calico-agent --once in the host namespace
        assert lab.ping(a.ns, b.ipv4[0])
        assert lab.tcp_ok(a.ns, b.ns, b.ipv4[0], 8080)

Topology. One "outside" namespace (the internet) holds a bridge with 198.18.0.254/24 and
2001:db8:ff::fe/64. Every host namespace is joined to it by a veth (``eth0`` on the host side)
with 198.18.0.N/24 and 2001:db8:ff::N/64 (N = host index + 1) and default routes via the
outside. ``lab.host(name, segment=S)`` (S > 0) puts a host on a subnet of its own instead,
198.18.S.0/24 and 2001:db8:ff:S::/64 (bridge brS in the outside namespace, which holds .254
and ::fe there): the outside namespace then forwards between the segments, a router that
runs no BGP. A container namespace is joined to its host by a veth named like a Calico workload
interface: ``cali`` + the first 11 hex characters of its endpoint id on the host side (MAC
ee:ee:ee:ee:ee:ee), ``eth0`` in the container, with /32 and /128 addresses and the Calico
gateway routes (169.254.1.1 by proxy ARP, the host veth's link-local address for IPv6). The
lab adds nothing the agent is meant to add: no routes to containers, no proxy ARP, no
forwarding. IPv6 duplicate address detection is off in every lab namespace, so link-local
addresses are usable at once.

Every name starts with ``calt-`` and a random hex tag; ``Lab.__exit__`` stops every process the
lab started (BIRDs from ``Lab.start_bird`` first, by their pid files) and deletes every
namespace it made (their veths, iptables rules, ipsets and conntrack tables go with them), even
when the test failed.

Also here: ``require()`` (a test fails, naming what is missing, where the lab cannot run),
``namespace()`` (one bare namespace, deleted afterwards) and ``inside()`` (this thread, and
what it starts, in a namespace for a while). The ``lab`` fixture in tests/conftest.py is a
``Lab`` for one test.
"""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.processes import kill_by_pidfile

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

HOST_VETH_MAC = "ee:ee:ee:ee:ee:ee"
GATEWAY4 = "169.254.1.1"
GATEWAY6 = "fe80::ecee:eeff:feee:eeee"  # link-local of a veth with HOST_VETH_MAC
OUTSIDE4 = "198.18.0.254"
OUTSIDE6 = "2001:db8:ff::fe"
UPLINK = "eth0"

# A TCP listener: prints READY, then the peer address of every connection (and sends it
# back to the peer); exits when its stdin closes.
_LISTENER = r"""
import select, socket, sys
addr, port = sys.argv[1], int(sys.argv[2])
s = socket.socket(socket.AF_INET6 if ":" in addr else socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((addr, port))
s.listen(64)
print("READY", flush=True)
while True:
    ready, _, _ = select.select([s, sys.stdin], [], [])
    if sys.stdin in ready and not sys.stdin.buffer.read1(1):
        break
    if s in ready:
        conn, peer = s.accept()
        print(peer[0], flush=True)
        try:
            conn.sendall(peer[0].encode() + b"\n")
        except OSError:
            pass
        conn.close()
"""

# A TCP client: prints what the listener sent back (the address it saw), exit 1 on failure.
_CONNECT = r"""
import socket, sys
addr, port, timeout = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
try:
    with socket.create_connection((addr, port), timeout=timeout) as s:
        data = s.recv(256)
except OSError as exc:
    print(f"connect {addr} port {port}: {exc}", file=sys.stderr)
    sys.exit(1)
print(data.decode().strip())
"""

# Records the source address of every ICMP/ICMPv6 echo request delivered to this namespace;
# on stdin EOF drains what is queued, prints it and exits.
_ECHO_SINK = r"""
import select, socket, sys
s4 = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
s6 = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
def drain(sock, block):
    sock.setblocking(block)
    while True:
        try:
            data, peer = sock.recvfrom(65535)
        except BlockingIOError:
            return
        if sock is s4:
            kind = data[(data[0] & 15) * 4]
            request = kind == 8
        else:
            request = data[0] == 128
        if request:
            print(peer[0], flush=True)
        if block:
            return
print("READY", flush=True)
while True:
    ready, _, _ = select.select([s4, s6, sys.stdin], [], [])
    for sock in (s4, s6):
        if sock in ready:
            drain(sock, False)
    if sys.stdin in ready and not sys.stdin.buffer.read1(1):
        break
drain(s4, False)
drain(s6, False)
"""


class CommandFailed(AssertionError):
    """A lab command exited non-zero; the message names the command, its code and output."""


def missing_requirements(*tools: str) -> str | None:
    """Why the lab (and ``tools`` on PATH besides) cannot run here, or None."""
    if os.geteuid() != 0:
        return "network-namespace tests need root"
    for tool in ("ip", "ping", "iptables-save", "ip6tables-save", "ipset", *tools):
        if shutil.which(tool) is None:
            hint = " (apt-get install bird2)" if tool.startswith("bird") else ""
            return f"network-namespace tests need {tool} on PATH{hint}"
    return None


def require(*tools: str) -> None:
    """Fail the test, naming what is missing, when the lab (and ``tools``) cannot run."""
    import pytest  # only tests call this: the benchmarks use the lab without pytest

    reason = missing_requirements(*tools)
    if reason:
        pytest.fail(reason, pytrace=False)


@contextmanager
def namespace(prefix: str = "calt") -> Iterator[str]:
    """A bare network namespace ``<prefix>-<random hex>`` (nothing in it, not even lo up),
    deleted afterwards with everything in it."""
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    _run(["ip", "netns", "add", name])
    try:
        yield name
    finally:
        delete_namespace(name)


def delete_namespace(ns: str) -> None:
    """Kill what still runs in ``ns`` (SIGKILL: only its owner starts processes there), then
    delete it: its veths, bridges, iptables rules, ipsets and conntrack table go with it."""
    for pid in _run(["ip", "netns", "pids", ns], check=False).stdout.split():
        try:
            os.kill(int(pid), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass
    _run(["ip", "netns", "del", ns], check=False)


@contextmanager
def inside(ns: str) -> Iterator[None]:
    """Run this thread (the sockets it makes, the commands it starts) in namespace ``ns``
    for a while."""
    from pyroute2 import netns as pyroute_netns

    pyroute_netns.pushns(ns)
    try:
        yield
    finally:
        pyroute_netns.popns()


def _run(argv: Sequence[str], timeout: float = 10.0, check: bool = True,
         env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    try:
        proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout,
                              env=env, check=False)
    except subprocess.TimeoutExpired as exc:
        raise CommandFailed(f"{' '.join(argv)}: timed out after {timeout}s; stderr: "
                            f"{exc.stderr!r}") from None
    if check and proc.returncode != 0:
        raise CommandFailed(f"{' '.join(argv)}: exit {proc.returncode}\nstdout: "
                            f"{proc.stdout.strip()}\nstderr: {proc.stderr.strip()}")
    return proc


def _is_v6(addr: str) -> bool:
    return ":" in addr


@dataclass
class Host:
    name: str        # the host name (datastore and --hostname)
    ns: str          # its network namespace
    index: int       # 1-based
    ipv4: str        # uplink address, 198.18.S.(index + 1) (segment S, 0 by default)
    ipv6: str        # uplink address, 2001:db8:ff:S::(index + 1)
    uplink: str = UPLINK
    containers: list[Container] = field(default_factory=list)
    subnet4: str = "198.18.0.0/24"     # the uplink's subnets
    subnet6: str = "2001:db8:ff::/64"
    gateway4: str = OUTSIDE4           # the outside namespace's address on them
    gateway6: str = OUTSIDE6


@dataclass
class Container:
    id: str          # endpoint id (uuid4 hex)
    name: str
    ns: str          # its network namespace
    host: Host
    interface: str   # host-side veth, "cali" + id[:11]
    mac: str         # eth0's MAC
    ipv4: list[str]
    ipv6: list[str]

    @property
    def namespace(self) -> str:
        return self.ns

    @property
    def addresses(self) -> list[str]:
        return self.ipv4 + self.ipv6


class Proc:
    """A background process in a namespace, reading its stdout without blocking."""

    def __init__(self, lab: Lab, argv: list[str], what: str) -> None:
        self.lab = lab
        self.what = what
        self.popen = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE)
        self._buffer = b""
        lab._procs.append(self)

    def wait_for(self, line: str, timeout: float = 10.0) -> None:
        """Wait until the process printed ``line``."""
        deadline = time.monotonic() + timeout
        assert self.popen.stdout is not None
        fd = self.popen.stdout.fileno()
        while line.encode() + b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.popen.poll() is not None:
                self.stop()
                raise CommandFailed(f"{self.what}: did not print {line!r} (exit "
                                    f"{self.popen.returncode}); stderr: {self.stderr.strip()}")
            ready, _, _ = select.select([fd], [], [], min(remaining, 0.2))
            if ready:
                self._buffer += os.read(fd, 65536)

    def stop(self, timeout: float = 3.0) -> list[str]:
        """Close stdin (the scripts exit on EOF; others are terminated), return stdout lines."""
        self.stderr = ""
        try:  # communicate() closes stdin first
            out, err = self.popen.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            out, err = self.popen.communicate()
        self.stderr = err.decode(errors="replace")
        if self in self.lab._procs:
            self.lab._procs.remove(self)
        self._buffer += out
        return self._buffer.decode(errors="replace").splitlines()

    def __enter__(self) -> Proc:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Listener(Proc):
    """A TCP listener; ``stop()`` returns the peer addresses it saw (after READY)."""

    def stop(self, timeout: float = 3.0) -> list[str]:
        lines = super().stop(timeout)
        return lines[lines.index("READY") + 1:] if "READY" in lines else []


class EchoSink(Listener):
    """Records the source address of every echo request delivered to its namespace."""


class Lab:
    def __init__(self) -> None:
        self.tag = "calt-" + uuid.uuid4().hex[:6]
        self.outside: str | None = None
        self.hosts: list[Host] = []
        self.containers: list[Container] = []
        self._namespaces: list[str] = []
        self._procs: list[Proc] = []
        self._birds: list[Path] = []  # pid files of the BIRDs started
        self.workdir = ""

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> Lab:
        self.workdir = tempfile.mkdtemp(prefix=f"{self.tag}-")
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.stop_birds()
        for proc in list(self._procs):
            try:
                proc.stop(timeout=1.0)
            except Exception:  # noqa: BLE001 - cleanup must go on
                pass
        for ns in reversed(self._namespaces):
            delete_namespace(ns)  # anything still running there was started by this lab
        self._namespaces.clear()
        if self.workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def _netns(self, suffix: str) -> str:
        ns = f"{self.tag}-{suffix}"
        _run(["ip", "netns", "add", ns])
        self._namespaces.append(ns)
        self.ip(ns, "link", "set", "lo", "up")
        self.sysctl(ns, "net.ipv6.conf.all.accept_dad", "0")
        self.sysctl(ns, "net.ipv6.conf.default.accept_dad", "0")
        return ns

    # ------------------------------------------------------------------ topology

    def namespace(self, name: str) -> str:
        """A namespace of the lab with lo up and nothing else (deleted with the lab)."""
        return self._netns(name)

    def _ensure_outside(self) -> str:
        if self.outside is None:
            ns = self._netns("out")
            self.outside = ns
            self.ip(ns, "link", "add", "br0", "type", "bridge")
            self.ip(ns, "addr", "add", f"{OUTSIDE4}/24", "dev", "br0")
            self.ip(ns, "addr", "add", f"{OUTSIDE6}/64", "dev", "br0", "nodad")
            self.ip(ns, "link", "set", "br0", "up")
        return self.outside

    def _ensure_segment(self, segment: int) -> tuple[str, str, str]:
        """Bridge brS in the outside namespace with .254 and ::fe on segment S (> 0), and
        forwarding on there: (bridge, IPv4 gateway, IPv6 gateway)."""
        outside = self._ensure_outside()
        bridge = f"br{segment}"
        gateway4, gateway6 = f"198.18.{segment}.254", f"2001:db8:ff:{segment:x}::fe"
        if not self.ip(outside, "link", "show", "dev", bridge, check=False):
            self.ip(outside, "link", "add", bridge, "type", "bridge")
            self.ip(outside, "addr", "add", f"{gateway4}/24", "dev", bridge)
            self.ip(outside, "addr", "add", f"{gateway6}/64", "dev", bridge, "nodad")
            self.ip(outside, "link", "set", bridge, "up")
            self.sysctl(outside, "net.ipv4.ip_forward", "1")
            self.sysctl(outside, "net.ipv6.conf.all.forwarding", "1")
        return bridge, gateway4, gateway6

    def host(self, name: str, segment: int = 0) -> Host:
        """A host namespace with lo up and an uplink to the outside namespace; on segment
        ``segment`` > 0, on a subnet of its own behind the outside namespace (a router)."""
        outside = self._ensure_outside()
        index = len(self.hosts) + 1
        ns = self._netns(name)
        if segment:
            bridge, gateway4, gateway6 = self._ensure_segment(segment)
            host = Host(name=name, ns=ns, index=index, ipv4=f"198.18.{segment}.{index + 1}",
                        ipv6=f"2001:db8:ff:{segment:x}::{index + 1:x}",
                        subnet4=f"198.18.{segment}.0/24",
                        subnet6=f"2001:db8:ff:{segment:x}::/64",
                        gateway4=gateway4, gateway6=gateway6)
        else:
            bridge = "br0"
            host = Host(name=name, ns=ns, index=index, ipv4=f"198.18.0.{index + 1}",
                        ipv6=f"2001:db8:ff::{index + 1:x}")
        port = f"up{index}"
        self.ip(outside, "link", "add", port, "type", "veth", "peer", "name", UPLINK,
                "netns", ns)
        self.ip(outside, "link", "set", port, "master", bridge, "up")
        self.ip(ns, "addr", "add", f"{host.ipv4}/24", "dev", UPLINK)
        self.ip(ns, "addr", "add", f"{host.ipv6}/64", "dev", UPLINK, "nodad")
        self.ip(ns, "link", "set", UPLINK, "up")
        self.ip(ns, "route", "add", "default", "via", host.gateway4, "dev", UPLINK)
        self.ip(ns, "-6", "route", "add", "default", "via", host.gateway6, "dev", UPLINK)
        self.hosts.append(host)
        return host

    def container(self, host: Host, name: str, ipv4: Sequence[str] = (),
                  ipv6: Sequence[str] = (), mac: str | None = None) -> Container:
        """A container namespace behind a ``cali…`` veth on ``host`` (nothing registered)."""
        endpoint_id = uuid.uuid4().hex
        interface = "cali" + endpoint_id[:11]
        ns = self._netns(name)
        self.ip(host.ns, "link", "add", interface, "type", "veth", "peer", "name", "eth0",
                "netns", ns)
        self.ip(host.ns, "link", "set", interface, "address", HOST_VETH_MAC)
        if mac:
            self.ip(ns, "link", "set", "eth0", "address", mac)
        self.ip(host.ns, "link", "set", interface, "up")
        self.ip(ns, "link", "set", "eth0", "up")
        for addr in ipv4:
            self.ip(ns, "addr", "add", f"{addr}/32", "dev", "eth0")
        for addr in ipv6:
            self.ip(ns, "addr", "add", f"{addr}/128", "dev", "eth0", "nodad")
        if ipv4:
            self.ip(ns, "route", "add", GATEWAY4, "dev", "eth0", "scope", "link")
            self.ip(ns, "route", "add", "default", "via", GATEWAY4, "dev", "eth0")
        if ipv6:
            self.ip(ns, "-6", "route", "add", "default", "via", GATEWAY6, "dev", "eth0")
        container = Container(id=endpoint_id, name=name, ns=ns, host=host,
                              interface=interface, mac=self.mac(ns, "eth0"),
                              ipv4=list(ipv4), ipv6=list(ipv6))
        host.containers.append(container)
        self.containers.append(container)
        return container

    # ------------------------------------------------------------------ commands

    def exec(self, ns: str, *argv: str, timeout: float = 10.0,
             check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` in namespace ``ns``; raises CommandFailed on a non-zero exit."""
        return _run(["ip", "netns", "exec", ns, *argv], timeout=timeout, check=check)

    def ip(self, ns: str, *args: str, check: bool = True) -> str:
        """``ip -n ns ARGS`` (faster than exec: no mount namespace)."""
        return _run(["ip", "-n", ns, *args], check=check).stdout

    def sysctl(self, ns: str, key: str, value: str | None = None) -> str:
        path = "/proc/sys/" + key.replace(".", "/")
        if value is None:
            return self.exec(ns, "cat", path).stdout.strip()
        self.exec(ns, "sh", "-c", f"echo {value} > {path}")
        return value

    def mac(self, ns: str, dev: str) -> str:
        return json.loads(self.ip(ns, "-j", "link", "show", "dev", dev))[0]["address"]

    def spawn(self, ns: str, argv: Sequence[str], what: str | None = None) -> Proc:
        """A background process in ``ns``, stopped by ``Lab.close`` at the latest."""
        return Proc(self, ["ip", "netns", "exec", ns, *argv], what or " ".join(argv))

    def start_bird(self, ns: str, conf: Path, sock: Path, pidfile: Path | None = None,
                   *extra: str, wait: float = 5.0) -> Path:
        """``bird -c CONF -s SOCK -P PIDFILE EXTRA`` in ``ns`` (it goes to the background),
        then wait up to ``wait`` seconds (0: not at all) for its socket; its pid file
        (default: beside the config), by which ``stop_birds`` and ``close`` stop it."""
        pidfile = pidfile or conf.with_suffix(".pid")
        self._birds.append(pidfile)
        self.exec(ns, "bird", "-c", str(conf), "-s", str(sock), "-P", str(pidfile), *extra)
        deadline = time.monotonic() + wait
        while wait and not sock.exists():
            if time.monotonic() > deadline:
                raise CommandFailed(f"BIRD's socket {sock} did not appear within {wait:.0f}s")
            time.sleep(0.05)
        return pidfile

    def stop_birds(self) -> None:
        """Stop every BIRD ``start_bird`` started (SIGTERM, SIGKILL after 5 s)."""
        for pidfile in self._birds:
            kill_by_pidfile(pidfile)
        self._birds.clear()

    def _python(self, ns: str, script: str, *args: str, cls: type[Proc] = Proc,
                what: str) -> Any:
        argv = ["ip", "netns", "exec", ns, sys.executable, "-I", "-S", "-c", script, *args]
        return cls(self, argv, what)

    # ------------------------------------------------------------------ probes

    def ping(self, src_ns: str, dst_addr: str, source: str | None = None,
             count: int = 2, wait: float = 1.0) -> bool:
        """True when at least one echo reply came back (IPv4 or IPv6)."""
        argv = ["ping", "-n", "-q", "-c", str(count), "-i", "0.2", "-W", str(wait)]
        if _is_v6(dst_addr):
            argv.insert(1, "-6")
        if source:
            argv += ["-I", source]
        proc = self.exec(src_ns, *argv, dst_addr, timeout=count * 0.2 + wait + 5, check=False)
        return proc.returncode == 0

    def listen(self, ns: str, addr: str, port: int) -> Listener:
        """A TCP listener on ``addr``:``port`` in ``ns``, ready when this returns.

        Use as a context manager, or call ``stop()``: it returns the peers it accepted.
        """
        listener = self._python(ns, _LISTENER, addr, str(port), cls=Listener,
                                what=f"listener {addr} port {port} in {ns}")
        listener.wait_for("READY")
        return listener

    def connect(self, src_ns: str, addr: str, port: int, timeout: float = 1.0) -> str | None:
        """Connect from ``src_ns``; the address the listener saw as the peer, or None."""
        proc = self.exec(src_ns, sys.executable, "-I", "-S", "-c", _CONNECT, addr, str(port),
                         str(timeout), timeout=timeout + 10, check=False)
        return proc.stdout.strip() if proc.returncode == 0 else None

    def tcp_peer(self, src_ns: str, dst_ns: str, dst_addr: str, port: int,
                 timeout: float = 1.0) -> str | None:
        """Listen in ``dst_ns``, connect from ``src_ns``: the peer address seen, or None."""
        with self.listen(dst_ns, dst_addr, port):
            return self.connect(src_ns, dst_addr, port, timeout)

    def tcp_ok(self, src_ns: str, dst_ns: str, dst_addr: str, port: int,
               timeout: float = 1.0) -> bool:
        return self.tcp_peer(src_ns, dst_ns, dst_addr, port, timeout) is not None

    def echo_sink(self, ns: str) -> EchoSink:
        """Records echo requests delivered to ``ns``; ``stop()`` returns their sources."""
        sink = self._python(ns, _ECHO_SINK, cls=EchoSink, what=f"echo sink in {ns}")
        sink.wait_for("READY")
        return sink

    # ------------------------------------------------------------------ the agent

    def agent(self, host: Host | str, datastore_url: str, hostname: str | None = None,
              *extra: str, timeout: float = 60.0) -> str:
        """``calico_lib.agent --once`` in the host's namespace; asserts exit 0, returns stderr."""
        ns = host.ns if isinstance(host, Host) else host
        if hostname is None:
            if not isinstance(host, Host):
                raise ValueError("hostname is required when host is a namespace name")
            hostname = host.name
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (REPO_ROOT, env.get("PYTHONPATH")) if p)
        # BIRD's files in the lab's folder unless given: `ip netns exec` does not isolate
        # /etc or /run, so the defaults would rewrite this machine's BIRD config
        bird = [] if "--bird-config" in extra else [
            "--bird-config", os.path.join(self.workdir, f"{ns}-bird.conf")]
        bird += [] if "--bird-socket" in extra else [
            "--bird-socket", os.path.join(self.workdir, f"{ns}-bird.ctl")]
        argv = ["ip", "netns", "exec", ns, sys.executable, "-m", "calico_lib.agent", "--once",
                "--datastore", datastore_url, "--hostname", hostname,
                "--lock-file", os.path.join(self.workdir, f"{ns}.lock"), *bird, *extra]
        proc = _run(argv, timeout=timeout, check=False, env=env)
        if proc.returncode != 0:
            raise AssertionError(f"agent --once in {ns} exited {proc.returncode}\n"
                                 f"stderr:\n{proc.stderr}\nstdout:\n{proc.stdout}")
        return proc.stderr

    # ------------------------------------------------------------------ state

    def iptables_save(self, ns: str, v6: bool = False, table: str | None = None,
                      counters: bool = False) -> str:
        argv = ["ip6tables-save" if v6 else "iptables-save"]
        if table:
            argv += ["-t", table]
        if counters:
            argv.append("-c")
        return self.exec(ns, *argv).stdout

    def routes(self, ns: str, v6: bool = False, *selector: str) -> str:
        return self.ip(ns, "-6" if v6 else "-4", "route", "show", *selector)

    def ipset_list(self, ns: str) -> str:
        return self.exec(ns, "ipset", "list").stdout

    def ipset_save(self, ns: str) -> str:
        return self.exec(ns, "ipset", "save").stdout

    def ipset_members(self, ns: str, prefix: str = "cali") -> dict[str, set[str]]:
        """Set name -> members, for the sets whose name starts with ``prefix``."""
        sets: dict[str, set[str]] = {}
        for line in self.ipset_save(ns).splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[0] == "create" and parts[1].startswith(prefix):
                sets[parts[1]] = set()
            elif len(parts) >= 3 and parts[0] == "add" and parts[1] in sets:
                sets[parts[1]].add(parts[2])
        return sets

    def diagnostics(self, host: Host) -> str:
        """Everything useful for a failure message about ``host``'s dataplane."""
        parts = []
        for title, text in (
                ("iptables-save", self.iptables_save(host.ns)),
                ("ip6tables-save", self.iptables_save(host.ns, v6=True)),
                ("ip -4 route", self.routes(host.ns)),
                ("ip -6 route", self.routes(host.ns, True)),
                ("ipset save", self.ipset_save(host.ns))):
            parts.append(f"----- {title} ({host.ns})\n{text.rstrip()}")
        return "\n".join(parts)


# ---------------------------------------------------------------------- save-text helpers

_COUNTER = re.compile(r"\[\d+:\d+\]")


def normalize_save(text: str) -> str:
    """iptables-save text without comments/timestamps and packet counters."""
    out = []
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        out.append(_COUNTER.sub("", line).rstrip())
    return "\n".join(out) + "\n"


def chains(text: str) -> dict[str, list[str]]:
    """``table/chain`` -> its rules (``-A`` lines, counters stripped) from iptables-save text."""
    result: dict[str, list[str]] = {}
    table = ""
    for raw in text.splitlines():
        line = _COUNTER.sub("", raw).strip()
        if line.startswith("*"):
            table = line[1:]
        elif line.startswith(":"):
            result.setdefault(f"{table}/{line[1:].split()[0]}", [])
        elif line.startswith("-A "):
            result.setdefault(f"{table}/{line.split()[1]}", []).append(line)
    return result


def rule_counters(text: str) -> dict[tuple[str, str, int], tuple[int, str]]:
    """For ``iptables-save -c`` text: (table, rule text, occurrence) -> (packets, rule)."""
    out: dict[tuple[str, str, int], tuple[int, str]] = {}
    seen: dict[tuple[str, str], int] = {}
    table = ""
    for line in text.splitlines():
        if line.startswith("*"):
            table = line[1:]
            continue
        match = re.match(r"\[(\d+):(\d+)\] (-A .*)", line)
        if match:
            rule = match.group(3)
            n = seen.get((table, rule), 0)
            seen[(table, rule)] = n + 1
            out[(table, rule, n)] = (int(match.group(1)), rule)
    return out
