"""BGP with BIRD 2: route convergence and mesh scale, with real BIRD in network namespaces.

Everything runs in namespaces this script creates (a fabric bridge and one namespace per
host, from ``tests.netns.Lab``) and always deletes, BIRDs included (killed by their pid
files). Each host's BIRD has its own config, socket and pid file in a temporary directory:
nothing touches /etc/bird or /run/bird. The datastore is a SQLite file in that directory.

1. Convergence, on a 3-host mesh (host-a, host-b, host-c; IPv4 and IPv6). calico-agent runs
   as a daemon in host-a's namespace (``--debounce 0.02``; SQLite watches poll every 50 ms),
   with ``--bird-config``/``--bird-socket`` pointing at host-a's BIRD. Each run adds an
   endpoint on host-a (``add_endpoint(assign_addresses=True)``: its address claims a new
   block for host-a) and times, from the moment the write starts, until the block's
   aggregate route appears in host-c's kernel (``ip monitor route`` in host-c); then removes
   it (endpoint, addresses and host-a's block affinity) and times until the route is gone.
   Median of N runs (default 20), beside one bare ``birdc configure`` (no change) on host-a
   measured in the same run, the datastore write itself, and the agent's own reconcile time
   (from its log).
2. Mesh scale: for 2 (the baseline: one session per family), 3, 10 and 20 hosts, each
   with one IPv4 and one IPv6 block, configs rendered from the datastore (``render_bird`` +
   ``apply_bird``, as the agent does), all BIRDs started together: the time until every
   session on every host is Established, until every host's kernel holds every other host's
   blocks, and BIRD's memory (``birdc show memory``, the Total line) per host. Then 50
   hosts (``--reflected``) without the mesh, with 2 route reflectors (``--reflectors``)
   that every host peers with: sessions per host, time and memory beside the meshes (a
   full mesh of 50, 98 sessions a host, did not come up within 120 s on 2 cores).

Times are printed, never asserted. Target: a new endpoint is routed on remote hosts in
under 1 second.

Run as root: .venv/bin/python bench/bgp.py [--quick] [--runs N] [--sizes 3,10,20]
             [--reflectors R] [--reflected N]
"""

from __future__ import annotations

import argparse
import os
import queue
import re
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

import calico_lib  # noqa: E402
from calico_lib import Endpoint, IPPool, Node  # noqa: E402
from calico_lib.dataplane.bird import apply_bird  # noqa: E402
from calico_lib.render.bird import render_bird  # noqa: E402
from calico_lib.snapshot import load_snapshot  # noqa: E402
from tests import netns, processes  # noqa: E402
from tests.netns import Host, Lab  # noqa: E402

POOL4 = "10.65.0.0/16"
POOL6 = "fd00:65::/64"
TARGET = 1.0  # seconds: a new endpoint routed on remote hosts
ESTABLISHED_TIMEOUT = 120.0
ROUTE_TIMEOUT = 10.0


# ------------------------------------------------------------------------------ helpers


def sh(argv: list[str], timeout: float = 30.0) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: exit {proc.returncode}: {proc.stderr.strip()}")
    return proc.stdout


class Birds:
    """BIRD daemons in lab namespaces, each with its own files; ``stop`` kills them all."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.dir = Path(lab.workdir)

    def conf(self, host: Host) -> Path:
        return self.dir / f"{host.name}.conf"

    def sock(self, host: Host) -> Path:
        return self.dir / f"{host.name}.ctl"

    def start(self, host: Host) -> None:
        self.lab.start_bird(host.ns, self.conf(host), self.sock(host), wait=0)

    def birdc(self, host: Host, *args: str) -> str:
        return sh(["birdc", "-s", str(self.sock(host)), *args], timeout=15)

    def established(self, host: Host) -> tuple[int, int]:
        """(Established BGP sessions, all BGP sessions) of ``host``."""
        lines = [line.split() for line in self.birdc(host, "show", "protocols").splitlines()]
        bgp = [w for w in lines if len(w) > 1 and w[1] == "BGP"]
        return sum(1 for w in bgp if "Established" in w), len(bgp)

    def memory(self, host: Host) -> tuple[float, float]:
        """BIRD's Total memory line in kB: (effective, effective + overhead)."""
        for line in self.birdc(host, "show", "memory").splitlines():
            if line.startswith("Total:"):
                values = re.findall(r"([\d.]+)\s*(B|kB|MB|GB)", line)
                scale = {"B": 1 / 1024, "kB": 1.0, "MB": 1024.0, "GB": 1024.0 ** 2}
                kb = [float(v) * scale[u] for v, u in values]
                return kb[0], sum(kb)
        raise RuntimeError(f"no Total line in birdc show memory of {host.name}")

    def stop(self) -> None:
        self.lab.stop_birds()


class RouteMonitor:
    """``ip monitor route`` in a namespace; every line is time-stamped as it arrives."""

    def __init__(self, ns: str) -> None:
        self.proc = subprocess.Popen(["ip", "-n", ns, "monitor", "route"],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     text=True, bufsize=1)
        self.lines: queue.Queue[tuple[float, str]] = queue.Queue()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put((time.monotonic(), line.strip()))

    def wait(self, prefixes: list[str], deleted: bool,
             timeout: float = ROUTE_TIMEOUT) -> dict[str, float]:
        """Arrival time of the (``Deleted``) route line of exactly each of ``prefixes``."""
        deadline = time.monotonic() + timeout
        found: dict[str, float] = {}
        while len(found) < len(prefixes):
            try:
                stamp, line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                missing = sorted(set(prefixes) - set(found))
                raise RuntimeError(f"no {'deletion' if deleted else 'route'} of {missing} "
                                   f"within {timeout:.0f}s") from None
            words = line.split()
            is_deleted = bool(words) and words[0] == "Deleted"
            if is_deleted:
                words = words[1:]
            if words and words[0] in prefixes and is_deleted == deleted:
                found.setdefault(words[0], stamp)
        return found

    def stop(self) -> None:
        processes.stop(self.proc, timeout=5)


def wait_until(what: str, probe, timeout: float) -> float:  # noqa: ANN001
    start = time.monotonic()
    while not probe():
        if time.monotonic() - start > timeout:
            raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.05)
    return time.monotonic()


def ms(seconds: float) -> str:
    return f"{seconds * 1000:9.1f}"


@dataclass
class Series:
    label: str
    values: list[float] = field(default_factory=list)

    def row(self, baseline: float | None) -> str:
        v = sorted(self.values)
        p90 = v[min(len(v) - 1, int(round(0.9 * (len(v) - 1))))]
        ratio = f"{statistics.median(v) / baseline:8.1f}x" if baseline else f"{'':9}"
        return (f"{self.label:56} {ms(statistics.median(v))} {ms(p90)} {ms(v[0])} "
                f"{ms(v[-1])} {ratio}")


# ------------------------------------------------------------------------------ convergence


def convergence(runs: int) -> None:
    with Lab() as lab:
        birds = Birds(lab)
        agent: subprocess.Popen[bytes] | None = None
        monitor: RouteMonitor | None = None
        lab_client: list[calico_lib.Client] = []
        try:
            url = f"sqlite:///{lab.workdir}/calico.db"
            client = calico_lib.connect(url)
            lab_client.append(client)
            client.add_pool(IPPool(POOL4, block_size=26))
            client.add_pool(IPPool(POOL6, block_size=122))
            client.add_profile("web")
            a, b, c = hosts = [lab.host(name) for name in ("host-a", "host-b", "host-c")]
            for host in hosts:
                client.add_node(Node(host.name, host.ipv4, host.ipv6))
            bird_args = lambda h: ["--bird-config", str(birds.conf(h)),  # noqa: E731
                                   "--bird-socket", str(birds.sock(h))]
            for host in hosts:
                lab.agent(host, url, None, *bird_args(host))
                birds.start(host)
            start = time.monotonic()
            wait_until("the 3-host mesh to be Established", lambda: all(
                birds.established(h) == (4, 4) for h in hosts), ESTABLISHED_TIMEOUT)
            print(f"3-host mesh Established after {time.monotonic() - start:.1f}s")

            log = Path(lab.workdir) / "agent-a.log"
            env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
            agent = subprocess.Popen(
                ["ip", "netns", "exec", a.ns, sys.executable, "-m", "calico_lib.agent",
                 "--datastore", url, "--hostname", a.name,
                 "--lock-file", f"{lab.workdir}/a.lock", *bird_args(a),
                 "--debounce", "0.02", "--resync-interval", "600"],
                env=env, stdout=subprocess.DEVNULL, stderr=log.open("w"))
            wait_until("the agent's first reconcile", lambda: "revision" in log.read_text(),
                       30.0)
            monitor = RouteMonitor(c.ns)
            time.sleep(0.2)  # the monitor has subscribed

            configure = Series("bare `birdc configure` on host-a (no change): baseline")
            for _ in range(runs):
                t = time.perf_counter()
                birds.birdc(a, "configure")
                configure.values.append(time.perf_counter() - t)

            write = Series("datastore write (add_endpoint with IPAM)")
            up4 = Series("new endpoint -> its block route in host-c's kernel, v4")
            up6 = Series("new endpoint -> its block route in host-c's kernel, v6")
            down4 = Series("endpoint removed -> route gone from host-c, v4")
            down6 = Series("endpoint removed -> route gone from host-c, v6")
            for run in range(runs):
                ctr = lab.container(a, f"ctr{run}", ipv4=[f"10.65.{10 + run}.1"],
                                    ipv6=[f"fd00:65::{10 + run:x}:1"])
                block4, block6 = f"10.65.{10 + run}.0/26", f"fd00:65::{10 + run:x}:0/122"
                endpoint = Endpoint(id=ctr.id, host=a.name, interface=ctr.interface,
                                    mac=ctr.mac, ipv4_nets=ctr.ipv4, ipv6_nets=ctr.ipv6,
                                    profiles=["web"])
                t0 = time.monotonic()
                client.add_endpoint(endpoint, assign_addresses=True)
                write.values.append(time.monotonic() - t0)
                seen = monitor.wait([block4, block6], deleted=False)
                up4.values.append(seen[block4] - t0)
                up6.values.append(seen[block6] - t0)
                t0 = time.monotonic()
                client.remove_endpoint(a.name, ctr.id, release_addresses=True)
                client.ipam.release_host_affinities(a.name)
                seen = monitor.wait([block4, block6], deleted=True)
                down4.values.append(seen[block4] - t0)
                down6.values.append(seen[block6] - t0)

            add_rec = Series("agent reconcile on host-a for the add (its log)")
            del_rec = Series("agent reconcile on host-a for the removal (its log)")
            for line in log.read_text().splitlines():
                match = re.search(r"bird config written.*\(([\d.]+) ms\)$", line)
                if match:
                    removal = re.search(r"routes \+0 -[1-9]", line) is not None
                    (del_rec if removal else add_rec).values.append(
                        float(match.group(1)) / 1000)

            base = statistics.median(configure.values)
            print(f"\nconvergence: 3-host mesh, calico-agent daemon on host-a (--debounce "
                  f"0.02, SQLite), {runs} runs; times in ms")
            print(f"{'measurement':56} {'median':>9} {'p90':>9} {'min':>9} {'max':>9} "
                  f"{'/ birdc':>9}")
            print(configure.row(None))
            for series in (write, add_rec, up4, up6, del_rec, down4, down6):
                if not series.values:
                    continue
                print(series.row(base))
            worst = max(statistics.median(up4.values), statistics.median(up6.values))
            print(f"\ntarget: new endpoint routed on remote hosts in under {TARGET:.0f} s: "
                  f"median {worst * 1000:.0f} ms, slowest run "
                  f"{max(up4.values + up6.values) * 1000:.0f} ms -> "
                  f"{'met' if worst < TARGET else 'MISSED'}")
        finally:
            if monitor is not None:
                monitor.stop()
            if agent is not None:
                processes.stop(agent)
            birds.stop()
            for client in lab_client:
                client.close()


# ------------------------------------------------------------------------------ mesh scale


@dataclass
class MeshResult:
    hosts: int
    #: sessions of a client (of every host in a full mesh), and of a reflector
    sessions: int
    spread: float
    established: float
    routed: float
    memory: list[tuple[float, float]]
    reflectors: int = 0
    reflector_sessions: int = 0


def mesh(size: int, reflectors: int = 0) -> MeshResult:
    """``size`` hosts in a full mesh, or (``reflectors`` > 0) without the mesh, the first
    ``reflectors`` hosts being route reflectors (one cluster) that every host peers with,
    as a real deployment sets them with ``rr_cluster_id`` (inventory/example)."""
    with Lab() as lab:
        birds = Birds(lab)
        try:
            with calico_lib.connect(f"sqlite:///{lab.workdir}/calico.db") as client:
                client.add_pool(IPPool(POOL4, block_size=26))
                client.add_pool(IPPool(POOL6, block_size=122))
                if reflectors:
                    client.set_bgp_config(node_to_node_mesh=False)
                hosts = [lab.host(f"h{i}") for i in range(1, size + 1)]
                for i, host in enumerate(hosts):
                    client.add_node(Node(host.name, host.ipv4, host.ipv6,
                                         rr_cluster_id="1.0.0.1" if i < reflectors else None))
                    client.ipam.assign_ip(f"10.65.{host.index}.1", f"ep-{host.name}",
                                          host.name)
                    client.ipam.assign_ip(f"fd00:65::{host.index:x}:1", f"ep-{host.name}",
                                          host.name)
                for host in hosts:
                    text = render_bird(load_snapshot(client.store, host.name))
                    apply_bird(text, str(birds.conf(host)), str(birds.sock(host)))
            full = 2 * (size - 1)  # a reflector's sessions, and everyone's in a mesh
            client_sessions = 2 * reflectors if reflectors else full
            wanted = [full if i < reflectors else client_sessions for i in range(size)]
            start = time.monotonic()
            for host in hosts:
                birds.start(host)
            spread = time.monotonic() - start
            what = (f"{size} hosts with {reflectors} reflectors" if reflectors
                    else f"the {size}-host mesh")
            established = wait_until(f"{what} to be Established", lambda: all(
                birds.established(h) == (n, n) for h, n in zip(hosts, wanted, strict=True)),
                ESTABLISHED_TIMEOUT + 4 * size) - start
            pending = set(range(size))

            def all_routed() -> bool:
                for i in sorted(pending):
                    ns = hosts[i].ns
                    count = sum(len(lab.ip(ns, family, "route", "show", "proto", "bird")
                                    .splitlines()) for family in ("-4", "-6"))
                    if count >= full:  # one v4 and one v6 block of every other host
                        pending.discard(i)
                return not pending
            routed = wait_until(f"every block route on every host of {what}", all_routed,
                                ROUTE_TIMEOUT + ESTABLISHED_TIMEOUT) - start
            memory = [birds.memory(h) for h in hosts]
            return MeshResult(size, client_sessions, spread, established, routed, memory,
                              reflectors, full if reflectors else 0)
        finally:
            birds.stop()


def print_mesh(results: list[MeshResult]) -> None:
    base = results[0]
    print("\nmesh scale: all BIRDs started together (IPv4 + IPv6 sessions, one v4 and one v6 "
          "block per host); seconds from the first start")
    print(f"{'hosts':>12} {'sessions/host':>13} {'all started':>11} {'all Established':>15} "
          f"{'/ base':>7} {'all routes':>10} {'BIRD kB/host median':>19} {'max':>7} "
          f"{'with overhead':>13}")
    for r in results:
        effective = [m[0] for m in r.memory]
        total = [m[1] for m in r.memory]
        label = f"{r.hosts}" + (" (baseline)" if r is base else "") + (
            f" +{r.reflectors} RR" if r.reflectors else "")
        print(f"{label:>12} {r.sessions:>13} {r.spread:11.2f} {r.established:15.2f} "
              f"{r.established / base.established:6.1f}x {r.routed:10.2f} "
              f"{statistics.median(effective):19.1f} {max(effective):7.1f} "
              f"{statistics.median(total):13.1f}")
    print("(BIRD memory: the Total line of `birdc show memory`, effective, and effective + "
          "overhead; with route reflectors (N +R RR: no mesh, the first R hosts reflect), "
          "sessions/host is a client's, a reflector has one per other host)")


# ------------------------------------------------------------------------------ main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="a smaller run: 5 convergence runs, meshes of 3 and 5 hosts")
    parser.add_argument("--runs", type=int, help="convergence runs (default 20)")
    parser.add_argument("--sizes", help="mesh sizes, comma-separated (default 3,10,20)")
    parser.add_argument("--reflected", type=int, default=50,
                        help="hosts in the route-reflector run (default 50)")
    parser.add_argument("--reflectors", type=int, default=2,
                        help="route reflectors in that run (default 2; 0: no such run)")
    args = parser.parse_args(argv)
    args.runs = args.runs or (5 if args.quick else 20)
    sizes = args.sizes or ("3,5" if args.quick else "3,10,20")
    try:
        args.sizes = [int(s) for s in sizes.split(",")]
    except ValueError:
        parser.error("--sizes: use numbers such as 3,10,20")
    if args.runs < 1 or args.runs > 200 or any(not 2 <= s <= 100 for s in args.sizes):
        parser.error("--runs must be 1-200 and mesh sizes 2-100")
    if args.reflectors and not 0 < args.reflectors < args.reflected <= 100:
        parser.error("--reflectors must be fewer than --reflected, which must be at most 100")
    return args


def _exit_on_sigterm(signum: int, frame: object) -> None:
    """SIGTERM unwinds like Ctrl-C, so every finally (BIRDs, namespaces) still runs."""
    sys.exit(128 + signum)


def main() -> int:
    args = parse_args()
    reason = netns.missing_requirements()
    if reason is None and not (shutil.which("bird") and shutil.which("birdc")):
        reason = "bird and birdc are needed (apt-get install bird2)"
    if reason:
        print(f"bench/bgp.py: {reason}", file=sys.stderr)
        return 1
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        convergence(args.runs)
        results = [mesh(size) for size in [2, *args.sizes]]
        if args.reflectors:
            results.append(mesh(args.reflected, args.reflectors))
        print_mesh(results)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
