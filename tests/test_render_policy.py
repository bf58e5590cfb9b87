"""Golden-file tests of the policy renderer, and pure tests of the appliers' planning.

Regenerate the golden files after an intended change with:
    UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/test_render_policy.py
and review the diff.
"""

from __future__ import annotations

import hashlib
import os
import random
from pathlib import Path

import netaddr
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from calico_lib.dataplane import ipsets, iptables
from calico_lib.model import NAME_RE, AgentConfig, Endpoint, IPPool, Profile, Rule
from calico_lib.render import names
from calico_lib.render.policy import MULTIPORT_MAX, IpSet, Policy, render_policy
from calico_lib.snapshot import Snapshot

GOLDEN = Path(__file__).parent / "golden"


def restore_texts(policy: Policy) -> list[tuple[str, str]]:
    """(tool, input) of each restore a first apply of ``policy`` runs: the agent's own
    planners against an empty kernel, so the golden files pin the bytes the kernel gets
    (tests/test_dataplane_plan.py checks that a Dataplane sends exactly these)."""
    texts = [("ipset", ipsets.plan_sets(policy.ipsets, {}).before or "")]
    for table in policy.tables:
        plan = iptables.plan_table(table, iptables.KernelTable())
        texts.append((f"ip{'6' if table.version == 6 else ''}tables", plan.text or ""))
    return texts


def render_text(snapshot: Snapshot) -> str:
    return "\n".join(f"# {tool}\n{text}" for tool, text in restore_texts(render_policy(snapshot)))


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / f"{name}.txt"
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(text)
    assert path.exists(), f"{path} missing: run with UPDATE_GOLDEN=1 and review it"
    assert text == path.read_text()


def basic_snapshot() -> Snapshot:
    web, db = Profile.with_default_rules("web"), Profile.with_default_rules("db")
    return Snapshot(
        hostname="host-a",
        revision=7,
        pools=(IPPool("10.65.0.0/16", nat_outgoing=True), IPPool("fd00:65::/64")),
        profiles={"web": web, "db": db},
        endpoints=(
            Endpoint("aaaaaaaaaaaa1", "host-a", "caliaaaaaaaaaaa", mac="ee:00:00:00:00:01",
                     ipv4_nets=["10.65.0.1"], ipv6_nets=["fd00:65::1"], profiles=["web"]),
            Endpoint("bbbbbbbbbbbb2", "host-a", "calibbbbbbbbbbb", ipv4_nets=["10.65.0.2"],
                     profiles=["db"]),
            # On another host: only its addresses matter here (tag members).
            Endpoint("cccccccccccc3", "host-b", "caliccccccccccc", ipv4_nets=["10.65.1.3"],
                     ipv6_nets=["fd00:65::3"], profiles=["web"]),
        ),
    )


def rich_snapshot() -> Snapshot:
    ports = list(range(8000, 8014)) + ["9000:9010", "9100:9110"]  # 18 slots: two chunks
    api = Profile(
        name="api", tags=["api", "internal"],
        inbound_rules=[
            Rule(action="deny", src_net=["10.65.9.0/24"]),
            Rule(action="allow", protocol="tcp", src_tag="frontend", dst_ports=ports),
            Rule(action="allow", protocol="tcp", not_dst_ports=[9090], src_net="192.0.2.0/24"),
            Rule(action="allow", protocol="udp", src_net=["198.51.100.0/24", "fd00:99::/64",
                                                          "203.0.113.0/24"]),
            Rule(action="allow", protocol="icmp", icmp_type=8, icmp_code=0),
            Rule(action="allow", protocol="icmpv6", icmp_type=128),
            Rule(action="allow", not_src_tag="untrusted", ip_version=6),
            Rule(action="allow", protocol=132, not_src_net=["10.0.0.0/8", "172.16.0.0/12"]),
        ],
        outbound_rules=[Rule(action="deny", protocol="tcp", dst_ports=[25]),
                        Rule(action="allow")],
    )
    long_name = "a-profile-name-that-is-much-longer-than-iptables-allows"
    return Snapshot(
        hostname="host-a",
        revision=42,
        pools=(IPPool("10.65.0.0/16"), IPPool("fd00:65::/64", nat_outgoing=True)),
        profiles={"api": api, long_name: Profile(long_name, tags=["frontend"],
                                                 outbound_rules=[Rule()])},
        endpoints=(
            Endpoint("a1", "host-a", "calia1", ipv4_nets=["10.65.0.1", "10.65.0.11"],
                     ipv6_nets=["fd00:65::1", "fd00:65::11"], profiles=["api", "missing"]),
            Endpoint("f2", "host-a", "calif2", ipv4_nets=["10.65.0.2"], profiles=[long_name]),
            Endpoint("x3", "host-a", "calix3", ipv4_nets=["10.65.0.3"], profiles=["api"],
                     state="inactive"),
        ),
        config=AgentConfig(default_endpoint_to_host_action="drop"),
    )


def test_golden_basic() -> None:
    check_golden("basic", render_text(basic_snapshot()))


def test_golden_rich() -> None:
    check_golden("rich", render_text(rich_snapshot()))


def test_render_is_pure_and_deterministic() -> None:
    assert render_text(rich_snapshot()) == render_text(rich_snapshot())


def test_tags_hold_addresses_of_every_host() -> None:
    policy = render_policy(basic_snapshot())
    assert policy.ipsets["cali4-t-web"].members == {"10.65.0.1", "10.65.1.3"}
    assert policy.ipsets["cali6-t-web"].members == {"fd00:65::1", "fd00:65::3"}
    assert policy.ipsets["cali4-masq-pools"].members == {"10.65.0.0/16"}
    assert policy.ipsets["cali6-masq-pools"].members == frozenset()


def test_long_names_are_cut_deterministically() -> None:
    policy = render_policy(rich_snapshot())
    chains = [c for t in policy.tables for c in t.chains]
    assert all(len(c) <= names.CHAIN_MAX and c.startswith("cali") for c in chains)
    assert all(len(s) <= names.IPSET_MAX and s.startswith("cali") for s in policy.ipsets)
    long_chain = names.profile_outbound("a-profile-name-that-is-much-longer-than-iptables-allows")
    assert len(long_chain) == names.CHAIN_MAX and long_chain in chains
    assert names.profile_inbound("x" * 40) != names.profile_inbound("x" * 39 + "y")


def test_multiport_is_split() -> None:
    policy = render_policy(rich_snapshot())
    rules = [r for r in policy.table(4, "filter").chains["cali-pi-api"] if "frontend" in r]
    assert len(rules) == 2
    for rule in rules:
        ports = rule.split("--dports ")[1].split()[0].split(",")
        assert sum(2 if ":" in p else 1 for p in ports) <= MULTIPORT_MAX


def test_inactive_endpoints_get_no_chains() -> None:
    chains = render_policy(rich_snapshot()).table(4, "filter").chains
    assert "cali-to-calix3" not in chains and "cali-to-calia1" in chains


# --------------------------------------------------------------------------- planners

SAVED = """# Generated by iptables-save
*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:DOCKER - [0:0]
:cali-FORWARD - [0:0]
:cali-old - [0:0]
-A FORWARD -j DOCKER
-A FORWARD -m comment --comment "cali:{hook}" -j cali-FORWARD
-A DOCKER -j ACCEPT
-A cali-FORWARD -m comment --comment "cali:{rule}" -j ACCEPT
-A cali-old -j DROP
COMMIT
"""


def test_plan_table_touches_only_what_differs() -> None:
    from calico_lib.render.policy import Table

    table = Table(4, "nat")
    table.chains["cali-POSTROUTING"] = ["-j ACCEPT"]
    kernel = iptables.parse_save(SAVED.replace("*filter", "*nat").replace(
        "FORWARD", "POSTROUTING").format(hook=iptables.rule_hash("-j cali-POSTROUTING"),
                                         rule=iptables.rule_hash("-j ACCEPT")))
    plan = iptables.plan_table(table, kernel)
    # The chain already matches; the stale chain goes; the hook is moved to the front.
    assert plan.written == [] and plan.removed == ["cali-old"] and plan.hooks_fixed == 1
    hook = iptables.rule_hash("-j cali-POSTROUTING")
    # removed by its content, never by a position that may have moved since the read
    assert f'-D POSTROUTING -m comment --comment "cali:{hook}" -j cali-POSTROUTING' \
        in plan.text.splitlines()
    assert "-D POSTROUTING 2" not in plan.text and "-X cali-old" in plan.text
    assert "DOCKER" not in plan.text  # never touches what it does not own
    # Once in place, nothing more to do.
    good = SAVED.replace("*filter", "*nat").replace("FORWARD", "POSTROUTING")
    good = good.replace("-A POSTROUTING -j DOCKER\n", "").replace(":cali-old - [0:0]\n", "")
    good = good.replace("-A cali-old -j DROP\n", "")
    good = good.format(hook=iptables.rule_hash("-j cali-POSTROUTING"),
                       rule=iptables.rule_hash("-j ACCEPT"))
    assert iptables.plan_table(table, iptables.parse_save(good)).text is None


def test_plan_sets() -> None:
    desired = {
        "cali4-t-a": IpSet("cali4-t-a", "hash:ip", 4, frozenset({"10.0.0.1", "10.0.0.2"})),
        "cali4-t-b": IpSet("cali4-t-b", "hash:ip", 4, frozenset({"10.0.0.9"})),
        "cali6-t-a": IpSet("cali6-t-a", "hash:ip", 6, frozenset({"fd00::1"})),
    }
    kernel = ipsets.parse_save(
        "create cali4-t-a hash:ip family inet hashsize 1024 maxelem 65536\n"
        "add cali4-t-a 10.0.0.1\nadd cali4-t-a 10.0.0.3\n"
        "create cali6-t-a hash:ip family inet6 hashsize 1024 maxelem 65536\n"
        "add cali6-t-a fd00:0::1\n"
        "create cali4-gone hash:ip family inet hashsize 1024 maxelem 65536\n"
        "create docker-set hash:ip family inet hashsize 1024 maxelem 65536\n")
    plan = ipsets.plan_sets(desired, kernel)
    assert plan.created == ["cali4-t-b"] and plan.updated == ["cali4-t-a"]
    assert plan.destroyed == ["cali4-gone"]  # docker-set is not ours
    assert "del cali4-t-a 10.0.0.3" in plan.before and "add cali4-t-a 10.0.0.2" in plan.before
    assert "cali6-t-a" not in plan.before  # fd00:0::1 == fd00::1


@pytest.mark.parametrize("count", [20])
def test_plan_sets_swaps_wholesale_changes(count: int) -> None:
    new = frozenset(f"10.1.0.{i}" for i in range(count))
    kernel = ipsets.parse_save("create cali4-t-a hash:ip family inet\n" + "".join(
        f"add cali4-t-a 10.2.0.{i}\n" for i in range(count)))
    plan = ipsets.plan_sets({"cali4-t-a": IpSet("cali4-t-a", "hash:ip", 4, new)}, kernel)
    assert f"swap {names.temp_set('cali4-t-a')} cali4-t-a" in plan.before
    assert "del " not in plan.before


def test_plan_sets_replaces_a_temp_set_left_by_a_crash() -> None:
    """A temporary set left in the kernel (a crashed or failed apply) is destroyed before it
    is filled again: its stale members must not be swapped in."""
    temp = names.temp_set("cali4-t-a")
    kernel = ipsets.parse_save(
        "create cali4-t-a hash:ip family inet hashsize 1024 maxelem 65536\n"
        + "".join(f"add cali4-t-a 10.2.0.{i}\n" for i in range(20))
        + f"create {temp} hash:ip family inet hashsize 1024 maxelem 1024\n"
        + f"add {temp} 10.9.9.9\n")
    new = frozenset(f"10.1.0.{i}" for i in range(20))
    plan = ipsets.plan_sets({"cali4-t-a": IpSet("cali4-t-a", "hash:ip", 4, new)}, kernel)
    lines = plan.before.splitlines()
    assert lines[:2] == [f"destroy {temp}",
                         f"create {temp} hash:ip family inet hashsize 1024 maxelem 65536"]
    assert lines[-2:] == [f"swap {temp} cali4-t-a", f"destroy {temp}"]
    assert temp in plan.destroyed and plan.after is None  # destroyed once, in `before`
    # A leftover that no swap needs goes with the other stale sets.
    same = frozenset(f"10.2.0.{i}" for i in range(20))
    plan = ipsets.plan_sets({"cali4-t-a": IpSet("cali4-t-a", "hash:ip", 4, same)}, kernel)
    assert plan.before is None and plan.after == f"destroy {temp}\n"


# --------------------------------------------------------------------------- maxelem


def addresses(count: int, first: str = "10.0.0.0") -> frozenset[str]:
    start = int(netaddr.IPAddress(first))
    return frozenset(str(netaddr.IPAddress(start + i)) for i in range(count))


@pytest.mark.parametrize(("count", "maxelem", "hashsize"), [
    (0, 65536, 1024), (10, 65536, 1024), (1025, 65536, 2048), (32768, 65536, 32768),
    (32769, 131072, 65536), (70000, 262144, 131072)])
def test_sets_are_created_with_room_for_their_members(count: int, maxelem: int,
                                                      hashsize: int) -> None:
    """Room to grow (maxelem), and about one member per hash bucket (hashsize), so a
    lookup in a big group costs what one in a small group does (bench/ipsets.py)."""
    want = IpSet("cali4-t-a", "hash:ip", 4, addresses(count))
    assert want.maxelem == maxelem
    create = f"create cali4-t-a hash:ip family inet hashsize {hashsize} maxelem {maxelem}"
    plan = ipsets.plan_sets({"cali4-t-a": want}, {})
    assert plan.before.splitlines()[0] == create


SAVED_SET = ("create cali4-t-a hash:ip family inet hashsize 1024 maxelem {maxelem} "
             "bucketsize 12 initval 0x8d2f5c3a\n")


@pytest.mark.slow  # seconds: left out of make test-fast
def test_plan_sets_rebuilds_a_set_too_small_for_its_members() -> None:
    small = SAVED_SET.format(maxelem=65536) + "".join(
        f"add cali4-t-a {a}\n" for a in sorted(addresses(10)))
    kernel = ipsets.parse_save(small)
    assert kernel["cali4-t-a"].maxelem == 65536 and len(kernel["cali4-t-a"].members) == 10
    grown = IpSet("cali4-t-a", "hash:ip", 4, addresses(70000))
    plan = ipsets.plan_sets({"cali4-t-a": grown}, kernel)
    temp = names.temp_set("cali4-t-a")
    lines = plan.before.splitlines()
    # filled aside with the larger maxelem, then swapped in: the set may be in use
    assert lines[0] == f"create {temp} hash:ip family inet hashsize 131072 maxelem 262144"
    assert lines[-2:] == [f"swap {temp} cali4-t-a", f"destroy {temp}"]
    assert len(lines) == 70003 and plan.updated == ["cali4-t-a"]
    assert not any(line.startswith("add cali4-t-a ") for line in lines)
    # Big enough already: members are added in place.
    roomy = ipsets.parse_save(small.replace("maxelem 65536", "maxelem 262144"))
    plan = ipsets.plan_sets({"cali4-t-a": grown}, roomy)
    assert "swap" not in plan.before and plan.before.count("\nadd cali4-t-a ") == 69989
    # A set that shrank keeps its larger maxelem: nothing to write.
    few = IpSet("cali4-t-a", "hash:ip", 4, addresses(10))
    assert ipsets.plan_sets({"cali4-t-a": few}, roomy).before is None
    # Memory of an apply never claims more room than the kernel has.
    assert ipsets.as_kernel({"cali4-t-a": grown})["cali4-t-a"].maxelem == 262144


# --------------------------------------------------------------------------- /0 nets


def any_net_snapshot() -> Snapshot:
    """CIDR lists holding 0.0.0.0/0 or ::/0, positive and negated."""
    open_ = Profile(
        name="open", tags=["open"],
        inbound_rules=[
            # IPv4: from anywhere (10.0.0.0/8 adds nothing); IPv6: no v6 source listed
            Rule(action="allow", src_net=["0.0.0.0/0", "10.0.0.0/8"], not_dst_net=["::/0"]),
            # IPv4: all but 192.0.2.0/24; IPv6: every source excluded, never matches
            Rule(action="deny", protocol="udp", not_src_net=["::/0", "192.0.2.0/24"]),
            # IPv6: any source; IPv4: the two nets (a hash:net set)
            Rule(action="allow", protocol="tcp", dst_ports=[22],
                 src_net=["::/0", "fd00:1::/64", "198.51.100.0/24", "203.0.113.0/24"]),
            # IPv4 only, to any address
            Rule(action="allow", protocol="udp", dst_net=["0.0.0.0/0"]),
            # never matches (IPv4: no destination; IPv6: no source): makes no set either
            Rule(action="allow", src_net=["192.0.2.0/24", "198.51.100.0/24"], src_tag="ghost",
                 not_dst_net=["0.0.0.0/0"]),
        ],
        outbound_rules=[Rule(action="allow", not_dst_net=["0.0.0.0/0", "::/0"]),
                        Rule(action="deny", dst_net=["::/0"])],
    )
    return Snapshot(
        hostname="host-a", revision=3,
        pools=(IPPool("10.65.0.0/16"), IPPool("fd00:65::/64")),
        profiles={"open": open_},
        endpoints=(Endpoint("a1", "host-a", "calia1", ipv4_nets=["10.65.0.1"],
                            ipv6_nets=["fd00:65::1"], profiles=["open"]),))


def test_golden_any_net() -> None:
    check_golden("any-net", render_text(any_net_snapshot()))


def test_any_net_needs_no_match_and_never_enters_a_set() -> None:
    """/0 in a positive list matches every address of its version (no match rendered); in
    a negated list the rule never matches for that version (nothing rendered). hash:net
    refuses /0, so a set holding it would break every later reconcile."""
    policy = render_policy(any_net_snapshot())
    for s in policy.ipsets.values():
        assert all(netaddr.IPNetwork(m).prefixlen > 0 for m in s.members), s
    mark, done = "-j MARK --set-xmark 0x10000/0x10000", "-m mark --mark 0x10000/0x10000 -j RETURN"
    nets4 = names.net_set(("198.51.100.0/24", "203.0.113.0/24"), 4)
    v4 = policy.table(4, "filter").chains
    assert v4["cali-pi-open"] == [
        mark, done,
        "-p udp ! -s 192.0.2.0/24 -j DROP",
        f"-p tcp -m set --match-set {nets4} src -m multiport --dports 22 {mark}", done,
        f"-p udp {mark}", done]
    assert v4["cali-po-open"] == []
    v6 = policy.table(6, "filter").chains
    assert v6["cali-pi-open"] == [f"-p tcp -m multiport --dports 22 {mark}", done]
    assert v6["cali-po-open"] == ["-j DROP"]
    assert policy.ipsets[nets4].members == {"198.51.100.0/24", "203.0.113.0/24"}
    assert sorted(policy.ipsets) == ["cali4-all-hosts", "cali4-all-pools", "cali4-masq-pools",
                                     nets4, "cali6-all-hosts", "cali6-all-pools",
                                     "cali6-masq-pools"]


# --------------------------------------------------------------------------- kernel names

#: the names of the issue: under the old cut-and-hash scheme the second is the first's
#: IPv4 tag set minus its prefix, the third its inbound chain minus its prefix
ISSUE_NAMES = ["production-database-servers", "production-dat-f2be943a", "production--c9f6c797"]
FIXED_CHAINS = (names.FORWARD, names.INPUT, names.POSTROUTING, names.WL_TO_HOST,
                names.FROM_DISPATCH, names.TO_DISPATCH, names.SPOOF_DISPATCH)
NAME_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-"
#: lengths at and around every limit: 20 fills a chain after "cali-pi-", 23 a set after
#: "cali4-t-", 128 is the model's maximum
LENGTHS = (1, 18, 19, 20, 21, 22, 23, 24, 25, 27, 28, 29, 30, 31, 32, 127, 128)
#: longest first: a kernel name minus the prefix of its kind, else of its family
PREFIXES = ("cali-pi-", "cali-po-", "cali4-t-", "cali6-t-", "cali4-", "cali6-", "cali-")


def old_shorten(name: str, limit: int) -> str:
    """The cut-and-hash names of earlier releases, which a user name could forge."""
    if len(name) <= limit:
        return name
    return f"{name[:limit - 9]}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"


def kernel_forms(name: str) -> list[str]:
    """Every kernel name made from ``name``, now and by the old scheme."""
    sets = [names.tag_set(name, v) for v in (4, 6)]
    return ([names.profile_inbound(name), names.profile_outbound(name)] + sets
            + [names.temp_set(s) for s in sets]
            + [old_shorten(f"cali-p{d}-{name}", names.CHAIN_MAX) for d in "io"]
            + [old_shorten(f"cali{v}-t-{name}", names.IPSET_MAX) for v in (4, 6)])


def forgeries(user_names: list[str]) -> list[str]:
    """User names equal to another name's kernel form minus its prefix."""
    return [form[len(next(p for p in PREFIXES if form.startswith(p))):]
            for name in user_names for form in kernel_forms(name)]


@st.composite
def adversarial_names(draw: st.DrawFn) -> list[str]:
    stem = draw(st.from_regex(NAME_RE, fullmatch=True))
    filler = draw(st.text(NAME_CHARS, min_size=1, max_size=3))
    long = (stem + filler * 128)[:128]
    found = [stem, draw(st.from_regex(NAME_RE, fullmatch=True))]
    for length in draw(st.lists(st.sampled_from(LENGTHS), min_size=1, max_size=5)):
        # names sharing all but their last character, or one a prefix of the other
        found += [long[:length], long[:length - 1] + draw(st.sampled_from(NAME_CHARS))]
    found += forgeries(found)
    found += forgeries(draw(st.lists(st.sampled_from(found), max_size=3)))  # of forgeries
    return sorted({n for n in found if NAME_RE.fullmatch(n)})


def claim(table: dict[str, tuple[str, str]], kernel_name: str, owner: tuple[str, str],
          limit: int) -> None:
    assert kernel_name.startswith("cali") and len(kernel_name) <= limit, (owner, kernel_name)
    other = table.setdefault(kernel_name, owner)
    assert other == owner, f"{owner} and {other} both get {kernel_name}"


def check_kernel_names(user_names: list[str]) -> None:
    chains: dict[str, tuple[str, str]] = {c: ("fixed chain", c) for c in FIXED_CHAINS}
    sets: dict[str, tuple[str, str]] = {}
    for v in (4, 6):
        for fixed in (names.all_pools_set(v), names.masq_pools_set(v),
                      names.net_set(("10.0.0.0/8", "192.0.2.0/24"), v),
                      names.net_set(tuple(user_names[:3]), v)):
            claim(sets, fixed, ("fixed set", fixed), names.IPSET_MAX)
    for name in user_names:  # every name is a profile and a tag, as a Docker network is
        claim(chains, names.profile_inbound(name), ("profile inbound", name), names.CHAIN_MAX)
        claim(chains, names.profile_outbound(name), ("profile outbound", name),
              names.CHAIN_MAX)
        for v in (4, 6):
            claim(sets, names.tag_set(name, v), (f"tag v{v}", name), names.IPSET_MAX)
        interface = "cali" + name[:11]
        claim(chains, names.from_endpoint(interface), ("from", interface), names.CHAIN_MAX)
        claim(chains, names.to_endpoint(interface), ("to", interface), names.CHAIN_MAX)
        for v in (4, 6):
            claim(chains, names.source_check(interface, v), (f"sa{v}", interface),
                  names.CHAIN_MAX)
    for real, _ in list(sets.items()):
        claim(sets, names.temp_set(real), ("temp of", real), names.IPSET_MAX)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(adversarial_names())
@example(ISSUE_NAMES)
@example(["db", "db-tmp", "db-x", "x-db", "tmp"])
def test_kernel_names_are_injective(user_names: list[str]) -> None:
    """No choice of profile and tag names makes two objects share a chain or a set, or
    lands on a fixed, net-list, pool or temporary name; every name fits the kernel."""
    check_kernel_names(user_names)


def test_names_from_the_issue_get_their_own_chains_and_sets() -> None:
    profiles = {n: Profile.with_default_rules(n) for n in ISSUE_NAMES}
    endpoints = tuple(
        Endpoint(f"e{i}", "h", f"cali{i:011d}", ipv4_nets=[f"10.65.0.{i + 1}"],
                 ipv6_nets=[f"fd00:65::{i + 1}"], profiles=[n])
        for i, n in enumerate(ISSUE_NAMES))
    policy = render_policy(Snapshot(hostname="h", revision=1, profiles=profiles,
                                    endpoints=endpoints))
    for v in (4, 6):
        chains = policy.table(v, "filter").chains
        ours = {f(n) for n in ISSUE_NAMES for f in (names.profile_inbound,
                                                    names.profile_outbound)}
        assert len(ours) == 6 and ours <= set(chains)
        tags = {names.tag_set(n, v) for n in ISSUE_NAMES}
        assert len(tags) == 3
        for i, name in enumerate(ISSUE_NAMES):
            tag = names.tag_set(name, v)
            address = f"10.65.0.{i + 1}" if v == 4 else f"fd00:65::{i + 1}"
            assert policy.ipsets[tag].members == {address}
            inbound = chains[names.profile_inbound(name)]
            assert inbound[0] == (f"-m set --match-set {tag} src "
                                  "-j MARK --set-xmark 0x10000/0x10000")


# --------------------------------------------------------------------------- dispatch tree


def _dispatch(chains: dict[str, list[str]], chain: str, interface: str) -> str:
    """Where iptables sends a packet of ``interface`` through a dispatch tree: the endpoint
    chain it reaches, or DROP (``-i NAME+`` matches names starting with NAME)."""
    for rule in chains[chain]:
        words = rule.split()
        if words[0] == "-j":
            return words[1]
        name, target = words[1], words[3]
        if interface == name or (name.endswith("+") and interface.startswith(name[:-1])):
            return _dispatch(chains, target, interface) if target in chains else target
    raise AssertionError(f"{chain} has no final rule")


def test_dispatch_tree_sends_each_interface_to_its_own_chain_and_drops_the_rest() -> None:
    """Names of every length (one to eleven characters after "cali"), names that are
    prefixes of others, and look-alikes the tree does not know."""
    interfaces = ["calia", "caliab", "caliabc", "caliabcdefghijk", "calib", "cali0",
                  "cali01", "cali0123456789a", "cali_.-x", "caliZ", "caliA1"]
    snapshot = Snapshot(hostname="h", revision=1, endpoints=tuple(
        Endpoint(f"e{i}", "h", name, ipv4_nets=[f"10.65.0.{i + 1}"],
                 ipv6_nets=[f"fd00::{i + 1}"]) for i, name in enumerate(interfaces)))
    policy = render_policy(snapshot)
    for version in (4, 6):
        chains = policy.table(version, "filter").chains
        for root, target in ((names.FROM_DISPATCH, names.from_endpoint),
                             (names.TO_DISPATCH, names.to_endpoint),
                             (names.SPOOF_DISPATCH,
                              lambda i, v=version: names.source_check(i, v))):
            tree = {c: r for c, r in chains.items() if c.startswith(root)}
            for name in interfaces:
                assert _dispatch(tree, root, name) == target(name), (root, name)
            for stranger in ("calic", "caliabd", "caliabcd", "cali0x", "cali01x", "caliz",
                             "calia_", "cali"):
                assert _dispatch(tree, root, stranger) == "DROP", (root, stranger)
            assert all(rules[-1] == "-j DROP" for rules in tree.values())


def test_dispatch_tree_stays_shallow_at_ten_thousand_interfaces() -> None:
    """A packet walks at most ~16 + 16 + a few dozen rules, however many containers."""
    rng = random.Random(7)
    interfaces = sorted({f"cali{rng.getrandbits(44):011x}" for _ in range(10000)})
    snapshot = Snapshot(hostname="h", revision=1, endpoints=tuple(
        Endpoint(f"e{i}", "h", name, ipv4_nets=[str(netaddr.IPAddress("10.64.0.1") + i)])
        for i, name in enumerate(interfaces)))
    chains = render_policy(snapshot).table(4, "filter").chains
    tree = {c: r for c, r in chains.items() if c.startswith(names.FROM_DISPATCH)}
    assert max(len(rules) for rules in tree.values()) < 80
    assert len(tree[names.FROM_DISPATCH]) == 17  # 16 hex digits and the DROP


def test_renderer_with_memory_renders_exactly_what_a_fresh_render_does() -> None:
    """PolicyRenderer reuses what did not change; after every kind of change its output
    equals render_policy's, and an unchanged endpoint's chains are the same objects."""
    from dataclasses import replace

    from calico_lib.render.policy import PolicyRenderer

    base = rich_snapshot()
    ep = base.local_endpoints[0]
    profile = base.profiles[ep.profiles[0]]
    steps = [
        base,
        replace(base, endpoints=base.endpoints + (
            Endpoint("new", base.hostname, "calinew1", ipv4_nets=["10.65.9.9"],
                     profiles=list(ep.profiles)),)),
        replace(base, profiles={**base.profiles, profile.name: replace(
            profile, inbound_rules=[Rule(protocol="tcp", dst_ports=[1234])],
            tags=["moved"])}),
        replace(base, endpoints=base.endpoints[1:]),
        replace(base, config=AgentConfig(default_endpoint_to_host_action="drop")),
        base,
    ]
    renderer = PolicyRenderer()
    previous = None
    for snapshot in steps:
        got, want = renderer.render(snapshot), render_policy(snapshot)
        assert got.ipsets == want.ipsets
        assert [(t.version, t.name, t.chains) for t in got.tables] == \
            [(t.version, t.name, t.chains) for t in want.tables]
        if previous is not None and snapshot is steps[1]:
            chain = names.from_endpoint(ep.interface)
            assert got.table(4, "filter").chains[chain] is previous.table(4, "filter").chains[chain]
        previous = got


def test_renderer_with_memory_follows_random_changes_exactly() -> None:
    """200 random changes (endpoints local and remote added, removed, changed, made
    inactive; profiles' rules and tags changed, profiles added and removed; settings),
    unchanged objects kept as the datastore reader keeps them: after each, the renderer
    with memory renders exactly what a fresh render_policy does."""
    from dataclasses import replace

    from calico_lib.render.policy import PolicyRenderer

    rng = random.Random(11)
    tags = ["a", "b", "c", "d"]

    def profile(name: str) -> Profile:
        rules = [rng.choice([Rule(src_tag=rng.choice(tags)), Rule(protocol="tcp",
                             dst_ports=[rng.randint(1, 9)]), Rule(action="deny",
                             src_net=["10.9.0.0/16"]), Rule(not_src_tag=rng.choice(tags))])
                 for _ in range(rng.randint(0, 3))]
        return Profile(name, tags=rng.sample(tags, rng.randint(0, 2)), inbound_rules=rules,
                       outbound_rules=[Rule(action="allow")])

    def endpoint(number: int) -> Endpoint:
        return Endpoint(f"e{number}", rng.choice(["h", "h", "other"]),
                        f"cali{rng.choice('ab')}{number:x}",
                        ipv4_nets=[f"10.65.{number // 250}.{number % 250 + 1}"],
                        ipv6_nets=[f"fd00::{number:x}"] if rng.random() < 0.5 else [],
                        profiles=rng.sample(["p1", "p2", "p3", "gone"], rng.randint(0, 2)),
                        state=rng.choice(["active"] * 5 + ["inactive"]))

    profiles = {n: profile(n) for n in ("p1", "p2", "p3")}
    endpoints = {i: endpoint(i) for i in range(30)}
    config = AgentConfig()
    renderer = PolicyRenderer()
    serial = 30
    for _ in range(200):
        change = rng.choice(["add", "add", "remove", "modify", "profile", "new-profile",
                             "drop-profile", "config", "nothing"])
        if change == "add":
            endpoints[serial] = endpoint(serial)
            serial += 1
        elif change == "remove" and endpoints:
            del endpoints[rng.choice(list(endpoints))]
        elif change == "modify" and endpoints:
            number = rng.choice(list(endpoints))
            old = endpoints[number]
            endpoints[number] = replace(endpoint(number), host=old.host,
                                        interface=old.interface)
        elif change == "profile":
            name = rng.choice(list(profiles))
            profiles = {**profiles, name: profile(name)}
        elif change == "new-profile":
            profiles = {**profiles, "gone": profile("gone")}
        elif change == "drop-profile":
            profiles = {k: v for k, v in profiles.items() if k != "gone"}
        elif change == "config":
            config = AgentConfig(default_endpoint_to_host_action=rng.choice(["accept",
                                                                              "drop"]))
        # one endpoint per interface on a host, as the datastore reader guarantees
        seen: dict[tuple[str, str], Endpoint] = {}
        for ep in endpoints.values():
            seen.setdefault((ep.host, ep.interface), ep)
        snapshot = Snapshot(hostname="h", revision=1, profiles=dict(profiles),
                            endpoints=tuple(seen.values()), config=config)
        got, want = renderer.render(snapshot), render_policy(snapshot)
        assert got.ipsets == want.ipsets, change
        assert [(t.version, t.name, t.chains) for t in got.tables] == \
            [(t.version, t.name, t.chains) for t in want.tables], change
