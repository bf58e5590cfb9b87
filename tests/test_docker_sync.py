"""The Docker-vs-datastore comparison behind `ipam gc --docker` (calico_lib.plugin.docker_sync):
``plan`` is pure and frees only what this host's Docker has forgotten and is older than the
grace period; ``apply`` changes nothing of an item that changed since it was read."""

from __future__ import annotations

import json

import netaddr
import pytest

import calico_lib
from calico_lib import Endpoint, IPPool, keys
from calico_lib.ipam import GRACE, Block
from calico_lib.plugin import docker_sync

HOST, OTHER = "h1", "h2"
T0 = 1_800_000_000
NETWORK = "dd7eac083bb0ee09adddb5a28ad4ee49ef71ba6871d0318d131bce5bb7e52edc"


def docker_id(n: int) -> str:
    return f"{n:02x}" * 32  # distinct in their first 11 characters (their veth names)


@pytest.fixture
def client(tmp_path):
    with calico_lib.connect(f"sqlite:///{tmp_path}/sync.db") as c:
        c.add_pool(IPPool("10.60.0.0/24"))
        c.ipam.clock = lambda: T0
        yield c


def made_by_docker(c, n: int, host: str = HOST, label: bool = True) -> tuple[str, str]:
    ep_id = docker_id(n)
    address = c.ipam.auto_assign(host, ep_id, num_ipv4=1).ipv4[0]
    c.put_endpoint(Endpoint(ep_id, host, "cali" + ep_id[:11], ipv4_nets=[address],
                            labels={"docker-network": NETWORK[:63]} if label else {}))
    return ep_id, address


def test_plan_frees_only_what_docker_forgot_and_is_old(client):
    running, _ = made_by_docker(client, 1)
    gone, gone_address = made_by_docker(client, 2)
    not_labelled, _ = made_by_docker(client, 3, label=False)  # `calicoctl endpoint add`'s
    theirs, _ = made_by_docker(client, 4, host=OTHER)  # another host's Docker knows it
    pending = client.ipam.new_pending_handle()
    pending_address = client.ipam.auto_assign(HOST, pending, num_ipv4=1).ipv4[0]
    their_pending = client.ipam.auto_assign(OTHER, client.ipam.new_pending_handle(),
                                            num_ipv4=1).ipv4[0]
    orphan = docker_id(5)  # CreateEndpoint took it, then failed: no endpoint record
    orphan_address = client.ipam.auto_assign(HOST, orphan, num_ipv4=1).ipv4[0]
    client.ipam.auto_assign(HOST, "manual", num_ipv4=1)  # not Docker's
    local = docker_sync.read_local(client, HOST)
    docker = {running}

    assert docker_sync.plan(local, docker, T0 + GRACE - 1) == []  # all still young
    plan = docker_sync.plan(local, docker, T0 + GRACE)
    assert plan == docker_sync.plan(local, docker, T0 + GRACE)  # pure
    assert [(r.handle, r.addresses, r.endpoint_key, r.reason) for r in plan] == [
        (gone, [gone_address], keys.endpoint(HOST, gone), "Docker has no such endpoint"),
        (orphan, [orphan_address], None, f"endpoint gone for {GRACE} s"),
        (pending, [pending_address], None, f"pending for {GRACE} s")]
    done = docker_sync.apply(client, plan)
    assert [freed for _, freed in done] == [[gone_address], [orphan_address],
                                            [pending_address]]
    ids = {e.id for e in client.list_endpoints()}
    assert ids == {running, not_labelled, theirs}
    assert client.ipam.pending(OTHER) != {} and their_pending
    assert client.ipam.check() == [p for p in client.ipam.check()
                                   if p.subject == keys.handle("manual")]


def test_apply_changes_nothing_of_an_item_that_changed(client):
    gone, address = made_by_docker(client, 2)
    other, other_address = made_by_docker(client, 3)
    plan = docker_sync.plan(docker_sync.read_local(client, HOST), set(), T0 + GRACE)
    assert [r.handle for r in plan] == [gone, other]
    # Behind the plan's back: gone's block loses its allocation while its handle record
    # stays as it was (a hand edit), and other's endpoint record is rewritten.
    kv = client.store.get(keys.block("10.60.0.0/26"))
    block = Block.load(json.loads(kv.value))
    block.free(block.ordinal(netaddr.IPAddress(address)))
    client.store.put(kv.key, calico_lib.txn.dumps(block.dump()))
    client.put_endpoint(Endpoint(other, HOST, "cali" + other[:11],
                                 ipv4_nets=[other_address], labels={"x": "y"}))
    assert [freed for _, freed in docker_sync.apply(client, plan)] == [None, None]
    assert {e.id for e in client.list_endpoints(HOST)} == {gone, other}  # both still there
    assert client.ipam.handle_addresses(other) == [other_address]


def test_read_local_refuses_to_decide_on_unreadable_records(client):
    made_by_docker(client, 2)
    client.store.put(keys.endpoint(HOST, docker_id(9)), "{not json")
    with pytest.raises(calico_lib.DatastoreError, match=keys.endpoint(HOST, docker_id(9))):
        docker_sync.read_local(client, HOST)
    # another host's unreadable endpoint does not stop this host's decision
    client.store.delete(keys.endpoint(HOST, docker_id(9)))
    client.store.put(keys.endpoint(OTHER, docker_id(9)), "{not json")
    assert docker_sync.read_local(client, HOST).endpoints
