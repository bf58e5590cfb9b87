"""The dataplane's decisions against an in-memory kernel (tests/fake_kernel.py): what is
written when, trusted and verified applies, failures and partial applies, the stamps that
let writers adopt each other's state. No root, milliseconds; the root tests
(test_dataplane_apply.py) check the same texts against the real tools."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest

import calico_lib
from calico_lib.dataplane import ipsets, iptables
from calico_lib.dataplane.runner import CommandError
from calico_lib.model import Endpoint, IPPool, Profile
from calico_lib.reconcile import Dataplane, DataplaneError, apply_snapshot, reconcile
from calico_lib.render import names
from calico_lib.render.policy import IpSet, Table, render_policy
from calico_lib.snapshot import Snapshot
from tests.fake_kernel import FakeKernel
from tests.test_dataplane_apply import tagged
from tests.test_render_policy import basic_snapshot, restore_texts, rich_snapshot

IPSET_RESTORE = "ipset restore -exist"
V4_RESTORE = "iptables-restore --noflush --wait"
V6_RESTORE = "ip6tables-restore --noflush --wait"


def snapshot(count: int, revision: int = 1) -> Snapshot:
    return Snapshot(
        hostname="h", revision=revision, pools=(IPPool("10.66.0.0/16"),),
        profiles={"web": Profile.with_default_rules("web")},
        endpoints=tuple(Endpoint(f"e{i}", "h", f"cali{i:011d}", ipv4_nets=[f"10.66.0.{i}"],
                                 profiles=["web"]) for i in range(1, count + 1)))



# --------------------------------------------------------------------------- one writer


@pytest.mark.parametrize("make", [basic_snapshot, rich_snapshot])
def test_first_apply_writes_exactly_what_the_golden_files_pin(make) -> None:
    """The golden files hold the planners' text against an empty kernel; a Dataplane's
    first apply sends the kernel those very bytes, in that order."""
    kernel = FakeKernel()
    apply_snapshot(make(), kernel=kernel)
    sent = [(tool.removesuffix("-restore"), text) for tool, text in kernel.inputs]
    assert sent == [(tool, text) for tool, text in restore_texts(render_policy(make()))
                    if text]


def test_every_rule_written_carries_its_hash() -> None:
    kernel = FakeKernel()
    apply_snapshot(rich_snapshot(), kernel=kernel)
    for version in (4, 6):
        for table in ("filter", "nat"):
            for chain, rules in kernel.chains(version, table).items():
                for rule in rules:
                    assert '--comment "cali:' in rule, (chain, rule)


# --------------------------------------------------------------------------- what is written


def test_noop_verified_apply_reads_and_writes_nothing() -> None:
    kernel = FakeKernel()
    assert apply_snapshot(snapshot(3), kernel=kernel).changed
    kernel.calls.clear()
    again = apply_snapshot(snapshot(3), kernel=kernel)
    assert not again.changed and again.verified
    assert kernel.writes() == ["routes: dump and write"]  # the routes' read-and-diff only
    assert not again.routes.added and not again.routes.removed


def test_endpoint_change_rewrites_only_its_chains() -> None:
    kernel = FakeKernel()
    apply_snapshot(snapshot(3), kernel=kernel)
    kernel.calls.clear()
    report = apply_snapshot(snapshot(4), kernel=kernel)
    filter4 = next(t for t in report.tables if t.version == 4 and t.table == "filter")
    assert sorted(filter4.written) == sorted([
        "cali-from-wl-dispatch-00", "cali-to-wl-dispatch-00", "cali-wl-sa-dispatch-00",
        "cali-sa4-cali00000000004", "cali-from-cali00000000004", "cali-to-cali00000000004"])
    assert report.sets.updated == ["cali4-t-web"] and not report.sets.created
    # one ipset restore and the IPv4 filter table's; IPv6 and nat are untouched
    assert [c for c in kernel.writes() if "restore" in c] == [IPSET_RESTORE, V4_RESTORE]
    # a new endpoint's chains judged no flow yet: nothing to forget
    assert report.conntrack_flushed == []


def test_check_mode_says_what_would_change_and_writes_nothing() -> None:
    kernel = FakeKernel()
    report = Dataplane(kernel=kernel).apply(snapshot(2), check_mode=True)
    assert report.changed and report.check_mode
    assert kernel.writes() == [] and kernel.chains(4) == {"INPUT": [], "FORWARD": [],
                                                          "OUTPUT": []}
    assert report.summary().startswith("revision 1: would change")


def test_stale_chains_and_sets_go_after_the_rules_that_use_them() -> None:
    """The fake refuses to destroy a set a rule still names: stale sets must go after the
    tables are written. Chains and sets that are not ours are kept."""
    kernel = FakeKernel()
    kernel.ipsets.edit("create docker-owned hash:ip family inet")
    kernel.iptables[4].edit("filter", "-N DOCKER-TEST", "-A FORWARD -j DOCKER-TEST")
    apply_snapshot(snapshot(2), kernel=kernel)
    report = apply_snapshot(Snapshot(hostname="h", revision=2), kernel=kernel)
    assert "cali4-t-web" in report.sets.destroyed
    assert "cali4-t-web" not in kernel.ipsets.sets and "docker-owned" in kernel.ipsets.sets
    chains = kernel.chains(4)
    assert "cali-from-cali00000000001" not in chains and "DOCKER-TEST" in chains
    assert chains["FORWARD"][0].endswith("-j cali-FORWARD")
    assert chains["FORWARD"][1:] == ["-j DOCKER-TEST"]
    restores = [c for c in kernel.writes() if "restore" in c]
    assert restores[-1] == IPSET_RESTORE and kernel.inputs[-1][1].startswith("destroy ")


def test_hook_is_moved_first_by_its_content() -> None:
    """A foreign rule inserted ahead of our hook: the hook is deleted by its content and
    inserted first again; the foreign rule stays."""
    kernel = FakeKernel()
    table = Table(4, "filter", {"cali-FORWARD": [], "cali-INPUT": []})
    ipt = kernel.iptables[4]
    iptables.apply_plan(ipt, iptables.plan_table(table, iptables.read_table(ipt, "filter")))
    ipt.edit("filter", "-I FORWARD 1 -s 192.0.2.1/32 -j ACCEPT")
    plan = iptables.plan_table(table, iptables.read_table(ipt, "filter"))
    assert plan.hooks_fixed == 1
    ipt.edit("filter", "-I FORWARD 1 -s 192.0.2.2/32 -j ACCEPT")  # racing the apply
    iptables.apply_plan(ipt, plan)
    forward = kernel.chains(4)["FORWARD"]
    assert forward[0].endswith("-j cali-FORWARD")
    assert forward[1:] == ["-s 192.0.2.2/32 -j ACCEPT", "-s 192.0.2.1/32 -j ACCEPT"]
    assert iptables.plan_table(table, iptables.read_table(ipt, "filter")).text is None


def test_a_chain_edited_by_hand_is_rewritten_on_a_verified_apply() -> None:
    kernel = FakeKernel()
    apply_snapshot(snapshot(2), kernel=kernel)
    kernel.iptables[4].edit("filter", "-A cali-to-cali00000000001 -j ACCEPT")
    report = apply_snapshot(snapshot(2), kernel=kernel)
    filter4 = next(t for t in report.tables if t.version == 4 and t.table == "filter")
    assert filter4.written == ["cali-to-cali00000000001"]
    assert kernel.chains(4)["cali-to-cali00000000001"][-1].endswith("-j DROP")


# --------------------------------------------------------------------------- ipsets


def test_wholesale_set_change_is_filled_aside_and_swapped() -> None:
    kernel = FakeKernel()
    db_old = [f"10.66.1.{i}" for i in range(1, 21)]
    db_new = [f"10.66.3.{i}" for i in range(1, 21)]
    db_tmp = [f"10.66.2.{i}" for i in range(1, 21)]
    apply_snapshot(tagged({"db": db_old, "db-tmp": db_tmp}), kernel=kernel)
    report = apply_snapshot(tagged({"db": db_new, "db-tmp": db_tmp}), kernel=kernel)
    assert report.sets.updated == ["cali4-t-db"] and "swap" in report.sets.before
    assert kernel.set_members("cali4-t-db") == {f"{a}/32" for a in ["10.66.0.1", *db_new]}
    assert kernel.set_members("cali4-t-db-tmp") == {f"{a}/32"
                                                    for a in ["10.66.0.2", *db_tmp]}
    assert names.temp_set("cali4-t-db") not in kernel.ipsets.sets
    assert not apply_snapshot(tagged({"db": db_new, "db-tmp": db_tmp}), kernel=kernel).changed


@pytest.mark.parametrize(("kind", "maxelem", "stray"), [
    ("hash:ip", 65536, "10.99.0.1"),      # same header: `create -exist` would keep it
    ("hash:ip", 1024, "10.99.0.1"),       # another maxelem: `create -exist` would fail
    ("hash:net", 65536, "10.99.0.0/24"),  # another type
])
def test_temp_set_left_by_a_crash_is_replaced(kind: str, maxelem: int, stray: str) -> None:
    kernel = FakeKernel()
    new = [f"10.66.3.{i}" for i in range(1, 21)]
    apply_snapshot(tagged({"db": [f"10.66.1.{i}" for i in range(1, 21)]}), kernel=kernel)
    temp = names.temp_set("cali4-t-db")
    kernel.ipsets.edit(f"create {temp} {kind} family inet maxelem {maxelem}",
                       f"add {temp} {stray}")
    report = apply_snapshot(tagged({"db": new}), kernel=kernel)
    assert "swap" in report.sets.before and temp in report.sets.destroyed
    assert kernel.set_members("cali4-t-db") == {f"{a}/32" for a in ["10.66.0.1", *new]}
    assert temp not in kernel.ipsets.sets


# --------------------------------------------------------------------------- memory


def test_trusted_apply_reads_nothing_and_a_verified_one_repairs() -> None:
    kernel = FakeKernel()
    dataplane = Dataplane(kernel=kernel)
    assert dataplane.apply(snapshot(2)).changed
    kernel.calls.clear()
    quick = dataplane.apply(snapshot(2), verify=False)
    assert not quick.changed and not quick.verified and kernel.calls == []
    kernel.iptables[4].edit("filter", "-F cali-FORWARD")  # tampering
    assert not dataplane.apply(snapshot(2), verify=False).changed  # not looked at
    repaired = dataplane.apply(snapshot(2))
    assert repaired.changed and repaired.verified
    assert "cali-FORWARD" in next(t for t in repaired.tables
                                  if t.version == 4 and t.table == "filter").written
    # a changed render is applied from memory: writes, no reads
    kernel.calls.clear()
    assert dataplane.apply(snapshot(3), verify=False).changed
    assert not [c for c in kernel.calls if "save" in c]
    assert [c for c in kernel.calls if "restore" in c] == [IPSET_RESTORE, V4_RESTORE]
    assert kernel.calls[-1] == "routes: write"  # only the difference: no dump


def test_memory_after_a_trusted_apply_is_what_the_kernel_holds() -> None:
    """After a series of trusted applies, a fresh verified apply finds nothing to do."""
    kernel = FakeKernel()
    dataplane = Dataplane(kernel=kernel)
    dataplane.apply(snapshot(3))
    for step in (snapshot(5), snapshot(4), tagged({"a": ["10.66.9.1"]}), snapshot(1)):
        dataplane.apply(step, verify=False)
        assert not apply_snapshot(step, kernel=kernel.another_writer()).changed


def test_a_route_whose_interface_is_missing_is_tried_again() -> None:
    kernel = FakeKernel()
    kernel.routes.links = {"cali00000000001"}
    dataplane = Dataplane(kernel=kernel)
    report = dataplane.apply(snapshot(2))
    assert report.routes.missing_interfaces == ["cali00000000002"]
    kernel.routes.links.add("cali00000000002")
    again = dataplane.apply(snapshot(2), verify=False)  # same snapshot: not skipped
    assert again.routes.added == ["10.66.0.2/32"]
    assert not dataplane.apply(snapshot(2), verify=False).changed


# --------------------------------------------------------------------------- conntrack


def test_flows_are_forgotten_where_policy_changed_or_an_address_left() -> None:
    kernel = FakeKernel()
    apply_snapshot(snapshot(3), kernel=kernel)
    assert kernel.conntrack.flushed == []  # new chains judged no flow yet
    web = snapshot(3).profiles["web"]
    closed = replace(snapshot(3), profiles={"web": replace(web, inbound_rules=[])})
    report = apply_snapshot(closed, kernel=kernel)
    assert report.conntrack_flushed == ["10.66.0.1", "10.66.0.2", "10.66.0.3"]
    kernel.conntrack.flushed.clear()
    # an endpoint goes: its address leaves the tag set and its route goes
    report = apply_snapshot(replace(closed, endpoints=closed.endpoints[:2]), kernel=kernel)
    assert "10.66.0.3" in report.conntrack_flushed
    assert report.routes.removed == ["10.66.0.3/32"]


# --------------------------------------------------------------------------- failures


def test_failed_restore_changes_nothing_and_names_the_line() -> None:
    kernel = FakeKernel()
    ipt = kernel.iptables[4]
    hooks = {"cali-FORWARD": [], "cali-INPUT": []}
    table = Table(4, "filter", {**hooks, "cali-test": ["-s 10.0.0.1/32 -j ACCEPT"]})
    iptables.apply_plan(ipt, iptables.plan_table(table, iptables.read_table(ipt, "filter")))
    before = ipt.save("filter")
    bad = Table(4, "filter", {**hooks, "cali-test": ["-s 10.0.0.2/32 -j ACCEPT",
                                                      "-m nosuchmatch --foo -j ACCEPT"]})
    ipt.fail_on = "nosuchmatch"
    with pytest.raises(CommandError) as info:
        iptables.apply_plan(ipt, iptables.plan_table(bad, iptables.read_table(ipt, "filter")))
    message = str(info.value)
    assert "\n" not in message and "nosuchmatch" in message and "line 4" in message
    assert ipt.save("filter") == before


def test_ip6tables_failure_does_not_stop_ipv4_and_routes() -> None:
    """A part that fails is named; every other part is applied, and the next apply reads
    the kernel again even when asked to trust its memory."""
    kernel = FakeKernel()
    kernel.iptables[6].fail_on = "cali-FORWARD"
    ep = Endpoint("ep1", "h", "cali1", ipv4_nets=["10.73.0.5"], ipv6_nets=["fd00:73::5"],
                  profiles=["web"])
    snap = Snapshot(hostname="h", revision=1, pools=(IPPool("10.73.0.0/16"),),
                    profiles={"web": Profile.with_default_rules("web")}, endpoints=(ep,))
    dataplane = Dataplane(kernel=kernel)
    with pytest.raises(DataplaneError) as info:
        dataplane.apply(snap)
    message = str(info.value)
    assert "ip6tables filter" in message and "everything else was applied" in message
    assert message.startswith("ip6tables filter: ip6tables-restore failed (exit 2): ")
    assert "; " not in message.split(" (everything else")[0]  # IPv4 and nat were applied
    assert set(kernel.routes.routes) == {"10.73.0.5/32", "fd00:73::5/128"}
    assert "cali-to-cali1" in kernel.chains(4) and "cali-to-cali1" not in kernel.chains(6)
    kernel.iptables[6].fail_on = None
    kernel.calls.clear()
    repaired = dataplane.apply(snap, verify=False)  # memory was forgotten: reads
    assert repaired.verified and "ip6tables-save -t filter" in kernel.calls
    assert "cali-to-cali1" in kernel.chains(6)


def test_failed_ipsets_keep_every_table_and_stale_set_as_it_was() -> None:
    """Rules may name sets that were not made: no table is written, and no set is
    destroyed; ipset restore is not atomic, so the lines before the failure stay."""
    kernel = FakeKernel()
    apply_snapshot(tagged({"a": ["10.66.9.1"]}), kernel=kernel)
    before = {v: kernel.iptables[v].save("filter") for v in (4, 6)}
    kernel.ipsets.fail_on = "cali4-t-b"
    with pytest.raises(DataplaneError) as info:
        apply_snapshot(tagged({"b": ["10.66.9.2"]}), kernel=kernel)
    message = str(info.value)
    assert message.startswith("ipsets: ipset failed")
    assert "iptables filter: not applied (the ipsets failed)" in message
    assert {v: kernel.iptables[v].save("filter") for v in (4, 6)} == before
    assert "cali4-t-a" in kernel.ipsets.sets  # still named by the old rules


# --------------------------------------------------------------------------- stamps


@pytest.fixture
def store(tmp_path: Path):
    with calico_lib.connect(f"sqlite:///{tmp_path}/c.db") as client:
        client.add_pool(IPPool("10.66.0.0/16"))
        client.add_profile("web")
        for ep in snapshot(2).endpoints:
            client.add_endpoint(ep)
        yield client


def test_writers_adopt_each_others_state_by_stamp(store, tmp_path: Path) -> None:
    """A trusted writer reads nothing while the stamp is its own, adopts the state of
    another writer that applied the very revision it reads, and reads the kernel when the
    stamp names anything else."""
    kernel, lock = FakeKernel(), str(tmp_path / "lock")
    mine = Dataplane(kernel=kernel.another_writer())
    assert reconcile(store.store, "h", lock, dataplane=mine, verify=False).verified
    store.add_endpoint(snapshot(3).endpoints[2])
    mine.kernel.calls.clear()
    report = reconcile(store.store, "h", lock, dataplane=mine, verify=False)
    assert report.changed and not report.verified
    assert not [c for c in mine.kernel.calls if "save" in c]
    # another writer applies the revision we are about to read: adopted, not read
    other = Dataplane(kernel=kernel.another_writer())
    reconcile(store.store, "h", lock, dataplane=other, verify=True)
    mine.kernel.calls.clear()
    adopted = reconcile(store.store, "h", lock, dataplane=mine, verify=False)
    assert not adopted.verified and not adopted.changed and mine.kernel.calls == []
    # another writer applied, then the datastore moved on: read again
    reconcile(store.store, "h", lock, dataplane=other, verify=True)
    store.add_profile("db")  # used by no endpoint: the render is the same
    mine.kernel.calls.clear()
    again = reconcile(store.store, "h", lock, dataplane=mine, verify=False)
    assert again.verified and not again.changed
    assert "iptables-save -t filter" in mine.kernel.calls


def test_an_adopted_state_still_gets_its_bird_config(store, tmp_path: Path) -> None:
    """The plugin writes no BIRD config: when it applied the revision that gave this host a
    new block first, the agent adopts its kernel state and must still write BIRD's config
    (it did not: the block was announced only at the next resync; found in a lab of racks,
    where the rack's ToR never heard of the new block)."""
    from calico_lib.model import Node

    store.add_node(Node("h", ipv4="192.0.2.10"))
    kernel, lock = FakeKernel(), str(tmp_path / "lock")
    config = tmp_path / "bird.conf"
    agent = Dataplane(str(config), str(tmp_path / "no-socket"), kernel.another_writer())
    reconcile(store.store, "h", lock, dataplane=agent, verify=False)
    block = re.compile(r"route 10\.66\.\d+\.\d+/26 blackhole;")
    assert not block.search(config.read_text())
    # the plugin claims a block for a new container and applies that revision first
    store.ipam.auto_assign("h", "c1", num_ipv4=1)
    plugin = Dataplane(kernel=kernel.another_writer())
    reconcile(store.store, "h", lock, dataplane=plugin, verify=True)
    report = reconcile(store.store, "h", lock, dataplane=agent, verify=False)
    assert not report.verified  # adopted, not read
    assert block.search(config.read_text()), config.read_text()
    # and once written, a trusted no-change apply leaves BIRD alone
    assert not reconcile(store.store, "h", lock, dataplane=agent, verify=False).changed


def test_a_failed_apply_stamps_the_kernel_untrusted(store, tmp_path: Path) -> None:
    kernel, lock = FakeKernel(), str(tmp_path / "lock")
    mine = Dataplane(kernel=kernel)
    reconcile(store.store, "h", lock, dataplane=mine, verify=False)
    store.add_endpoint(snapshot(3).endpoints[2])
    kernel.iptables[4].fail_on = "cali00000000003"
    with pytest.raises(DataplaneError):
        reconcile(store.store, "h", lock, dataplane=mine, verify=False)
    assert Path(lock + ".stamp").read_text().startswith("failed ")
    assert mine.stamp is None
    kernel.iptables[4].fail_on = None
    kernel.calls.clear()
    report = reconcile(store.store, "h", lock, dataplane=mine, verify=False)
    assert report.verified and report.changed  # the kernel was read, and repaired
    assert "iptables-save -t filter" in kernel.calls


def test_plans_against_memory_equal_plans_against_the_kernel() -> None:
    """``plan_changes`` (memory) and ``plan_sets`` (a kernel read) agree on what to write."""
    kernel = FakeKernel()
    first = render_policy(tagged({"a": ["10.66.9.1"], "b": ["10.66.9.2"]})).ipsets
    apply_snapshot(tagged({"a": ["10.66.9.1"], "b": ["10.66.9.2"]}), kernel=kernel)
    second = render_policy(tagged({"a": ["10.66.9.1", "10.66.9.3"]})).ipsets
    remembered = ipsets.plan_changes(second, first)
    read = ipsets.plan_sets(second, ipsets.read_sets(kernel.ipsets))
    assert (remembered.before, remembered.after) == (read.before, read.after)
    assert remembered.left == read.left


def test_a_set_of_another_type_is_refused_by_name() -> None:
    kernel = FakeKernel()
    want = {"cali4-t-a": IpSet("cali4-t-a", "hash:ip", 4, frozenset({"10.0.0.1"}))}
    kernel.ipsets.edit("create cali4-t-a hash:net family inet")
    with pytest.raises(ipsets.SetTypeError):
        ipsets.plan_sets(want, ipsets.read_sets(kernel.ipsets))
