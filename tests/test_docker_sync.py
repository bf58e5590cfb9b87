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
from calico_lib.plugin.docker_api import DockerError

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


# ------------------------------------------------------------------------------ fault campaign
# (bench/faults.py) What Docker said it is done with is freed at the next pass, not after the
# grace: a DeleteEndpoint that failed while etcd was away, the addresses Docker hands back at
# boot for the endpoints it lost. And the next pass comes when an item leaves its grace.


def test_plan_frees_what_docker_is_done_with_without_the_grace(client):
    gone, gone_address = made_by_docker(client, 2)
    live, live_address = made_by_docker(client, 3)
    pending = client.ipam.new_pending_handle()
    pending_address = client.ipam.auto_assign(HOST, pending, num_ipv4=1).ipv4[0]
    local = docker_sync.read_local(client, HOST)
    assert docker_sync.plan(local, {live}, T0) == []  # all young
    urgent = docker_sync.urgent_handles(local, [gone, docker_id(7)],
                                        [pending_address, live_address, "10.99.0.1"])
    assert urgent == {gone, pending, live}
    plan = docker_sync.plan(local, {live}, T0, urgent=urgent)
    assert [r.handle for r in plan] == [gone, pending]  # never what Docker lists
    assert plan[0].addresses == [gone_address]


def test_due_is_when_the_first_young_item_leaves_its_grace(client):
    made_by_docker(client, 2)
    live, _ = made_by_docker(client, 3)
    local = docker_sync.read_local(client, HOST)
    assert docker_sync.due(local, {live}, T0 + 5) == T0 + GRACE
    assert docker_sync.due(local, {live}, T0 + GRACE + 1) is None  # plan frees it now
    assert docker_sync.due(local, {live, docker_id(2)}, T0 + 5) is None


class FakeDocker:
    def __init__(self, ids: set[str]) -> None:
        self.ids, self.fail = ids, False

    def endpoint_ids(self) -> set[str]:
        if self.fail:
            raise DockerError("docker: GET /networks: HTTP 503: starting")
        return set(self.ids)


def test_syncer_frees_hinted_items_at_once_and_retries_soon(client):
    gone, gone_address = made_by_docker(client, 2)
    live, live_address = made_by_docker(client, 3)
    docker = FakeDocker({live})
    freed_ids: list[list[str]] = []
    syncer = docker_sync.Syncer(client, HOST, docker, interval=10, grace=GRACE,
                                clock=lambda: T0 - 1, after_free=freed_ids.append)
    syncer.clock = lambda: T0 + 5  # it started before the endpoints were made
    assert syncer.run_once() == 0
    assert syncer.delay(0) == 10  # the young one leaves its grace after the interval
    # Docker is not answering yet (at boot it hands back addresses before its API is up)
    syncer.forgotten(address=gone_address)
    syncer.forgotten(address=live_address)  # a replay: Docker still lists it
    docker.fail = True
    assert syncer.run_once() == -1 and syncer.delay(-1) == docker_sync.RETRY
    assert client.ipam.handle_addresses(gone) == [gone_address]
    docker.fail = False
    assert syncer.run_once() == 1
    assert client.ipam.handle_addresses(gone) == [] and freed_ids == [[gone]]
    assert client.ipam.handle_addresses(live) == [live_address]
    assert syncer.run_once() == 0  # the hints were used up
    # a young item Docker forgot: the next pass comes when its grace ends
    syncer.clock = lambda: T0 + GRACE - 3
    docker.ids = set()
    assert syncer.run_once() == 0 and syncer.delay(0) == pytest.approx(3.5)


def test_syncer_deletes_veths_no_container_got_and_no_endpoint_names(client):
    """(fault campaign) The plugin killed during Join, after it made the veth: no Leave or
    DeleteEndpoint ever came for it, and the pair stayed on the host for good."""
    live, _ = made_by_docker(client, 3)
    docker = FakeDocker({live})
    deleted: list[str] = []
    unjoined = [f"cali{live[:11]}", "cali0123456789a"]  # live's: Docker is joining it
    syncer = docker_sync.Syncer(client, HOST, docker, interval=10, grace=GRACE,
                                clock=lambda: T0, list_unjoined=lambda: list(unjoined),
                                delete_link=lambda name: deleted.append(name) or True)
    docker.fail = True
    assert syncer.run_once() == -1 and deleted == []  # nothing on partial knowledge
    docker.fail = False
    assert syncer.run_once() == 0
    assert deleted == ["cali0123456789a"]


def test_endpoints_the_previous_plugin_made_are_not_waited_for(client):
    """(fault campaign) The etcd node rebooted: its DeleteEndpoints failed at the shutdown
    (etcd stopped first), the reboot took the plugin's memory of them, and the young ones
    stayed in their networks' sets for the whole grace. An endpoint made before this
    process started is Docker's or gone once SETTLE passed."""
    before, _ = made_by_docker(client, 2)  # made at T0, by the previous process
    client.ipam.clock = lambda: T0 + 10
    after, _ = made_by_docker(client, 3)  # made by this process
    pending = client.ipam.new_pending_handle()
    client.ipam.auto_assign(HOST, pending, num_ipv4=1)
    local = docker_sync.read_local(client, HOST)
    started = T0 + 2
    assert docker_sync.made_before(local, min(started, T0 + 3 - docker_sync.SETTLE),
                                   T0 + 3) == set()  # not settled yet
    assert docker_sync.due(local, set(), T0 + 3, GRACE, started) == T0 + docker_sync.SETTLE
    docker = FakeDocker(set())
    syncer = docker_sync.Syncer(client, HOST, docker, interval=10, grace=GRACE,
                                clock=lambda: started)
    syncer.clock = lambda: T0 + 11
    assert syncer.run_once() == 1  # only `before`: `after` and the pending one are young
    assert client.ipam.handle_addresses(before) == []
    assert client.ipam.handle_addresses(after) != [] and client.ipam.pending(HOST)
