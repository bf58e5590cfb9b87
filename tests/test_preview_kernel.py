"""The preview of a change against the real kernel (issue 16).

Two namespace hosts with three containers each (IPv4 and IPv6) run the real agent. For
generated sequences of changes (hypothesis: profiles' rules replaced, added and removed,
with every action, protocols, CIDRs of both versions, tags and their negations, ports and
ranges, rules pinned to one IP version; tags changed; pools added, changed and removed;
the workload-to-host action; endpoints added (with or without their addresses assigned in
IPAM), changed, made inactive and removed; addresses assigned; profiles removed; BGP
peers added; changes the client refuses), and one fixed sequence with a change of every
kind, each change is first made on a ``Draft`` and previewed, then made for real with the
same client calls, and each host's agent applies it (``--once``). Every sequence starts
from the same datastore (a reset, itself previewed and checked like any change).

Per host, the kernel's change must then be the preview's, exactly: per IP version and
table (every table iptables-save shows), the rules that came and went (each chain's rules
before and after, diffed in order; a rule is known by its ``cali:`` hash); per ipset, the
members that came and went, and the sets made or destroyed whole; the routes the agent
owns (protocol 80: container routes and block blackholes); and BIRD's configuration
changed exactly when the preview shows a BIRD diff. Besides: the preview writes nothing
to the datastore; a change the draft refuses wrote nothing to it, previews no change and
is refused for real too; the draft's records after a change are the real ones after it.
The totals at the end make sure the generated changes really changed enough.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import netaddr
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import calico_lib
from calico_lib import BGPPeer, Endpoint, IPPool, Node, Profile, Rule, ValidationError
from calico_lib.dataplane.iptables import rule_hash
from calico_lib.errors import CalicoError
from calico_lib.keys import ROOT
from calico_lib.preview import Draft, HostPlan, Plan, chain_changes
from calico_lib.render.routes import RouteSpec
from calico_lib.snapshot import Snapshot, load_snapshot
from tests import netns
from tests.netns import OUTSIDE4, OUTSIDE6, Container, Host, Lab

pytestmark = pytest.mark.netns

POOL4, POOL6 = "10.65.0.0/16", "fd00:65::/64"
PROFILES = ("p0", "p1", "p2")
TAGS = ("p0", "p1", "p2", "shared", "nobody")
NETS = ("10.65.1.1/32", "10.65.2.2/32", "10.65.1.0/30", "10.65.0.0/16", "198.18.0.0/24",
        "0.0.0.0/0", "fd00:65::1:1/128", "fd00:65::2:2/128", "fd00:65::1:0/126",
        "fd00:65::/64", "2001:db8:ff::/64", "::/0")
RULE_PORTS = (53, 80, 179, 443, "1000:1001", "80:443", 8080, "20000:39999")
SOURCE_PORTS = ("20000:39999", "1:1000", 5353)
#: pools a change may add: two with NAT, one without, one overlapping the IPv4 pool
EXTRA_POOLS = (("10.66.0.0/16", True), ("fd00:66::/64", True), ("10.67.0.0/16", False),
               ("10.65.128.0/17", True))
PEERS = ((OUTSIDE4, 65001), (OUTSIDE6, 65002), ("198.18.0.200", 65003))
#: the IPAM clock of both clients: handle records carry it, and the draft's records must
#: be the real ones
CLOCK = 1_700_000_000.0
#: per host: the profiles of its containers c1 and c2 at the start of every example (c3
#: has no endpoint then)
BASELINE_MEMBERS = {"h1": (["p0"], ["p1", "p2"]), "h2": (["p1"], ["p2", "p0"])}
EXAMPLES = 10
MIN_STEPS, MAX_STEPS = 2, 4
TIMEOUT = 30.0

#: what must have been seen across the examples
MIN_RULES_ADDED = 40
MIN_RULES_REMOVED = 20

TableKey = tuple[int, str]  # (IP version, table)
RuleKey = tuple[str, str]   # (chain, the rule's cali hash, or its text without one)
Route = tuple[str, str | None]  # (destination, interface; None for a blackhole)

COMMENT = re.compile(r'-m comment --comment "?cali:([A-Za-z0-9_-]+)"? ?')


# --------------------------------------------------------------------------- the kernel


@dataclass
class KernelState:
    """What one host's kernel holds, as far as the agent writes it."""

    #: (version, table) -> chain -> its rules in order: (key, the rule as saved)
    rules: dict[TableKey, dict[str, list[tuple[str, str]]]]
    #: cali set -> its members, spelled as ``member`` spells them
    sets: dict[str, frozenset[str]]
    routes: set[Route]
    bird: str


def member(text: str) -> str:
    """One spelling for an address or a CIDR: ipset prints a host address without its /32
    or /128, in a hash:net set too."""
    return str(netaddr.IPNetwork(text))


def parse_iptables(text: str, version: int) -> dict[TableKey, dict[str, list[tuple[str, str]]]]:
    """iptables-save text -> every table's chains and their rules."""
    out: dict[TableKey, dict[str, list[tuple[str, str]]]] = {}
    chains: dict[str, list[tuple[str, str]]] = {}
    for line in text.splitlines():
        if line.startswith("*"):
            chains = out.setdefault((version, line[1:].strip()), {})
        elif line.startswith(":"):
            chains.setdefault(line[1:].split()[0], [])
        elif line.startswith("-A "):
            _, chain, *rest = line.split(" ", 2)
            spec = rest[0] if rest else ""
            found = COMMENT.search(spec)
            key = found.group(1) if found else "text:" + spec
            chains.setdefault(chain, []).append((key, COMMENT.sub("", spec, count=1)))
    return out


def parse_routes(text: str) -> set[Route]:
    out: set[Route] = set()
    for route in json.loads(text or "[]"):
        blackhole = route.get("type") == "blackhole"
        out.add((member(route["dst"]), None if blackhole else route.get("dev")))
    return out


SECTIONS = ("iptables-save", "ip6tables-save", "ipset save",
            "ip -j -4 route show table main proto 80",
            "ip -j -6 route show table main proto 80")


def read_kernel(lab: Lab, host: Host, bird_conf: Path) -> KernelState:
    """iptables (every table, both versions), the cali ipsets and the routes of protocol
    80 in ``host``'s namespace, in one command; and the BIRD configuration the agent
    wrote."""
    script = "; echo @@@@; ".join(SECTIONS)
    parts = lab.exec(host.ns, "sh", "-c", script).stdout.split("@@@@\n")
    assert len(parts) == len(SECTIONS), parts
    rules = parse_iptables(parts[0], 4) | parse_iptables(parts[1], 6)
    sets: dict[str, set[str]] = {}
    for line in parts[2].splitlines():
        words = line.split()
        if len(words) >= 3 and words[0] == "create" and words[1].startswith("cali"):
            sets[words[1]] = set()
        elif len(words) >= 3 and words[0] == "add" and words[1] in sets:
            sets[words[1]].add(member(words[2]))
    routes = parse_routes(parts[3]) | parse_routes(parts[4])
    bird = bird_conf.read_text() if bird_conf.exists() else ""
    return KernelState(rules, {n: frozenset(m) for n, m in sets.items()}, routes, bird)


def rule_diff(was: list[tuple[str, str]], now: list[tuple[str, str]], chain: str
              ) -> tuple[Counter[RuleKey], Counter[RuleKey], list[str]]:
    """A chain's rules added and removed, diffed in order by key (as the preview diffs its
    renders), and the lines for a message."""
    came, went = chain_changes(was, now)
    removed = Counter((chain, key) for key, _ in went)
    added = Counter((chain, key) for key, _ in came)
    lines = ([f"- -A {chain} {text}" for _, text in went]
             + [f"+ -A {chain} {text}" for _, text in came])
    return added, removed, lines


def plan_routes(routes: list[RouteSpec]) -> set[Route]:
    return {(member(r.dst), r.interface) for r in routes}


@dataclass
class Seen:
    """Totals across every change checked."""

    changes: int = 0
    refused: int = 0
    rules_added: Counter[int] = field(default_factory=Counter)  # per IP version
    rules_removed: Counter[int] = field(default_factory=Counter)
    members: int = 0
    sets_whole: int = 0
    routes: int = 0
    blackholes: int = 0  # of the routes: blocks' blackholes
    bird: int = 0
    #: the kinds of change that wrote something
    kinds: Counter[str] = field(default_factory=Counter)


def compare(host: Host, plan: HostPlan, before: KernelState, after: KernelState,
            seen: Seen) -> list[str]:
    """Every way the kernel's change on ``host`` differs from ``plan``'s."""
    problems = []
    kernel_lines: list[str] = []
    planned = {(t.version, t.table): t for t in plan.tables}
    for key in sorted(set(before.rules) | set(after.rules) | set(planned)):
        was, now = before.rules.get(key, {}), after.rules.get(key, {})
        added: Counter[RuleKey] = Counter()
        removed: Counter[RuleKey] = Counter()
        for chain in sorted(set(was) | set(now)):
            a, r, lines = rule_diff(was.get(chain, []), now.get(chain, []), chain)
            added += a
            removed += r
            kernel_lines += [f"{key}: {line}" for line in lines]
        table = planned.get(key)
        want_added = Counter((c, rule_hash(s)) for c, s in table.added) if table else Counter()
        want_removed = (Counter((c, rule_hash(s)) for c, s in table.removed) if table
                        else Counter())
        if added != want_added:
            problems.append(f"{key} rules added: kernel has {dict(added - want_added)} more, "
                            f"the preview {dict(want_added - added)} more")
        if removed != want_removed:
            problems.append(f"{key} rules removed: kernel has {dict(removed - want_removed)} "
                            f"more, the preview {dict(want_removed - removed)} more")
        seen.rules_added[key[0]] += sum(added.values())
        seen.rules_removed[key[0]] += sum(removed.values())
    temporary = [n for n in after.sets if "-x-" in n]
    if temporary:
        problems.append(f"temporary sets left behind: {temporary}")
    kernel_sets = {}
    for name in sorted((set(before.sets) | set(after.sets)) - set(temporary)):
        was_set, now_set = before.sets.get(name), after.sets.get(name)
        old, new = was_set or frozenset(), now_set or frozenset()
        if old != new or (was_set is None) != (now_set is None):
            kernel_sets[name] = (sorted(new - old), sorted(old - new))
    planned_sets = {name: (sorted(member(m) for m in a), sorted(member(m) for m in r))
                    for name, (a, r) in plan.sets.items()}
    if kernel_sets != planned_sets:
        problems.append(f"ipsets: kernel {kernel_sets}, preview {planned_sets}")
    made = sorted(set(after.sets) - set(before.sets) - set(temporary))
    gone = sorted(set(before.sets) - set(after.sets))
    if (made, gone) != (sorted(plan.sets_made), sorted(plan.sets_removed)):
        problems.append(f"sets made/removed: kernel {made}/{gone}, preview "
                        f"{plan.sets_made}/{plan.sets_removed}")
    seen.members += sum(len(a) + len(r) for a, r in kernel_sets.values())
    seen.sets_whole += len(made) + len(gone)
    routes_added, routes_removed = after.routes - before.routes, before.routes - after.routes
    planned_routes = plan_routes(plan.routes_added), plan_routes(plan.routes_removed)
    if (routes_added, routes_removed) != planned_routes:
        problems.append(f"routes: kernel +{sorted(routes_added, key=str)} "
                        f"-{sorted(routes_removed, key=str)}, preview "
                        f"+{sorted(planned_routes[0], key=str)} "
                        f"-{sorted(planned_routes[1], key=str)}")
    seen.routes += len(routes_added) + len(routes_removed)
    seen.blackholes += sum(1 for _, via in routes_added | routes_removed if via is None)
    if bool(plan.bird) != (before.bird != after.bird):
        problems.append(f"BIRD config changed: {before.bird != after.bird}, the preview "
                        f"shows {'a' if plan.bird else 'no'} diff")
    seen.bird += bool(plan.bird)
    if problems:
        problems += ["the preview:"] + ["  " + line for line in plan.lines()]
        problems += ["the kernel's change:"] + ["  " + line for line in kernel_lines]
    return problems


# --------------------------------------------------------------------------- the world


@dataclass
class World:
    lab: Lab
    client: calico_lib.Client
    url: str
    hosts: list[Host]
    #: per host: its containers c1, c2, c3
    containers: dict[str, list[Container]]
    baseline: dict[str, Snapshot] = field(default_factory=dict)

    def bird_conf(self, host: Host) -> Path:
        return Path(self.lab.workdir) / f"bird-{host.name}.conf"

    def endpoint(self, ctr: Container, profiles: list[str], state: str = "active"
                 ) -> Endpoint:
        return Endpoint(id=ctr.id, host=ctr.host.name, interface=ctr.interface, mac=ctr.mac,
                        ipv4_nets=ctr.ipv4, ipv6_nets=ctr.ipv6, profiles=profiles,
                        state=state)

    def apply(self) -> None:
        """Every host's agent applies the datastore once, side by side."""
        def run(host: Host) -> str:
            conf = self.bird_conf(host)
            return self.lab.agent(host, self.url, None, "--bird-config", str(conf),
                                  "--bird-socket", str(conf.with_suffix(".ctl")),
                                  timeout=TIMEOUT)
        with ThreadPoolExecutor(len(self.hosts)) as pool:
            list(pool.map(run, self.hosts))

    def kernels(self) -> dict[str, KernelState]:
        return {h.name: read_kernel(self.lab, h, self.bird_conf(h)) for h in self.hosts}


def baseline_profile(name: str) -> Profile:
    return Profile(name, tags=[name], inbound_rules=[Rule(action="allow", src_tag=name)],
                   outbound_rules=[Rule(action="allow")])


def reset(world: World) -> Callable[[calico_lib.Client], None]:
    """The calls that bring the datastore back to the start of an example."""
    def run(client: calico_lib.Client) -> None:
        client.set_agent_config("accept")
        for peer in client.list_bgp_peers():
            client.remove_bgp_peer(peer.address, peer.node)
        for host in world.hosts:
            for ctr, profiles in zip(world.containers[host.name], BASELINE_MEMBERS[host.name],
                                     strict=False):
                client.put_endpoint(world.endpoint(ctr, profiles))
            third = world.containers[host.name][2]
            if any(e.id == third.id for e in client.list_endpoints(host.name)):
                client.remove_endpoint(host.name, third.id)
            for ctr in world.containers[host.name]:
                client.ipam.release_handle(ctr.id)
            client.ipam.release_host_affinities(host.name)
        for profile in client.list_profiles():
            if profile.name not in PROFILES:
                client.remove_profile(profile.name, force=True)
        for name in PROFILES:
            client.put_profile(baseline_profile(name))
        for pool in client.list_pools():
            if pool.cidr not in (POOL4, POOL6):
                client.remove_pool(pool.cidr)
        for cidr in (POOL4, POOL6):
            if cidr in {p.cidr for p in client.list_pools()}:
                client.update_pool(cidr, nat_outgoing=False)
            else:
                client.add_pool(IPPool(cidr))
    return run


@pytest.fixture
def world(lab: Lab, tmp_path: Path) -> Iterator[World]:
    netns.require("bird")  # the agents check the BIRD configuration they write with it
    url = "sqlite:///" + str(tmp_path / "calico.db")
    with calico_lib.connect(url) as client:
        client.ipam.clock = lambda: CLOCK
        hosts = [lab.host("h1"), lab.host("h2")]
        containers = {}
        for index, host in enumerate(hosts, 1):
            client.add_node(Node(host.name, ipv4=host.ipv4, ipv6=host.ipv6))
            containers[host.name] = [
                lab.container(host, f"{host.name}c{n}", ipv4=[f"10.65.{index}.{n}"],
                              ipv6=[f"fd00:65::{index}:{n}"]) for n in (1, 2, 3)]
        world = World(lab, client, url, hosts, containers)
        reset(world)(client)
        world.baseline = {h.name: replace(load_snapshot(client.store, h.name), revision=0)
                          for h in hosts}
        world.apply()
        yield world


# --------------------------------------------------------------------------- changes


@dataclass(frozen=True)
class Change:
    """Client calls that make one change (made on the draft, then for real)."""

    kind: str
    what: str
    run: Callable[[calico_lib.Client], object] = field(repr=False, compare=False)

    def __repr__(self) -> str:
        return f"Change({self.what})"


@st.composite
def rules(draw: st.DrawFn) -> Rule:
    fields: dict = {"action": draw(st.sampled_from(("allow", "allow", "deny", "log")))}
    version = draw(st.sampled_from((None, None, 4, 6)))
    protocol = draw(st.sampled_from((None, "tcp", "tcp", "udp", "icmp", "icmpv6", "not-udp")))
    if protocol == "icmp" and version == 6 or protocol == "icmpv6" and version == 4:
        protocol = "icmp" if version == 4 else "icmpv6"
    if protocol in ("icmp", "icmpv6") and draw(st.booleans()):
        fields["icmp_type"] = draw(st.sampled_from((0, 8, 128, 129)))
        if draw(st.booleans()):
            fields["icmp_code"] = draw(st.sampled_from((0, 1)))
    if protocol == "not-udp":
        fields["not_protocol"] = "udp"
    elif protocol is not None:
        fields["protocol"] = protocol
    fields["ip_version"] = version
    for direction in ("src", "dst"):
        for negated in ("", "not_"):
            if draw(st.integers(0, 3)) == 0:
                fields[f"{negated}{direction}_net"] = draw(
                    st.lists(st.sampled_from(NETS), min_size=1, max_size=3, unique=True))
            if draw(st.integers(0, 3)) == 0:
                fields[f"{negated}{direction}_tag"] = draw(st.sampled_from(TAGS))
    if protocol in ("tcp", "udp"):
        for negated in ("", "not_"):
            if draw(st.integers(0, 1)) == 0:
                fields[f"{negated}dst_ports"] = draw(
                    st.lists(st.sampled_from(RULE_PORTS), min_size=1, max_size=4, unique=True))
            if draw(st.integers(0, 4)) == 0:
                fields[f"{negated}src_ports"] = [draw(st.sampled_from(SOURCE_PORTS))]
    try:
        return Rule(**fields)
    except ValidationError:  # a contradiction the model refuses: a simpler rule then
        keep = ("action", "protocol", "not_protocol", "ip_version", "dst_ports")
        try:
            return Rule(**{k: v for k, v in fields.items() if k in keep})
        except ValidationError:
            return Rule(action=fields["action"])


#: the kinds of change, as often as they are drawn
KINDS = ("profile", "profile", "profile", "profile", "tags", "add_rule", "add_rule",
         "remove_rule", "pool", "update_pool", "remove_pool", "to_host", "add_endpoint",
         "add_endpoint", "put_endpoint", "remove_endpoint", "remove_endpoint",
         "remove_profile", "peer", "assign")


def put_profile(profile: Profile) -> Change:
    return Change("profile", f"put_profile({profile.to_dict()})",
                  lambda c: c.put_profile(profile))


def retag(name: str, tags: list[str]) -> Change:
    def run(c: calico_lib.Client) -> None:
        profile = c.get_profile(name)
        profile.tags = tags
        c.put_profile(profile)
    return Change("tags", f"profile {name}: tags {tags}", run)


def add_rule(name: str, direction: str, rule: Rule, position: int | None) -> Change:
    return Change("add_rule", f"add_rule({name}, {direction}, {rule.to_dict()}, {position})",
                  lambda c: c.add_rule(name, direction, rule, position))


def remove_rule(name: str, direction: str, index: int) -> Change:
    return Change("remove_rule", f"remove_rule({name}, {direction}, {index})",
                  lambda c: c.remove_rule(name, direction, index))


def add_pool(cidr: str, nat: bool) -> Change:
    return Change("pool", f"add_pool({cidr}, nat_outgoing={nat})",
                  lambda c: c.add_pool(IPPool(cidr, nat_outgoing=nat)))


def update_pool(cidr: str, nat: bool) -> Change:
    return Change("update_pool", f"update_pool({cidr}, nat_outgoing={nat})",
                  lambda c: c.update_pool(cidr, nat_outgoing=nat))


def remove_pool(cidr: str) -> Change:
    return Change("remove_pool", f"remove_pool({cidr})", lambda c: c.remove_pool(cidr))


def to_host(action: str) -> Change:
    return Change("to_host", f"set_agent_config({action})",
                  lambda c: c.set_agent_config(action))


def add_endpoint(world: World, ctr: Container, profiles: list[str], state: str,
                 assign: bool) -> Change:
    endpoint = world.endpoint(ctr, profiles, state)
    return Change("add_endpoint", f"add_endpoint({ctr.name}, {profiles}, {state}, "
                                  f"assign_addresses={assign})",
                  lambda c: c.add_endpoint(endpoint, assign_addresses=assign))


def put_endpoint(world: World, ctr: Container, profiles: list[str], state: str) -> Change:
    endpoint = world.endpoint(ctr, profiles, state)
    return Change("put_endpoint", f"put_endpoint({ctr.name}, {profiles}, {state})",
                  lambda c: c.put_endpoint(endpoint))


def remove_endpoint(ctr: Container, release: bool) -> Change:
    return Change("remove_endpoint", f"remove_endpoint({ctr.name}, release_addresses={release})",
                  lambda c: c.remove_endpoint(ctr.host.name, ctr.id, release_addresses=release))


def remove_profile(name: str) -> Change:
    return Change("remove_profile", f"remove_profile({name}, force=True)",
                  lambda c: c.remove_profile(name, force=True))


def add_peer(address: str, as_number: int) -> Change:
    return Change("peer", f"add_bgp_peer({address}, {as_number})",
                  lambda c: c.add_bgp_peer(BGPPeer(address, as_number)))


def assign(ctr: Container, address: str) -> Change:
    """IPAM: the container's host claims the address's block (its blackhole route)."""
    return Change("assign", f"ipam.assign_ip({address}, {ctr.name})",
                  lambda c: c.ipam.assign_ip(address, ctr.id, ctr.host.name))


def every_kind(world: World) -> list[Change]:
    """One change of each kind, in an order where none is refused: an example run whatever
    hypothesis draws."""
    h1c1, h1c3 = world.containers["h1"][0], world.containers["h1"][2]
    h2c1 = world.containers["h2"][0]
    return [
        to_host("drop"),
        put_profile(Profile("p1", tags=["p1", "shared"], inbound_rules=[
            Rule(action="deny", protocol="udp", src_net=["10.65.1.0/30", "fd00:65::1:0/126"]),
            Rule(action="log", protocol="icmpv6", icmp_type=128),
            Rule(action="allow", protocol="tcp", src_tag="shared", dst_ports=[80, "1000:1001"])],
            outbound_rules=[Rule(action="allow", not_dst_tag="p2")])),
        retag("p0", ["p0", "p1"]),
        add_rule("p2", "inbound", Rule(action="allow", ip_version=6, not_src_net=["::/0"]), 0),
        remove_rule("p2", "inbound", 1),
        add_pool("10.66.0.0/16", True),
        update_pool(POOL6, True),
        remove_pool("10.66.0.0/16"),
        add_endpoint(world, h1c3, ["p1", "p2"], "active", True),
        put_endpoint(world, h2c1, ["p0"], "inactive"),
        remove_endpoint(h1c1, True),
        assign(h2c1, h2c1.ipv6[0]),
        add_peer(OUTSIDE6, 65002),
        remove_profile("p0"),
    ]


def changes(world: World) -> st.SearchStrategy[Change]:
    everyone = [c for h in world.hosts for c in world.containers[h.name]]
    thirds = [world.containers[h.name][2] for h in world.hosts] * 2
    profile_names = st.sampled_from((*PROFILES, "p3"))
    # the profile a rule or tag edit names: now and then one that does not exist (refused)
    edited = st.sampled_from((*PROFILES, *PROFILES, "p3"))
    directions = st.sampled_from(("inbound", "outbound"))
    tag_lists = st.lists(st.sampled_from(TAGS), max_size=3, unique=True)

    @st.composite
    def change(draw: st.DrawFn) -> Change:
        kind = draw(st.sampled_from(KINDS))
        if kind == "profile":
            return put_profile(Profile(
                draw(profile_names), tags=draw(tag_lists),
                inbound_rules=draw(st.lists(rules(), min_size=1, max_size=5)),
                outbound_rules=draw(st.lists(rules(), min_size=1, max_size=3))))
        if kind == "tags":
            return retag(draw(edited), draw(tag_lists))
        if kind == "add_rule":
            return add_rule(draw(edited), draw(directions), draw(rules()),
                            draw(st.sampled_from((None, None, 0, 0, 1, 5))))
        if kind == "remove_rule":
            return remove_rule(draw(edited), draw(directions),
                               draw(st.sampled_from((0, 0, 1, 4))))
        if kind == "pool":
            return add_pool(*draw(st.sampled_from(EXTRA_POOLS)))
        if kind == "update_pool":
            return update_pool(draw(st.sampled_from((POOL4, POOL6, POOL4, POOL6,
                                                     "10.66.0.0/16"))), draw(st.booleans()))
        if kind == "remove_pool":
            return remove_pool(draw(st.sampled_from((POOL4, POOL6, "10.66.0.0/16",
                                                     "fd00:66::/64"))))
        if kind == "to_host":
            return to_host(draw(st.sampled_from(("drop", "accept"))))
        if kind == "remove_profile":
            return remove_profile(draw(profile_names))
        if kind == "peer":
            return add_peer(*draw(st.sampled_from(PEERS)))
        # a new endpoint is most often one of the containers that has none at the start
        ctr = draw(st.sampled_from(everyone + thirds if kind == "add_endpoint" else everyone))
        if kind == "assign":
            return assign(ctr, draw(st.sampled_from(ctr.addresses)))
        if kind == "remove_endpoint":
            return remove_endpoint(ctr, draw(st.booleans()))
        profiles = draw(st.lists(profile_names, max_size=2, unique=True))
        state = draw(st.sampled_from(("active", "active", "inactive")))
        if kind == "put_endpoint":
            return put_endpoint(world, ctr, profiles, state)
        return add_endpoint(world, ctr, profiles, state, draw(st.booleans()))

    return change()


# --------------------------------------------------------------------------- the check


def records(client: calico_lib.Client) -> list[tuple[str, str]]:
    return [(kv.key, kv.value) for kv in client.store.list(ROOT)]


def check_change(world: World, change: Change, seen: Seen) -> None:
    """Preview ``change``, make it for real, apply it: the kernel changed as previewed."""
    client = world.client
    before_records = client.store.list(ROOT), client.store.revision()
    draft = Draft(client.store)
    draft.client.ipam.clock = lambda: CLOCK
    refused: CalicoError | None = None
    try:
        change.run(draft.client)
    except CalicoError as exc:
        refused = exc
    plan = draft.plan()
    assert (client.store.list(ROOT), client.store.revision()) == before_records, (
        f"previewing {change.what} wrote to the datastore")
    seen.changes += 1
    if refused is not None:
        seen.refused += 1
        assert draft.writes == {}, f"{change.what} was refused ({refused}) but wrote " \
                                   f"{draft.writes}"
    if not draft.writes:  # refused, or nothing to change: no host changes
        assert not any(h.changed for h in plan.hosts), "\n".join(plan.lines())
    else:
        seen.kinds[change.kind] += 1
    kernels = world.kernels() if draft.writes else {}
    try:
        change.run(client)
    except CalicoError as exc:
        assert refused is not None and type(exc) is type(refused), (
            f"{change.what}: refused for real ({exc!r}), not on the draft ({refused!r})")
    else:
        assert refused is None, f"{change.what}: refused on the draft only ({refused!r})"
    assert records(client) == [(kv.key, kv.value) for kv in draft.store.list(ROOT)], (
        f"{change.what}: the draft's records are not the real ones")
    if not draft.writes:
        return
    world.apply()
    after = world.kernels()
    problems = []
    for host in world.hosts:
        host_plan = _host(plan, host.name)
        found = compare(host, host_plan, kernels[host.name], after[host.name], seen)
        if found:
            problems.append(f"--- {host.name}: {change.what}")
            problems += found
    if problems:
        raise AssertionError("the preview is not what the kernel did:\n" + "\n".join(problems))


def _host(plan: Plan, name: str) -> HostPlan:
    found = [h for h in plan.hosts if h.host == name]
    assert len(found) == 1, f"the preview has {len(found)} plans for {name}"
    return found[0]


def test_the_preview_is_what_the_kernel_does(world: World) -> None:
    steps_seen, resets_seen = Seen(), Seen()
    start = Change("reset", "back to the start", reset(world))

    @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(steps=st.lists(changes(world), min_size=MIN_STEPS, max_size=MAX_STEPS))
    @example(steps=every_kind(world))
    def check(steps: list[Change]) -> None:
        check_change(world, start, resets_seen)
        for host in world.hosts:
            now = replace(load_snapshot(world.client.store, host.name), revision=0)
            assert now == world.baseline[host.name], "the reset did not reset"
        for step in steps:
            check_change(world, step, steps_seen)

    check()
    print(f"\nsteps: {steps_seen}\nresets: {resets_seen}")
    # the generated changes alone (not the resets) changed enough, in both IP versions
    seen = steps_seen
    assert min(seen.rules_added[4], seen.rules_added[6]) >= MIN_RULES_ADDED, seen
    assert min(seen.rules_removed[4], seen.rules_removed[6]) >= MIN_RULES_REMOVED, seen
    assert seen.members > 0 and seen.sets_whole > 0 and seen.routes > 0, seen
    assert seen.blackholes > 0, seen
    assert seen.refused > 0 and seen.bird > 0, seen
    assert set(seen.kinds) == set(KINDS), seen
