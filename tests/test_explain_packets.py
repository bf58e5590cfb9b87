"""``policy explain`` against real packets (issue 14).

Generated policies (hypothesis: allow, deny and log rules; protocols and their negation;
CIDRs, tags and their negations; ports, port ranges and source ports; ICMP types and
codes; rules pinned to one IP version; several profiles per container; the
workload-to-host action) are applied by the real agent in a network-namespace host with
four containers and an outside namespace. Then a batch of probes (TCP, UDP and ICMP;
IPv4 and IPv6; container to container, to the outside, to its host, and outside to
container) is sent, and every probe's fate must be what ``explain`` says: at least 500
probes, 100% agreement. A disagreement prints the explanation, the host's iptables-save
and the policy.

The probes run in this process: a socket made after ``setns`` into a namespace stays in
it, so one select loop drives listeners and clients in every namespace at once.
"""

from __future__ import annotations

import errno
import itertools
import select
import socket
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import calico_lib
from calico_lib import Endpoint, IPPool, Node, Profile, Rule, ValidationError
from calico_lib.explain import explain
from tests import netns
from tests.netns import OUTSIDE4, OUTSIDE6, Lab, inside

POOL4, POOL6 = "10.65.0.0/16", "fd00:65::/64"
PORTS = (53, 80, 179, 443, 1000, 1001, 8080)
PROFILES = ("p0", "p1", "p2")
TAGS = ("p0", "p1", "p2", "shared", "nobody")
NETS = ("10.65.1.1/32", "10.65.1.2/32", "10.65.1.0/30", "10.65.0.0/16", "198.18.0.0/24",
        "198.18.0.254/32", "0.0.0.0/0", "fd00:65::1:1/128", "fd00:65::1:2/128",
        "fd00:65::1:0/126", "fd00:65::/64", "2001:db8:ff::/64", "::/0")
RULE_PORTS = (53, 80, 179, 443, "1000:1001", "80:443", 8080, "20000:39999", "1:100")
SOURCE_PORTS = ("20000:39999", "40000:65535", "1:1000")
WINDOW = 0.6  # seconds a dropped probe is waited for (a local answer takes < 10 ms)
MIN_PROBES = 500
EXAMPLES = 22
PROBES_PER_EXAMPLE = 24

pytestmark = pytest.mark.netns


# --------------------------------------------------------------------------- sockets


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def _echo(version: int, ident: int) -> bytes:
    kind = 8 if version == 4 else 128
    header = struct.pack("!BBHHH", kind, 0, 0, ident, 1) + b"calico-explain"
    if version == 6:
        return header  # the kernel fills in ICMPv6 checksums
    return header[:2] + struct.pack("!H", _checksum(header)) + header[4:]


@dataclass(frozen=True)
class Probe:
    src: str         # a name in Prober.places
    dst: str
    version: int
    protocol: str    # tcp, udp, icmp
    port: int        # destination port (tcp, udp)


class Prober:
    """Listeners on every port of PORTS (TCP and UDP, IPv4 and IPv6) in every namespace,
    and one raw ICMP socket per namespace and IP version for echo requests and replies."""

    def __init__(self, places: dict[str, tuple[str, str, str]]) -> None:
        #: place -> (namespace, IPv4 address, IPv6 address)
        self.places = places
        self.listeners: list[socket.socket] = []
        self.udp: list[socket.socket] = []
        self.raw: dict[tuple[str, int], socket.socket] = {}
        self.counter = itertools.count(1)
        for place, (ns, _, _) in places.items():
            with inside(ns):
                for port in PORTS:
                    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
                        sock = socket.socket(socket.AF_INET6, kind)
                        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                        sock.bind(("::", port))
                        sock.setblocking(False)
                        if kind == socket.SOCK_STREAM:
                            sock.listen(256)
                            self.listeners.append(sock)
                        else:
                            self.udp.append(sock)
                for version, family, proto in ((4, socket.AF_INET, socket.IPPROTO_ICMP),
                                               (6, socket.AF_INET6, socket.IPPROTO_ICMPV6)):
                    sock = socket.socket(family, socket.SOCK_RAW, proto)
                    sock.setblocking(False)
                    self.raw[(place, version)] = sock

    def close(self) -> None:
        for sock in self.listeners + self.udp + list(self.raw.values()):
            sock.close()

    def address(self, place: str, version: int) -> str:
        return self.places[place][1 if version == 4 else 2]

    def run(self, probes: list[Probe]) -> tuple[list[bool], list[int]]:
        """Send every probe at once: which of them reached their destination, and the
        source port each TCP or UDP probe used."""
        arrived = [False] * len(probes)
        ports = [0] * len(probes)
        clients: dict[socket.socket, int] = {}
        tokens: dict[bytes, int] = {}
        echoes: dict[tuple[str, int, int], int] = {}
        try:
            for number, probe in enumerate(probes):
                sequence = next(self.counter)
                source, target = (self.address(probe.src, probe.version),
                                  self.address(probe.dst, probe.version))
                family = socket.AF_INET if probe.version == 4 else socket.AF_INET6
                src_port = ports[number] = 20000 + sequence % 45000
                if probe.protocol == "icmp":
                    ident = sequence % 65535 + 1
                    sock = self.raw[(probe.src, probe.version)]
                    with inside(self.places[probe.src][0]):
                        sender = socket.socket(family, socket.SOCK_RAW, sock.proto)
                    try:
                        sender.bind((source, 0))
                        sender.sendto(_echo(probe.version, ident), (target, 0))
                    finally:
                        sender.close()
                    echoes[(probe.src, probe.version, ident)] = number
                    continue
                kind = socket.SOCK_STREAM if probe.protocol == "tcp" else socket.SOCK_DGRAM
                with inside(self.places[probe.src][0]):
                    sock = socket.socket(family, kind)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind((source, src_port))
                sock.setblocking(False)
                if probe.protocol == "tcp":
                    code = sock.connect_ex((target, probe.port))
                    assert code in (0, errno.EINPROGRESS), errno.errorcode.get(code)
                    clients[sock] = number
                else:
                    token = f"probe-{sequence}".encode()
                    sock.sendto(token, (target, probe.port))
                    tokens[token] = number
                    sock.close()
            self._wait(clients, tokens, echoes, arrived)
        finally:
            for sock in clients:
                sock.close()
        return arrived, ports

    def _wait(self, clients: dict[socket.socket, int], tokens: dict[bytes, int],
              echoes: dict[tuple[str, int, int], int], arrived: list[bool]) -> None:
        deadline = time.monotonic() + WINDOW
        pending = dict(clients)
        readers = self.listeners + self.udp + list(self.raw.values())
        raw_of = {sock: key for key, sock in self.raw.items()}
        while time.monotonic() < deadline:
            readable, writable, _ = select.select(readers, list(pending), [], 0.05)
            for sock in writable:
                error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if error in (0, errno.ECONNREFUSED):
                    arrived[pending.pop(sock)] = True
            for sock in readable:
                if sock in raw_of:
                    self._replies(sock, raw_of[sock], echoes, arrived)
                elif sock.type == socket.SOCK_STREAM:
                    try:
                        conn, _ = sock.accept()
                        conn.close()
                    except BlockingIOError:
                        pass
                else:
                    try:
                        data = sock.recv(64)
                    except BlockingIOError:
                        continue
                    if data in tokens:
                        arrived[tokens[data]] = True
            if not pending and all(arrived[n] for n in list(tokens.values())
                                   + list(echoes.values())):
                break

    @staticmethod
    def _replies(sock: socket.socket, key: tuple[str, int],
                 echoes: dict[tuple[str, int, int], int], arrived: list[bool]) -> None:
        place, version = key
        while True:
            try:
                data = sock.recv(2048)
            except BlockingIOError:
                return
            if version == 4:
                data = data[(data[0] & 15) * 4:]
            reply = 0 if version == 4 else 129
            if len(data) >= 8 and data[0] == reply:
                ident = struct.unpack("!H", data[4:6])[0]
                number = echoes.get((place, version, ident))
                if number is not None:
                    arrived[number] = True


# --------------------------------------------------------------------------- policies


@st.composite
def rules(draw: st.DrawFn) -> Rule:
    fields: dict = {"action": draw(st.sampled_from(("allow", "allow", "allow", "deny", "log")))}
    version = draw(st.sampled_from((None, None, 4, 6)))
    protocol = draw(st.sampled_from((None, None, "tcp", "udp", "icmp", "not-tcp", "not-icmp")))
    if protocol == "icmp":
        protocol = "icmp" if version != 6 else "icmpv6"
        if version is None:
            version = draw(st.sampled_from((4, 6)))
            protocol = "icmp" if version == 4 else "icmpv6"
        if draw(st.booleans()):
            fields["icmp_type"] = draw(st.sampled_from((8, 128, 0) if version == 4
                                                       else (128, 8, 129)))
            if draw(st.booleans()):
                fields["icmp_code"] = draw(st.sampled_from((0, 1)))
    if protocol and protocol.startswith("not-"):
        fields["not_protocol"] = protocol[4:]
    elif protocol:
        fields["protocol"] = protocol
    fields["ip_version"] = version
    for direction in ("src", "dst"):
        for negated in ("", "not_"):
            if draw(st.integers(0, 4)) == 0:
                fields[f"{negated}{direction}_net"] = draw(
                    st.lists(st.sampled_from(NETS), min_size=1, max_size=2, unique=True))
            if draw(st.integers(0, 5)) == 0:
                fields[f"{negated}{direction}_tag"] = draw(st.sampled_from(TAGS))
    if protocol in ("tcp", "udp"):
        for negated in ("", "not_"):
            if draw(st.integers(0, 2)) == 0:
                fields[f"{negated}dst_ports"] = draw(
                    st.lists(st.sampled_from(RULE_PORTS), min_size=1, max_size=3, unique=True))
            if draw(st.integers(0, 6)) == 0:
                fields[f"{negated}src_ports"] = [draw(st.sampled_from(SOURCE_PORTS))]
    try:
        return Rule(**fields)
    except ValidationError:  # a contradiction the model refuses: any valid rule will do
        return Rule(action=fields["action"])


@st.composite
def policies(draw: st.DrawFn) -> dict:
    profiles = []
    for name in PROFILES:
        tags = [name] + (["shared"] if draw(st.booleans()) else [])
        profiles.append(Profile(name=name, tags=tags,
                                inbound_rules=draw(st.lists(rules(), max_size=4)),
                                outbound_rules=draw(st.lists(rules(), max_size=3))))
    members = [draw(st.lists(st.sampled_from(PROFILES), min_size=1, max_size=2, unique=True))
               for _ in range(4)]
    return {"profiles": profiles, "members": members,
            "to_host": draw(st.sampled_from(("accept", "drop")))}


PLACES_FROM = ("a", "b", "c", "d", "outside")


@st.composite
def probes(draw: st.DrawFn) -> Probe:
    src = draw(st.sampled_from(PLACES_FROM))
    if src == "outside":
        dst = draw(st.sampled_from(("a", "b", "c", "d")))
    else:
        dst = draw(st.sampled_from([p for p in ("a", "b", "c", "d", "outside", "host")
                                    if p != src]))
    protocol = draw(st.sampled_from(("tcp", "tcp", "udp", "icmp")))
    return Probe(src, dst, draw(st.sampled_from((4, 6))), protocol,
                 draw(st.sampled_from(PORTS)))


# --------------------------------------------------------------------------- the test


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Iterator[tuple]:
    netns.require()
    url = "sqlite:///" + str(tmp_path_factory.mktemp("explain") / "calico.db")
    with Lab() as lab, calico_lib.connect(url) as client:
        host = lab.host("host1")
        client.add_pool(IPPool(POOL4))
        client.add_pool(IPPool(POOL6))
        client.add_node(Node(host.name, ipv4=host.ipv4, ipv6=host.ipv6))
        outside = lab.outside
        assert outside is not None
        lab.ip(outside, "route", "add", POOL4, "via", host.ipv4)
        lab.ip(outside, "-6", "route", "add", POOL6, "via", host.ipv6)
        places = {"outside": (outside, OUTSIDE4, OUTSIDE6),
                  "host": (host.ns, host.ipv4, host.ipv6)}
        containers = []
        for n, name in enumerate("abcd", 1):
            ctr = lab.container(host, name, ipv4=[f"10.65.1.{n}"], ipv6=[f"fd00:65::1:{n}"])
            containers.append(ctr)
            places[name] = (ctr.ns, ctr.ipv4[0], ctr.ipv6[0])
        prober = Prober(places)
        try:
            yield lab, client, url, host, containers, prober
        finally:
            prober.close()


def _apply(world: tuple, policy: dict) -> None:
    lab, client, url, host, containers, _ = world
    for profile in policy["profiles"]:
        client.put_profile(profile)
    for ctr, members in zip(containers, policy["members"], strict=True):
        client.put_endpoint(Endpoint(id=ctr.id, host=host.name, interface=ctr.interface,
                                     mac=ctr.mac, ipv4_nets=ctr.ipv4, ipv6_nets=ctr.ipv6,
                                     profiles=members))
    client.set_agent_config(default_endpoint_to_host_action=policy["to_host"])
    lab.agent(host, url)


def test_explain_agrees_with_every_probe(world) -> None:
    lab, client, _, host, _, prober = world
    seen = {"probes": 0, "allowed": 0, "kinds": set()}

    @settings(max_examples=EXAMPLES, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(policy=policies(), batch=st.lists(probes(), min_size=PROBES_PER_EXAMPLE,
                                             max_size=PROBES_PER_EXAMPLE))
    def check(policy: dict, batch: list[Probe]) -> None:
        _apply(world, policy)
        fates, ports = prober.run(batch)
        for probe, arrived, port in zip(batch, fates, ports, strict=True):
            icmp = probe.protocol == "icmp"
            said = explain(client.store, prober.address(probe.src, probe.version),
                           prober.address(probe.dst, probe.version), probe.protocol,
                           None if icmp else probe.port, None if icmp else port,
                           ip_version=probe.version)
            seen["probes"] += 1
            seen["allowed"] += said.allowed
            seen["kinds"].add((probe.protocol, probe.version, probe.src == "outside",
                               probe.dst in ("outside", "host")))
            if said.allowed != arrived:
                raise AssertionError(
                    f"explain says {said.verdict}, the packet was "
                    f"{'delivered' if arrived else 'dropped'}: {probe}\n"
                    + "\n".join(said.lines(trace=True)) + "\n\npolicy:\n"
                    + "\n".join(f"{p.name} {p.to_dict()}" for p in policy["profiles"])
                    + f"\nmembers {policy['members']} to_host {policy['to_host']}\n\n"
                    + lab.iptables_save(host.ns, v6=probe.version == 6))

    check()
    assert seen["probes"] >= MIN_PROBES, seen
    # both verdicts, many times, and every kind of probe were met
    assert min(seen["allowed"], seen["probes"] - seen["allowed"]) >= 50, seen
    assert len(seen["kinds"]) >= 16, seen["kinds"]

