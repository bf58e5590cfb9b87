"""One BIRD 2 configuration (IPv4 and IPv6) for this host: a pure function of a snapshot.

Peerings: the node-to-node mesh (every other node; per-node AS honoured), global peers
(every node peers with them, e.g. top-of-rack routers), this node's own peers, and route
reflectors (with the mesh off, a node with a cluster id reflects for the nodes without one
and peers with the other reflectors; the others peer with the reflectors only).

Hosts on different subnets: when the node's record gives its subnet of an IP version, a
session to a peer outside it is ``multihop`` (reached through routers, from the node's own
address), and BIRD learns the kernel's routes outside the pools so that next hops off the
subnet resolve through them (never exported: the export filters stay as they are). A node
without a subnet renders as before: every peer is taken to share its subnet.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

import jinja2
import netaddr

from ..model import HOST_PREFIX, Node
from ..snapshot import Snapshot

_ENV = jinja2.Environment(loader=jinja2.PackageLoader("calico_lib", "templates"),
                          trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
                          undefined=jinja2.StrictUndefined, autoescape=False)

KINDS = {"Mesh": "mesh", "Global": "global", "Node": "node"}


@dataclass(frozen=True)
class Session:
    name: str
    kind: str
    version: int
    local: str
    local_as: int
    address: str
    as_number: int
    rr_client: bool = False
    cluster_id: str | None = None
    password: str | None = None
    next_hop_self: bool = False
    #: external peers: what they may send besides the pools' blocks
    accept_default_route: bool = False
    accept_nets: tuple[str, ...] = ()
    #: the peer is not on this node's subnet (known): reached through routers
    multihop: bool = False


def protocol_name(prefix: str, address: str) -> str:
    """Mesh_10_0_0_2, Global_fd00__1: BIRD names allow no dots or colons. IPv6 is written in
    its canonical compressed form without a dotted quad (::1.0.0.2 is ::100:2), so two
    addresses never share a name: an IPv4 name never holds "__", an IPv6 one with fewer
    than seven "_" always does."""
    text = ipaddress.ip_address(address).compressed
    return f"{prefix}_{text.replace('.', '_').replace(':', '_')}"


def _address(node: Node, version: int) -> str | None:
    return node.address(version)


def off_subnet(me: Node, address: str) -> bool:
    """True when ``address`` is outside ``me``'s subnet of its IP version; False when the
    subnet is not known (the node is then taken to share a subnet with everyone)."""
    addr = netaddr.IPAddress(address)
    subnet = me.subnet(addr.version)
    return subnet is not None and addr not in subnet


def sessions(snapshot: Snapshot) -> list[Session]:
    me = snapshot.nodes[snapshot.hostname]
    default_as = snapshot.bgp.as_number
    my_as = me.as_number or default_as
    out: list[Session] = []
    mesh = snapshot.bgp.node_to_node_mesh
    for other in sorted(snapshot.nodes.values(), key=lambda n: n.name):
        if other.name == me.name:
            continue
        reflector, other_reflector = bool(me.rr_cluster_id), bool(other.rr_cluster_id)
        if not mesh and not (reflector or other_reflector):
            continue  # two clients: they hear each other through the reflectors
        client = not mesh and reflector and not other_reflector
        for version in (4, 6):
            local, remote = _address(me, version), _address(other, version)
            if local and remote:
                out.append(Session(protocol_name("Mesh", remote), "mesh", version, local,
                                   my_as, remote, other.as_number or default_as,
                                   rr_client=client,
                                   cluster_id=me.rr_cluster_id if client else None,
                                   multihop=off_subnet(me, remote)))
    for peer in sorted(snapshot.peers, key=lambda p: (p.node is not None,
                                                      netaddr.IPAddress(p.address))):
        version = netaddr.IPAddress(peer.address).version
        local = _address(me, version)
        if local is None or (peer.node is not None and peer.node != me.name):
            continue
        prefix = "Global" if peer.node is None else "Node"
        out.append(Session(protocol_name(prefix, peer.address), KINDS[prefix], version, local,
                           my_as, peer.address, peer.as_number, password=peer.password,
                           # an external (eBGP) peer on the hosts' network gets the route's
                           # own next hop (BIRD's third-party next hop): another host's block
                           # that this host passes on is then routed to that host directly,
                           # not through this one (whose firewall sees half a connection)
                           next_hop_self=peer.as_number == my_as,
                           accept_default_route=peer.accept_default_route,
                           accept_nets=tuple(f"{n}+" for n in peer.accept_nets
                                             if netaddr.IPNetwork(n).version == version),
                           multihop=off_subnet(me, peer.address)))
    return out


def learn_kernel_routes(snapshot: Snapshot) -> dict[int, bool]:
    """Per IP version: whether BIRD must learn the kernel's routes to resolve next hops,
    i.e. this node's subnet is known and another node or a peer of this node is outside
    it. Not only the multihop sessions' peers: a route reflector passes on other nodes'
    routes with their own next hop, which may be off the subnet too."""
    me = snapshot.nodes[snapshot.hostname]
    addresses = [a for n in snapshot.nodes.values() if n.name != me.name
                 for a in (n.ipv4, n.ipv6) if a]
    addresses += [p.address for p in snapshot.peers if p.node in (None, me.name)]
    return {v: any(netaddr.IPAddress(a).version == v and off_subnet(me, a)
                   for a in addresses) for v in (4, 6)}


def originated(snapshot: Snapshot) -> dict[int, list[str]]:
    """The host's blocks, plus local addresses outside them (borrowed), per IP version."""
    blocks = [netaddr.IPNetwork(b) for b in snapshot.blocks]
    out: dict[int, list[str]] = {4: [], 6: []}
    for block in sorted(blocks):
        out[block.version].append(str(block))
    for ep in snapshot.local_endpoints:
        if ep.state != "active":
            continue
        for net in ep.ipv4_nets + ep.ipv6_nets:
            addr = netaddr.IPNetwork(net)
            if not any(addr in b for b in blocks):
                out[addr.version].append(str(addr))
    return {v: sorted(set(r), key=netaddr.IPNetwork) for v, r in out.items()}


def render_bird(snapshot: Snapshot) -> str | None:
    """The config text, or None when this host is not a node with an IPv4 router id."""
    me = snapshot.nodes.get(snapshot.hostname)
    if me is None or me.ipv4 is None:
        return None
    ordered = sorted(snapshot.pools, key=lambda p: (p.version, p.network))
    pools = {v: [f"{p.cidr}+" for p in ordered if p.version == v] for v in (4, 6)}
    # what Calico nodes may announce: blocks of the pools and anything inside them
    blocks = {v: [f"{p.cidr}{{{p.block_size},{HOST_PREFIX[v]}}}" for p in ordered
                  if p.version == v] for v in (4, 6)}
    return _ENV.get_template("bird.conf.j2").render(
        node=me, router_id=me.ipv4, originated=originated(snapshot), pools=pools,
        blocks=blocks, sessions=sessions(snapshot), learn=learn_kernel_routes(snapshot),
        subnets={v: me.subnet(v) for v in (4, 6)})
