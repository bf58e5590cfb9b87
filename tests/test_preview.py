"""The preview of a change (``calico_lib.preview``), on a SQLite datastore (no root).

A preview must say exactly what the dataplane will then write: here it is checked against
an apply of the same change on the in-memory kernel (tests/fake_kernel.py), rule by rule
and member by member; the kernel check on real hosts belongs to issue 16's packet test.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator

import pytest

import calico_lib
from calico_lib import Endpoint, IPPool, Node, Profile, Rule
from calico_lib.dataplane.iptables import rule_hash
from calico_lib.model import AgentConfig
from calico_lib.preview import Change, plan, with_change
from calico_lib.reconcile import Dataplane
from calico_lib.render import names
from calico_lib.snapshot import load_snapshot
from tests.fake_kernel import FakeKernel

HASH = re.compile(r'--comment "cali:([0-9a-f]+)"')


def members(kernel: FakeKernel) -> dict[str, set[str]]:
    """Every cali set's members as the renderer writes them (a host address without its
    /32 or /128)."""
    return {name: {m.removesuffix("/128").removesuffix("/32")
                   for m in kernel.set_members(name)}
            for name in kernel.ipsets.sets if name.startswith("cali") and "-x-" not in name}


@pytest.fixture
def client(tmp_path) -> Iterator[calico_lib.Client]:
    with calico_lib.connect("sqlite:///" + str(tmp_path / "calico.db")) as c:
        c.add_pool(IPPool("10.65.0.0/16"))
        c.add_pool(IPPool("fd00:65::/64"))
        for n, host in enumerate(("h1", "h2", "h3"), 1):
            c.add_node(Node(host, ipv4=f"198.18.0.{n}"))
        c.add_profile("frontend")
        c.add_profile("backend")
        c.add_endpoint(Endpoint("fe1", "h1", "calife1", ipv4_nets=["10.65.0.1"],
                                ipv6_nets=["fd00:65::1"], profiles=["frontend"]))
        c.add_endpoint(Endpoint("be1", "h2", "calibe1", ipv4_nets=["10.65.1.1"],
                                ipv6_nets=["fd00:65::1:1"], profiles=["backend"]))
        yield c


def frontend_on_80(client: calico_lib.Client) -> Profile:
    backend = client.get_profile("backend")
    backend.inbound_rules.append(Rule(action="allow", protocol="tcp", src_tag="frontend",
                                      dst_ports=[80]))
    return backend


def test_a_rule_shows_on_the_hosts_it_reaches_only(client) -> None:
    before = {h: load_snapshot(client.store, h) for h in ("h1", "h2", "h3")}
    found = plan(client.store, Change(profiles={"backend": frontend_on_80(client)}))
    assert found.summary() == "1 host: +4 rules, -0; 2 hosts unaffected"
    (h2,) = [h for h in found.hosts if h.changed]
    assert h2.host == "h2"
    inbound = names.profile_inbound("backend")
    for table in h2.tables:  # the allow and its RETURN, IPv4 and IPv6
        assert [chain for chain, _ in table.added] == ([inbound, inbound]
                                                       if table.table == "filter" else [])
        assert table.removed == []
    assert "-A cali-pi-backend -p tcp -m set --match-set cali4-t-frontend src" in "\n".join(
        h2.lines())
    # the frontend group's set appears on h2, with the frontend's addresses
    assert h2.sets == {"cali4-t-frontend": (["10.65.0.1"], []),
                       "cali6-t-frontend": (["fd00:65::1"], [])}
    assert found.to_dict()["hosts"]["h2"]["rules_added"] == 4
    # nothing was written
    assert {h: load_snapshot(client.store, h) for h in before} == before


def test_unchanged_and_settings(client) -> None:
    assert plan(client.store, Change()).summary() == "no host changes; 3 hosts unaffected"
    drop = plan(client.store, Change(config=AgentConfig("drop")))
    changed = {h.host: h for h in drop.hosts if h.changed}
    assert set(changed) == {"h1", "h2", "h3"}  # every host's workload-to-host chain
    lines = "\n".join(changed["h1"].lines())
    assert "- -A cali-wl-to-host -j ACCEPT" in lines and "+ -A cali-wl-to-host -j DROP" in lines


def test_pools_change_routes_sets_and_bird(client) -> None:
    client.ipam.auto_assign("h1", "fe1", num_ipv4=1)  # h1 holds a block of the pool
    found = plan(client.store, Change(pools={"10.66.0.0/16": IPPool("10.66.0.0/16",
                                                                     nat_outgoing=True)}))
    h1 = next(h for h in found.hosts if h.host == "h1")
    assert h1.sets["cali4-all-pools"] == (["10.66.0.0/16"], [])
    assert h1.sets["cali4-masq-pools"] == (["10.66.0.0/16"], [])
    assert "10.66.0.0/16" in h1.bird


def test_removing_a_network_profile_record_brings_its_default_back(client) -> None:
    client.put_endpoint(Endpoint("be1", "h2", "calibe1", ipv4_nets=["10.65.1.1"],
                                 profiles=["backend"], labels={"docker-network": "n1"}))
    snapshot = load_snapshot(client.store, "h2")
    after = with_change(snapshot, Change(profiles={"backend": None}))
    assert after.profiles["backend"] == Profile.with_default_rules("backend",
                                                                   docker_network=True)


def kernel_rules(kernel: FakeKernel) -> dict[tuple[int, str], Counter]:
    """(version, table) -> the hashes of every cali rule, as (chain, hash) counts."""
    out = {}
    for version in (4, 6):
        for table in ("filter", "nat"):
            out[(version, table)] = Counter(
                (chain, HASH.search(rule).group(1))
                for chain, rules in kernel.chains(version, table).items()
                if chain.startswith("cali") for rule in rules)
    return out


@pytest.mark.parametrize("change", ["rule", "deny-first", "tags", "to-host", "pool", "remove"])
def test_the_preview_is_what_the_apply_writes(client, change) -> None:
    """Apply today's snapshot, preview the change, apply it: the rules and members that
    came and went in the kernel are exactly the preview's."""
    backend = frontend_on_80(client)
    changes = {
        "rule": Change(profiles={"backend": backend}),
        "deny-first": Change(profiles={"frontend": Profile(
            "frontend", tags=["frontend"],
            inbound_rules=[Rule(action="deny", protocol="udp"), Rule(action="allow")],
            outbound_rules=[Rule(action="log"), Rule(action="allow")])}),
        "tags": Change(profiles={"frontend": Profile("frontend", tags=["frontend", "backend"],
                                                     inbound_rules=[Rule(action="allow")])}),
        "to-host": Change(config=AgentConfig("drop")),
        "pool": Change(pools={"10.66.0.0/16": IPPool("10.66.0.0/16", nat_outgoing=True)}),
        "remove": Change(profiles={"backend": None}),
    }
    for host in ("h1", "h2"):
        kernel = FakeKernel()
        dataplane = Dataplane(kernel=kernel)
        snapshot = load_snapshot(client.store, host)
        dataplane.apply(snapshot)
        rules_before = kernel_rules(kernel)
        sets_before = members(kernel)
        preview = plan(client.store, changes[change])
        host_plan = next(h for h in preview.hosts if h.host == host)
        dataplane.apply(with_change(snapshot, changes[change]))
        rules_after = kernel_rules(kernel)
        for table in host_plan.tables:
            key = (table.version, table.table)
            added = Counter((c, rule_hash(s)) for c, s in table.added)
            removed = Counter((c, rule_hash(s)) for c, s in table.removed)
            assert rules_after[key] - rules_before[key] == added, (host, key)
            assert rules_before[key] - rules_after[key] == removed, (host, key)
        sets_after = members(kernel)
        for name in set(sets_before) | set(sets_after):
            was, now = sets_before.get(name, set()), sets_after.get(name, set())
            expected = host_plan.sets.get(name, ([], []))
            assert (sorted(now - was), sorted(was - now)) == expected, (host, name)
