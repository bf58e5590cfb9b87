"""Data path: TCP throughput and request/response latency between containers on two hosts.

Everything runs in network namespaces this script creates (names ``calb-<tag>-…``) and
always deletes, with every process it started, on success, failure, Ctrl-C or SIGTERM;
nothing is done in the machine's own namespace except creating and deleting those
namespaces. The topology of every scenario::

    ca ── host-a ══ fab0 (veth: 198.51.100.1/24 <-> .2, 2001:db8:b::1/64 <-> ::2) ══ host-b ── cb

Two host namespaces joined by one veth pair (the fabric; each host's default route points
at the other), and a container namespace behind each host. Each scenario gets this same
topology built afresh (same names, addresses and MACs) and deleted after it, so that none
inherits another's state: iptables-nft keeps a table's empty base chains hooked into
FORWARD after a flush, and there is no ``nft`` here to delete them, nor conntrack entries,
neighbour caches or sysctls left by the previous scenario. The scenarios:

``calico``  Calico routed, with policy: each container behind a ``cali…`` veth (MAC
            ee:ee:ee:ee:ee:ee, /32 and /128, gateway 169.254.1.1 by proxy ARP and the veth's
            link-local address), and the real library: ``apply_snapshot`` runs inside each
            host namespace (chains, ipsets, /32 routes, sysctls; a child process of this
            script, ``--apply``) with a synthetic snapshot: 100 profiles holding 5,000 rules
            in the mix of bench/policy.py, 1,000 other endpoints (500 per host, 1-2 profiles
            each, whose veths do not exist), IPv4 pool with NAT outgoing. The pair's two
            endpoints carry all 100 profiles and then their own one, whose rule (allow TCP
            to the bench ports from the pair's tag) is the only one that lets them talk, and
            their interfaces sit in the dispatch trees among the others: every rule the 100
            profiles hold is made unable to match the pair's traffic, so a new flow's first
            packet walks down a dispatch tree and every profile's rules (outbound on host-a,
            inbound on host-b) before the pair's rule. Later packets of the flow are
            accepted as ESTABLISHED near the top of cali-FORWARD, as in Calico. The hosts
            route each other's container /32 and /128 over the fabric with static routes.
            (apply_snapshot's conntrack flush, one ``conntrack -D`` per address and
            direction, is skipped: the namespaces are new and have no flows to delete.)
``bare``    Bare routed: the same containers, routes and sysctls (the library's
            ``apply_routes`` of the same snapshot), no iptables rules and no ipsets.
``veth``    Raw veth: host-a to host-b over the fabric itself, no containers.
``nat``     Docker-bridge-style NAT: a bridge ``docker0`` (172.17.0.1/16, fd00:17::1/64) in
            each host, each container on it at 172.17.0.2 / fd00:17::2, and Docker
            20.10's iptables rules (FORWARD policy DROP, DOCKER-USER and DOCKER-ISOLATION
            chains, nat PREROUTING to DOCKER, POSTROUTING MASQUERADE of the bridge subnet,
            and on host-b, as ``docker run -p 15201:5201 -p 17777:7777`` makes them, a DNAT
            of each host port to the container and its FORWARD accept). The client connects
            to host-b's fabric address and host port. IPv6 uses the same rules through
            ip6tables, as Docker >= 27 does with ip6tables on (20.10 needs it switched on).
``vxlan``   VXLAN overlay: the bare-routed containers, but the hosts route each other's
            container addresses through a point-to-point VXLAN device (id 4 over the IPv4
            fabric for IPv4, id 6 over the IPv6 fabric for IPv6, dstport 4789, devices
            10.97.0.x/24 and fd00:97::x/64), as Calico's and flannel's VXLAN modes do; the
            containers' routes carry the device's MTU (1450, 1430). No policy.
``calico-vxlan``  Calico with a VXLAN pool: ``calico``'s snapshot and policy, its IPv4 pool
            ``vxlan_mode: always``: the library makes each host's ``vxlan.calico`` device,
            its static neighbour and FDB entries and the routes through it (every container
            address a /32 to its host's tunnel address); IPv6 is routed natively as in
            ``calico`` (VXLAN pools are IPv4 only). The containers' IPv4 routes carry
            MTU 1450.

Measured between the two containers (host to host for ``veth``), for IPv4 and IPv6:
  * iperf3 TCP throughput, 1 stream and 4 streams (``-t DURATION -O 1``: the first second
    is omitted; the figure is iperf3's ``sum_received``);
  * latency: a Python client sends 1 byte and waits for the 1-byte echo of a Python server,
    on one TCP connection with TCP_NODELAY (after 200 unmeasured round trips): median and
    99th percentile; and the time to open a new connection and do one round trip (median
    over new connections): the only figure in which a new flow's walk through the policy
    shows. A Python client adds some tens of microseconds to every round trip, the same in
    every scenario, so latency ratios are closer to 1 than the kernel's own would be.
Each figure is the median of ``--runs`` runs. The scenarios run in rounds (every scenario
once per round) so that a change in the machine's load affects them all alike. Ratios are
to bare routed in the same run. Targets (printed, never asserted): Calico routed with
policy >= 0.95x bare routed and >= 1.05x VXLAN, for throughput and, as the inverse ratio
of round-trip times, for latency.

Run as root: .venv/bin/python bench/throughput.py [--quick] [--duration S] [--runs N]
             [--ipv4-only] [--scenarios calico,bare,veth,nat,vxlan,calico-vxlan]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import select
import shutil
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from calico_lib.model import Endpoint, IPPool, Node, Profile, Rule  # noqa: E402
from calico_lib.render import names  # noqa: E402
from calico_lib.render.policy import RETURN_IF_MARKED, Policy  # noqa: E402
from calico_lib.snapshot import Snapshot  # noqa: E402
from tests import processes  # noqa: E402
from tests.netns import GATEWAY4, GATEWAY6, HOST_VETH_MAC, delete_namespace  # noqa: E402

SCRIPT = str(Path(__file__).resolve())

# ------------------------------------------------------------------------- addresses

HOSTS = ("host-a", "host-b")
FABRIC = "fab0"
FABRIC4 = ("198.51.100.1", "198.51.100.2")
FABRIC6 = ("2001:db8:b::1", "2001:db8:b::2")
POOL4, POOL6 = "10.96.0.0/16", "fd00:96::/64"
POD4 = ("10.96.0.1", "10.96.0.2")
POD6 = ("fd00:96::1", "fd00:96::2")
PAIR_INTERFACES = ("calibencha", "calibenchb")
PAIR_MACS = ("02:ca:1b:00:00:01", "02:ca:1b:00:00:02")
PAIR_PROFILE = "pair"
VXLAN = {4: ("vxlan4", 4, ("10.97.0.1", "10.97.0.2"), 24, 1450),
         6: ("vxlan6", 6, ("fd00:97::1", "fd00:97::2"), 64, 1430)}
VXLAN_PORT = 4789
#: ``calico-vxlan``: each host's block holding its tunnel address
TUNNEL_BLOCKS = ("10.96.255.0/26", "10.96.255.64/26")
TUNNELS = ("10.96.255.1", "10.96.255.65")
DOCKER_BRIDGE = "docker0"
DOCKER_NET = {4: ("172.17.0.0/16", "172.17.0.1", "172.17.0.2", 16),
              6: ("fd00:17::/64", "fd00:17::1", "fd00:17::2", 64)}
DOCKER_MAC = "02:42:ac:11:00:02"

IPERF_PORT = 5201
ECHO_PORT = 7777
CLOSED_PORT = 5202  # no rule allows it: the policy check expects it dropped
PUBLISH_OFFSET = 10000  # NAT: docker run -p 15201:5201 -p 17777:7777

# ------------------------------------------------------------------------- the policy

TCP_PORTS = [22, 80, 443, 3306, 5432, 6379, 8000, 8080, 8443, 9090, 9200, 11211, 27017]
UDP_PORTS = [53, 123, 161, 514, 1194, 4789, 5353]
SIZES = {"endpoints": 1000, "profiles": 100, "rules": 5000}

# ------------------------------------------------------------------------- measuring

FULL = {"duration": 5.0, "runs": 3, "round_trips": 20000, "connections": 500}
QUICK = {"duration": 2.0, "runs": 1, "round_trips": 5000, "connections": 100}
OMIT = 1  # iperf3 -O: seconds of slow start left out
WARMUP_ROUND_TRIPS = 200
WARMUP_CONNECTIONS = 10
CONNECT_TIMEOUT = 3.0
APPLY_TIMEOUT = 600.0

#: (key, heading, unit, higher is better)
METRICS: list[tuple[str, str, str, bool]] = [
    ("tcp1", "TCP 1 stream", "Gb/s", True),
    ("tcp4", "TCP 4 streams", "Gb/s", True),
    ("rr50", "RR median", "us", False),
    ("rr99", "RR p99", "us", False),
    ("crr50", "connect+RR", "us", False),
]


class BenchError(Exception):
    """A command or a measurement failed; the message says which."""


# ========================================================================= pure logic


def iperf_gbps(report: dict[str, Any]) -> float:
    """Received throughput in Gb/s from ``iperf3 -J`` output (all streams together)."""
    if report.get("error"):
        raise BenchError(f"iperf3: {report['error']}")
    try:
        bps = report["end"]["sum_received"]["bits_per_second"]
    except (KeyError, TypeError):
        raise BenchError("iperf3: no end.sum_received in its JSON report") from None
    if not isinstance(bps, (int, float)) or bps <= 0:
        raise BenchError(f"iperf3: received {bps!r} bits per second")
    return float(bps) / 1e9


def percentile(values: Sequence[float], pct: float) -> float:
    """The nearest-rank percentile (``pct`` in 0-100] of ``values``."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def latency_figures(rr_ns: Sequence[int], crr_ns: Sequence[int]) -> dict[str, float]:
    """Round-trip median and p99, new connection + round trip median, in microseconds."""
    return {"rr50": statistics.median(rr_ns) / 1000, "rr99": percentile(rr_ns, 99) / 1000,
            "crr50": statistics.median(crr_ns) / 1000}


def speed_ratio(metric: str, value: float, baseline: float) -> float:
    """How many times better than ``baseline`` (> 1 is better): throughput over throughput,
    or for a latency the baseline's time over this one."""
    higher_better = next(m[3] for m in METRICS if m[0] == metric)
    return value / baseline if higher_better else baseline / value


def verdict(ratio: float, target: float) -> str:
    """``PASS by 2.1%`` / ``MISS by 3.4%``: how far the ratio is above or below target."""
    margin = (ratio / target - 1) * 100
    return f"{'PASS' if ratio >= target else 'MISS'} by {abs(margin):.1f}%"


def docker_rules(version: int, published: Sequence[tuple[int, int]]) -> str:
    """The iptables-restore text of Docker 20.10's rules for one default bridge whose
    container publishes ``(host port, container port)`` pairs (``docker run -p``)."""
    subnet, _, container, _ = DOCKER_NET[version]
    host = f"{container}/{32 if version == 4 else 128}"
    loopback = "127.0.0.0/8" if version == 4 else "::1/128"
    to = f"{container}:{{}}" if version == 4 else f"[{container}]:{{}}"
    br = DOCKER_BRIDGE
    nat = ["*nat", ":PREROUTING ACCEPT [0:0]", ":INPUT ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]",
           ":POSTROUTING ACCEPT [0:0]", ":DOCKER - [0:0]",
           "-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER",
           f"-A OUTPUT ! -d {loopback} -m addrtype --dst-type LOCAL -j DOCKER",
           f"-A POSTROUTING -s {subnet} ! -o {br} -j MASQUERADE"]
    nat += [f"-A POSTROUTING -s {host} -d {host} -p tcp -m tcp --dport {port} -j MASQUERADE"
            for _, port in published]
    nat.append(f"-A DOCKER -i {br} -j RETURN")
    nat += [f"-A DOCKER ! -i {br} -p tcp -m tcp --dport {host_port} -j DNAT "
            f"--to-destination {to.format(port)}" for host_port, port in published]
    nat.append("COMMIT")
    filt = ["*filter", ":INPUT ACCEPT [0:0]", ":FORWARD DROP [0:0]", ":OUTPUT ACCEPT [0:0]",
            ":DOCKER - [0:0]", ":DOCKER-ISOLATION-STAGE-1 - [0:0]",
            ":DOCKER-ISOLATION-STAGE-2 - [0:0]", ":DOCKER-USER - [0:0]",
            "-A FORWARD -j DOCKER-USER",
            "-A FORWARD -j DOCKER-ISOLATION-STAGE-1",
            f"-A FORWARD -o {br} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
            f"-A FORWARD -o {br} -j DOCKER",
            f"-A FORWARD -i {br} ! -o {br} -j ACCEPT",
            f"-A FORWARD -i {br} -o {br} -j ACCEPT"]
    filt += [f"-A DOCKER -d {host} ! -i {br} -o {br} -p tcp -m tcp --dport {port} -j ACCEPT"
             for _, port in published]
    filt += [f"-A DOCKER-ISOLATION-STAGE-1 -i {br} ! -o {br} -j DOCKER-ISOLATION-STAGE-2",
             "-A DOCKER-ISOLATION-STAGE-1 -j RETURN",
             f"-A DOCKER-ISOLATION-STAGE-2 -o {br} -j DROP",
             "-A DOCKER-ISOLATION-STAGE-2 -j RETURN",
             "-A DOCKER-USER -j RETURN", "COMMIT"]
    return "\n".join(nat + filt) + "\n"


# ========================================================================= the snapshot


def _nets(rng: random.Random) -> list[str]:
    """One or two IPv4 /24s in 172.16/12 and as many IPv6 /64s in fd00:172::/32: never the
    pool, so a net rule never matches the pair (two nets of a version make a hash:net)."""
    count = rng.choice([1, 1, 2])
    v4 = [f"172.{rng.randint(16, 31)}.{rng.randint(0, 255)}.0/24" for _ in range(count)]
    v6 = [f"fd00:172:{rng.randint(0, 0xffff):x}:{rng.randint(0, 0xffff):x}::/64"
          for _ in range(count)]
    return v4 + v6


def _filler_rule(rng: random.Random, others: list[str]) -> Rule:
    """A rule of bench/policy.py's mix, made unable to match the pair's traffic (TCP to the
    bench ports from the pool): ports only from TCP_PORTS, and a tag rule (the pair's
    addresses are in every tag) limited to UDP or to a TCP service port."""
    other = rng.choice(others)
    kind = rng.choices(["tcp", "udp", "tag", "net", "deny", "icmp"],
                       weights=[35, 15, 20, 15, 10, 5])[0]
    if kind == "tcp":
        return Rule(protocol="tcp", dst_ports=rng.sample(TCP_PORTS, rng.randint(1, 3)),
                    src_tag=other if rng.random() < 0.3 else None)
    if kind == "udp":
        return Rule(protocol="udp", dst_ports=[rng.choice(UDP_PORTS)])
    if kind == "tag":
        if rng.random() < 0.5:
            return Rule(src_tag=other, protocol="udp")
        return Rule(src_tag=other, protocol="tcp", dst_ports=[rng.choice(TCP_PORTS)])
    if kind == "net":
        return Rule(src_net=_nets(rng))
    if kind == "deny":
        if rng.random() < 0.5:
            return Rule(action="deny", protocol="tcp", dst_ports=[rng.choice(TCP_PORTS)])
        return Rule(action="deny", src_net=_nets(rng))
    if rng.random() < 0.5:
        return Rule(protocol="icmp", icmp_type=8)
    return Rule(protocol="icmpv6", icmp_type=128)


def cluster_snapshot(hostname: str, endpoints: int, profiles: int, rules: int,
                     seed: int, vxlan: bool = False) -> Snapshot:
    """The two-host cluster as ``hostname`` sees it (deterministic for a seed). With
    ``vxlan`` its IPv4 pool is ``vxlan_mode: always``: each host holds a block with its
    tunnel address (TUNNEL_BLOCKS), and every container address is, as far as the
    library knows, borrowed, so each gets a /32 through the tunnel to its host."""
    rng = random.Random(seed)
    profile_names = [f"prof-{i:03d}" for i in range(profiles)]
    inbound: dict[str, list[Rule]] = {n: [] for n in profile_names}
    outbound: dict[str, list[Rule]] = {n: [] for n in profile_names}
    for _ in range(rules):
        own = rng.choice(profile_names)
        others = [n for n in profile_names if n != own] or [own]
        (inbound if rng.random() < 0.7 else outbound)[own].append(_filler_rule(rng, others))
    all_profiles = {n: Profile(name=n, tags=[n], inbound_rules=inbound[n],
                               outbound_rules=outbound[n]) for n in profile_names}
    ports: list[int | str] = [IPERF_PORT, ECHO_PORT]
    all_profiles[PAIR_PROFILE] = Profile(
        name=PAIR_PROFILE, tags=[PAIR_PROFILE],
        inbound_rules=[Rule(protocol="tcp", src_tag=PAIR_PROFILE, dst_ports=ports)],
        outbound_rules=[Rule(protocol="tcp", dst_tag=PAIR_PROFILE, dst_ports=ports)])

    others: list[Endpoint] = []
    used: set[str] = set(PAIR_INTERFACES)
    for index in range(endpoints):
        while True:
            interface = f"cali{rng.getrandbits(44):011x}"
            if interface not in used:
                used.add(interface)
                break
        chosen = [profile_names[index % profiles]]
        if rng.random() < 0.1 and profiles > 1:
            chosen.append(rng.choice([p for p in profile_names if p != chosen[0]]))
        others.append(Endpoint(
            id=f"ep-{index:06d}", host=HOSTS[index % 2], interface=interface,
            mac="02:" + ":".join(f"{rng.randrange(256):02x}" for _ in range(5)),
            ipv4_nets=[f"10.96.{1 + index // 250}.{1 + index % 250}"],
            ipv6_nets=[f"fd00:96::1:{index:x}"], profiles=chosen))
    pair = [Endpoint(id=f"pair-{i}", host=HOSTS[i], interface=PAIR_INTERFACES[i],
                     mac=PAIR_MACS[i], ipv4_nets=[POD4[i]], ipv6_nets=[POD6[i]],
                     profiles=[*profile_names, PAIR_PROFILE]) for i in (0, 1)]
    mode = "always" if vxlan else "never"
    blocks = dict(zip(HOSTS, TUNNEL_BLOCKS, strict=True)) if vxlan else {}
    return Snapshot(
        hostname=hostname, revision=1,
        pools=(IPPool(POOL4, nat_outgoing=True, vxlan_mode=mode), IPPool(POOL6)),
        profiles=all_profiles,
        endpoints=tuple(others + pair),  # the pair last: last of the endpoints
        nodes={h: Node(h, FABRIC4[i], FABRIC6[i],
                       ipv4_vxlan_tunnel=TUNNELS[i] if vxlan else None)
               for i, h in enumerate(HOSTS)},
        blocks=(blocks[hostname],) if vxlan else (),
        host_blocks={h: (b,) for h, b in blocks.items()})


def rules_walked(policy: Policy, interface: str, version: int, outbound: bool) -> int:
    """About how many filter rules a new flow's first packet passes before the pair's
    allow: cali-FORWARD to the dispatch jump, the dispatch chain to the interface, the
    endpoint chain and every chain it jumps to, up to the pair profile's return."""
    chains = policy.table(version, "filter").chains
    dispatch = names.FROM_DISPATCH if outbound else names.TO_DISPATCH
    own = names.from_endpoint(interface) if outbound else names.to_endpoint(interface)
    pair_chain = (names.profile_outbound if outbound else names.profile_inbound)(PAIR_PROFILE)
    walked = 1 + next(i for i, s in enumerate(chains[names.FORWARD])
                      if s.endswith(f"-j {dispatch}"))
    node = dispatch
    while node != own:  # down the dispatch tree: each node's rules up to the one that fits
        for i, spec in enumerate(chains[node]):
            name, target = spec.split()[1], spec.split()[-1]
            if name == interface or (name.endswith("+") and interface.startswith(name[:-1])):
                walked += i + 1
                node = target
                break
        else:
            raise ValueError(f"{interface} is not in the dispatch tree")
    seen_pair = False
    for spec in chains[own]:
        walked += 1
        target = spec.split()[-1]
        if spec.startswith("-j ") and target in chains:
            walked += len(chains[target])
            seen_pair = seen_pair or target == pair_chain
        elif seen_pair and spec == RETURN_IF_MARKED:
            break
    return walked


# ========================================================================= commands


def run(argv: Sequence[str], stdin: str | None = None, timeout: float = 60.0,
        check: bool = True) -> subprocess.CompletedProcess[str]:
    try:
        proc = subprocess.run(list(argv), input=stdin, capture_output=True, text=True,
                              timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise BenchError(f"{' '.join(argv[:6])}: timed out after {timeout:.0f}s") from None
    if check and proc.returncode != 0:
        first = (proc.stderr or proc.stdout).strip().splitlines()[:1]
        raise BenchError(f"{' '.join(argv[:8])}: exit {proc.returncode}"
                         + (f": {first[0]}" if first else ""))
    return proc


def stop_process(proc: subprocess.Popen[Any], timeout: float = 3.0) -> None:
    """Terminate one process this script started (then kill it), reap it, close its pipes."""
    processes.stop(proc, timeout)
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


def sweep(tag: str) -> list[str]:
    """Delete every namespace named ``<tag>-…`` still there; the names deleted."""
    listing = run(["ip", "netns", "list"], check=False).stdout
    left = [line.split()[0] for line in listing.splitlines()
            if line.split() and line.split()[0].startswith(f"{tag}-")]
    for ns in left:
        delete_namespace(ns)
    return left


# ========================================================================= the test bed


class Testbed:
    """host-a and host-b joined by the fabric veth, and the empty container namespaces
    ca and cb; a scenario attaches the containers. ``close`` deletes it all."""

    def __init__(self, tag: str) -> None:
        self.hosts = (f"{tag}-ha", f"{tag}-hb")
        self.containers = (f"{tag}-ca", f"{tag}-cb")
        self.namespaces: list[str] = []
        self.procs: list[subprocess.Popen[Any]] = []

    def __enter__(self) -> Testbed:
        try:
            for ns in (*self.hosts, *self.containers):
                run(["ip", "netns", "add", ns])
                self.namespaces.append(ns)
                self.sysctl(ns, {"net/ipv6/conf/all/accept_dad": "0",
                                 "net/ipv6/conf/default/accept_dad": "0"})
                self.ip(ns, "link set lo up")
            ha, hb = self.hosts
            self.ip(ha, f"link add {FABRIC} type veth peer name {FABRIC} netns {hb}")
            for i, ns in enumerate(self.hosts):
                peer = 1 - i
                self.ip(ns, f"addr add {FABRIC4[i]}/24 dev {FABRIC}",
                        f"addr add {FABRIC6[i]}/64 dev {FABRIC} nodad",
                        f"link set {FABRIC} up",
                        # a route to 169.254.1.1 is what lets proxy ARP answer for it
                        f"route add default via {FABRIC4[peer]} dev {FABRIC}",
                        f"route add default via {FABRIC6[peer]} dev {FABRIC}")
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop every process, delete every namespace; a second Ctrl-C waits for this."""
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            for proc in self.procs:
                stop_process(proc)
            self.procs.clear()
            for ns in reversed(self.namespaces):
                delete_namespace(ns)
            self.namespaces.clear()
        finally:
            signal.signal(signal.SIGINT, previous)

    # ------------------------------------------------------------------ commands

    def ip(self, ns: str, *commands: str) -> None:
        """``ip -n NS`` commands, several in one ``-batch``."""
        run(["ip", "-n", ns, "-batch", "-"], stdin="\n".join(commands) + "\n")

    def exec(self, ns: str, *argv: str, stdin: str | None = None,
             timeout: float = 60.0) -> str:
        return run(["ip", "netns", "exec", ns, *argv], stdin=stdin, timeout=timeout).stdout

    def sysctl(self, ns: str, values: dict[str, str]) -> None:
        script = "; ".join(f"echo {v} > /proc/sys/{k}" for k, v in values.items())
        self.exec(ns, "sh", "-c", script)

    def spawn(self, ns: str, *argv: str, ready: str | None = None) -> subprocess.Popen[str]:
        """A background process in ``ns``; with ``ready``, wait until it prints that line."""
        proc = subprocess.Popen(["ip", "netns", "exec", ns, *argv], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE if ready else subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
        self.procs.append(proc)
        if ready is not None:
            assert proc.stdout is not None
            deadline = time.monotonic() + 10
            while True:
                waiting, _, _ = select.select([proc.stdout], [], [],
                                              max(0.0, deadline - time.monotonic()))
                line = proc.stdout.readline() if waiting else ""
                if line.strip() == ready:
                    break
                if not line or time.monotonic() > deadline:
                    stop_process(proc)
                    err = proc.stderr.read() if proc.stderr else ""  # type: ignore[union-attr]
                    raise BenchError(f"{argv[0]} in {ns} did not start: {err.strip()[:200]}")
        return proc

    def wait_listening(self, ns: str, port: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.exec(ns, "ss", "-Hltn", f"sport = :{port}").strip():
            if time.monotonic() > deadline:
                raise BenchError(f"nothing listens on port {port} in {ns}")
            time.sleep(0.05)


# ========================================================================= scenarios


@dataclass
class Config:
    duration: float
    runs: int
    versions: tuple[int, ...]
    round_trips: int
    connections: int
    endpoints: int
    profiles: int
    rules: int
    seed: int
    scenarios: list[str]


@dataclass
class Ends:
    """Where a scenario's clients and servers run, and what the clients connect to."""

    client: str
    server: str
    targets: dict[int, str]  # IP version -> address
    iperf_port: int = IPERF_PORT
    echo_port: int = ECHO_PORT
    notes: list[str] = field(default_factory=list)


def attach_routed(tb: Testbed, mtu: dict[int, int] | None = None) -> None:
    """Each container behind a cali veth with its /32 and /128 and the Calico gateway
    routes (``mtu``: the containers' routes carry it, as an overlay needs)."""
    for i in (0, 1):
        host, ctr = tb.hosts[i], tb.containers[i]
        tb.ip(host, f"link add {PAIR_INTERFACES[i]} address {HOST_VETH_MAC} type veth "
                    f"peer name eth0 address {PAIR_MACS[i]} netns {ctr}",
              f"link set {PAIR_INTERFACES[i]} up")
        mtu4 = f" mtu {mtu[4]}" if mtu else ""
        mtu6 = f" mtu {mtu[6]}" if mtu else ""
        tb.ip(ctr, f"addr add {POD4[i]}/32 dev eth0", f"addr add {POD6[i]}/128 dev eth0 nodad",
              "link set eth0 up", f"route add {GATEWAY4} dev eth0 scope link",
              f"route add default via {GATEWAY4} dev eth0{mtu4}",
              f"route add default via {GATEWAY6} dev eth0{mtu6}")


def route_over_fabric(tb: Testbed, versions: tuple[int, ...] = (4, 6)) -> None:
    """Each host routes the other's container /32 and /128 via the other host."""
    for i in (0, 1):
        peer = 1 - i
        routes = {4: f"route add {POD4[peer]}/32 via {FABRIC4[peer]} dev {FABRIC}",
                  6: f"route add {POD6[peer]}/128 via {FABRIC6[peer]} dev {FABRIC}"}
        tb.ip(tb.hosts[i], *(routes[v] for v in versions))


def apply_on_hosts(tb: Testbed, cfg: Config, what: str) -> list[dict[str, Any]]:
    """Run ``--apply`` (apply_snapshot, or only apply_routes) in both host namespaces at
    once; their JSON reports."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH")) if p))
    procs = []
    for i in (0, 1):
        argv = ["ip", "netns", "exec", tb.hosts[i], sys.executable, SCRIPT,
                "--apply", HOSTS[i], "--inside", tb.hosts[i], "--what", what,
                "--endpoints", str(cfg.endpoints), "--profiles", str(cfg.profiles),
                "--rules", str(cfg.rules), "--seed", str(cfg.seed)]
        procs.append(subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True, env=env))
    tb.procs.extend(procs)
    reports = []
    for i, proc in enumerate(procs):
        try:
            out, err = proc.communicate(timeout=APPLY_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise BenchError(f"--apply on {HOSTS[i]} timed out") from None
        if proc.returncode != 0:
            raise BenchError(f"--apply {what} on {HOSTS[i]} failed (exit {proc.returncode}): "
                             + (err.strip().splitlines() or ["no output"])[-1])
        reports.append(json.loads(out.strip().splitlines()[-1]))
    return reports


def closed_port(tb: Testbed, ns: str, addr: str, port: int) -> str:
    """``refused``, ``dropped`` (no answer) or ``open``: a TCP connect from ``ns``."""
    code = ("import socket, sys\n"
            "try:\n"
            "    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=1).close()\n"
            "    print('open')\n"
            "except ConnectionRefusedError:\n"
            "    print('refused')\n"
            "except OSError:\n"
            "    print('dropped')\n")
    return tb.exec(ns, sys.executable, "-I", "-S", "-c", code, addr, str(port)).strip()


def setup_calico(tb: Testbed, cfg: Config, vxlan: bool = False) -> Ends:
    if vxlan:  # the library's VXLAN for IPv4 (its routes and the device's MTU)
        attach_routed(tb, mtu={4: VXLAN[4][4], 6: 1500})
        reports = apply_on_hosts(tb, cfg, "vxlan")
        route_over_fabric(tb, (6,))
    else:
        attach_routed(tb)
        reports = apply_on_hosts(tb, cfg, "policy")
        route_over_fabric(tb)
    a, b = reports
    notes = [] if vxlan else [f"policy: {cfg.profiles} profiles with {cfg.rules} rules, "
             f"{cfg.endpoints} other endpoints; apply_snapshot took {a['seconds']:.1f} s on "
             f"host-a and {b['seconds']:.1f} s on host-b; host-a has {a['rules']} iptables "
             f"rules (IPv4+IPv6, filter+nat) and {a['ipsets']} ipsets"]
    if vxlan:
        tunnel = a["summary"].split("vxlan device ", 1)[-1].split(" (")[0]
        notes.append("calico-vxlan: the same policy; IPv4 through the vxlan.calico device "
                     f"the library made (pool vxlan_mode always; on host-a: vxlan device "
                     f"{tunnel})")
        return Ends(tb.containers[0], tb.containers[1], {4: POD4[1], 6: POD6[1]},
                    notes=notes)
    for v in cfg.versions:
        notes.append(f"IPv{v}: a new flow's first packet passes about "
                     f"{a['walked'][str(v)]['out']} filter rules on host-a and "
                     f"{b['walked'][str(v)]['in']} on host-b before the pair's allow; "
                     f"later packets match RELATED,ESTABLISHED (rule 2 of cali-FORWARD)")
        peer = POD4[1] if v == 4 else POD6[1]
        seen = closed_port(tb, tb.containers[0], peer, CLOSED_PORT)
        notes.append(f"IPv{v} policy check: TCP {CLOSED_PORT} (no rule allows it) "
                     + ("dropped, as it should be" if seen == "dropped"
                        else f"{seen}: NOT dropped, the policy is not in effect"))
    return Ends(tb.containers[0], tb.containers[1], {4: POD4[1], 6: POD6[1]}, notes=notes)


def setup_bare(tb: Testbed, cfg: Config) -> Ends:
    attach_routed(tb)
    apply_on_hosts(tb, cfg, "routes")
    route_over_fabric(tb)
    return Ends(tb.containers[0], tb.containers[1], {4: POD4[1], 6: POD6[1]})


def setup_veth(tb: Testbed, cfg: Config) -> Ends:
    return Ends(tb.hosts[0], tb.hosts[1], {4: FABRIC4[1], 6: FABRIC6[1]},
                notes=["raw veth: host-a to host-b over the fabric: one veth, where the "
                       "container scenarios cross three"])


def setup_nat(tb: Testbed, cfg: Config) -> Ends:
    published = [(IPERF_PORT + PUBLISH_OFFSET, IPERF_PORT),
                 (ECHO_PORT + PUBLISH_OFFSET, ECHO_PORT)]
    for i in (0, 1):
        host, ctr = tb.hosts[i], tb.containers[i]
        net4, net6 = DOCKER_NET[4], DOCKER_NET[6]
        tb.ip(host, f"link add {DOCKER_BRIDGE} type bridge",
              f"addr add {net4[1]}/{net4[3]} dev {DOCKER_BRIDGE}",
              f"addr add {net6[1]}/{net6[3]} dev {DOCKER_BRIDGE} nodad",
              f"link set {DOCKER_BRIDGE} up",
              f"link add veth{i}d type veth peer name eth0 address {DOCKER_MAC} netns {ctr}",
              f"link set veth{i}d master {DOCKER_BRIDGE} up")
        tb.ip(ctr, f"addr add {net4[2]}/{net4[3]} dev eth0",
              f"addr add {net6[2]}/{net6[3]} dev eth0 nodad", "link set eth0 up",
              f"route add default via {net4[1]}", f"route add default via {net6[1]}")
        tb.sysctl(host, {"net/ipv4/ip_forward": "1", "net/ipv6/conf/all/forwarding": "1"})
        mapped = published if i == 1 else []
        tb.exec(host, "iptables-restore", stdin=docker_rules(4, mapped))
        tb.exec(host, "ip6tables-restore", stdin=docker_rules(6, mapped))
    return Ends(tb.containers[0], tb.containers[1], {4: FABRIC4[1], 6: FABRIC6[1]},
                IPERF_PORT + PUBLISH_OFFSET, ECHO_PORT + PUBLISH_OFFSET,
                notes=["NAT: the client container connects to host-b's fabric address, "
                       "ports 15201 and 17777, DNAT to its container; its source is "
                       "masqueraded as host-a"])


def setup_vxlan(tb: Testbed, cfg: Config) -> Ends:
    attach_routed(tb, mtu={v: VXLAN[v][4] for v in (4, 6)})
    apply_on_hosts(tb, cfg, "routes")
    for i in (0, 1):
        peer = 1 - i
        commands = []
        for v, underlay in ((4, FABRIC4), (6, FABRIC6)):
            dev, vni, addrs, plen, _ = VXLAN[v]
            commands += [f"link add {dev} type vxlan id {vni} dstport {VXLAN_PORT} "
                         f"local {underlay[i]} remote {underlay[peer]} dev {FABRIC}",
                         f"addr add {addrs[i]}/{plen} dev {dev}" + (" nodad" if v == 6 else ""),
                         f"link set {dev} up"]
        commands += [f"route add {POD4[peer]}/32 via {VXLAN[4][2][peer]} dev {VXLAN[4][0]}",
                     f"route add {POD6[peer]}/128 via {VXLAN[6][2][peer]} "
                     f"dev {VXLAN[6][0]}"]
        tb.ip(tb.hosts[i], *commands)
    return Ends(tb.containers[0], tb.containers[1], {4: POD4[1], 6: POD6[1]})


@dataclass(frozen=True)
class Scenario:
    key: str
    label: str
    setup: Callable[[Testbed, Config], Ends]


SCENARIOS = [
    Scenario("calico", "Calico routed + policy", setup_calico),
    Scenario("bare", "bare routed (baseline)", setup_bare),
    Scenario("veth", "raw veth, host to host", setup_veth),
    Scenario("nat", "Docker bridge NAT (-p)", setup_nat),
    Scenario("vxlan", "VXLAN overlay", setup_vxlan),
    Scenario("calico-vxlan", "Calico VXLAN pool + policy",
             lambda tb, cfg: setup_calico(tb, cfg, vxlan=True)),
]


# ========================================================================= measuring

# A TCP echo server on every address (IPv4 and IPv6), one connection at a time.
_ECHO_SERVER = r"""
import socket, sys
s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("::", int(sys.argv[1])))
s.listen(128)
print("READY", flush=True)
while True:
    conn, _ = s.accept()
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    with conn:
        while True:
            data = conn.recv(4096)
            if not data:
                break
            conn.sendall(data)
"""

# Round trips of 1 byte on one connection, then new connections with one round trip each;
# prints the times in ns as JSON.
_PROBE = r"""
import json, socket, sys, time
addr, port, count, conns, warm, warm_conns, timeout = sys.argv[1:8]
port, count, conns, warm, warm_conns = map(int, (port, count, conns, warm, warm_conns))
clock = time.perf_counter_ns
def connect():
    s = socket.create_connection((addr, port), timeout=float(timeout))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s
def exchange(s):
    s.sendall(b"x")
    if s.recv(1) != b"x":
        raise SystemExit("echo: connection closed")
rr = []
with connect() as s:
    for _ in range(warm + count):
        t = clock()
        exchange(s)
        rr.append(clock() - t)
crr = []
for _ in range(warm_conns + conns):
    t = clock()
    with connect() as s:
        exchange(s)
        crr.append(clock() - t)
print(json.dumps({"rr_ns": rr[warm:], "crr_ns": crr[warm_conns:]}))
"""


def probe(tb: Testbed, ends: Ends, version: int, round_trips: int,
          connections: int) -> dict[str, float]:
    out = tb.exec(ends.client, sys.executable, "-I", "-S", "-c", _PROBE,
                  ends.targets[version], str(ends.echo_port), str(round_trips),
                  str(connections), str(WARMUP_ROUND_TRIPS), str(WARMUP_CONNECTIONS),
                  str(CONNECT_TIMEOUT), timeout=120 + round_trips / 1000 + connections / 10)
    data = json.loads(out)
    return latency_figures(data["rr_ns"], data["crr_ns"])


def iperf(tb: Testbed, ends: Ends, version: int, streams: int, duration: float) -> float:
    argv = ["iperf3", "-c", ends.targets[version], "-p", str(ends.iperf_port),
            "-t", f"{duration:g}", "-O", str(OMIT), "-P", str(streams), "-J",
            "--connect-timeout", str(int(CONNECT_TIMEOUT * 1000))]
    proc = run(["ip", "netns", "exec", ends.client, *argv], timeout=duration + OMIT + 30,
               check=False)
    try:
        report = json.loads(proc.stdout)
    except json.JSONDecodeError:
        raise BenchError(f"iperf3 exit {proc.returncode}: "
                         f"{(proc.stderr or proc.stdout).strip()[:200]}") from None
    return iperf_gbps(report)


def measure(tb: Testbed, ends: Ends, cfg: Config) -> dict[int, dict[str, float] | str]:
    """Every figure of one scenario, per IP version (or why it failed)."""
    iperf_server = tb.spawn(ends.server, "iperf3", "-s", "-p", str(IPERF_PORT))
    tb.spawn(ends.server, sys.executable, "-I", "-S", "-c", _ECHO_SERVER, str(ECHO_PORT),
             ready="READY")
    tb.wait_listening(ends.server, IPERF_PORT)
    out: dict[int, dict[str, float] | str] = {}
    for version in cfg.versions:
        try:
            probe(tb, ends, version, 20, 2)  # the path works; neighbours are resolved
            figures = {"tcp1": iperf(tb, ends, version, 1, cfg.duration),
                       "tcp4": iperf(tb, ends, version, 4, cfg.duration)}
            figures |= probe(tb, ends, version, cfg.round_trips,
                             cfg.connections)
            out[version] = figures
        except (BenchError, json.JSONDecodeError, KeyError) as exc:
            out[version] = str(exc).splitlines()[0][:200]
        if iperf_server.poll() is not None:  # it stops serving after some client errors
            tb.procs.remove(iperf_server)
            iperf_server = tb.spawn(ends.server, "iperf3", "-s", "-p", str(IPERF_PORT))
            tb.wait_listening(ends.server, IPERF_PORT)
    return out


# ========================================================================= the report


@dataclass
class Results:
    values: dict[tuple[str, int, str], list[float]] = field(default_factory=dict)
    errors: dict[tuple[str, int], str] = field(default_factory=dict)
    notes: dict[str, list[str]] = field(default_factory=dict)

    def add(self, key: str, measured: dict[int, dict[str, float] | str]) -> None:
        for version, figures in measured.items():
            if isinstance(figures, str):
                self.errors[(key, version)] = figures
                continue
            for metric, value in figures.items():
                self.values.setdefault((key, version, metric), []).append(value)

    def median(self, key: str, version: int, metric: str) -> float | None:
        values = self.values.get((key, version, metric))
        return statistics.median(values) if values else None

    def spread(self, key: str, version: int, metric: str) -> float | None:
        """Half the range of the runs, as a percentage of their median."""
        values = self.values.get((key, version, metric))
        if not values or len(values) < 2:
            return None
        return 50 * (max(values) - min(values)) / statistics.median(values)


CELL, RATIO = 13, 7


def _cell(value: float | None, spread: float | None, unit: str) -> str:
    if value is None:
        return f"{'-':>{CELL}}"
    number = f"{value:.2f}" if unit == "Gb/s" else f"{value:.1f}"
    noise = f" ±{spread:.0f}%" if spread is not None else ""
    return f"{number + noise:>{CELL}}"


def print_table(results: Results, version: int, cfg: Config, keys: list[str]) -> None:
    print(f"\nIPv{version}: median of {cfg.runs} run(s); iperf3 -t {cfg.duration:g} -O {OMIT}; "
          f"{cfg.round_trips} round trips of 1 byte on one connection; {cfg.connections} new "
          f"connections" + (" (± is half the runs' range)" if cfg.runs > 1 else ""))
    print(f"{'':26}" + "".join(f"{h:>{CELL + RATIO}}" for _, h, _, _ in METRICS))
    print(f"{'scenario':26}" + "".join(f"{u:>{CELL}}{'/bare':>{RATIO}}"
                                        for _, _, u, _ in METRICS))
    for key in keys:
        label = next(s.label for s in SCENARIOS if s.key == key)
        row = f"{label:26}"
        for metric, _, unit, _ in METRICS:
            value = results.median(key, version, metric)
            base = results.median("bare", version, metric)
            ratio = (f"{value / base:{RATIO - 1}.2f}x" if value is not None and base
                     else f"{'':{RATIO}}")
            row += _cell(value, results.spread(key, version, metric), unit) + ratio
        print(row)
        if (key, version) in results.errors:
            print(f"{'':26}failed: {results.errors[(key, version)]}")
    print("(/bare: the figure divided by bare routed's: above 1 is faster for throughput, "
          "slower for latency)")


def print_targets(results: Results, version: int) -> None:
    print(f"targets, IPv{version}: Calico routed + policy vs bare routed >= 0.95x and vs "
          f"VXLAN >= 1.05x (latency: the other's round-trip time / Calico's)")
    for metric, heading, _, _ in METRICS:
        if metric in ("rr99", "crr50"):
            continue  # shown in the table; the targets are on throughput and median RTT
        calico = results.median("calico", version, metric)
        for other, target in (("bare", 0.95), ("vxlan", 1.05)):
            base = results.median(other, version, metric)
            what = f"  {heading:14} vs {other:6}"
            if calico is None or base is None:
                print(f"{what} not measured")
                continue
            ratio = speed_ratio(metric, calico, base)
            print(f"{what} {ratio:5.2f}x (target >= {target:.2f}x): {verdict(ratio, target)}")


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


# ========================================================================= entry points


def apply_inside(args: argparse.Namespace) -> int:
    """Child mode: apply the snapshot (or only its routes) in this host namespace."""
    if not in_namespace(args.inside):
        print(f"not in network namespace {args.inside!r}: refusing to touch this one",
              file=sys.stderr)
        return 2
    from calico_lib.dataplane import conntrack
    from calico_lib.dataplane.routes import apply_routes
    from calico_lib.reconcile import apply_snapshot
    from calico_lib.render.policy import render_policy
    from calico_lib.render.routes import desired_routes

    snapshot = cluster_snapshot(args.apply, args.endpoints, args.profiles, args.rules,
                                args.seed, vxlan=args.what == "vxlan")
    start = time.perf_counter()
    if args.what == "routes":
        report = apply_routes(desired_routes(snapshot))
        print(json.dumps({"seconds": time.perf_counter() - start,
                          "summary": report.summary()}))
        return 0
    # apply_snapshot deletes the conntrack entries of every address whose policy it
    # wrote: one `conntrack -D` per address and direction, 2,000 processes and about a
    # minute here. The namespace is new and has no flows: nothing to delete.
    conntrack.flush = lambda addresses: []
    summary = apply_snapshot(snapshot).summary()
    seconds = time.perf_counter() - start
    policy = render_policy(snapshot)
    interface = PAIR_INTERFACES[HOSTS.index(args.apply)]
    print(json.dumps({
        "seconds": seconds, "summary": summary, "ipsets": len(policy.ipsets),
        "rules": sum(len(s) for t in policy.tables for s in t.chains.values())
        + sum(len(t.hooks) for t in policy.tables),
        "walked": {str(v): {"out": rules_walked(policy, interface, v, True),
                            "in": rules_walked(policy, interface, v, False)}
                   for v in (4, 6)}}))
    return 0


def in_namespace(namespace: str) -> bool:
    """True when this process runs in the named network namespace (see ``ip netns``)."""
    try:
        named = os.stat(Path("/run/netns") / namespace)
        own = os.stat("/proc/self/ns/net")
    except OSError:
        return False
    return (named.st_dev, named.st_ino) == (own.st_dev, own.st_ino)


def missing_requirements() -> str | None:
    if os.geteuid() != 0:
        return "needs root (it creates network namespaces)"
    for tool in ("ip", "iperf3", "iptables-restore", "ip6tables-restore", "ipset", "ss"):
        if shutil.which(tool) is None:
            return f"needs {tool} on PATH (apt-get install iproute2 iptables ipset iperf3)"
    return None


def bench(cfg: Config) -> int:
    tag = f"calb-{uuid.uuid4().hex[:6]}"
    keys = [s.key for s in SCENARIOS if s.key in cfg.scenarios]
    results = Results()
    started = time.monotonic()
    print(f"namespaces {tag}-*; scenarios: {', '.join(keys)}; IPv"
          f"{' and IPv'.join(map(str, cfg.versions))}; {cfg.runs} round(s); "
          f"load average at start {load()} ({os.cpu_count()} CPUs)", flush=True)
    try:
        for round_no in range(1, cfg.runs + 1):
            for scenario in (s for s in SCENARIOS if s.key in keys):
                with Testbed(tag) as tb:
                    try:
                        ends = scenario.setup(tb, cfg)
                        measured = measure(tb, ends, cfg)
                    except BenchError as exc:
                        ends = None
                        measured = {v: f"setup: {exc}" for v in cfg.versions}
                results.add(scenario.key, measured)
                if ends is not None and scenario.key not in results.notes:
                    results.notes[scenario.key] = ends.notes
                shown = []
                for v, figures in measured.items():
                    if isinstance(figures, str):
                        shown.append(f"IPv{v} failed: {figures}")
                    else:
                        shown.append(f"IPv{v} {figures['tcp1']:.2f} Gb/s (1 stream), "
                                     f"{figures['tcp4']:.2f} (4), RTT {figures['rr50']:.1f} us")
                print(f"[round {round_no}/{cfg.runs}] {scenario.label}: {'; '.join(shown)}",
                      flush=True)
    finally:
        left = sweep(tag)
        if left:
            print(f"deleted namespaces left behind: {', '.join(left)}", file=sys.stderr)

    print(f"\n{time.monotonic() - started:.0f} s; load average at the end {load()}")
    for version in cfg.versions:
        print_table(results, version, cfg, keys)
        print_targets(results, version)
    if 6 not in cfg.versions:
        print("\nIPv6 not measured (--ipv4-only)")
    notes = [n for key in keys for n in results.notes.get(key, [])]
    if notes:
        print()
    for note in notes:
        print(note)
    return 1 if results.errors else 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    doc = __doc__ or ""
    parser = argparse.ArgumentParser(
        description=doc.split("\n\n")[0],
        epilog="Needs root: it creates network namespaces calb-<tag>-* and deletes them.")
    parser.add_argument("--quick", action="store_true",
                        help=f"shorter: {QUICK['duration']:g} s per iperf3 run, "
                             f"{QUICK['runs']} run, {QUICK['round_trips']} round trips")
    parser.add_argument("--duration", type=float, metavar="SECONDS",
                        help=f"seconds per iperf3 run after the omitted first second "
                             f"(default {FULL['duration']:g})")
    parser.add_argument("--runs", type=int,
                        help=f"rounds over every scenario; figures are medians "
                             f"(default {FULL['runs']})")
    parser.add_argument("--ipv4-only", action="store_true")
    parser.add_argument("--scenarios", default=",".join(s.key for s in SCENARIOS),
                        help="a comma-separated subset of: "
                             + ", ".join(s.key for s in SCENARIOS))
    parser.add_argument("--endpoints", type=int, default=SIZES["endpoints"],
                        help="other endpoints in the policy snapshot (half per host)")
    parser.add_argument("--profiles", type=int, default=SIZES["profiles"])
    parser.add_argument("--rules", type=int, default=SIZES["rules"])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--apply", choices=HOSTS, help=argparse.SUPPRESS)
    parser.add_argument("--inside", help=argparse.SUPPRESS)
    parser.add_argument("--what", choices=("policy", "routes", "vxlan"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    preset = QUICK if args.quick else FULL
    args.duration = args.duration if args.duration is not None else preset["duration"]
    args.runs = args.runs if args.runs is not None else preset["runs"]
    args.scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = set(args.scenarios) - {s.key for s in SCENARIOS}
    if unknown:
        parser.error(f"--scenarios: unknown {', '.join(sorted(unknown))}")
    if not 1 <= args.runs <= 100 or not 1 <= args.duration <= 600:
        parser.error("--runs must be 1-100 and --duration 1-600 seconds")
    if args.profiles < 1 or args.rules < 0 or not 0 <= args.endpoints <= 60000:
        parser.error("--profiles must be >= 1, --rules >= 0, --endpoints 0-60000")
    return args


def config_from(args: argparse.Namespace) -> Config:
    preset = QUICK if args.quick else FULL
    return Config(duration=args.duration, runs=args.runs,
                  versions=(4,) if args.ipv4_only else (4, 6),
                  round_trips=int(preset["round_trips"]),
                  connections=int(preset["connections"]), endpoints=args.endpoints,
                  profiles=args.profiles, rules=args.rules, seed=args.seed,
                  scenarios=args.scenarios)


def _exit_on_sigterm(signum: int, frame: object) -> None:
    """SIGTERM unwinds like Ctrl-C, so every namespace and process is still removed."""
    sys.exit(128 + signum)


def main() -> int:
    args = parse_args()
    if args.apply:
        return apply_inside(args)
    reason = missing_requirements()
    if reason:
        print(f"bench/throughput.py: {reason}", file=sys.stderr)
        return 1
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        return bench(config_from(args))
    except BenchError as exc:
        print(f"bench/throughput.py: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; every namespace and process of this run was removed",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
