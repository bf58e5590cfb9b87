"""The distributed firewall as data: ipsets and iptables/ip6tables chains for one host.

``render_policy(snapshot)`` is a pure function. Packets from or to a local container take
this path (Felix-style):

    FORWARD -> cali-FORWARD: INVALID dropped, RELATED/ESTABLISHED accepted,
        -i cali+ -> cali-from-wl-dispatch -> (goto) cali-from-<if>: anti-spoofing, then the
                    profiles' outbound chains cali-po-<profile>; drop unless one allowed
        -o cali+ -> cali-to-wl-dispatch   -> (goto) cali-to-<if>: profiles' inbound chains
                    cali-pi-<profile>; drop unless one allowed
        then ACCEPT
    INPUT   -> cali-INPUT: -i cali+ -> cali-wl-to-host: DHCP, DNS, ND pass; the container's
               outbound policy; then default_endpoint_to_host_action
    nat POSTROUTING -> cali-POSTROUTING: MASQUERADE from nat-outgoing pools to outside all pools

An allow rule sets the accept mark and returns; the endpoint chain returns as soon as a
profile set the mark, so profiles are tried in order and a deny rule drops at once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import netaddr

from ..model import Endpoint, Profile, Rule
from ..snapshot import Snapshot
from . import names
from .tunnel import PORT as VXLAN_PORT

ACCEPT_MARK = "0x10000/0x10000"
CLEAR_MARK = "-j MARK --set-xmark 0x0/0x10000"
SET_MARK = f"-j MARK --set-xmark {ACCEPT_MARK}"
RETURN_IF_MARKED = f"-m mark --mark {ACCEPT_MARK} -j RETURN"
MULTIPORT_MAX = 15  # port slots in one multiport match; a range takes two
MAXELEM_MIN = 65536  # ipset's own default maxelem
HASHSIZE_MIN = 1024  # ipset's own default hashsize

HOOKS = {
    "filter": [("FORWARD", names.FORWARD), ("INPUT", names.INPUT)],
    "nat": [("POSTROUTING", names.POSTROUTING)],
}


@dataclass(frozen=True)
class IpSet:
    name: str
    kind: str  # hash:ip or hash:net
    version: int
    members: frozenset[str]

    @property
    def family(self) -> str:
        return "inet" if self.version == 4 else "inet6"

    @property
    def maxelem(self) -> int:
        """Room for the members with headroom: the smallest power of two that holds twice
        their number, never below ipset's default (a full set refuses every later add)."""
        size = MAXELEM_MIN
        while size < 2 * len(self.members):
            size *= 2
        return size

    @property
    def hashsize(self) -> int:
        """Buckets for about one member each: a lookup in a group of 10,000 costs what one
        in a group of 10 does (ipset's default, 1024, would chain them ten deep until the
        kernel grows the table)."""
        size = HASHSIZE_MIN
        while size < len(self.members):
            size *= 2
        return size

    @property
    def header(self) -> str:
        """What follows ``create <name>`` in `ipset restore` input."""
        return (f"{self.kind} family {self.family} hashsize {self.hashsize} "
                f"maxelem {self.maxelem}")


@dataclass
class Table:
    """One iptables table of one IP version: our chains, and the hooks that jump to them."""

    version: int
    name: str
    chains: dict[str, list[str]] = field(default_factory=dict)

    @property
    def hooks(self) -> list[tuple[str, str]]:
        return HOOKS[self.name]


@dataclass
class Policy:
    ipsets: dict[str, IpSet]
    tables: list[Table]

    def table(self, version: int, name: str) -> Table:
        return next(t for t in self.tables if t.version == version and t.name == name)


# --------------------------------------------------------------------------- rules


def _version_nets(nets: list[str], version: int) -> list[str]:
    return [n for n in nets if netaddr.IPNetwork(n).version == version]


def _is_any(net: str) -> bool:
    """0.0.0.0/0 or ::/0: every address of its version (hash:net sets refuse a /0)."""
    return netaddr.IPNetwork(net).prefixlen == 0


def _ports_chunks(ports: list[int | str]) -> list[list[str]]:
    """Split a port list into multiport-sized pieces (a range counts twice)."""
    chunks: list[list[str]] = [[]]
    used = 0
    for port in ports:
        cost = 2 if isinstance(port, str) else 1
        if used + cost > MULTIPORT_MAX:
            chunks.append([])
            used = 0
        chunks[-1].append(str(port))
        used += cost
    return chunks


class RuleRenderer:
    """Turns model rules into iptables rule specs, collecting the ipsets they use."""

    def __init__(self, version: int, sets: dict[str, IpSet],
                 tag_members: dict[str, frozenset[str]]):
        """``tag_members``: tag -> the addresses of this IP version of its members."""
        self.version = version
        self.sets = sets
        self.tag_members = tag_members
        #: every tag a rendered rule matched on
        self.tags: set[str] = set()

    def tag(self, tag: str) -> str:
        name = names.tag_set(tag, self.version)
        self.tags.add(tag)
        if name not in self.sets:
            self.sets[name] = IpSet(name, "hash:ip", self.version,
                                    self.tag_members.get(tag, frozenset()))
        return name

    def nets(self, nets: list[str], direction: str, negate: bool, as_set: bool = False) -> str:
        """A match on a CIDR list: `-s`/`-d` for one CIDR, else (or with ``as_set``: one
        rule takes a single `-s` and a single `-d`) a hash:net set."""
        bang = "! " if negate else ""
        if len(nets) == 1 and not as_set:
            return f"{bang}{'-s' if direction == 'src' else '-d'} {nets[0]}"
        name = names.net_set(tuple(nets), self.version)
        self.sets[name] = IpSet(name, "hash:net", self.version, frozenset(nets))
        return f"-m set {bang}--match-set {name} {direction}"

    def render(self, rule: Rule, log_prefix: str = "cali:packet ") -> list[str]:
        """The specs for one rule (several when a port list needs several multiports);
        a log rule's packets are logged with ``log_prefix``."""
        v = self.version
        if v not in rule.versions():
            return []
        for direction in ("src", "dst"):  # before any set is made for this rule
            wanted = getattr(rule, f"{direction}_net")
            if wanted and not _version_nets(wanted, v):
                return []  # only nets of the other IP version: never matches here
            excluded = _version_nets(getattr(rule, f"not_{direction}_net"), v)
            if any(_is_any(n) for n in excluded):
                return []  # every address of this version is excluded: never matches here
        matches: list[str] = []
        protocol = rule.protocol
        if protocol is not None:
            matches.append(f"-p {_protocol(protocol, v)}")
        elif rule.not_protocol is not None:
            matches.append(f"! -p {_protocol(rule.not_protocol, v)}")
        for direction in ("src", "dst"):
            nets = _version_nets(getattr(rule, f"{direction}_net"), v)
            positive = bool(nets) and not any(_is_any(n) for n in nets)  # /0: no match
            if positive:
                matches.append(self.nets(nets, direction, False))
            excluded = _version_nets(getattr(rule, f"not_{direction}_net"), v)
            if excluded:
                matches.append(self.nets(excluded, direction, True, as_set=positive))
            tag = getattr(rule, f"{direction}_tag")
            if tag:
                matches.append(f"-m set --match-set {self.tag(tag)} {direction}")
            not_tag = getattr(rule, f"not_{direction}_tag")
            if not_tag:
                matches.append(f"-m set ! --match-set {self.tag(not_tag)} {direction}")
        module, option = ("icmp", "--icmp-type") if v == 4 else ("icmp6", "--icmpv6-type")
        if rule.icmp_type is not None:
            code = f"/{rule.icmp_code}" if rule.icmp_code is not None else ""
            matches.append(f"-m {module} {option} {rule.icmp_type}{code}")
        if rule.not_icmp_type is not None:
            code = f"/{rule.not_icmp_code}" if rule.not_icmp_code is not None else ""
            matches.append(f"-m {module} ! {option} {rule.not_icmp_type}{code}")
        for direction, flag in (("src", "--sports"), ("dst", "--dports")):
            excluded_ports = getattr(rule, f"not_{direction}_ports")
            if excluded_ports:  # several negated multiports in one rule: all must hold
                for chunk in _ports_chunks(excluded_ports):
                    matches.append(f"-m multiport ! {flag} {','.join(chunk)}")
        variants = [matches]
        for direction, flag in (("src", "--sports"), ("dst", "--dports")):
            ports = getattr(rule, f"{direction}_ports")
            if ports:  # several positive chunks: one rule each (any may match)
                variants = [m + [f"-m multiport {flag} {','.join(chunk)}"]
                            for m in variants for chunk in _ports_chunks(ports)]
        target = {"allow": SET_MARK, "deny": "-j DROP",
                  "log": f'-j LOG --log-prefix "{log_prefix}"'}[rule.action]
        specs = [f"{' '.join(variant)} {target}".strip() for variant in variants]
        if rule.action == "allow":
            specs.append(RETURN_IF_MARKED)  # the first allowing rule ends the profile
        return specs


def _protocol(protocol: str | int, version: int) -> str:
    if protocol == "icmpv6" or (version == 6 and protocol in ("icmp", 58)):
        return "ipv6-icmp"
    return str(protocol)


# --------------------------------------------------------------------------- chains


@dataclass(frozen=True)
class _ProfileRender:
    """One profile's chains for one IP version, and the sets its rules name."""

    chains: dict[str, list[str]]
    tags: frozenset[str]
    net_sets: tuple[IpSet, ...]
    allows_bgp: bool
    #: chain -> for each of its specs, the index of the rule it came from
    origins: dict[str, tuple[int, ...]]


def profile_chains(profile: Profile, version: int) -> _ProfileRender:
    """A profile's inbound and outbound chains of one IP version, and where each rule
    spec came from (``explain`` and the rule counters name the rule that decided)."""
    sets: dict[str, IpSet] = {}
    rr = RuleRenderer(version, sets, {})
    chains, origins = {}, {}
    for direction, chain_name, rules in (
            ("in", names.profile_inbound(profile.name), profile.inbound_rules),
            ("out", names.profile_outbound(profile.name), profile.outbound_rules)):
        specs: list[str] = []
        origin: list[int] = []
        for index, rule in enumerate(rules):
            rendered = rr.render(rule, names.log_prefix(profile.name, direction, index + 1))
            specs += rendered
            origin += [index] * len(rendered)
        chains[chain_name] = specs
        origins[chain_name] = tuple(origin)
    return _ProfileRender(chains, frozenset(rr.tags),
                          tuple(s for s in sets.values() if s.kind == "hash:net"),
                          _allows_bgp(profile), origins)


#: ICMPv6 types a container sends from its link-local (or, for DAD, the unspecified)
#: address: MLD (130-132) and neighbour discovery (133-136)
ND_TYPES = (130, 131, 132, 133, 134, 135, 136)
LINK_LOCAL = {4: "169.254.0.0/16", 6: "fe80::/10"}
BGP_PORT = 179


def _source_check(ep: Endpoint, version: int, addresses: list[str]) -> list[str]:
    """Anti-spoofing: the endpoint's MAC, then one of its own addresses (IPv6 neighbour
    discovery from its link-local address too); anything else is dropped."""
    rules = []
    if ep.mac:
        rules.append(f"-m mac ! --mac-source {ep.mac} -j DROP")
    if version == 6:
        rules += [f"-s fe80::/10 -p ipv6-icmp -m icmp6 --icmpv6-type {t} -j RETURN"
                  for t in ND_TYPES]
        rules.append("-s ::/128 -p ipv6-icmp -m icmp6 --icmpv6-type 135 -j RETURN")
    rules += [f"-s {a} -j RETURN" for a in addresses]
    return rules + ["-j DROP"]


def _allows_bgp(profile: Profile) -> bool:
    """An outbound rule that names TCP port 179 itself lets workloads speak BGP."""
    return any(rule.action == "allow" and rule.protocol in ("tcp", 6)
               and any(p == BGP_PORT or (isinstance(p, str) and
                                         int(p.split(":")[0]) <= BGP_PORT
                                         <= int(p.split(":")[1]))
                       for p in rule.dst_ports or [])
               for rule in profile.outbound_rules)


def _endpoint_chains(ep: Endpoint, version: int,
                     profiles: dict[str, Profile]) -> dict[str, list[str]]:
    addresses = ep.ipv4_nets if version == 4 else ep.ipv6_nets
    known = [p for p in ep.profiles if p in profiles]
    out_chain, in_chain = names.from_endpoint(ep.interface), names.to_endpoint(ep.interface)
    check = names.source_check(ep.interface, version)
    chains: dict[str, list[str]] = {check: _source_check(ep, version, addresses)}

    from_rules = [CLEAR_MARK, f"-j {check}"]
    if not any(_allows_bgp(profiles[p]) for p in known):
        # BGP to this host or any node or peer only when a rule says so: a workload must
        # never reach a BIRD session (through NAT it would pass for its host)
        from_rules += [
            f"-p tcp -m tcp --dport {BGP_PORT} -m addrtype --dst-type LOCAL -j DROP",
            f"-p tcp -m tcp --dport {BGP_PORT} -m set --match-set "
            f"{names.all_hosts_set(version)} dst -j DROP"]
    for profile in known:
        from_rules += [f"-j {names.profile_outbound(profile)}", RETURN_IF_MARKED]
    from_rules.append("-j DROP")
    chains[out_chain] = from_rules

    to_rules = [CLEAR_MARK]
    for profile in known:
        to_rules += [f"-j {names.profile_inbound(profile)}", RETURN_IF_MARKED]
    to_rules.append("-j DROP")
    chains[in_chain] = to_rules
    return chains


#: dispatch chains: (root chain, interface option, per-interface target)
DISPATCH = (
    (names.SPOOF_DISPATCH, "-i", "source_check"),
    (names.FROM_DISPATCH, "-i", "from"),
    (names.TO_DISPATCH, "-o", "to"),
)
#: characters of the interface name (after "cali") each level of the tree splits on
DISPATCH_DEPTH = 2


def _fixed_chains(version: int, action: str, vxlan: bool = False) -> dict[str, list[str]]:
    """The chains every host has whatever its containers: the hooks' targets. With
    ``vxlan`` (a pool encapsulates), VXLAN packets to this host only from other nodes:
    never from a workload, a BGP peer or an unknown source."""
    chains: dict[str, list[str]] = {}
    chains[names.FORWARD] = [
        "-m conntrack --ctstate INVALID -j DROP",
        "-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
        f"-i cali+ -j {names.FROM_DISPATCH}",
        f"-o cali+ -j {names.TO_DISPATCH}",
        "-i cali+ -j ACCEPT",
        "-o cali+ -j ACCEPT",
    ]
    chains[names.INPUT] = [f"-i cali+ -g {names.WL_TO_HOST}"]
    if vxlan:
        vxlan_in = f"-p udp -m udp --dport {VXLAN_PORT}"
        chains[names.INPUT][:0] = [
            f"-i cali+ {vxlan_in} -j DROP",
            f"{vxlan_in} -m set ! --match-set {names.vxlan_hosts_set()} src -j DROP"]
    # Anti-spoofing first: the exemptions below accept only a container's own traffic (a
    # DNS query sent with another container's address would have the host answer the
    # victim, past the victim's inbound policy).
    to_host = ["-m conntrack --ctstate INVALID -j DROP",
               "-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
               f"-j {names.SPOOF_DISPATCH}"]
    if version == 4:
        to_host += ["-p udp -m udp --sport 68 --dport 67 -j ACCEPT"]
    else:
        to_host += [f"-p ipv6-icmp -m icmp6 --icmpv6-type {t} -j ACCEPT" for t in ND_TYPES]
        to_host += ["-p udp -m udp --sport 546 --dport 547 -j ACCEPT"]
    to_host += ["-p udp -m udp --dport 53 -j ACCEPT", "-p tcp -m tcp --dport 53 -j ACCEPT"]
    to_host += [f"-j {names.FROM_DISPATCH}", f"-j {action}"]
    chains[names.WL_TO_HOST] = to_host
    return chains


def _node_of(interface: str) -> str:
    """The prefix of the tree node that dispatches ``interface``: up to DISPATCH_DEPTH
    characters after "cali", always fewer than the name has (so "calia" sits in the
    root, matched exactly, and never behind "calia+")."""
    suffix = interface[len("cali"):]
    return suffix[:min(len(suffix) - 1, DISPATCH_DEPTH)]


#: a tree node's chain: (its interfaces, its children's prefixes) -> its rules
NodeMemo = dict[str, tuple[tuple[tuple[str, ...], tuple[str, ...]], list[str]]]


def _dispatch_tree(root: str, option: str, target: Callable[[str], str],
                   groups: dict[str, tuple[str, ...]], memo: NodeMemo | None = None
                   ) -> tuple[dict[str, list[str]], NodeMemo]:
    """Dispatch to one chain per interface as a tree keyed by the name's first characters
    after "cali" (as Felix does): a packet walks at most three short chains instead of one
    rule per local interface, and adding an interface rewrites one small leaf. Every chain
    ends in DROP: an interface the tree does not know never falls through to an accept.

    ``groups``: node prefix -> its interfaces, sorted; ``target`` names an interface's
    chain. A node whose interfaces and children are those in ``memo`` keeps its rules
    (the same list). Returns the chains and the memo for next time."""
    children: dict[str, set[str]] = {"": set()}
    for prefix in groups:  # every node on the path from the root to each group
        for depth in range(1, len(prefix) + 1):
            children.setdefault(prefix[:depth - 1], set()).add(prefix[:depth])
            children.setdefault(prefix[:depth], set())

    def node(prefix: str) -> str:
        return names.dispatch_child(root, prefix) if prefix else root

    chains: dict[str, list[str]] = {}
    kept: NodeMemo = {}
    for prefix in sorted(children):
        name = node(prefix)
        # exact names before prefixes: "calia" is matched by "calia+" too
        key = (groups.get(prefix, ()), tuple(sorted(children[prefix])))
        old = memo.get(name) if memo else None
        if old is not None and old[0] == key:
            rules = old[1]
        else:
            rules = [f"{option} {i} -g {target(i)}" for i in key[0]]
            rules += [f"{option} cali{child}+ -g {node(child)}" for child in key[1]]
            rules.append("-j DROP")
        chains[name] = rules
        kept[name] = (key, rules)
    return chains, kept


class PolicyRenderer:
    """``render_policy`` with memory: the chains of a profile or an endpoint whose input is
    unchanged since the last render are the same list objects as then, so a change costs
    rendering what changed and the applier compares the rest by identity. Output is
    exactly ``render_policy``'s."""

    def __init__(self) -> None:
        self._profiles: dict[tuple[int, str], tuple[Profile, _ProfileRender]] = {}
        self._endpoints: dict[tuple[int, str], tuple[Any, dict[str, list[str]]]] = {}
        self._fixed: dict[tuple[Any, ...], dict[str, list[str]]] = {}
        self._nat: dict[tuple[int, str], list[str]] = {}
        self._sets: dict[str, IpSet] = {}
        self._trees: dict[tuple[int, str], NodeMemo] = {}
        self._last_profiles: dict[str, Profile] | None = None
        self._members = _Members()
        #: True while rendering a snapshot whose profiles equal the last one's
        self._profiles_same = False

    def render(self, snapshot: Snapshot) -> Policy:
        self._profiles_same = self._last_profiles == snapshot.profiles
        members = self._members.update(snapshot, self._profiles_same)
        sets: dict[str, IpSet] = {}
        profiles: dict[tuple[int, str], tuple[Profile, _ProfileRender]] = {}
        endpoints: dict[tuple[int, str], tuple[Any, dict[str, list[str]]]] = {}
        tables = []
        for version in (4, 6):
            tags: set[str] = set()
            table = self._filter_table(snapshot, version, profiles, endpoints, sets, tags)
            for tag in sorted(tags):
                name = names.tag_set(tag, version)
                old = self._sets.get(name)
                wanted = members[version].get(tag, frozenset())
                sets[name] = old if old is not None and old.members is wanted else IpSet(
                    name, "hash:ip", version, wanted)
            tables.append(table)
            nat = _nat_table(snapshot, version, sets)
            for chain, specs in nat.chains.items():  # equal lists: the old object
                old_chain = self._nat.get((version, chain))
                if old_chain == specs:
                    nat.chains[chain] = old_chain
                self._nat[(version, chain)] = nat.chains[chain]
            tables.append(nat)
        self._profiles, self._endpoints, self._sets = profiles, endpoints, sets
        self._last_profiles = snapshot.profiles
        return Policy(dict(sorted(sets.items())), tables)

    def _profile(self, profile: Profile, version: int,
                 seen: dict[tuple[int, str], tuple[Profile, _ProfileRender]]
                 ) -> _ProfileRender:
        key = (version, profile.name)
        cached = self._profiles.get(key)
        if cached is not None and (cached[0] is profile or cached[0] == profile):
            seen[key] = cached
            return cached[1]
        rendered = profile_chains(profile, version)
        seen[key] = (profile, rendered)
        return rendered

    def _endpoint(self, ep: Endpoint, version: int, profiles: dict[str, Profile],
                  rendered: dict[str, _ProfileRender],
                  seen: dict[tuple[int, str], tuple[Any, dict[str, list[str]]]]
                  ) -> dict[str, list[str]]:
        key = (version, ep.interface)
        cached = self._endpoints.get(key)
        if cached is not None and cached[0][0] is ep and self._profiles_same:
            seen[key] = cached  # the same endpoint, the same profiles: the same chains
            return cached[1]
        known = tuple(p for p in ep.profiles if p in profiles)
        # what the endpoint's chains depend on besides the endpoint itself
        inputs = (ep, known, any(rendered[p].allows_bgp for p in known))
        if cached is not None and cached[0] == inputs:
            seen[key] = cached
            return cached[1]
        chains = _endpoint_chains(ep, version, profiles)
        seen[key] = (inputs, chains)
        return chains

    def _filter_table(self, snapshot: Snapshot, version: int,
                      profiles: dict[tuple[int, str], tuple[Profile, _ProfileRender]],
                      endpoints: dict[tuple[int, str], tuple[Any, dict[str, list[str]]]],
                      sets: dict[str, IpSet], tags: set[str]) -> Table:
        table = Table(version, "filter")
        chains = table.chains
        action = snapshot.config.default_endpoint_to_host_action.upper()
        vxlan = version == 4 and any(p.encapsulates for p in snapshot.pools)
        fixed = self._fixed.get((version, action, vxlan))
        if fixed is None:
            fixed = self._fixed[(version, action, vxlan)] = _fixed_chains(version, action,
                                                                          vxlan)
        chains.update(fixed)
        if vxlan:
            hosts = names.vxlan_hosts_set()
            sets[hosts] = IpSet(hosts, "hash:ip", 4, frozenset(
                n.ipv4 for n in snapshot.nodes.values() if n.ipv4))

        # Endpoints without an address of this IP version get no chains here: the
        # dispatch chains' final DROP covers their interfaces.
        local = [e for e in snapshot.local_endpoints if e.state == "active"
                 and (e.ipv4_nets if version == 4 else e.ipv6_nets)]
        chains.update(self._dispatch(version, tuple(e.interface for e in local)))
        used = sorted({p for e in local for p in e.profiles if p in snapshot.profiles})
        rendered: dict[str, _ProfileRender] = {}
        for name in used:
            rendered[name] = self._profile(snapshot.profiles[name], version, profiles)
            chains.update(rendered[name].chains)
            tags.update(rendered[name].tags)
            sets.update((s.name, s) for s in rendered[name].net_sets)
        for ep in local:
            chains.update(self._endpoint(ep, version, snapshot.profiles, rendered,
                                         endpoints))
        return table

    def _dispatch(self, version: int, interfaces: tuple[str, ...]) -> dict[str, list[str]]:
        """The three dispatch trees of one IP version; only the nodes whose interfaces
        changed are rendered again."""
        groups: dict[str, list[str]] = {}
        for interface in sorted(interfaces):
            groups.setdefault(_node_of(interface), []).append(interface)
        frozen = {prefix: tuple(members) for prefix, members in groups.items()}
        targets = {
            "source_check": lambda i: names.source_check(i, version),
            "from": names.from_endpoint,
            "to": names.to_endpoint,
        }
        chains: dict[str, list[str]] = {}
        for root, option, kind in DISPATCH:
            tree, self._trees[(version, root)] = _dispatch_tree(
                root, option, targets[kind], frozen, self._trees.get((version, root)))
            chains.update(tree)
        return chains


def _contribution(ep: Endpoint, profiles: dict[str, Profile]
                  ) -> list[tuple[int, str, str]]:
    """(IP version, tag, address) for each group membership of one endpoint."""
    if ep.state != "active":
        return []
    tags = {t for p in ep.profiles if p in profiles for t in profiles[p].tags}
    return [(version, tag, net.split("/")[0])
            for version, nets in ((4, ep.ipv4_nets), (6, ep.ipv6_nets))
            for net in nets for tag in tags]


class _Members:
    """IP version -> tag -> the addresses of every active endpoint (any host) whose
    profiles carry the tag. Kept as counts and patched by the endpoints that came and
    went since the last snapshot (found by identity), while the profiles are the same;
    recounted otherwise. A tag whose members did not change keeps its frozenset."""

    def __init__(self) -> None:
        self._endpoints: dict[int, Endpoint] = {}  # holds them: ids stay unique
        self._counts: dict[tuple[int, str], dict[str, int]] = {}
        self._sets: dict[tuple[int, str], frozenset[str]] = {}

    def update(self, snapshot: Snapshot, profiles_same: bool
               ) -> dict[int, dict[str, frozenset[str]]]:
        endpoints = {id(ep): ep for ep in snapshot.endpoints}
        added = endpoints.keys() - self._endpoints.keys()
        gone = self._endpoints.keys() - endpoints.keys()
        profiles = snapshot.profiles
        if not profiles_same or len(added) + len(gone) > len(endpoints) // 4 + 16:
            self._counts, self._sets = {}, {}
            added, gone = set(endpoints), set()
        dirty: set[tuple[int, str]] = set()
        for number in gone:
            for version, tag, address in _contribution(self._endpoints[number], profiles):
                counts = self._counts[(version, tag)]
                counts[address] -= 1
                if not counts[address]:
                    del counts[address]
                dirty.add((version, tag))
        for number in added:
            for version, tag, address in _contribution(endpoints[number], profiles):
                counts = self._counts.setdefault((version, tag), {})
                counts[address] = counts.get(address, 0) + 1
                dirty.add((version, tag))
        for key in dirty:
            if self._counts.get(key):
                self._sets[key] = frozenset(self._counts[key])
            else:
                self._counts.pop(key, None)
                self._sets.pop(key, None)
        self._endpoints = endpoints
        out: dict[int, dict[str, frozenset[str]]] = {4: {}, 6: {}}
        for (version, tag), members in self._sets.items():
            out[version][tag] = members
        return out


def host_addresses(snapshot: Snapshot, version: int) -> frozenset[str]:
    """Every node's BGP address and every peer's, of one IP version."""
    found = {n.ipv4 if version == 4 else n.ipv6 for n in snapshot.nodes.values()}
    found |= {p.address for p in snapshot.peers
              if netaddr.IPAddress(p.address).version == version}
    return frozenset(a for a in found if a)


def _nat_table(snapshot: Snapshot, version: int, sets: dict[str, IpSet]) -> Table:
    pools = [p for p in snapshot.pools if p.version == version]
    every, masq = names.all_pools_set(version), names.masq_pools_set(version)
    hosts = names.all_hosts_set(version)
    sets[every] = IpSet(every, "hash:net", version, frozenset(p.cidr for p in pools))
    sets[masq] = IpSet(masq, "hash:net", version,
                       frozenset(p.cidr for p in pools if p.nat_outgoing))
    sets[hosts] = IpSet(hosts, "hash:ip", version, host_addresses(snapshot, version))
    table = Table(version, "nat")
    # Only traffic leaving for the world: never to the pools, to a node or BGP peer (a
    # workload's connection to a peer's port 179 would pass for its host's session), nor
    # to link-local addresses.
    table.chains[names.POSTROUTING] = [
        f"-m set --match-set {masq} src -m set ! --match-set {every} dst "
        f"-m set ! --match-set {hosts} dst ! -d {LINK_LOCAL[version]} -j MASQUERADE"]
    return table


def render_policy(snapshot: Snapshot) -> Policy:
    """Every ipset and every cali chain this host needs, for IPv4 and IPv6."""
    return PolicyRenderer().render(snapshot)
