"""Why a packet is allowed or dropped: the rendered chains of each host on its way,
walked for that one packet.

``explain(store, source, destination, ...)`` renders the snapshot of the source's host
and of the destination's host with the agent's own renderer, then follows the packet
through the chains it meets there as the kernel does (jumps, gotos, returns, marks, sets):
cali-FORWARD, or cali-INPUT when a container talks to its own host, on the source's host;
cali-FORWARD on the destination's. The verdict is what those chains decide, and each step
names the profile, direction and rule (as the user wrote it) that decided. Nothing here
knows what a profile means: the renderer says it, so the explanation cannot drift from the
rules the agent writes (tests/test_explain_packets.py checks it against real packets).

The packet is the first of a new flow (conntrack state NEW). What the walk does not see:
rules that are not Calico's (Docker's, the operator's), and routing (an address of a pool
that no container holds is blackholed on its block's host; a note says so).
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import netaddr

from .datastore import Datastore
from .errors import CalicoError, NotFoundError, ValidationError
from .model import Endpoint, Node, Profile, Rule, parse_address, show
from .render import names
from .render.policy import (
    ACCEPT_MARK,
    IpSet,
    Policy,
    Table,
    profile_chains,
    render_policy,
)
from .snapshot import Snapshot, load_snapshot

PROTOCOL_NUMBERS = {"tcp": 6, "udp": 17, "sctp": 132, "icmp": 1, "icmpv6": 58,
                    "ipv6-icmp": 58}
PORT_PROTOCOLS = (6, 17, 132)
ECHO_REQUEST = {4: 8, 6: 128}
#: the source port of a packet whose source port was not given (Linux's first ephemeral)
EPHEMERAL_PORT = 32768
#: the interface a packet that is not a container's takes in and out of a host
FABRIC = "(fabric)"
#: the least of an endpoint id that names it
MIN_ID_PREFIX = 4


class ExplainError(CalicoError):
    """A rule the walk cannot read: the renderer wrote a match this module does not know."""


# --------------------------------------------------------------------------- the packet


@dataclass(frozen=True)
class Packet:
    """The first packet of a flow."""

    src: str
    dst: str
    protocol: int
    src_port: int | None = None
    dst_port: int | None = None
    icmp_type: int | None = None
    icmp_code: int | None = None

    @property
    def version(self) -> int:
        return netaddr.IPAddress(self.src).version

    def describe(self) -> str:
        name = {6: "tcp", 17: "udp", 132: "sctp", 1: "icmp", 58: "icmpv6"}.get(
            self.protocol, f"protocol {self.protocol}")
        if self.protocol in PORT_PROTOCOLS:
            return f"{name} {self.src} port {self.src_port} -> {self.dst} port {self.dst_port}"
        if self.protocol in (1, 58):
            code = f" code {self.icmp_code}" if self.icmp_code is not None else ""
            return f"{name} type {self.icmp_type}{code} {self.src} -> {self.dst}"
        return f"{name} {self.src} -> {self.dst}"


def make_packet(src: str, dst: str, protocol: str | int | None = None,
                dst_port: int | None = None, src_port: int | None = None,
                icmp_type: int | None = None, icmp_code: int | None = None) -> Packet:
    """A validated packet: without ``protocol``, TCP when a port is given, else a ping."""
    if protocol is None:
        protocol = "tcp" if dst_port is not None else "icmp"
    version = netaddr.IPAddress(src).version
    if isinstance(protocol, str) and not protocol.isdigit():
        if protocol not in PROTOCOL_NUMBERS:
            raise ValidationError("protocol", f"{show(protocol)} is not allowed; use tcp, "
                                  "udp, sctp, icmp, icmpv6 or a number 1-255")
        number = PROTOCOL_NUMBERS[protocol]
    else:
        number = int(protocol)
        if not 1 <= number <= 255:
            raise ValidationError("protocol", f"{show(protocol)} is not allowed; use a "
                                  "number 1-255")
    if number in (1, 58):  # ICMP of the packet's own IP version
        number = 1 if version == 4 else 58
    if number in PORT_PROTOCOLS:
        if dst_port is None:
            raise ValidationError("port", "tcp, udp and sctp need the destination port")
        for name, port in (("port", dst_port), ("source_port", src_port)):
            if port is not None and not 0 < port < 65536:
                raise ValidationError(name, f"{show(port)} is not allowed; use 1-65535")
        return Packet(src, dst, number, src_port or EPHEMERAL_PORT, dst_port)
    if dst_port is not None or src_port is not None:
        raise ValidationError("port", "ports need protocol tcp, udp or sctp")
    if number in (1, 58):
        icmp_type = ECHO_REQUEST[version] if icmp_type is None else icmp_type
        for name, value in (("icmp_type", icmp_type), ("icmp_code", icmp_code)):
            if value is not None and not 0 <= value <= 255:
                raise ValidationError(name, f"{show(value)} is not allowed; use 0-255")
        return Packet(src, dst, number, icmp_type=icmp_type, icmp_code=icmp_code)
    if icmp_type is not None or icmp_code is not None:
        raise ValidationError("icmp_type", "ICMP types need protocol icmp or icmpv6")
    return Packet(src, dst, number)


# --------------------------------------------------------------------------- the answer


def short_id(endpoint_id: str) -> str:
    """An endpoint id as Docker shortens its ids: 12 characters (its interface and
    ``-o json`` name it whole)."""
    return endpoint_id if len(endpoint_id) <= 12 else endpoint_id[:12] + "..."


@dataclass(frozen=True)
class Step:
    """One decision on the packet's way."""

    host: str
    #: anti-spoofing, bgp-guard, outbound, inbound, endpoint, to-host, dispatch, forward, nat
    stage: str
    #: allow, deny, log, no-match (a profile), pass, drop, accept, masquerade
    verdict: str
    chain: str
    #: the rule's place in its chain, from 1 (0: the chain ended without a verdict)
    position: int
    detail: str = ""
    profile: str | None = None
    #: the rule's number in ``calicoctl profile show`` (from 1)
    rule_number: int | None = None
    rule: Rule | None = None

    def to_dict(self) -> dict[str, Any]:
        data = {k: getattr(self, k) for k in ("host", "stage", "verdict", "chain",
                                               "position", "detail", "profile",
                                               "rule_number")}
        data["rule"] = self.rule.to_dict() if self.rule else None
        return data

    def text(self) -> str:
        if self.profile is not None:
            direction = "inbound" if self.stage == "inbound" else "outbound"
            if self.verdict == "no-match":
                return f"{direction} profile {self.profile}: no rule matched"
            return (f"{direction} profile {self.profile}: rule {self.rule_number} "
                    f"{_VERBS[self.verdict]} ({_rule_text(self.rule)}){self.detail}")
        return self.detail


_VERBS = {"allow": "allows it", "deny": "denies it", "log": "logs it, then on"}


def _rule_text(rule: Rule | None) -> str:
    if rule is None:
        return "-"
    data = rule.to_dict()
    parts = [data.pop("action")]
    for key, value in data.items():
        if isinstance(value, list):
            value = ",".join(str(v) for v in value)
        parts.append(f"{key} {value}")
    return " ".join(parts)


@dataclass
class Explanation:
    packet: Packet
    source: str
    destination: str
    allowed: bool
    steps: list[Step] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: every rule that matched, as the kernel would walk it: (host, chain, position, spec)
    trace: list[tuple[str, str, int, str]] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        return "allowed" if self.allowed else "dropped"

    def to_dict(self) -> dict[str, Any]:
        return {"packet": self.packet.describe(), "allowed": self.allowed,
                "source": self.source,
                "destination": self.destination, "verdict": self.verdict,
                "steps": [s.to_dict() for s in self.steps], "notes": list(self.notes),
                "trace": [{"host": h, "chain": c, "position": p, "rule": s}
                          for h, c, p, s in self.trace]}

    def lines(self, trace: bool = False) -> list[str]:
        out = [f"{self.packet.describe()}: {self.verdict.upper()}",
               f"  from {self.source}", f"  to   {self.destination}"]
        host = None
        for step in self.steps:
            if step.host != host:
                host = step.host
                out.append(f"  on {host}:")
            out.append(f"    {step.text()}  [{step.chain} #{step.position}]"
                       if step.position else f"    {step.text()}  [{step.chain}]")
        out += [f"  note: {n}" for n in self.notes]
        if trace:
            out.append("  rules matched, in order:")
            out += [f"    {h} {c} #{p}: {s}" for h, c, p, s in self.trace]
        return out


# --------------------------------------------------------------------------- one rule


@dataclass
class _Walk:
    """One packet's state through one host's chains."""

    packet: Packet
    in_if: str
    out_if: str
    mac: str | None
    local: frozenset[str]
    sets: dict[str, IpSet]
    mark: int = 0


Match = Callable[[_Walk], bool]
#: the renderer's accept mark as numbers: a profile that set it allowed the packet
_ACCEPT_VALUE, _ACCEPT_MASK = (int(x, 0) for x in ACCEPT_MARK.split("/"))


@dataclass(frozen=True)
class _Rule:
    spec: str
    matches: tuple[Match, ...]
    #: ("jump"|"goto", chain) | ("ACCEPT"|"DROP"|"RETURN",) | ("MARK", value, mask)
    #: | ("LOG", prefix) | ("MASQUERADE",)
    target: tuple[Any, ...]


def _iface(pattern: str, name: str) -> bool:
    return name.startswith(pattern[:-1]) if pattern.endswith("+") else name == pattern


def _ports(text: str) -> Callable[[int | None], bool]:
    ranges = []
    for part in text.split(","):
        low, _, high = part.partition(":")
        ranges.append((int(low), int(high or low)))
    return lambda port: port is not None and any(a <= port <= b for a, b in ranges)


def _in_set(w: _Walk, name: str, address: str) -> bool:
    ipset = w.sets.get(name)
    if ipset is None:
        raise ExplainError(f"a rule names set {name}, which the render does not hold")
    if ipset.kind == "hash:ip":
        return address in ipset.members
    ip = netaddr.IPAddress(address)
    return any(ip in netaddr.IPNetwork(m) for m in ipset.members)


def _icmp(text: str) -> Callable[[Packet], bool]:
    """``--icmp-type T`` matches every code of type T, ``T/C`` only code C."""
    kind, _, code = text.partition("/")
    return lambda p: p.icmp_type == int(kind) and (not code or (p.icmp_code or 0) == int(code))


def parse_rule(spec: str) -> _Rule:
    """An iptables rule spec as the renderer writes it, as matches and a target."""
    words = shlex.split(spec)
    matches: list[Match] = []
    target: tuple[Any, ...] | None = None
    i, negate = 0, False

    def add(test: Match) -> None:
        nonlocal negate
        flip = negate
        matches.append((lambda w: not test(w)) if flip else test)
        negate = False

    def arg() -> str:
        nonlocal i
        i += 1
        if i >= len(words):
            raise ExplainError(f"cannot read rule {spec!r}: {words[i - 1]} has no value")
        return words[i]

    while i < len(words):
        word = words[i]
        if word == "!":
            negate = True
        elif word == "-m":
            arg()  # the module: its options below say what it matches
        elif word == "-p":
            number = PROTOCOL_NUMBERS.get(value := arg()) or int(value)
            add(lambda w, n=number: w.packet.protocol == n)
        elif word in ("-s", "-d"):
            net = netaddr.IPNetwork(arg())
            if word == "-s":
                add(lambda w, n=net: netaddr.IPAddress(w.packet.src) in n)
            else:
                add(lambda w, n=net: netaddr.IPAddress(w.packet.dst) in n)
        elif word in ("-i", "-o"):
            pattern = arg()
            if word == "-i":
                add(lambda w, p=pattern: _iface(p, w.in_if))
            else:
                add(lambda w, p=pattern: _iface(p, w.out_if))
        elif word == "--ctstate":
            states = arg().split(",")
            add(lambda w, s=states: "NEW" in s)
        elif word == "--match-set":
            name, direction = arg(), arg()
            add(lambda w, n=name, d=direction: _in_set(
                w, n, w.packet.src if d == "src" else w.packet.dst))
        elif word in ("--icmp-type", "--icmpv6-type"):
            test = _icmp(arg())
            add(lambda w, t=test: t(w.packet))
        elif word in ("--dports", "--dport", "--sports", "--sport"):
            ports = _ports(arg())
            if word.startswith("--d"):
                add(lambda w, t=ports: t(w.packet.dst_port))
            else:
                add(lambda w, t=ports: t(w.packet.src_port))
        elif word == "--mac-source":
            mac = arg().lower()
            add(lambda w, m=mac: w.mac is not None and w.mac.lower() == m)
        elif word == "--dst-type":
            if arg() != "LOCAL":
                raise ExplainError(f"cannot read rule {spec!r}: only --dst-type LOCAL")
            add(lambda w: w.packet.dst in w.local)
        elif word == "--mark":
            value, _, mask = arg().partition("/")
            add(lambda w, v=int(value, 0), m=int(mask or "0xffffffff", 0): w.mark & m == v)
        elif word == "--comment":
            arg()
        elif word in ("-j", "-g"):
            name = arg()
            if name == "MARK":
                if arg() != "--set-xmark":
                    raise ExplainError(f"cannot read rule {spec!r}: MARK needs --set-xmark")
                value, _, mask = arg().partition("/")
                target = ("MARK", int(value, 0), int(mask, 0))
            elif name == "LOG":
                if arg() != "--log-prefix":
                    raise ExplainError(f"cannot read rule {spec!r}: LOG needs --log-prefix")
                target = ("LOG", arg())
            elif name in ("ACCEPT", "DROP", "RETURN", "MASQUERADE"):
                target = (name,)
            elif name.startswith("cali"):
                target = ("jump" if word == "-j" else "goto", name)
            else:
                raise ExplainError(f"cannot read rule {spec!r}: target {name}")
        else:
            raise ExplainError(f"cannot read rule {spec!r}: {word}")
        i += 1
    if target is None:
        raise ExplainError(f"cannot read rule {spec!r}: no target")
    return _Rule(spec, tuple(matches), target)


# --------------------------------------------------------------------------- one host


@dataclass
class _HostView:
    """What the walk needs of one host: its render and what its chains mean."""

    name: str
    snapshot: Snapshot
    policy: Policy
    #: profile chain -> (profile, "inbound"/"outbound", spec origins)
    profiles: dict[str, tuple[Profile, str, tuple[int, ...]]]
    local: frozenset[str]
    #: a local endpoint's chains -> (kind: "source-check", "from" or "to"; the endpoint)
    endpoints: dict[str, tuple[str, Endpoint]] = field(default_factory=dict)
    parsed: dict[str, list[_Rule]] = field(default_factory=dict)

    def chain(self, table: Table, name: str) -> list[_Rule]:
        key = f"{table.version}/{table.name}/{name}"
        if key not in self.parsed:
            if name not in table.chains:
                raise ExplainError(f"a rule jumps to {name}, which the render does not hold")
            self.parsed[key] = [parse_rule(s) for s in table.chains[name]]
        return self.parsed[key]


def _host_view(store: Datastore, host: str, version: int) -> _HostView:
    snapshot = load_snapshot(store, host)
    policy = render_policy(snapshot)
    profiles = {}
    rendered_here = policy.table(version, "filter").chains
    for profile in snapshot.profiles.values():
        if names.profile_inbound(profile.name) not in rendered_here:
            continue  # no local endpoint uses it: the walk never enters its chains
        rendered = profile_chains(profile, version)
        for chain, origins in rendered.origins.items():
            direction = "inbound" if chain == names.profile_inbound(profile.name) \
                else "outbound"
            profiles[chain] = (profile, direction, origins)
    node = snapshot.nodes.get(host)
    local = frozenset(a for a in ((node.ipv4, node.ipv6) if node else ()) if a)
    endpoints = {}
    for ep in snapshot.local_endpoints:
        endpoints[names.source_check(ep.interface, version)] = ("source-check", ep)
        endpoints[names.from_endpoint(ep.interface)] = ("from", ep)
        endpoints[names.to_endpoint(ep.interface)] = ("to", ep)
    return _HostView(host, snapshot, policy, profiles, local, endpoints)


class _Walker:
    """Follows one packet through one host's table, recording steps and matched rules."""

    def __init__(self, view: _HostView, table: Table, walk: _Walk,
                 explanation: Explanation) -> None:
        self.view, self.table, self.walk, self.out = view, table, walk, explanation

    def run(self, chain: str) -> str | None:
        """ACCEPT, DROP, or None when the chain returned to the builtin hook."""
        return self._chain(chain, depth=0)

    def _chain(self, chain: str, depth: int) -> str | None:
        if depth > 16:
            raise ExplainError(f"chains nest deeper than 16 at {chain}")
        profile = self.view.profiles.get(chain)
        for position, rule in enumerate(self.view.chain(self.table, chain), 1):
            if not all(test(self.walk) for test in rule.matches):
                continue
            self.out.trace.append((self.view.name, chain, position, rule.spec))
            kind = rule.target[0]
            self._note(chain, position, rule, profile)
            if kind == "MARK":
                _, value, mask = rule.target
                self.walk.mark = (self.walk.mark & ~mask) ^ value
            elif kind == "LOG":
                continue
            elif kind in ("ACCEPT", "DROP", "MASQUERADE"):
                return kind
            elif kind == "RETURN":
                return None
            else:  # jump or goto
                verdict = self._chain(rule.target[1], depth + 1)
                if verdict is not None or kind == "goto":
                    return verdict
        if profile is not None and not self._marked():
            self._step("inbound" if profile[1] == "inbound" else "outbound", "no-match",
                       chain, 0, profile=profile[0].name)
        return None

    def _marked(self) -> bool:
        return self.walk.mark & _ACCEPT_MASK == _ACCEPT_VALUE

    def _step(self, stage: str, verdict: str, chain: str, position: int,
              detail: str = "", **extra: Any) -> None:
        self.out.steps.append(Step(self.view.name, stage, verdict, chain, position,
                                   detail, **extra))

    def _note(self, chain: str, position: int, rule: _Rule,
              profile: tuple[Profile, str, tuple[int, ...]] | None) -> None:
        """The step a matching rule makes, in the user's terms."""
        kind = rule.target[0]
        if profile is not None:
            if kind in ("jump", "goto", "RETURN"):
                return
            prof, direction, origins = profile
            index = origins[position - 1]
            rules = prof.inbound_rules if direction == "inbound" else prof.outbound_rules
            verdict = {"MARK": "allow", "DROP": "deny", "LOG": "log"}[kind]
            detail = f" with prefix {rule.target[1]!r}" if kind == "LOG" else ""
            self._step(direction, verdict, chain, position, detail, profile=prof.name,
                       rule_number=index + 1, rule=rules[index])
            return
        kind_of, ep = self.view.endpoints.get(chain, ("", None))
        if kind_of == "source-check":
            if kind == "DROP":
                what = "MAC" if "--mac-source" in rule.spec else "source address"
                self._step("anti-spoofing", "drop", chain, position,
                           f"anti-spoofing: dropped, the {what} is not the endpoint's")
            elif kind == "RETURN":
                self._step("anti-spoofing", "pass", chain, position,
                           "anti-spoofing: passed (the endpoint's own MAC and address)")
        elif ep is not None and kind == "DROP":
            if "--dport 179" in rule.spec:
                self._step("bgp-guard", "drop", chain, position,
                           "dropped: workloads may not reach BGP (tcp/179) of a host or "
                           "peer unless an outbound rule allows port 179 itself")
            else:
                direction = "inbound" if kind_of == "to" else "outbound"
                self._step("endpoint", "drop", chain, position,
                           f"dropped: no {direction} profile of endpoint {short_id(ep.id)} "
                           "allowed it"
                           + ("" if ep.profiles else " (it has no profile)"))
        elif chain.startswith(names.DISPATCH_ROOTS) and kind == "DROP":
            iface = self.walk.in_if if chain.startswith(
                (names.FROM_DISPATCH, names.SPOOF_DISPATCH)) else self.walk.out_if
            self._step("dispatch", "drop", chain, position,
                       f"dropped: this host has no rules for interface {iface} (not an "
                       f"active local endpoint with an IPv{self.walk.packet.version} "
                       "address, or not programmed yet)")
        elif chain == names.WL_TO_HOST and kind in ("ACCEPT", "DROP"):
            if position == len(self.table.chains[chain]):
                action = self.view.snapshot.config.default_endpoint_to_host_action
                self._step("to-host", kind.lower(), chain, position,
                           f"to its own host: default_endpoint_to_host_action is {action}")
            elif kind == "ACCEPT":
                self._step("to-host", "accept", chain, position,
                           "to its own host: DHCP, DNS and neighbour discovery always pass")
        elif chain == names.FORWARD and kind == "ACCEPT":
            self._step("forward", "accept", chain, position, "accepted: forwarded")
        elif chain == names.POSTROUTING and kind == "MASQUERADE":
            self._step("nat", "masquerade", chain, position,
                       "leaves masqueraded to this host's address (a nat_outgoing pool "
                       "to a destination outside every pool)")



# --------------------------------------------------------------------------- the ends


@dataclass(frozen=True)
class Party:
    """One end of a flow: a container's endpoint, a node, or any other address."""

    address: str
    endpoint: Endpoint | None = None
    node: Node | None = None
    #: named by its address (which fixes the IP version), not by an endpoint or container
    by_address: bool = False

    def describe(self) -> str:
        if self.endpoint is not None:
            ep = self.endpoint
            return (f"endpoint {short_id(ep.id)} ({ep.interface} on {ep.host}, profiles "
                    f"{','.join(ep.profiles) or '-'}) at {self.address}")
        if self.node is not None:
            return f"host {self.node.name} at {self.address}"
        return f"{self.address} (no endpoint or node has it)"


def resolve(token: str, version: int | None, endpoints: tuple[Endpoint, ...],
            nodes: dict[str, Node], field_name: str,
            containers: Callable[[str], list[str]] | None = None) -> Party:
    """An address, an endpoint id (or a unique start of one), or a container name or id
    (``containers`` maps it to its endpoint ids), as one end of a flow."""
    try:
        address = parse_address(field_name, token)
    except ValidationError:
        address = None
    if address is not None:
        text = str(address)
        owner = next((e for e in endpoints if e.state == "active" and text in e.addresses),
                     None)
        node = next((n for n in nodes.values() if text in (n.ipv4, n.ipv6)), None)
        return Party(text, owner, node, by_address=True)
    found = [e for e in endpoints if e.id == token]
    if not found and len(token) >= MIN_ID_PREFIX:
        found = [e for e in endpoints if e.id.startswith(token)]
    if not found and containers is not None:
        ids = set(containers(token))
        found = [e for e in endpoints if e.id in ids]
    if not found:
        raise NotFoundError(f"{field_name}: {show(token)} is no address, endpoint id or "
                            "container of a Calico network")
    if len(found) > 1:
        raise ValidationError(field_name, f"{show(token)} names {len(found)} endpoints ("
                              + ", ".join(e.id[:12] for e in found[:4])
                              + "); give an endpoint id or an address")
    ep = found[0]
    wanted = [version] if version else [4, 6]
    for v in wanted:
        nets = ep.ipv4_nets if v == 4 else ep.ipv6_nets
        if nets:
            return Party(nets[0].split("/")[0], ep)
    raise ValidationError(field_name, f"endpoint {ep.id} has no IPv{version} address")


# --------------------------------------------------------------------------- the walk


def explain(store: Datastore, source: str, destination: str,
            protocol: str | int | None = None, dst_port: int | None = None,
            src_port: int | None = None, icmp_type: int | None = None,
            icmp_code: int | None = None, ip_version: int | None = None,
            containers: Callable[[str], list[str]] | None = None) -> Explanation:
    """Would the first packet of this flow pass Calico's rules, and which rule decided?

    ``source`` and ``destination``: an address, an endpoint id (or a unique start of one)
    or, with ``containers``, a container name."""
    if ip_version not in (None, 4, 6):
        raise ValidationError("ip_version", f"{show(ip_version)} is not allowed; use 4 or 6")
    # every endpoint and node, read as the agent reads them ("" is no host name: no host's
    # own peers or blocks are read)
    everything = load_snapshot(store, "")
    endpoints, nodes = everything.endpoints, everything.nodes
    src = resolve(source, ip_version, endpoints, nodes, "from", containers)
    dst = resolve(destination, ip_version, endpoints, nodes, "to", containers)
    common = _versions(src) & _versions(dst)
    if not common:  # name the end that lacks the other's version
        name, party, other = (("from", src, dst) if src.endpoint is not None
                              else ("to", dst, src))
        wanted = min(_versions(other))
        what = f"endpoint {party.endpoint.id}" if party.endpoint else party.address
        raise ValidationError(name, f"{what} has no IPv{wanted} address; give addresses "
                              "of one IP version")
    version = min(common)
    src = resolve(source, version, endpoints, nodes, "from", containers)
    dst = resolve(destination, version, endpoints, nodes, "to", containers)
    if src.endpoint is not None and src.endpoint == dst.endpoint:
        raise ValidationError("to", "the source and the destination are one endpoint")
    packet = make_packet(src.address, dst.address, protocol, dst_port, src_port,
                         icmp_type, icmp_code)
    out = Explanation(packet, src.describe(), dst.describe(), allowed=True)
    views: dict[str, _HostView] = {}

    def view(host: str) -> _HostView:
        if host not in views:
            views[host] = _host_view(store, host, version)
        return views[host]

    src_host = src.endpoint.host if src.endpoint else None
    dst_host = dst.endpoint.host if dst.endpoint else None
    if src_host is not None:
        here = view(src_host)
        to_self = dst.node is not None and dst.node.name == src_host and dst.endpoint is None
        out_if = dst.endpoint.interface if dst_host == src_host and dst.endpoint else FABRIC
        walk = _Walk(packet, src.endpoint.interface, "" if to_self else out_if,
                     src.endpoint.mac, here.local, here.policy.ipsets)
        filter_table = here.policy.table(version, "filter")
        verdict = _Walker(here, filter_table, walk, out).run(
            names.INPUT if to_self else names.FORWARD)
        if verdict != "ACCEPT":
            out.allowed = False
            return out
        if out_if == FABRIC and not to_self:
            nat = _Walk(packet, src.endpoint.interface, FABRIC, src.endpoint.mac,
                        here.local, here.policy.ipsets)
            _Walker(here, here.policy.table(version, "nat"), nat, out).run(names.POSTROUTING)
    if dst_host is not None and dst_host != src_host:
        if src.node is not None and src.node.name == dst_host:
            out.notes.append(f"a host reaches its own containers: {dst_host}'s traffic to "
                             "them is not filtered")
            return out
        there = view(dst_host)
        walk = _Walk(packet, FABRIC, dst.endpoint.interface, None, there.local,
                     there.policy.ipsets)
        verdict = _Walker(there, there.policy.table(version, "filter"), walk, out).run(
            names.FORWARD)
        out.allowed = verdict == "ACCEPT"
    if src_host is None and dst_host is None:
        raise ValidationError("to", "neither end is a container: Calico's rules judge only "
                              "traffic from or to containers")
    if dst.endpoint is None and dst.node is None:
        pools = [p for p in view(src_host or dst_host or "").snapshot.pools
                 if netaddr.IPAddress(dst.address) in netaddr.IPNetwork(p.cidr)]
        if pools:
            out.notes.append(f"{dst.address} is in pool {pools[0].cidr} but no container "
                             "holds it: its block's host drops it (blackhole route)")
    return out


def _versions(party: Party) -> set[int]:
    """The IP versions one end can speak: an address its own, an endpoint its nets'."""
    if party.endpoint is None or party.by_address:
        return {netaddr.IPAddress(party.address).version}
    return {v for v, nets in ((4, party.endpoint.ipv4_nets), (6, party.endpoint.ipv6_nets))
            if nets}
