"""Desired per-host routes: one host route per address of every active local endpoint, and a
blackhole for every IPAM block affine to this host.

Pure (no I/O): the applier in ``calico_lib.dataplane.routes`` makes the kernel match this list.
Each container is reached through a /32 (or /128) route on its host-side veth; BIRD then
advertises the routes we own, found by their protocol number. The blackhole of a local
block (as Calico installs) sits below those host routes: traffic to an unused address of
the block is dropped here instead of following the default route (behind a top-of-rack
router that routes the block back to this host, it would loop until its TTL ran out).
"""

from __future__ import annotations

from dataclasses import dataclass

import netaddr

from ..snapshot import Snapshot

#: The routing protocol number stamped on every route we install, so that stale ones (an
#: endpoint that went away while the agent was down) can be found and removed later, and so
#: that BIRD can pick exactly these routes to export.
RTPROT_CALICO = 80


@dataclass(frozen=True, order=True)
class RouteSpec:
    """One route: ``dst`` ("a.b.c.d/32" or "x::y/128") via the host-side veth
    ``interface``, or (``interface`` None) a blackhole for a local block."""

    dst: str
    interface: str | None = None

    @property
    def blackhole(self) -> bool:
        return self.interface is None


def desired_routes(snapshot: Snapshot) -> list[RouteSpec]:
    """The routes this host should carry, sorted (stable output makes diffs and tests easy).

    Inactive endpoints get no route: traffic to them is not delivered, and BIRD stops
    advertising them.
    """
    routes = {
        RouteSpec(dst=net, interface=endpoint.interface)
        for endpoint in snapshot.local_endpoints
        if endpoint.state == "active"
        for net in (*endpoint.ipv4_nets, *endpoint.ipv6_nets)
    }
    # Failsafe: a block that holds a node's or BGP peer's address (a pool drawn over the
    # hosts' own network by mistake) is not blackholed: that would cut this host off from
    # the other hosts, their etcd and their BGP sessions.
    infrastructure = [netaddr.IPAddress(a) for a in _infrastructure(snapshot)]
    routes |= {RouteSpec(dst=block) for block in snapshot.blocks
               if not any(a in netaddr.IPNetwork(block) for a in infrastructure)}
    return sorted(routes, key=lambda r: (r.dst, r.interface or ""))


def _infrastructure(snapshot: Snapshot) -> set[str]:
    found = {a for n in snapshot.nodes.values() for a in (n.ipv4, n.ipv6) if a}
    return found | {p.address for p in snapshot.peers}
