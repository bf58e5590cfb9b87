"""The appliers against a real kernel, in a throwaway network namespace: atomic restores
that leave the old rules in place on error, ipset swaps, zero writes when nothing changed,
sets sized for their members, hooks that never take a foreign rule with them."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from calico_lib.dataplane import ipsets, iptables
from calico_lib.dataplane.kernel import IpsetCommands, IptablesCommands, Kernel, real_kernel
from calico_lib.dataplane.runner import CommandError, run
from calico_lib.model import Endpoint, IPPool, Profile
from calico_lib.reconcile import apply_snapshot
from calico_lib.render import names
from calico_lib.render.policy import IpSet, Table, render_policy
from calico_lib.snapshot import Snapshot
from tests import netns
from tests.netns import inside
from tests.test_render_policy import addresses, any_net_snapshot

pytestmark = pytest.mark.netns


@pytest.fixture
def ns() -> Iterator[str]:
    netns.require()
    with netns.namespace("calt-ap") as name:
        yield name


def snapshot(count: int) -> Snapshot:
    return Snapshot(
        hostname="h", revision=1, pools=(IPPool("10.66.0.0/16"),),
        profiles={"web": Profile.with_default_rules("web")},
        endpoints=tuple(Endpoint(f"e{i}", "h", f"cali{i:011d}", ipv4_nets=[f"10.66.0.{i}"],
                                 profiles=["web"]) for i in range(1, count + 1)))


IPT4 = IptablesCommands(4)
IPSETS = IpsetCommands()


def spied() -> tuple[list[list[str]], Kernel]:
    """This host's kernel, recording every command the appliers run through it (reads and
    writes)."""
    calls: list[list[str]] = []

    def spy(argv, *args, **kwargs):
        calls.append(list(argv))
        return run(argv, *args, **kwargs)

    return calls, real_kernel(run=spy)


def writes(calls: list[list[str]]) -> list[list[str]]:
    return [c for c in calls if not c[0].endswith("-save") and c[:2] != ["ipset", "save"]]


def test_failed_restore_keeps_old_rules_and_names_the_line(ns) -> None:
    with inside(ns):
        hooks = {"cali-FORWARD": [], "cali-INPUT": []}
        table = Table(4, "filter", {**hooks, "cali-test": ["-s 10.0.0.1/32 -j ACCEPT"]})
        iptables.apply_plan(IPT4, iptables.plan_table(table, iptables.read_table(IPT4, "filter")))
        before = run(["iptables-save", "-t", "filter"])
        bad = Table(4, "filter", {**hooks, "cali-test": ["-s 10.0.0.2/32 -j ACCEPT",
                                                "-m nosuchmatch --foo -j ACCEPT"]})
        with pytest.raises(CommandError) as info:
            iptables.apply_plan(IPT4, iptables.plan_table(bad, iptables.read_table(IPT4, "filter")))
        message = str(info.value)
        assert "\n" not in message
        assert "nosuchmatch" in message and "line" in message
        after = run(["iptables-save", "-t", "filter"])
    strip = [line for line in before.splitlines() if not line.startswith("#")]
    assert strip == [line for line in after.splitlines() if not line.startswith("#")]


def test_noop_reconcile_writes_nothing(ns) -> None:
    with inside(ns):
        first = apply_snapshot(snapshot(3))
        assert first.changed
        calls, kernel = spied()
        second = apply_snapshot(snapshot(3), kernel=kernel)
        assert not second.changed and second.routes is not None
        assert writes(calls) == []  # only reads: the -save commands
        assert second.routes.sysctl_writes == 0 and not second.routes.added


def test_endpoint_change_rewrites_only_its_chains(ns) -> None:
    with inside(ns):
        apply_snapshot(snapshot(3))
        calls, kernel = spied()
        report = apply_snapshot(snapshot(4), kernel=kernel)
        filter4 = next(t for t in report.tables if t.version == 4 and t.table == "filter")
        # one leaf of each dispatch tree, never its root or a sibling
        assert sorted(filter4.written) == sorted([
            "cali-from-wl-dispatch-00", "cali-to-wl-dispatch-00", "cali-wl-sa-dispatch-00",
            "cali-sa4-cali00000000004", "cali-from-cali00000000004",
            "cali-to-cali00000000004"])
        assert report.sets.updated == ["cali4-t-web"] and not report.sets.created
        restore_calls = [c for c in writes(calls) if "restore" in c[0] or c[1] == "restore"]
        # one ipset restore and one iptables-restore (v4 filter); an IPv4-only endpoint
        # changes nothing in ip6tables
        assert [c[0] for c in restore_calls] == ["ipset", "iptables-restore"]


def test_ipset_wholesale_change_is_swapped_in(ns) -> None:
    with inside(ns):
        old = {"cali4-t-x": IpSet("cali4-t-x", "hash:ip", 4,
                                  frozenset(f"10.1.0.{i}" for i in range(30)))}
        plan = ipsets.plan_sets(old, ipsets.read_sets(IPSETS))
        ipsets.apply_before(IPSETS, plan)
        new = {"cali4-t-x": IpSet("cali4-t-x", "hash:ip", 4,
                                  frozenset(f"10.2.0.{i}" for i in range(30)))}
        plan = ipsets.plan_sets(new, ipsets.read_sets(IPSETS))
        assert "swap" in plan.before
        ipsets.apply_before(IPSETS, plan)
        kernel = ipsets.read_sets(IPSETS)
        assert set(kernel) == {"cali4-t-x"}  # the temporary set is gone
        assert kernel["cali4-t-x"].members == {f"10.2.0.{i}/32" for i in range(30)}


def test_stale_sets_and_chains_are_removed_others_kept(ns) -> None:
    with inside(ns):
        run(["ipset", "create", "docker-owned", "hash:ip"])
        run(["iptables", "-N", "DOCKER-TEST"])
        run(["iptables", "-A", "FORWARD", "-j", "DOCKER-TEST"])
        apply_snapshot(snapshot(2))
        assert "cali4-t-web" in ipsets.read_sets(IPSETS)
        empty = Snapshot(hostname="h", revision=2)
        report = apply_snapshot(empty)
        assert "cali4-t-web" in report.sets.destroyed
        assert "cali-from-cali00000000001" in next(
            t for t in report.tables if t.version == 4 and t.table == "filter").removed
        sets = run(["ipset", "list", "-n"]).split()
        assert "docker-owned" in sets and "cali4-t-web" not in sets
        saved = run(["iptables-save", "-t", "filter"])
        assert ":DOCKER-TEST" in saved and "-A FORWARD -j DOCKER-TEST" in saved
        forward = [line for line in saved.splitlines() if line.startswith("-A FORWARD")]
        assert "cali-FORWARD" in forward[0]  # our jump comes first, the other is kept


def test_render_matches_what_the_kernel_accepts(ns) -> None:
    """Every rendered rule of a rich policy is accepted by the real iptables."""
    from tests.test_render_policy import rich_snapshot

    with inside(ns):
        report = apply_snapshot(rich_snapshot())
        assert report.changed
        again = apply_snapshot(rich_snapshot())
        assert not again.changed
        policy = render_policy(rich_snapshot())
        for table in policy.tables:
            kernel = iptables.read_table(IptablesCommands(table.version), table.name)
            for chain, specs in table.chains.items():
                assert kernel.chains[chain] == [iptables.rule_hash(s) for s in specs]


def test_unchanged_render_skips_kernel_reads_until_a_verified_resync(ns) -> None:
    from calico_lib.reconcile import Dataplane

    with inside(ns):
        calls, kernel = spied()
        dataplane = Dataplane(kernel=kernel)
        assert dataplane.apply(snapshot(2)).changed
        calls.clear()
        quick = dataplane.apply(snapshot(2), verify=False)
        assert not quick.changed and not quick.verified
        assert calls == []  # not even iptables-save or ipset save
        run(["iptables", "-F", "cali-FORWARD"])  # tampering
        assert not dataplane.apply(snapshot(2), verify=False).changed  # not looked at
        repaired = dataplane.apply(snapshot(2), verify=True)
        assert repaired.changed and repaired.verified
        assert "cali-FORWARD" in next(t for t in repaired.tables
                                      if t.version == 4 and t.table == "filter").written
        # A changed render is applied in full even without verify.
        assert dataplane.apply(snapshot(3), verify=False).changed


def test_trusted_memory_writes_only_what_changed_and_yields_to_other_writers(
        ns, tmp_path) -> None:
    """With verify=False a changed render is applied without reading the kernel, touching
    only the tables that changed; another writer in between (a new stamp) forces a read."""
    import calico_lib
    from calico_lib.reconcile import Dataplane, reconcile

    url, lock = f"sqlite:///{tmp_path}/c.db", str(tmp_path / "lock")
    with inside(ns), calico_lib.connect(url) as client:
        client.add_pool(IPPool("10.66.0.0/16"))
        client.add_profile("web")
        for ep in snapshot(2).endpoints:
            client.add_endpoint(ep)
        calls, kernel = spied()
        mine = Dataplane(kernel=kernel)
        assert reconcile(client.store, "h", lock, dataplane=mine, verify=False).verified
        client.add_endpoint(snapshot(3).endpoints[2])
        calls.clear()
        report = reconcile(client.store, "h", lock, dataplane=mine, verify=False)
        assert report.changed and not report.verified
        assert not [c for c in calls if c[0].endswith("-save") or c[:2] == ["ipset", "save"]]
        restores = [c[0] for c in calls if "restore" in c[0] or c[1:2] == ["restore"]]
        assert restores == ["ipset", "iptables-restore"]  # IPv4 filter only: no IPv6 change
        # Another writer applied the very revision we read: its state is adopted unread.
        reconcile(client.store, "h", lock, dataplane=Dataplane(), verify=True)
        calls.clear()
        adopted = reconcile(client.store, "h", lock, dataplane=mine, verify=False)
        assert not adopted.verified and not adopted.changed
        assert not [c for c in calls if c[0].endswith("-save") or c[:2] == ["ipset", "save"]]
        # Another writer applied, then the datastore moved on: its stamp names an older
        # revision, so our memory is no longer trusted and the kernel is read.
        reconcile(client.store, "h", lock, dataplane=Dataplane(), verify=True)
        client.add_profile("db")  # no endpoint uses it: the render is unchanged
        calls.clear()
        again = reconcile(client.store, "h", lock, dataplane=mine, verify=False)
        assert again.verified and not again.changed
        assert any(c[0] == "iptables-save" for c in calls)
        # What the memory holds after adopting and after reading is what the kernel has:
        # a trusted change, then a fresh verified apply, finds nothing to repair.
        reconcile(client.store, "h", lock, dataplane=Dataplane(), verify=True)
        reconcile(client.store, "h", lock, dataplane=mine, verify=False)  # adopts
        client.add_endpoint(snapshot(4).endpoints[3])
        assert reconcile(client.store, "h", lock, dataplane=mine, verify=False).changed
        assert not reconcile(client.store, "h", lock, dataplane=Dataplane()).changed


# --------------------------------------------------------------------------- ipsets


def tagged(tags: dict[str, list[str] | frozenset[str]]) -> Snapshot:
    """A profile per tag, named like it, with one local endpoint (10.66.0.N) so its rules
    and tag set are rendered here; the tag's other members are endpoints on host h2."""
    local = [Endpoint(f"l{i}", "h", f"cali{i:011d}", ipv4_nets=[f"10.66.0.{i}"], profiles=[tag])
             for i, tag in enumerate(tags, 1)]
    remote = [Endpoint(f"r-{tag}-{j}", "h2", "caliremote", ipv4_nets=[a], profiles=[tag])
              for tag, members in tags.items() for j, a in enumerate(sorted(members))]
    return Snapshot(hostname="h", revision=1,
                    profiles={t: Profile.with_default_rules(t) for t in tags},
                    endpoints=tuple(local + remote))


def host_routes(members) -> set[str]:
    return {f"{a}/32" for a in members}


def test_tag_named_like_a_temp_set_keeps_its_own_members(ns) -> None:
    """Tags db and db-tmp: a wholesale change of db is filled aside and swapped in without
    touching db-tmp's set (once the temporary set of db, swapped with it and destroyed)."""
    db_old = [f"10.66.1.{i}" for i in range(1, 21)]
    db_new = [f"10.66.3.{i}" for i in range(1, 21)]
    db_tmp = [f"10.66.2.{i}" for i in range(1, 21)]
    with inside(ns):
        apply_snapshot(tagged({"db": db_old, "db-tmp": db_tmp}))
        report = apply_snapshot(tagged({"db": db_new, "db-tmp": db_tmp}))
        assert report.sets.updated == ["cali4-t-db"] and "swap" in report.sets.before
        kernel = ipsets.read_sets(IPSETS)
        assert kernel["cali4-t-db"].members == host_routes(["10.66.0.1", *db_new])
        assert kernel["cali4-t-db-tmp"].members == host_routes(["10.66.0.2", *db_tmp])
        assert set(kernel) == {"cali4-t-db", "cali4-t-db-tmp", "cali4-all-pools",
                               "cali4-masq-pools", "cali4-all-hosts", "cali6-all-pools",
                               "cali6-masq-pools", "cali6-all-hosts"}  # no temporary set
        assert not apply_snapshot(tagged({"db": db_new, "db-tmp": db_tmp})).changed


@pytest.mark.parametrize(("kind", "maxelem", "stray"), [
    ("hash:ip", 65536, "10.99.0.1"),      # same header: `create -exist` would keep it
    ("hash:ip", 1024, "10.99.0.1"),       # another maxelem: `create -exist` would fail
    ("hash:net", 65536, "10.99.0.0/24"),  # another type
])
def test_temp_set_left_by_a_crash_does_not_break_the_next_apply(
        ns, kind: str, maxelem: int, stray: str) -> None:
    old = [f"10.66.1.{i}" for i in range(1, 21)]
    new = [f"10.66.3.{i}" for i in range(1, 21)]
    with inside(ns):
        apply_snapshot(tagged({"db": old}))
        temp = names.temp_set("cali4-t-db")
        run(["ipset", "create", temp, kind, "family", "inet", "maxelem", str(maxelem)])
        run(["ipset", "add", temp, stray])
        report = apply_snapshot(tagged({"db": new}))
        assert "swap" in report.sets.before and temp in report.sets.destroyed
        kernel = ipsets.read_sets(IPSETS)
        assert kernel["cali4-t-db"].members == host_routes(["10.66.0.1", *new])
        assert temp not in kernel
        assert not apply_snapshot(tagged({"db": new})).changed


def test_a_tag_with_70000_members_applies(ns) -> None:
    big = tagged({"big": addresses(70000, "10.64.0.0")})
    with inside(ns):
        report = apply_snapshot(big)
        assert report.sets.created and "maxelem 262144" in report.sets.before
        kernel = ipsets.read_sets(IPSETS)["cali4-t-big"]
        assert len(kernel.members) == 70001 and kernel.maxelem == 262144
        assert not apply_snapshot(big).changed


def test_growing_a_set_past_its_maxelem_swaps_in_a_larger_one(ns) -> None:
    """From 10 to 70,000 members while iptables rules use the set (so it cannot be destroyed
    and created again): rebuilt with a larger maxelem and swapped in, in one restore."""
    many = tagged({"big": addresses(70000, "10.64.0.0")})
    with inside(ns):
        apply_snapshot(tagged({"big": addresses(10, "10.64.0.0")}))
        assert "maxelem 65536" in run(["ipset", "list", "-t", "cali4-t-big"])
        assert "cali4-t-big" in run(["iptables-save", "-t", "filter"])  # in use
        calls, kernel = spied()
        report = apply_snapshot(many, kernel=kernel)
        assert writes(calls) == [["ipset", "restore", "-exist"]]  # rules unchanged
        assert report.sets.updated == ["cali4-t-big"] and "swap" in report.sets.before
        kernel = ipsets.read_sets(IPSETS)
        assert len(kernel["cali4-t-big"].members) == 70001
        assert kernel["cali4-t-big"].maxelem == 262144
        assert names.temp_set("cali4-t-big") not in kernel
        assert not apply_snapshot(many).changed


def test_any_net_rules_apply(ns) -> None:
    """0.0.0.0/0 and ::/0 in CIDR lists (hash:net refuses /0): the policy applies and
    stays applied, and no set holds a /0."""
    with inside(ns):
        assert apply_snapshot(any_net_snapshot()).changed
        assert not apply_snapshot(any_net_snapshot()).changed
        for s in ipsets.read_sets(IPSETS).values():
            assert not any(m.endswith("/0") for m in s.members), s


# --------------------------------------------------------------------------- hooks


def test_hook_is_removed_by_its_content_not_by_a_stale_position(ns) -> None:
    """A foreign rule inserted between reading iptables and applying the plan survives;
    our hook ends up exactly once and first."""
    table = Table(4, "filter", {"cali-FORWARD": [], "cali-INPUT": []})
    foreign_a = "-A FORWARD -s 192.0.2.1/32 -j ACCEPT"
    foreign_b = "-A FORWARD -s 192.0.2.2/32 -j ACCEPT"
    with inside(ns):
        iptables.apply_plan(IPT4, iptables.plan_table(table, iptables.read_table(IPT4, "filter")))
        run(["iptables", *foreign_a.replace("-A FORWARD", "-I FORWARD 1").split()])
        plan = iptables.plan_table(table, iptables.read_table(IPT4, "filter"))  # hook 2nd
        assert plan.hooks_fixed == 1
        run(["iptables", *foreign_b.replace("-A FORWARD", "-I FORWARD 1").split()])  # racing
        iptables.apply_plan(IPT4, plan)
        forward = [line for line in run(["iptables-save", "-t", "filter"]).splitlines()
                   if line.startswith("-A FORWARD")]
        assert forward[1:] == [foreign_b, foreign_a]
        assert forward[0].endswith("-j cali-FORWARD")
        assert iptables.plan_table(table, iptables.read_table(IPT4, "filter")).text is None
