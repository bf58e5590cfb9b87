"""IPAM behaviour on real datastores: affinity, borrowing, release, check, gc, races."""

from __future__ import annotations

import json
import multiprocessing

import netaddr
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import calico_lib
from calico_lib import (
    Endpoint,
    InUseError,
    IPPool,
    PoolExhaustedError,
    Problem,
    ValidationError,
    keys,
)
from calico_lib.datastore import open_datastore
from calico_lib.ipam import GRACE, Block


@pytest.fixture
def client(datastore_url):
    with calico_lib.connect(datastore_url) as c:
        yield c


@pytest.fixture
def sqlite_client(tmp_path):
    with calico_lib.connect(f"sqlite:///{tmp_path}/ipam.db") as c:
        yield c


def bare(c: calico_lib.Client) -> list[Problem]:
    """``check()`` less the finding every handle without an endpoint gives (most tests
    here assign to bare handles)."""
    return [p for p in c.ipam.check() if p.kind != "allocation-without-endpoint"]


def inside(addr: str, *pools: str) -> bool:
    return any(netaddr.IPAddress(addr) in netaddr.IPNetwork(p) for p in pools)


def test_assign_v4_and_v6_from_affine_blocks(client):
    client.add_pool(IPPool("10.10.0.0/24"))
    client.add_pool(IPPool("fd10::/120"))
    first = client.ipam.auto_assign("h1", "e1", num_ipv4=2, num_ipv6=1)
    second = client.ipam.auto_assign("h1", "e2", num_ipv4=1, num_ipv6=1)
    addrs = first.addresses + second.addresses
    assert len(set(addrs)) == 5
    assert all(inside(a, "10.10.0.0/24", "fd10::/120") for a in addrs)
    # Both hosts' addresses come from the same affine block for h1.
    blocks = {b.cidr: b for b in client.ipam.blocks()}
    assert blocks["10.10.0.0/26"].affinity == "h1"
    assert sorted(client.ipam.handle_addresses("e1")) == sorted(first.addresses)
    # Another host gets a block of its own.
    other = client.ipam.auto_assign("h2", "e3", num_ipv4=1)
    assert netaddr.IPAddress(other.ipv4[0]) not in netaddr.IPNetwork("10.10.0.0/26")
    assert bare(client) == []


def test_fast_path_is_one_transaction(sqlite_client):
    c = sqlite_client
    c.add_pool(IPPool("10.11.0.0/24"))
    c.ipam.auto_assign("h1", "warm", num_ipv4=1)  # claims the block
    c.store.txns = c.store.reads = 0
    c.ipam.auto_assign("h1", "e1", num_ipv4=1)
    assert c.store.txns == 1
    assert c.store.reads <= 2


def test_all_or_nothing_when_exhausted(client):
    client.add_pool(IPPool("10.12.0.0/26"))
    client.add_pool(IPPool("fd12::/122"))
    client.ipam.auto_assign("h1", "big", num_ipv6=64)
    with pytest.raises(PoolExhaustedError, match="ipv6"):
        client.ipam.auto_assign("h1", "e1", num_ipv4=1, num_ipv6=1)
    assert client.ipam.handle_addresses("e1") == []
    assert client.ipam.usage()[0]["allocated"] == 0  # the IPv4 address was not kept
    assert bare(client) == []


def test_borrowing_and_strict_affinity(client):
    client.add_pool(IPPool("10.13.0.0/26"))  # a single block
    client.ipam.auto_assign("h1", "e1", num_ipv4=1)
    # h2 finds no free block and borrows from h1's block.
    borrowed = client.ipam.auto_assign("h2", "e2", num_ipv4=1).ipv4[0]
    assert inside(borrowed, "10.13.0.0/26")
    assert [b.affinity for b in client.ipam.blocks()] == ["h1"]
    client.ipam.set_config(calico_lib.IPAMConfig(strict_affinity=True))
    with pytest.raises(PoolExhaustedError):
        client.ipam.auto_assign("h3", "e3", num_ipv4=1)
    assert bare(client) == []


def test_disabled_pool_gives_no_addresses(client):
    client.add_pool(IPPool("10.14.0.0/24", disabled=True))
    with pytest.raises(PoolExhaustedError):
        client.ipam.auto_assign("h1", "e1", num_ipv4=1)
    with pytest.raises(ValidationError, match="^ip: .*disabled"):
        client.ipam.assign_ip("10.14.0.5", "e1", "h1")
    client.update_pool("10.14.0.0/24", disabled=False)
    assert inside(client.ipam.auto_assign("h1", "e1", num_ipv4=1).ipv4[0], "10.14.0.0/24")


def test_specific_address(client):
    client.add_pool(IPPool("10.15.0.0/24"))
    assert client.ipam.assign_ip("10.15.0.77", "e1", "h1") == "10.15.0.77"
    with pytest.raises(InUseError, match="already assigned"):
        client.ipam.assign_ip("10.15.0.77", "e2", "h1")
    with pytest.raises(ValidationError, match="^ip: 10.99.0.1 is not in any pool"):
        client.ipam.assign_ip("10.99.0.1", "e2", "h1")
    # Auto-assign never hands out the taken address.
    got = client.ipam.auto_assign("h1", "e3", num_ipv4=64).ipv4
    assert "10.15.0.77" not in got
    assert bare(client) == []


def test_freed_addresses_are_not_reused_at_once(client):
    client.add_pool(IPPool("10.16.0.0/24"))
    first = client.ipam.auto_assign("h1", "e1", num_ipv4=1).ipv4[0]
    assert client.ipam.release_ips([first]) == [first]
    again = client.ipam.auto_assign("h1", "e2", num_ipv4=1).ipv4[0]
    assert again != first


def test_release_by_address_and_handle(client):
    client.add_pool(IPPool("10.17.0.0/24"))
    client.add_pool(IPPool("fd17::/120"))
    result = client.ipam.auto_assign("h1", "e1", num_ipv4=2, num_ipv6=2)
    released = client.ipam.release_ips([result.ipv4[0], "10.17.0.250"])  # 2nd not assigned
    assert released == [result.ipv4[0]]
    assert bare(client) == []
    assert sorted(client.ipam.release_handle("e1")) == sorted(result.ipv4[1:] + result.ipv6)
    assert client.ipam.handle_addresses("e1") == []
    assert client.ipam.release_handle("e1") == []  # releasing twice is quiet
    assert bare(client) == []


def test_release_host_affinities(client):
    client.add_pool(IPPool("10.18.0.0/24"))
    kept = client.ipam.auto_assign("h1", "e1", num_ipv4=65).ipv4  # two blocks
    client.ipam.release_ips(kept[64:])  # second block is empty again
    assert len(client.ipam.release_host_affinities("h1")) == 2
    blocks = client.ipam.blocks()
    assert [(b.cidr, b.affinity) for b in blocks] == [("10.18.0.0/26", None)]
    assert bare(client) == []
    # The used block is borrowed from now on; releasing its addresses frees it.
    client.ipam.release_handle("e1")
    assert client.ipam.blocks() == []


def test_remove_pool_refused_while_in_use(client):
    client.add_pool(IPPool("10.19.0.0/24"))
    client.ipam.auto_assign("h1", "e1", num_ipv4=1)
    with pytest.raises(InUseError, match="^cidr: "):
        client.remove_pool("10.19.0.0/24")
    client.ipam.release_handle("e1")
    client.remove_pool("10.19.0.0/24")
    assert client.list_pools() == [] and client.ipam.blocks() == []
    assert bare(client) == []


def test_check_finds_every_kind_of_problem_and_gc_repairs(client):
    store = client.store
    client.add_pool(IPPool("10.20.0.0/24"))
    client.ipam.auto_assign("h1", "lost-handle", num_ipv4=1)
    client.ipam.auto_assign("h1", "live", num_ipv4=1)
    store.put("/calico/v1/ipam/handles/orphan", '{"handle":"orphan","blocks":{}}')
    store.delete("/calico/v1/ipam/handles/lost-handle")
    # A duplicate: an overlapping block (as a bad manual edit could leave) owning .0 too.
    dup = Block.new("10.20.0.0/27", None)
    dup.take("dup", 1)
    store.put("/calico/v1/ipam/blocks/10.20.0.0-27", calico_lib.txn.dumps(dup.dump()))
    # An address outside every pool.
    stray = Block.new("10.99.0.0/26", None)
    stray.take("stray", 1)
    store.put("/calico/v1/ipam/blocks/10.99.0.0-26", calico_lib.txn.dumps(stray.dump()))
    kinds = {p.kind for p in client.ipam.check()}
    assert {"address-without-handle", "handle-without-address", "duplicate",
            "outside-pool"} <= kinds
    plan = client.ipam.gc_plan(["live"])
    assert {r.handle for r in plan} == {"lost-handle", "orphan", "dup", "stray"}
    assert all(client.ipam.release(r) is not None for r in plan)
    assert bare(client) == []
    assert len(client.ipam.handle_addresses("live")) == 1


def test_bad_input_is_refused(client):
    client.add_pool(IPPool("10.21.0.0/24"))
    with pytest.raises(ValidationError, match="^ipv4: "):
        client.ipam.auto_assign("h1", "e1", num_ipv4=-1)
    with pytest.raises(ValidationError, match="^handle: "):
        client.ipam.auto_assign("h1", "bad/handle", num_ipv4=1)
    with pytest.raises(ValidationError, match="^host: "):
        client.ipam.auto_assign("", "e1", num_ipv4=1)
    with pytest.raises(ValidationError, match="^ipv4: nothing to assign"):
        client.ipam.auto_assign("h1", "e1")
    with pytest.raises(ValidationError, match="^pools: 10.22.0.0/24 is not an enabled pool"):
        client.ipam.auto_assign("h1", "e1", num_ipv4=1, pools=["10.22.0.0/24"])


# --------------------------------------------------------------------------- properties

ops = st.lists(
    st.one_of(
        st.tuples(st.just("assign"), st.sampled_from(["h1", "h2", "h3"]),
                  st.integers(0, 3), st.integers(0, 3)),
        st.tuples(st.just("release_handle"), st.integers(0, 30)),
        st.tuples(st.just("release_ip"), st.integers(0, 200)),
        st.tuples(st.just("release_affinity"), st.sampled_from(["h1", "h2", "h3"])),
    ),
    max_size=25,
)


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sequence=ops)
def test_ipam_invariants_hold_for_any_sequence(tmp_path_factory, sequence):
    path = tmp_path_factory.mktemp("prop") / "ipam.db"
    with calico_lib.connect(f"sqlite:///{path}") as c:
        c.add_pool(IPPool("10.30.0.0/25", block_size=28))
        c.add_pool(IPPool("fd30::/124", block_size=126))
        owned: dict[str, set[str]] = {}
        counter = 0
        for op in sequence:
            if op[0] == "assign" and (op[2] or op[3]):
                counter += 1
                handle = f"e{counter}"
                try:
                    result = c.ipam.auto_assign(op[1], handle, op[2], op[3])
                except PoolExhaustedError:
                    assert c.ipam.handle_addresses(handle) == []
                    continue
                assert len(result.ipv4) == op[2] and len(result.ipv6) == op[3]
                owned[handle] = set(result.addresses)
            elif op[0] == "release_handle" and owned:
                handle = sorted(owned)[op[1] % len(owned)]
                assert set(c.ipam.release_handle(handle)) == owned.pop(handle)
            elif op[0] == "release_ip" and any(owned.values()):
                every = sorted(a for addrs in owned.values() for a in addrs)
                addr = every[op[1] % len(every)]
                assert c.ipam.release_ips([addr]) == [addr]
                for addrs in owned.values():
                    addrs.discard(addr)
            elif op[0] == "release_affinity":
                c.ipam.release_host_affinities(op[1])
            # Invariants: no address twice, all inside pools, records agree with blocks.
            every = [a for addrs in owned.values() for a in addrs]
            assert len(every) == len(set(every))
            assert all(inside(a, "10.30.0.0/25", "fd30::/124") for a in every)
            for handle, addrs in owned.items():
                assert set(c.ipam.handle_addresses(handle)) == addrs
            assert bare(c) == []


# --------------------------------------------------------------------------- races

PROCESSES, PER_PROCESS, HOSTS = 8, 250, 4


def _assign_many(url: str, worker: int, queue) -> None:
    try:
        with calico_lib.connect(url) as c:
            got = []
            for i in range(PER_PROCESS):
                got += c.ipam.auto_assign(f"host{worker % HOSTS}", f"w{worker}-{i}",
                                          num_ipv4=1).ipv4
            queue.put(got)
    except Exception as exc:  # reported to the parent, which fails the test
        queue.put(exc)


@pytest.mark.slow
def test_concurrent_assignment_gives_unique_addresses(datastore_url):
    with calico_lib.connect(datastore_url) as c:
        c.add_pool(IPPool("10.40.0.0/20"))
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    workers = [ctx.Process(target=_assign_many, args=(datastore_url, w, queue))
               for w in range(PROCESSES)]
    for w in workers:
        w.start()
    results = [queue.get(timeout=300) for _ in workers]
    for w in workers:
        w.join(timeout=60)
    errors = [r for r in results if isinstance(r, Exception)]
    assert not errors, errors
    addresses = [a for r in results for a in r]
    assert len(addresses) == PROCESSES * PER_PROCESS
    assert len(set(addresses)) == len(addresses)
    assert all(inside(a, "10.40.0.0/20") for a in addresses)
    with calico_lib.connect(datastore_url) as c:
        assert bare(c) == []
        affinities = {b.affinity for b in c.ipam.blocks()}
        assert affinities == {f"host{h}" for h in range(HOSTS)}
        # Release everything, half by address and half by handle, and check again.
        for w in range(PROCESSES):
            for i in range(0, PER_PROCESS, 2):
                c.ipam.release_handle(f"w{w}-{i}")
        c.ipam.release_ips(addresses)
        assert bare(c) == []
        assert sum(u["allocated"] for u in c.ipam.usage()) == 0
    store = open_datastore(datastore_url)
    assert store.list("/calico/v1/ipam/handles/") == []
    store.close()


# --------------------------------------------------------------------------- integrity
# Handle records carry their host and time; addresses change owner only from this host's
# pending handles; check cross-checks endpoints and names every finding's key; repairs and
# gc change only what they decided on.

T0 = 1_800_000_000


def endpoint(c, ep_id: str, host: str, *addresses: str) -> Endpoint:
    ep = Endpoint(id=ep_id, host=host, interface="cali" + ep_id[-11:].replace("-", ""),
                  ipv4_nets=[a for a in addresses if ":" not in a],
                  ipv6_nets=[a for a in addresses if ":" in a])
    c.put_endpoint(ep)
    return ep


def record(c, handle: str) -> dict | None:
    kv = c.store.get(keys.handle(handle))
    return json.loads(kv.value) if kv else None


def test_handle_records_carry_host_and_time_and_old_ones_still_load(client):
    client.add_pool(IPPool("10.50.0.0/24"))
    client.ipam.clock = lambda: T0 + 0.7
    client.ipam.auto_assign("h1", "e1", num_ipv4=1)
    client.ipam.assign_ip("10.50.0.200", "e2", "h2")
    assert record(client, "e1") == {"handle": "e1", "blocks": {"10.50.0.0/26": 1},
                                    "host": "h1", "created": T0}
    assert record(client, "e2")["host"] == "h2"
    client.ipam.clock = lambda: T0 + 50  # a second assignment keeps the first time
    client.ipam.auto_assign("h1", "e1", num_ipv4=1)
    assert record(client, "e1")["created"] == T0
    # A record written before host and created existed still loads and stays as it was.
    client.store.put(keys.handle("e1"), '{"blocks":{"10.50.0.0/26":2},"handle":"e1"}')
    assert bare(client) == []
    client.ipam.release_ips([client.ipam.handle_addresses("e1")[0]])
    assert record(client, "e1") == {"handle": "e1", "blocks": {"10.50.0.0/26": 1}}


def test_claim_takes_only_this_hosts_pending_addresses(client):
    client.add_pool(IPPool("10.51.0.0/24"))
    ipam = client.ipam
    mine = ipam.new_pending_handle()
    addr = ipam.auto_assign("h1", mine, num_ipv4=1).ipv4[0]
    theirs = ipam.auto_assign("h2", ipam.new_pending_handle(), num_ipv4=1).ipv4[0]
    other = ipam.auto_assign("h1", "e-other", num_ipv4=1).ipv4[0]
    for taken, owner in ((theirs, "docker-pending."), (other, "e-other")):
        with pytest.raises(InUseError, match=f"^ip: {taken} is held by handle {owner}"):
            ipam.claim([addr, taken], "e1", "h1")
    assert ipam.handle_addresses("e1") == [] and ipam.handle_addresses(mine) == [addr]
    assert ipam.claim([addr, "10.51.0.250"], "e1", "h1") == [addr, "10.51.0.250"]
    assert ipam.claim([addr], "e1", "h1") == []  # a replay changes nothing
    assert sorted(ipam.handle_addresses("e1")) == sorted([addr, "10.51.0.250"])
    assert record(client, mine) is None  # the emptied pending handle is gone
    with pytest.raises(ValidationError, match="^ip: 10.99.0.1 is not in any pool"):
        ipam.claim(["10.99.0.1"], "e1", "h1")


def test_release_for_host_frees_only_pending_and_ended(client):
    client.add_pool(IPPool("10.52.0.0/24"))
    ipam = client.ipam
    pending = ipam.auto_assign("h1", ipam.new_pending_handle(), num_ipv4=1).ipv4[0]
    live = ipam.auto_assign("h1", "e-live", num_ipv4=1).ipv4[0]
    endpoint(client, "e-live", "h1", live)
    ended = ipam.auto_assign("h1", "e-ended", num_ipv4=1).ipv4[0]
    theirs = ipam.auto_assign("h2", "e-theirs", num_ipv4=1).ipv4[0]
    for address in (live, theirs):
        with pytest.raises(InUseError, match=f"^ip: {address} is held by handle e-"):
            ipam.release_for_host(address, "h1")
    assert ipam.release_for_host(pending, "h1").startswith("docker-pending.")
    assert ipam.release_for_host(ended, "h1") == "e-ended"
    assert ipam.release_for_host(ended, "h1") is None  # not allocated: quiet
    assert ipam.release_for_host("10.52.0.250", "h1") is None
    assert ipam.handle_addresses("e-live") == [live]
    assert ipam.handle_addresses("e-theirs") == [theirs]


def test_check_cross_checks_endpoints_one_finding_per_key(client):
    client.add_pool(IPPool("10.53.0.0/24"))
    ipam = client.ipam
    good = ipam.auto_assign("h1", "e-good", num_ipv4=1).ipv4[0]
    endpoint(client, "e-good", "h1", good)
    endpoint(client, "e-free", "h1", "10.53.0.100")  # its address is not allocated
    endpoint(client, "e-taken", "h2", good)  # another endpoint's address
    orphan = ipam.auto_assign("h1", "e-orphan", num_ipv4=1).ipv4[0]
    extra = ipam.auto_assign("h1", "e-good", num_ipv4=1).ipv4[0]  # not on e-good
    endpoint(client, "e-outside", "h1", "192.0.2.9")
    found = [(p.kind, p.subject) for p in ipam.check()]
    assert sorted(found) == sorted([
        ("address-on-two-endpoints", keys.endpoint("h1", "e-good")),
        ("endpoint-address-taken", keys.endpoint("h2", "e-taken")),
        ("endpoint-address-free", keys.endpoint("h1", "e-free")),
        ("endpoint-address-free", keys.endpoint("h1", "e-outside")),
        ("allocation-without-endpoint", keys.handle("e-orphan")),
        ("address-not-on-endpoint", keys.handle("e-good")),
    ]), found
    text = "\n".join(str(p) for p in ipam.check())
    for word in (good, orphan, extra, "10.53.0.100", "in no pool"):
        assert word in text, word
    assert all("\n" not in str(p) for p in ipam.check())


def test_check_names_unreadable_records_and_does_not_crash(client):
    client.add_pool(IPPool("10.54.0.0/24"))
    client.ipam.auto_assign("h1", "e1", num_ipv4=1)
    bad = {
        keys.block("10.54.0.64/26"): "{not json",
        keys.handle("e2"): '{"handle":"e2","blocks":{},"colour":"red"}',
        keys.endpoint("h1", "e3"): '{"id":"e3","host":"h1","interface":"cali3","x":1}',
        keys.affinity("h1", "10.54.0.128/26"): '{"state":"maybe"}',
        keys.block("10.54.0.192/26"): '{"cidr":"10.54.0.192/26","allocations":{"1":5}}',
    }
    for key, value in bad.items():
        client.store.put(key, value)
    problems = client.ipam.check()
    unreadable = {p.subject for p in problems if p.kind == "unreadable"}
    assert unreadable == set(bad), problems
    assert all(p.subject in bad for p in problems if p.kind == "unreadable")
    # gc decides nothing on partial knowledge: it names the key and frees nothing
    with pytest.raises(calico_lib.DatastoreError, match="unreadable record /calico/v1/"):
        client.ipam.gc_plan([])


def _broken(c) -> dict[str, str]:
    """A store with one of each finding; returns the addresses by name."""
    c.add_pool(IPPool("10.55.0.0/24"))
    ipam = c.ipam
    ipam.clock = lambda: T0
    out = {}
    out["count"] = ipam.auto_assign("h1", "e-count", num_ipv4=1).ipv4[0]
    endpoint(c, "e-count", "h1", out["count"])
    c.store.put(keys.handle("e-count"), json.dumps({
        "blocks": {"10.55.0.0/26": 3}, "handle": "e-count", "host": "h1", "created": T0}))
    out["lost"] = ipam.auto_assign("h1", "e-lost", num_ipv4=1).ipv4[0]
    endpoint(c, "e-lost", "h1", out["lost"])
    c.store.delete(keys.handle("e-lost"))
    c.store.put(keys.handle("e-empty"), '{"blocks":{},"handle":"e-empty"}')
    endpoint(c, "e-free", "h1", "10.55.0.100")
    out["stale"] = ipam.auto_assign("h1", ipam.new_pending_handle(), num_ipv4=1).ipv4[0]
    ipam.clock = lambda: T0 + GRACE - 1
    out["fresh"] = ipam.auto_assign("h1", ipam.new_pending_handle(), num_ipv4=1).ipv4[0]
    # report-only: an address on two endpoints, one owned by another handle, an orphan
    out["orphan"] = ipam.auto_assign("h1", "e-orphan", num_ipv4=1).ipv4[0]
    endpoint(c, "e-dup1", "h1", "10.55.0.200")
    endpoint(c, "e-dup2", "h2", "10.55.0.200")
    endpoint(c, "e-taken", "h2", out["orphan"])
    # claims: h1's claim deleted; a stale claim of h2 on h1's block
    c.store.delete(keys.affinity("h1", "10.55.0.0/26"))
    c.store.put(keys.affinity("h2", "10.55.0.0/26"), '{"state":"confirmed"}')
    ipam.clock = lambda: T0 + GRACE + 5
    return out


SAFE = {"count-mismatch", "address-without-handle", "handle-without-address",
        "affinity-missing", "affinity-stale", "stale-pending"}
HUMAN = {"address-on-two-endpoints", "endpoint-address-taken", "allocation-without-endpoint",
         "endpoint-address-free"}  # the last: 10.55.0.200, on two endpoints


def test_repair_fixes_what_is_safe_and_reports_the_rest(client):
    from calico_lib.ipam_check import audit, repair

    addrs = _broken(client)
    found = audit(client.ipam)
    kinds = {p.kind for p in found.problems}
    assert kinds == SAFE | HUMAN, kinds
    assert "endpoint-address-free" in {r.kind for r in found.repairs}
    before = (client.store.revision(), [kv.value for kv in client.store.list("/calico/")])
    dry = repair(found, dry_run=True)
    assert {o.result for o in dry} == {"would repair"}
    assert (client.store.revision(), [kv.value for kv in client.store.list("/calico/")]) \
        == before
    done = repair(found)
    assert {o.result for o in done} == {"repaired"}, [str(o) for o in done]
    left = audit(client.ipam)
    assert {p.kind for p in left.problems} == HUMAN
    assert [p.subject for p in left.problems if p.kind == "endpoint-address-free"] == [
        keys.endpoint("h1", "e-dup1"), keys.endpoint("h2", "e-dup2")]  # a human decides
    assert client.ipam.handle_addresses("e-free") == ["10.55.0.100"]
    assert record(client, "e-count")["blocks"] == {"10.55.0.0/26": 1}
    assert record(client, "e-lost") == {"handle": "e-lost", "blocks": {"10.55.0.0/26": 1},
                                        "host": "h1"}
    assert record(client, "e-empty") is None
    pending = client.ipam.pending("h1")
    assert [a for v in pending.values() for a in v] == [addrs["fresh"]]
    assert client.ipam.handle_addresses("e-orphan") == [addrs["orphan"]]
    claims = {kv.key for kv in client.store.list(keys.AFFINITIES)}
    # h1's claim is back, h2's is gone; allocating e-free's address claimed its block
    assert claims == {keys.affinity("h1", "10.55.0.0/26"), keys.affinity("h1", "10.55.0.64/26")}
    assert left.repairs == []


def test_repairs_planned_on_a_stale_read_change_nothing(client):
    from calico_lib.ipam_check import audit, repair

    _broken(client)
    found = audit(client.ipam)
    # Meanwhile: the stale pending address is taken by an endpoint, e-free's endpoint goes,
    # and h2's stale claim is removed by someone else.
    [stale] = [keys.last(p.subject) for p in found.problems if p.kind == "stale-pending"]
    client.ipam.claim(client.ipam.handle_addresses(stale), "e-new", "h1")
    client.store.delete(keys.endpoint("h1", "e-free"))
    client.store.delete(keys.affinity("h2", "10.55.0.0/26"))
    outcomes = {o.repair.kind: o for o in repair(found)}
    for kind in ("stale-pending", "endpoint-address-free", "affinity-stale"):
        assert outcomes[kind].result == "changed", str(outcomes[kind])
    assert client.ipam.handle_addresses("e-new") != []
    assert client.ipam.handle_addresses("e-free") == []


def test_gc_plan_keeps_endpoints_and_fresh_handles(client):
    client.add_pool(IPPool("10.56.0.0/24"))
    ipam = client.ipam
    ipam.clock = lambda: T0
    used = ipam.auto_assign("h1", "e-used", num_ipv4=1).ipv4[0]
    endpoint(client, "e-used", "h2", used)  # an endpoint on any host keeps its handle
    old = ipam.auto_assign("h1", "e-old", num_ipv4=2).ipv4
    old_pending = ipam.auto_assign("h1", ipam.new_pending_handle(), num_ipv4=1).ipv4
    ipam.clock = lambda: T0 + GRACE
    ipam.auto_assign("h1", "e-young", num_ipv4=1)
    ipam.auto_assign("h1", ipam.new_pending_handle(), num_ipv4=1)
    ipam.clock = lambda: T0 + GRACE + 1
    plan = ipam.gc_plan([])
    assert sorted(a for r in plan for a in r.addresses) == sorted(old + old_pending)
    assert ipam.gc_plan(["e-old"], grace=0) != [] and "e-used" not in {
        r.handle for r in ipam.gc_plan([], grace=0)}
    assert len(ipam.gc_plan(None)) == 5  # --all: every handle
    # applying a plan after its handle changed does nothing
    [old_plan] = [r for r in plan if r.handle == "e-old"]
    ipam.release_ips([old[0]])
    assert ipam.release(old_plan) is None
    assert ipam.handle_addresses("e-old") == [old[1]]
    # an endpoint made for a planned handle meanwhile keeps it
    [pending_plan] = [r for r in plan if r.handle != "e-old"]
    client.put_endpoint(Endpoint(id=pending_plan.handle, host="h1", interface="calip1"))
    assert ipam.release(pending_plan) is None
    assert ipam.handle_addresses(pending_plan.handle) == old_pending
