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
from ansible_collections.calico.docker.tests.unit.plugins.modules.helpers import three_hosts
from calico_lib import BGPPeer, Endpoint, IPPool, Profile, Rule
from calico_lib.dataplane.iptables import rule_hash
from calico_lib.datastore import Compare, Delete
from calico_lib.datastore.draft import DraftDatastore
from calico_lib.errors import InUseError, ValidationError
from calico_lib.preview import Draft
from calico_lib.reconcile import Dataplane
from calico_lib.render import names
from calico_lib.snapshot import load_snapshot
from tests import test_datastore_contract as contract
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
        three_hosts(c)
        yield c


def frontend_on_80(client: calico_lib.Client) -> Profile:
    backend = client.get_profile("backend")
    backend.inbound_rules.append(Rule(action="allow", protocol="tcp", src_tag="frontend",
                                      dst_ports=[80]))
    return backend


def test_a_rule_shows_on_the_hosts_it_reaches_only(client) -> None:
    before = {h: load_snapshot(client.store, h) for h in ("h1", "h2", "h3")}
    draft = Draft(client.store)
    draft.client.put_profile(frontend_on_80(draft.client))
    found = draft.plan()
    assert found.summary() == "1 host: +4 rules, -0; ipset members +2, -0; 2 hosts unaffected"
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
    assert Draft(client.store).plan().summary() == "no host changes; 3 hosts unaffected"
    draft = Draft(client.store)
    draft.client.set_agent_config("drop")
    drop = draft.plan()
    changed = {h.host: h for h in drop.hosts if h.changed}
    assert set(changed) == {"h1", "h2", "h3"}  # every host's workload-to-host chain
    lines = "\n".join(changed["h1"].lines())
    assert "- -A cali-wl-to-host -j ACCEPT" in lines and "+ -A cali-wl-to-host -j DROP" in lines


def test_pools_change_routes_sets_and_bird(client) -> None:
    client.ipam.auto_assign("h1", "fe1", num_ipv4=1)  # h1 holds a block of the pool
    draft = Draft(client.store)
    draft.client.add_pool(IPPool("10.66.0.0/16", nat_outgoing=True))
    found = draft.plan()
    h1 = next(h for h in found.hosts if h.host == "h1")
    assert h1.sets["cali4-all-pools"] == (["10.66.0.0/16"], [])
    assert h1.sets["cali4-masq-pools"] == (["10.66.0.0/16"], [])
    assert "10.66.0.0/16" in h1.bird


def test_removing_a_network_profile_record_brings_its_default_back(client) -> None:
    client.put_endpoint(Endpoint("be1", "h2", "calibe1", ipv4_nets=["10.65.1.1"],
                                 profiles=["backend"], labels={"docker-network": "n1"}))
    draft = Draft(client.store)
    with pytest.raises(InUseError, match="^name: profile backend is used by endpoint"):
        draft.client.remove_profile("backend")  # refused as the real removal would be
    draft.client.remove_profile("backend", force=True)
    assert load_snapshot(draft.store, "h2").profiles["backend"] == (
        Profile.with_default_rules("backend", docker_network=True))


def test_a_change_that_fails_validation_fails_and_leaves_the_draft_as_it_was(client) -> None:
    draft = Draft(client.store)
    with pytest.raises(ValidationError, match="^dst_ports: "):
        draft.client.add_rule("backend", "inbound", Rule(protocol="tcp", dst_ports=[70000]))
    assert draft.writes == {}
    assert draft.plan().summary() == "no host changes; 3 hosts unaffected"


def test_bgp_changes_show_bird_lines_and_never_a_password(client) -> None:
    draft = Draft(client.store)
    draft.client.add_bgp_peer(BGPPeer("198.18.0.254", 65001, password="s3cret-one"))
    found = draft.plan()
    # the peer's address joins the BGP guard's set; BIRD gets the session
    assert found.summary() == ("3 hosts: +0 rules, -0; ipset members +3, -0; "
                               "BIRD configuration on 3 hosts")
    text = "\n".join(line for h in found.hosts for line in h.lines())
    assert "+protocol bgp Global_198_18_0_254" in text and "s3cret" not in text
    assert '+  password "********"; (changed)' in text
    client.add_bgp_peer(BGPPeer("198.18.0.254", 65001, password="s3cret-one"))
    same = Draft(client.store)
    same.client.put_bgp_peer(BGPPeer("198.18.0.254", 65002, password="s3cret-one"))
    text = "\n".join(line for h in same.plan().hosts for line in h.lines())
    assert "(changed)" not in text and "s3cret" not in text and "65002" in text
    other = Draft(client.store)
    other.client.put_bgp_peer(BGPPeer("198.18.0.254", 65001, password="s3cret-two"))
    text = "\n".join(line for h in other.plan().hosts for line in h.lines())
    assert '+  password "********"; (changed)' in text and "s3cret" not in text


def test_a_new_endpoint_and_a_node_count_as_hosts(client) -> None:
    draft = Draft(client.store)
    draft.client.add_endpoint(Endpoint("fe2", "h4", "calife2", ipv4_nets=["10.65.2.1"],
                                       profiles=["frontend"]))
    found = draft.plan()
    assert [h.host for h in found.hosts] == ["h1", "h2", "h3", "h4"]
    h4 = next(h for h in found.hosts if h.host == "h4")
    assert h4.rules_added > 0 and any("10.65.2.1" in str(r.dst) for r in h4.routes_added)


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
    changes = {
        "rule": lambda c: c.put_profile(frontend_on_80(c)),
        "deny-first": lambda c: c.put_profile(Profile(
            "frontend", tags=["frontend"],
            inbound_rules=[Rule(action="deny", protocol="udp"), Rule(action="allow")],
            outbound_rules=[Rule(action="log"), Rule(action="allow")])),
        "tags": lambda c: c.put_profile(Profile("frontend", tags=["frontend", "backend"],
                                                inbound_rules=[Rule(action="allow")])),
        "to-host": lambda c: c.set_agent_config("drop"),
        "pool": lambda c: c.add_pool(IPPool("10.66.0.0/16", nat_outgoing=True)),
        "remove": lambda c: c.remove_profile("backend", force=True),
    }
    draft = Draft(client.store)
    changes[change](draft.client)
    preview = draft.plan()
    for host in ("h1", "h2"):
        kernel = FakeKernel()
        dataplane = Dataplane(kernel=kernel)
        dataplane.apply(load_snapshot(client.store, host))
        rules_before = kernel_rules(kernel)
        sets_before = members(kernel)
        host_plan = next(h for h in preview.hosts if h.host == host)
        dataplane.apply(load_snapshot(draft.store, host))
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


# --------------------------------------------------------------------------- the draft store

DRAFT_CONTRACT = [contract.test_get_missing_key_is_none, contract.test_put_then_get,
                  contract.test_revisions_strictly_increase,
                  contract.test_list_prefix_sorted_and_bounded,
                  contract.test_list_with_revision,
                  contract.test_read_mixes_keys_and_prefixes_in_order,
                  contract.test_txn_create_if_absent, contract.test_txn_compare_mod_revision,
                  contract.test_delete]


@pytest.mark.parametrize("check", DRAFT_CONTRACT, ids=lambda f: f.__name__)
def test_a_draft_keeps_the_datastore_contract(check) -> None:
    check(DraftDatastore([], 7))


def test_a_draft_reads_the_store_once_and_never_writes_it(client) -> None:
    store = client.store
    records, revision = store.list_with_revision(calico_lib.keys.ROOT)
    reads = store.reads
    draft = Draft(store)
    assert store.reads == reads + 1  # one consistent read of every record
    assert draft.store.list(calico_lib.keys.ROOT) == records  # mod revisions kept
    draft.client.remove_profile("frontend", force=True)
    draft.client.add_pool(IPPool("10.66.0.0/16"))
    # a failed transaction writes nothing, as on the real store
    guard = Compare(calico_lib.keys.profile("backend"), 1)
    assert draft.store.txn([guard], [Delete(calico_lib.keys.profile("backend"))]) is None
    assert draft.writes[calico_lib.keys.profile("frontend")] is None
    assert calico_lib.keys.pool("10.66.0.0/16") in draft.writes
    assert calico_lib.keys.profile("backend") not in draft.writes
    assert store.list_with_revision(calico_lib.keys.ROOT) == (records, revision)
    with pytest.raises(calico_lib.CalicoError, match="no watches"):
        draft.store.watch(calico_lib.keys.ROOT, 0)
