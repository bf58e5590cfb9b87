"""A host's VXLAN tunnel address: taken by its agent from a pool that encapsulates,
recorded in its node record (``Node.ipv4_vxlan_tunnel``), released when no pool does.

The host may write its own node record and IPAM (``datastore.access``), so the agent does
this itself, as Calico's node does. The address comes from a block affine to this host
(other hosts accept it only there: ``render.tunnel.valid_tunnel_address``) under the
handle ``vxlan-tunnel.<host>``; IPAM's gc keeps it while the node record names it.

Crash-safe in any order: assigning reuses what the handle already holds, and a record
naming an address the handle does not hold is corrected.
"""

from __future__ import annotations

import logging

import netaddr

from . import keys
from .client import Client
from .errors import NotFoundError, PoolExhaustedError
from .ipam import tunnel_handle
from .model import Node

log = logging.getLogger(__name__)


def ensure_tunnel_address(client: Client, hostname: str, thorough: bool = True
                          ) -> str | None:
    """Make ``hostname``'s node record name a tunnel address exactly when a pool
    encapsulates; the address (or None). A host without a node record (BGP not set up
    yet) or without an IPv4 address gets none. Not ``thorough``: two reads when the
    record already agrees with the pools (IPAM is checked on the agent's resyncs)."""
    try:
        node = client.get_node(hostname)
    except NotFoundError:
        return None
    pools = [p for p in client.list_pools() if p.encapsulates]
    if not thorough:
        tunnel = node.ipv4_vxlan_tunnel
        wanted = bool(pools) and node.ipv4 is not None
        if tunnel is None and not wanted:
            return None
        if wanted and tunnel is not None and any(
                netaddr.IPAddress(tunnel) in p.network for p in pools):
            return tunnel
    handle = tunnel_handle(hostname)
    held = client.ipam.handle_addresses(handle)
    if not pools or node.ipv4 is None:
        if held:
            client.ipam.release_handle(handle)
        if node.ipv4_vxlan_tunnel is not None:
            client.update_node(hostname, ipv4_vxlan_tunnel=None)
            log.info("vxlan: released tunnel address %s (no pool encapsulates)",
                     node.ipv4_vxlan_tunnel)
        return None
    nets = [p.network for p in pools]
    mine = _own_blocks(client, hostname)
    good = [a for a in held if _fits(a, nets, mine)]
    if not good:
        if held:  # in a pool that no longer encapsulates, or a block lost: start again
            client.ipam.release_handle(handle)
        enabled = [p.cidr for p in pools if not p.disabled]
        if not enabled:
            return _record(client, node, None)
        try:
            good = client.ipam.auto_assign(hostname, handle, num_ipv4=1,
                                           pools=enabled).ipv4
        except PoolExhaustedError as exc:
            log.error("vxlan: no tunnel address for %s: %s", hostname, exc)
            return _record(client, node, None)
        if not _fits(good[0], nets, _own_blocks(client, hostname)):
            # borrowed from another host's block: no other host would accept it
            client.ipam.release_handle(handle)
            log.error("vxlan: no tunnel address for %s: its blocks are full and others' "
                      "addresses are not accepted as tunnel addresses", hostname)
            return _record(client, node, None)
    return _record(client, node, good[0])


def _record(client: Client, node: Node, address: str | None) -> str | None:
    if node.ipv4_vxlan_tunnel != address:
        client.update_node(node.name, ipv4_vxlan_tunnel=address)
        log.info("vxlan: tunnel address of %s is %s", node.name, address or "none")
    return address


def _own_blocks(client: Client, hostname: str) -> list[netaddr.IPNetwork]:
    return [netaddr.IPNetwork(keys.cidr_from_part(keys.last(kv.key)))
            for kv in client.store.list(keys.affinities(hostname))]


def _fits(address: str, pools: list[netaddr.IPNetwork],
          blocks: list[netaddr.IPNetwork]) -> bool:
    ip = netaddr.IPAddress(address)
    return any(ip in n for n in pools) and any(ip in b for b in blocks)
