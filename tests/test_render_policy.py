"""Golden-file tests of the policy renderer, and pure tests of the appliers' planning.

Regenerate the golden files after an intended change with:
    UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/test_render_policy.py
and review the diff.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from calico_lib.dataplane import ipsets, iptables
from calico_lib.model import AgentConfig, Endpoint, IPPool, Profile, Rule
from calico_lib.render import names
from calico_lib.render.policy import (
    MULTIPORT_MAX,
    ipset_restore_text,
    iptables_restore_text,
    render_policy,
)
from calico_lib.snapshot import Snapshot

GOLDEN = Path(__file__).parent / "golden"


def render_text(snapshot: Snapshot) -> str:
    policy = render_policy(snapshot)
    parts = ["# ipset\n" + ipset_restore_text(policy)]
    for table in policy.tables:
        parts.append(f"# ip{'6' if table.version == 6 else ''}tables\n"
                     + iptables_restore_text(table))
    return "\n".join(parts)


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
    assert names.shorten("x" * 40, 28) != names.shorten("x" * 39 + "y", 28)


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
    assert "-D POSTROUTING 2" in plan.text and "-X cali-old" in plan.text
    assert "DOCKER" not in plan.text  # never touches what it does not own
    # Once in place, nothing more to do.
    good = SAVED.replace("*filter", "*nat").replace("FORWARD", "POSTROUTING")
    good = good.replace("-A POSTROUTING -j DOCKER\n", "").replace(":cali-old - [0:0]\n", "")
    good = good.replace("-A cali-old -j DROP\n", "")
    good = good.format(hook=iptables.rule_hash("-j cali-POSTROUTING"),
                       rule=iptables.rule_hash("-j ACCEPT"))
    assert iptables.plan_table(table, iptables.parse_save(good)).text is None


def test_plan_sets() -> None:
    from calico_lib.render.policy import IpSet

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
    from calico_lib.render.policy import IpSet

    new = frozenset(f"10.1.0.{i}" for i in range(count))
    kernel = ipsets.parse_save("create cali4-t-a hash:ip family inet\n" + "".join(
        f"add cali4-t-a 10.2.0.{i}\n" for i in range(count)))
    plan = ipsets.plan_sets({"cali4-t-a": IpSet("cali4-t-a", "hash:ip", 4, new)}, kernel)
    assert "swap cali4-t-a-tmp cali4-t-a" in plan.before
    assert "del " not in plan.before
