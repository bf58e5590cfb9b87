"""Desired VXLAN state of one host, for pools whose ``vxlan_mode`` is not ``never`` (as
Calico's VXLAN mode): pure, from the snapshot alone (block affinities and node records, no
BGP).

A host with such a pool has one device, ``vxlan.calico`` (VNI 4096, UDP 4789, its node
address as the outer source, learning off), holding its tunnel address (a /32 its agent
took from such a pool). For each block of such a pool affine to another host:

- encapsulated (``always``, or ``cross-subnet`` with the other host outside this host's
  subnet): ``block via <its tunnel address> dev vxlan.calico onlink``, plus a permanent
  neighbour (its tunnel address -> its VTEP MAC) and FDB entry (that MAC -> its node
  address), so the kernel never floods or learns;
- native (``cross-subnet``, same subnet): ``block via <its node address>``.

Addresses a host borrowed from another host's block get a /32 the same way. These routes
carry protocol ``RTPROT_TUNNEL`` and metric 0: they win over a BGP route for the same
block (BIRD installs with metric 32), and are found again by their protocol.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import NamedTuple

import netaddr

from ..model import IPPool, Node
from ..snapshot import Snapshot

DEVICE = "vxlan.calico"
#: Calico's VNI and the IANA VXLAN port
VNI = 4096
PORT = 4789
#: outer IPv4 (20) + UDP (8) + VXLAN (8) + inner Ethernet (14) headers
OVERHEAD = 50
#: the protocol number of these routes (the agent's container routes are 80)
RTPROT_TUNNEL = 81


class TunnelRoute(NamedTuple):
    """``dst`` via ``gateway``: through ``vxlan.calico`` (onlink) when ``encap``, else
    through whatever connected network holds the gateway."""

    dst: str
    gateway: str
    encap: bool


@dataclass(frozen=True)
class TunnelSpec:
    """What ``dataplane.tunnel.apply_tunnel`` makes true. ``local`` None: no device and
    no tunnel routes at all."""

    local: str | None = None
    #: this host's tunnel address (None until its agent took one)
    address: str | None = None
    mac: str | None = None
    routes: frozenset[TunnelRoute] = frozenset()
    #: (tunnel address, VTEP MAC) of each remote host traffic is encapsulated to
    neighbours: frozenset[tuple[str, str]] = frozenset()
    #: (VTEP MAC, node address) of the same hosts
    fdb: frozenset[tuple[str, str]] = frozenset()
    #: why a host's blocks got no route (no node address, no tunnel address yet)
    skipped: tuple[str, ...] = field(default=(), compare=False)

    @property
    def device(self) -> bool:
        return self.local is not None


def vtep_mac(node: str) -> str:
    """A host's VXLAN MAC, derived from its name (nothing to store or agree on):
    locally administered, unicast."""
    digest = bytearray(hashlib.sha256(f"vxlan:{node}".encode()).digest()[:6])
    digest[0] = (digest[0] & 0xFC) | 0x02
    return ":".join(f"{b:02x}" for b in digest)


def encapsulating_pools(snapshot: Snapshot) -> list[IPPool]:
    return [p for p in snapshot.pools if p.encapsulates]


def valid_tunnel_address(node: Node, blocks: tuple[str, ...] | list[str]) -> str | None:
    """``node``'s tunnel address if it lies in a block affine to it (only the host itself
    may write its affinities: another host cannot claim this one's tunnel address)."""
    address = node.ipv4_vxlan_tunnel
    if address is None:
        return None
    ip = netaddr.IPAddress(address)
    return address if any(ip in netaddr.IPNetwork(b) for b in blocks) else None


def same_subnet(me: Node, other: Node) -> bool:
    """Whether ``other``'s address is on this host's subnet (unknown: not)."""
    subnet = me.subnet(4)
    return subnet is not None and other.ipv4 is not None and \
        netaddr.IPAddress(other.ipv4) in subnet


def render_tunnel(snapshot: Snapshot) -> TunnelSpec:
    pools = encapsulating_pools(snapshot)
    me = snapshot.nodes.get(snapshot.hostname)
    if not pools or me is None or me.ipv4 is None:
        return TunnelSpec()
    nets = [(p, p.network) for p in pools]

    def pool_of(cidr: str) -> IPPool | None:
        net = netaddr.IPNetwork(cidr)
        return next((p for p, pool_net in nets if net in pool_net), None)

    routes: set[TunnelRoute] = set()
    neighbours: set[tuple[str, str]] = set()
    fdb: set[tuple[str, str]] = set()
    skipped: list[str] = []

    def route(dst: str, host: str, pool: IPPool) -> None:
        node = snapshot.nodes.get(host)
        if node is None or node.ipv4 is None:
            skipped.append(f"{dst}: host {host} has no node record with an IPv4 address")
            return
        if pool.vxlan_mode == "cross-subnet" and same_subnet(me, node):
            routes.add(TunnelRoute(dst, node.ipv4, False))
            return
        tunnel = valid_tunnel_address(node, snapshot.host_blocks.get(host, ()))
        if tunnel is None:
            skipped.append(f"{dst}: host {host} has no tunnel address yet")
            return
        mac = vtep_mac(host)
        routes.add(TunnelRoute(dst, tunnel, True))
        neighbours.add((tunnel, mac))
        fdb.add((mac, node.ipv4))

    for host, blocks in snapshot.host_blocks.items():
        if host == snapshot.hostname:
            continue
        for block in blocks:
            pool = pool_of(block)
            if pool is not None:
                route(block, host, pool)
    # an address a host borrowed from a block not its own: a /32 to that host
    owned = {host: [netaddr.IPNetwork(b) for b in blocks]
             for host, blocks in snapshot.host_blocks.items()}
    for ep in snapshot.endpoints:
        if ep.host == snapshot.hostname or ep.state != "active":
            continue
        own = owned.get(ep.host, [])
        for net in ep.ipv4_nets:
            pool = pool_of(net)
            if pool is not None and not any(netaddr.IPNetwork(net) in b for b in own):
                route(net, ep.host, pool)
    return TunnelSpec(
        local=me.ipv4,
        address=valid_tunnel_address(me, snapshot.blocks),
        mac=vtep_mac(me.name),
        routes=frozenset(routes),
        neighbours=frozenset(neighbours),
        fdb=frozenset(fdb),
        skipped=tuple(sorted(skipped)),
    )
