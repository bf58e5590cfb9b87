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

from typing import NamedTuple

import netaddr

from ..model import Endpoint
from ..snapshot import Snapshot

#: The routing protocol number stamped on every route we install, so that stale ones (an
#: endpoint that went away while the agent was down) can be found and removed later, and so
#: that BIRD can pick exactly these routes to export.
RTPROT_CALICO = 80


class RouteSpec(NamedTuple):
    """One route: ``dst`` ("a.b.c.d/32" or "x::y/128") via the host-side veth
    ``interface``, or (``interface`` None) a blackhole for a local block. (A tuple: sets
    of tens of thousands of them are compared on every change.)"""

    dst: str
    interface: str | None = None

    @property
    def blackhole(self) -> bool:
        return self.interface is None


def endpoint_routes(endpoint: Endpoint) -> tuple[RouteSpec, ...]:
    """One host route per address of an active endpoint (inactive ones get none: traffic
    to them is not delivered, and BIRD stops advertising them)."""
    if endpoint.state != "active":
        return ()
    return tuple(RouteSpec(net, endpoint.interface)
                 for net in (*endpoint.ipv4_nets, *endpoint.ipv6_nets))


def block_routes(snapshot: Snapshot) -> set[RouteSpec]:
    """A blackhole for each local block."""
    # Failsafe: a block that holds a node's or BGP peer's address (a pool drawn over the
    # hosts' own network by mistake) is not blackholed: that would cut this host off from
    # the other hosts, their etcd and their BGP sessions.
    infrastructure = [netaddr.IPAddress(a) for a in _infrastructure(snapshot)]
    return {RouteSpec(block) for block in snapshot.blocks
            if not any(a in netaddr.IPNetwork(block) for a in infrastructure)}


def desired_routes(snapshot: Snapshot) -> list[RouteSpec]:
    """The routes this host should carry, sorted (stable output makes diffs and tests
    easy)."""
    routes = {r for ep in snapshot.local_endpoints for r in endpoint_routes(ep)}
    return sorted(routes | block_routes(snapshot), key=lambda r: (r.dst, r.interface or ""))


class RouteRenderer:
    """``desired_routes`` as a set, with memory: an endpoint unchanged since the last call
    (the same object) keeps its routes."""

    def __init__(self) -> None:
        self._memo: dict[int, tuple[Endpoint, tuple[RouteSpec, ...]]] = {}

    def render(self, snapshot: Snapshot) -> set[RouteSpec]:
        memo: dict[int, tuple[Endpoint, tuple[RouteSpec, ...]]] = {}
        routes = block_routes(snapshot)
        for ep in snapshot.local_endpoints:
            hit = self._memo.get(id(ep))
            if hit is None or hit[0] is not ep:
                hit = (ep, endpoint_routes(ep))
            memo[id(ep)] = hit
            routes.update(hit[1])
        self._memo = memo  # holds the endpoints: their ids stay theirs
        return routes


def _infrastructure(snapshot: Snapshot) -> set[str]:
    found = {a for n in snapshot.nodes.values() for a in (n.ipv4, n.ipv6) if a}
    return found | {p.address for p in snapshot.peers}
