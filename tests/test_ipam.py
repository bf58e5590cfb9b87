"""IPAM behaviour on real datastores: affinity, borrowing, release, check, gc, races."""

from __future__ import annotations

import multiprocessing

import netaddr
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import calico_lib
from calico_lib import InUseError, IPPool, PoolExhaustedError, ValidationError
from calico_lib.datastore import open_datastore
from calico_lib.ipam import Block


@pytest.fixture
def client(datastore_url):
    with calico_lib.connect(datastore_url) as c:
        yield c


@pytest.fixture
def sqlite_client(tmp_path):
    with calico_lib.connect(f"sqlite:///{tmp_path}/ipam.db") as c:
        yield c


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
    assert client.ipam.check() == []


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
    assert client.ipam.check() == []


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
    assert client.ipam.check() == []


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
    assert client.ipam.check() == []


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
    assert client.ipam.check() == []
    assert sorted(client.ipam.release_handle("e1")) == sorted(result.ipv4[1:] + result.ipv6)
    assert client.ipam.handle_addresses("e1") == []
    assert client.ipam.release_handle("e1") == []  # releasing twice is quiet
    assert client.ipam.check() == []


def test_release_host_affinities(client):
    client.add_pool(IPPool("10.18.0.0/24"))
    kept = client.ipam.auto_assign("h1", "e1", num_ipv4=65).ipv4  # two blocks
    client.ipam.release_ips(kept[64:])  # second block is empty again
    assert len(client.ipam.release_host_affinities("h1")) == 2
    blocks = client.ipam.blocks()
    assert [(b.cidr, b.affinity) for b in blocks] == [("10.18.0.0/26", None)]
    assert client.ipam.check() == []
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
    assert client.ipam.check() == []


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
    freed = client.ipam.gc(["live"])
    assert set(freed) == {"lost-handle", "orphan", "dup", "stray"}
    assert client.ipam.check() == []
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
            assert c.ipam.check() == []


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
        assert c.ipam.check() == []
        affinities = {b.affinity for b in c.ipam.blocks()}
        assert affinities == {f"host{h}" for h in range(HOSTS)}
        # Release everything, half by address and half by handle, and check again.
        for w in range(PROCESSES):
            for i in range(0, PER_PROCESS, 2):
                c.ipam.release_handle(f"w{w}-{i}")
        c.ipam.release_ips(addresses)
        assert c.ipam.check() == []
        assert sum(u["allocated"] for u in c.ipam.usage()) == 0
    store = open_datastore(datastore_url)
    assert store.list("/calico/v1/ipam/handles/") == []
    store.close()
