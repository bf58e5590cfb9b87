"""Removing a host that is gone for good: `calicoctl node remove`, `Client.remove_node` and
the `node` module's state=absent free everything it held, as Calico's delete node does.

Before: only the node record and its peers went; its endpoints stayed members of their
profiles' ipsets on every other host, and its addresses and blocks stayed taken."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import calico_lib
from calico_lib import BGPPeer, Endpoint, IPPool, Node, keys
from calico_lib.errors import DatastoreUnavailable, NotFoundError
from calico_lib.ipam import IPAM
from tests import processes
from tests.test_agent import sh, start_agent, wait_for
from tests.test_cli import assert_error, run_calicoctl

POOL = "10.72.0.0/16"


def container(client: calico_lib.Client, host: str, endpoint_id: str,
              interface: str | None = None) -> str:
    """An endpoint of ``host`` in profile web, its address from the host's own block, as
    the Docker plugin makes one; returns the address."""
    address = client.ipam.auto_assign(host, endpoint_id, num_ipv4=1).ipv4[0]
    client.add_endpoint(Endpoint(endpoint_id, host, interface or f"cali{endpoint_id}",
                                 ipv4_nets=[address], profiles=["web"]))
    return address


def cluster(client: calico_lib.Client) -> dict[str, str]:
    """h1 with one container; h2 with two, a pending address, its own BGP peer (with a
    password), a Docker network record; returns the containers' addresses."""
    client.add_pool(IPPool(POOL))
    client.add_profile("web")
    for number, name in enumerate(("h1", "h2"), start=1):
        client.add_node(Node(name, ipv4=f"192.0.2.{number}"))
    client.add_bgp_peer(BGPPeer("192.0.2.254", 65001, node="h2", password="s3cret"))
    out = {"e1": container(client, "h1", "e1"), "e2": container(client, "h2", "e2"),
           "e3": container(client, "h2", "e3")}
    client.ipam.auto_assign("h2", client.ipam.new_pending_handle(), num_ipv4=1)
    client.store.put(keys.docker_network("h2", "n" * 64), json.dumps({"name": "web"}))
    return out


def h1_state(client: calico_lib.Client) -> tuple:
    return (client.get_node("h1"), client.list_endpoints("h1"),
            client.store.list(keys.affinities("h1")),
            client.ipam.handle_addresses("e1"))


def test_removal_frees_everything_the_host_held(datastore_url: str) -> None:
    with calico_lib.connect(datastore_url) as client:
        addresses = cluster(client)
        h1_before = h1_state(client)
        held = client.node_holdings("h2")
        assert (held.endpoints, len(held.handles), len(held.addresses)) == (["e2", "e3"], 1, 3)
        assert held.to_dict()["peers"][0]["password"] == "********"
        assert keys.docker_network("h2", "n" * 64) in held.records

        gone = client.remove_node("h2")

        assert gone.endpoints == ["e2", "e3"] and len(gone.addresses) == 3
        assert {addresses["e2"], addresses["e3"]} < set(gone.addresses)
        for prefix in (keys.endpoints("h2"), keys.affinities("h2"), keys.docker_networks("h2"),
                       f"{keys.NODE_PEERS}h2/"):
            assert client.store.list(prefix) == [], prefix
        assert client.store.get(keys.node("h2")) is None
        assert client.store.get(keys.interface_index("h2")) is None
        assert h1_state(client) == h1_before  # the other host keeps all it had
        blocks = [b for pool in client.ipam.usage() for b in pool["blocks"]]
        assert [(b["affinity"], b["allocated"]) for b in blocks] == [("h1", 1)]
        assert client.ipam.check() == []
        with pytest.raises(NotFoundError, match="node h2: not found"):
            client.remove_node("h2")


def test_a_host_whose_node_record_is_already_gone(datastore_url: str) -> None:
    """Removed with an older version (only its record went): what it left is removed."""
    with calico_lib.connect(datastore_url) as client:
        cluster(client)
        client.store.delete(keys.node("h2"))
        client.store.delete(keys.peer("192.0.2.254", "h2"))
        assert client.remove_node("h2").endpoints == ["e2", "e3"]
        assert client.ipam.check() == [] and client.list_endpoints() != []
        assert [e.host for e in client.list_endpoints()] == ["h1"]


def test_an_interrupted_removal_is_finished_by_running_it_again(
        datastore_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with calico_lib.connect(datastore_url) as client:
        cluster(client)

        def etcd_went_away(self: IPAM, host: str) -> list[str]:
            raise DatastoreUnavailable("etcd: gone")
        with monkeypatch.context() as patch:
            patch.setattr(IPAM, "release_host_affinities", etcd_went_away)
            with pytest.raises(DatastoreUnavailable):
                client.remove_node("h2")
        # the node record goes last: the host is still there to be removed
        assert client.get_node("h2").ipv4 == "192.0.2.2"
        assert client.store.list(keys.affinities("h2")) != []
        gone = client.remove_node("h2")
        assert gone.endpoints == [] and gone.blocks != []
        assert client.store.list(keys.affinities("h2")) == []
        assert client.ipam.check() == []


def test_an_unreadable_record_of_the_host_is_removed_too(datastore_url: str) -> None:
    with calico_lib.connect(datastore_url) as client:
        cluster(client)
        client.store.put(keys.endpoint("h2", "broken"), "{not json")
        client.store.put(keys.node("h2"), "{not json")
        gone = client.remove_node("h2")
        assert "broken" in gone.endpoints and keys.node("h2") in gone.records
        assert client.store.list(keys.endpoints("h2")) == []
        assert client.store.get(keys.node("h2")) is None


def test_an_unreadable_block_changes_nothing(datastore_url: str) -> None:
    """Which addresses are the host's is decided from the blocks: not on partial knowledge."""
    with calico_lib.connect(datastore_url) as client:
        cluster(client)
        client.store.put(keys.block("10.72.200.0/26"), "{not json")
        with pytest.raises(calico_lib.errors.DatastoreError, match="10.72.200.0-26"):
            client.remove_node("h2")
        assert len(client.list_endpoints("h2")) == 2 and client.get_node("h2")


def test_calicoctl_node_remove(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/calico.db"
    with calico_lib.connect(url) as client:
        addresses = cluster(client)
    preview = run_calicoctl("node", "remove", "h2", "--dry-run", "--datastore", url)
    assert preview.code == 0, preview
    # h1 would drop h2's containers from web's members and h2 from its BGP peers
    h1 = preview.out.split("\nh1:\n", 1)[1].split("\nh2:\n", 1)[0]
    assert f"ipset cali4-t-web: -{addresses['e2']} -{addresses['e3']}\n" in h1
    assert "-protocol bgp Mesh_192_0_2_2 {" in h1
    with calico_lib.connect(url) as client:
        assert len(client.list_endpoints("h2")) == 2  # a dry run writes nothing
    out = run_calicoctl("node", "remove", "h2", "--datastore", url)
    assert out.code == 0, out
    assert out.out == ("removed node h2: 2 endpoint(s), 3 address(es) freed, 1 block claim(s), "
                       "1 BGP peer(s), 2 other record(s)\n")
    assert_error(run_calicoctl("node", "remove", "h2", "--datastore", url), 2,
                 "node h2", "not found")
    assert_error(run_calicoctl("node", "remove", "h2;x", "--datastore", url), 2, "name")


@pytest.mark.netns
def test_a_removed_hosts_containers_leave_the_other_hosts_groups(host, tmp_path: Path) -> None:
    """The user-visible part, on a real kernel: the agent of a live host drops a dead host's
    containers from its profile's ipset, so their addresses (which a new host may now be
    given) are no longer let in as members of the group."""
    url = f"sqlite:///{tmp_path}/calico.db"
    log = tmp_path / "agent.log"
    with calico_lib.connect(url) as client:
        client.add_pool(IPPool(POOL))
        client.add_profile("web")
        client.add_node(Node("agent-host", ipv4="192.0.2.1"))
        client.add_node(Node("dead-host", ipv4="192.0.2.2"))
        container(client, "agent-host", "local", host["veth"])
        remote = container(client, "dead-host", "remote")
        agent = start_agent(host, url, log)
        try:
            def members() -> str:
                return sh("ip", "netns", "exec", host["ns"], "ipset", "list")
            wait_for("the dead host's container in the group", lambda: remote in members())
            client.remove_node("dead-host")
            wait_for("the dead host's container out of the group",
                     lambda: remote not in members())
            assert client.ipam.check() == []
        finally:
            code = processes.stop(agent)
        assert code == 0, log.read_text()
