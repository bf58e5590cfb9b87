"""VXLAN per pool without root: the pure render (``render.tunnel``), what the snapshot reads,
the firewall's VXLAN rules, the dataplane's decisions against the in-memory kernel, and the
agent's tunnel address against a real SQLite datastore. The kernel side runs for real in
tests/test_vxlan.py."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import calico_lib
from calico_lib import keys
from calico_lib.ipam import tunnel_handle
from calico_lib.model import Endpoint, IPPool, Node, Profile
from calico_lib.reconcile import Dataplane
from calico_lib.render import names
from calico_lib.render.policy import render_policy
from calico_lib.render.tunnel import TunnelRoute, render_tunnel, vtep_mac
from calico_lib.snapshot import Snapshot, load_snapshot
from calico_lib.tunnel_address import ensure_tunnel_address
from tests.fake_kernel import FakeKernel

POOL = "10.66.0.0/16"
NODES = {
    "a": Node("a", "192.0.2.1", ipv4_subnet="192.0.2.0/24", ipv4_vxlan_tunnel="10.66.1.1"),
    "b": Node("b", "192.0.2.2", ipv4_subnet="192.0.2.0/24", ipv4_vxlan_tunnel="10.66.2.1"),
    "c": Node("c", "198.51.100.3", ipv4_subnet="198.51.100.0/24",
              ipv4_vxlan_tunnel="10.66.3.1"),
}
BLOCKS = {"a": ("10.66.1.0/26",), "b": ("10.66.2.0/26",), "c": ("10.66.3.0/26",)}


def cluster(mode: str, **changes) -> Snapshot:
    fields = dict(hostname="a", revision=1, pools=(IPPool(POOL, vxlan_mode=mode),),
                  profiles={"web": Profile.with_default_rules("web")},
                  nodes=dict(NODES), blocks=BLOCKS["a"],
                  host_blocks=dict(BLOCKS) if mode != "never" else {})
    fields.update(changes)
    return Snapshot(**fields)


# ------------------------------------------------------------------------------ render


def test_never_renders_nothing() -> None:
    spec = render_tunnel(cluster("never"))
    assert not spec.device and not spec.routes and not spec.neighbours


def test_cross_subnet_tunnels_only_to_other_subnets() -> None:
    spec = render_tunnel(cluster("cross-subnet"))
    assert spec.local == "192.0.2.1" and spec.address == "10.66.1.1"
    assert spec.mac == vtep_mac("a")
    assert spec.routes == {TunnelRoute("10.66.2.0/26", "192.0.2.2", False),
                           TunnelRoute("10.66.3.0/26", "10.66.3.1", True)}
    assert spec.neighbours == {("10.66.3.1", vtep_mac("c"))}
    assert spec.fdb == {(vtep_mac("c"), "198.51.100.3")}


def test_always_tunnels_to_every_other_host() -> None:
    spec = render_tunnel(cluster("always"))
    assert spec.routes == {TunnelRoute("10.66.2.0/26", "10.66.2.1", True),
                           TunnelRoute("10.66.3.0/26", "10.66.3.1", True)}
    assert spec.fdb == {(vtep_mac("b"), "192.0.2.2"), (vtep_mac("c"), "198.51.100.3")}


def test_unknown_subnet_is_taken_as_another_subnet() -> None:
    nodes = dict(NODES, a=Node("a", "192.0.2.1", ipv4_vxlan_tunnel="10.66.1.1"))
    spec = render_tunnel(cluster("cross-subnet", nodes=nodes))
    assert TunnelRoute("10.66.2.0/26", "10.66.2.1", True) in spec.routes


def test_a_tunnel_address_outside_its_hosts_blocks_is_ignored() -> None:
    """host c claims host b's tunnel address: nobody routes to c through it."""
    nodes = dict(NODES, c=Node("c", "198.51.100.3", ipv4_vxlan_tunnel="10.66.2.1"))
    spec = render_tunnel(cluster("always", nodes=nodes))
    assert {r.dst for r in spec.routes} == {"10.66.2.0/26"}
    assert any("host c has no tunnel address" in s for s in spec.skipped)
    # nor does this host put a tunnel address on its device that is not in its blocks
    assert render_tunnel(cluster("always", blocks=())).address is None


def test_borrowed_addresses_get_a_route_to_their_host() -> None:
    ep = Endpoint("e1", "c", "cali00000000001", ipv4_nets=["10.66.1.40"], profiles=["web"])
    spec = render_tunnel(cluster("always", endpoints=(ep,)))
    assert TunnelRoute("10.66.1.40/32", "10.66.3.1", True) in spec.routes
    inactive = Endpoint("e2", "c", "cali00000000002", ipv4_nets=["10.66.1.41"],
                        state="inactive")
    spec = render_tunnel(cluster("always", endpoints=(inactive,)))
    assert not any(r.dst == "10.66.1.41/32" for r in spec.routes)


def test_vtep_macs_are_unicast_local_and_distinct() -> None:
    macs = {vtep_mac(f"host-{i}") for i in range(1000)}
    assert len(macs) == 1000
    for mac in macs:
        first = int(mac.split(":")[0], 16)
        assert first & 0x01 == 0 and first & 0x02 == 2


# ------------------------------------------------------------------------------ firewall


def test_vxlan_is_taken_from_nodes_only_while_a_pool_encapsulates() -> None:
    policy = render_policy(cluster("cross-subnet"))
    filter4 = next(t for t in policy.tables if t.version == 4 and t.name == "filter")
    assert filter4.chains[names.INPUT][:2] == [
        "-i cali+ -p udp -m udp --dport 4789 -j DROP",
        "-p udp -m udp --dport 4789 -m set ! --match-set cali4-vxlan-hosts src -j DROP"]
    assert policy.ipsets["cali4-vxlan-hosts"].members == {"192.0.2.1", "192.0.2.2",
                                                          "198.51.100.3"}
    never = render_policy(cluster("never"))
    assert "cali4-vxlan-hosts" not in never.ipsets
    assert not any("4789" in r for t in never.tables for c in t.chains.values() for r in c)


# ------------------------------------------------------------------------------ dataplane


def test_the_dataplane_applies_the_tunnel_once_and_follows_changes() -> None:
    kernel = FakeKernel()
    dp = Dataplane(kernel=kernel)
    first = dp.apply(cluster("cross-subnet"))
    assert first.tunnel is not None and first.tunnel.device == "created"
    assert "vxlan device created" in first.summary()
    kernel.calls.clear()
    dp.apply(cluster("cross-subnet", revision=2), verify=False)
    assert not any(c.startswith("vxlan") for c in kernel.calls)  # unchanged: not even read
    switched = dp.apply(cluster("always", revision=3), verify=False)
    assert switched.tunnel is not None and switched.tunnel.added == ["10.66.2.0/26"]
    assert kernel.tunnel.spec == render_tunnel(cluster("always"))
    gone = dp.apply(cluster("never", revision=4), verify=False)
    assert gone.tunnel is not None and gone.tunnel.device == "removed"


# ------------------------------------------------------------------------------ datastore


@pytest.fixture
def client(tmp_path) -> Iterator[calico_lib.Client]:
    with calico_lib.connect(f"sqlite:///{tmp_path}/calico.db") as c:
        c.add_pool(IPPool(POOL, block_size=26))
        for name, ip in (("a", "192.0.2.1"), ("b", "192.0.2.2")):
            c.add_node(Node(name, ip, ipv4_subnet="192.0.2.0/24"))
        yield c


def test_the_agent_takes_keeps_and_releases_its_tunnel_address(client) -> None:
    assert ensure_tunnel_address(client, "a") is None  # no pool encapsulates
    client.update_pool(POOL, vxlan_mode="cross-subnet")
    address = ensure_tunnel_address(client, "a")
    assert address is not None and client.get_node("a").ipv4_vxlan_tunnel == address
    assert client.ipam.handle_addresses(tunnel_handle("a")) == [address]
    assert ensure_tunnel_address(client, "a") == address  # stable
    assert ensure_tunnel_address(client, "a", thorough=False) == address
    # gc keeps it (the node record names it) ...
    assert not [p for p in client.ipam.gc_plan(live=[]) if p.handle == tunnel_handle("a")]
    assert not [p for p in client.ipam.check() if tunnel_handle("a") in str(p)]
    # ... the snapshot sees it in a's own block, every host's encapsulated blocks
    snap = load_snapshot(client.store, "b")
    assert snap.host_blocks["a"] and any(address.startswith(b.rsplit(".", 1)[0])
                                         for b in snap.host_blocks["a"])
    # a record that lost it (written by an older writer) gets the same address back
    client.update_node("a", ipv4_vxlan_tunnel=None)
    assert ensure_tunnel_address(client, "a") == address
    client.update_pool(POOL, vxlan_mode="never")
    assert ensure_tunnel_address(client, "a", thorough=False) is None
    assert client.get_node("a").ipv4_vxlan_tunnel is None
    assert client.ipam.handle_addresses(tunnel_handle("a")) == []


def test_a_host_without_a_node_record_takes_nothing(client) -> None:
    client.update_pool(POOL, vxlan_mode="always")
    assert ensure_tunnel_address(client, "nobody") is None
    assert client.ipam.handle_addresses(tunnel_handle("nobody")) == []


def test_a_block_two_hosts_claim_is_nobodys(client) -> None:
    client.update_pool(POOL, vxlan_mode="always")
    ensure_tunnel_address(client, "a")
    (block,) = load_snapshot(client.store, "b").host_blocks["a"]
    client.store.put(keys.affinity("b", block), '{"state": "confirmed"}')  # b lies
    seen_by_c = load_snapshot(client.store, "c")
    assert "a" not in seen_by_c.host_blocks and "b" not in seen_by_c.host_blocks
    assert any("also claimed" in u.reason for u in seen_by_c.unreadable)
    assert load_snapshot(client.store, "a").host_blocks["a"] == (block,)  # a keeps its own
