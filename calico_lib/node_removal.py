"""Removing a host from the cluster, as Calico's ``calicoctl delete node`` does.

A host that is gone for good leaves records behind: its endpoints (members of their
profiles' ipsets on every other host), the addresses they and its pending and tunnel handles
hold, its block claims, its Docker network records and interface index. ``holdings`` reads
them (a plan); ``remove`` frees them, then the node record and its own BGP peers.

Each step is its own transaction (a host can hold more than etcd takes in one), ordered so
that the node record goes last: an interrupted removal leaves it, and running the removal
again finishes the job. Stop the host's agent and Docker plugin first, or they write their
records back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import netaddr

from . import keys
from .datastore import Datastore
from .errors import NotFoundError
from .ipam import IPAM, pending_of, tunnel_handle
from .model import BGPPeer, Endpoint, Node, validate_hostname
from .records import RecordError, decode
from .txn import Tx, transact

#: shown instead of a BGP password
MASK = "********"
#: records deleted per transaction (etcd caps operations per transaction)
BATCH = 40


@dataclass
class NodeHoldings:
    """What a host holds in the datastore, as one removal sees it."""

    name: str
    node: Node | None = None
    peers: list[BGPPeer] = field(default_factory=list)
    #: ids of the endpoint records under the host (also of records that cannot be read)
    endpoints: list[str] = field(default_factory=list)
    #: handles of the host no endpoint of it names: pending, its tunnel, ended endpoints'
    handles: list[str] = field(default_factory=list)
    #: the addresses its endpoints and handles hold, in address order
    addresses: list[str] = field(default_factory=list)
    #: the blocks it claims (affinities)
    blocks: list[str] = field(default_factory=list)
    #: its Docker network records and interface index (keys)
    records: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return self.node is None and not (self.peers or self.endpoints or self.handles
                                          or self.blocks or self.records)

    def to_dict(self) -> dict[str, Any]:
        """The node's record with what goes with it, peers' passwords masked."""
        return {**(self.node.to_dict() if self.node else {"name": self.name}),
                "peers": [{**peer.to_dict(), **({"password": MASK} if peer.password else {})}
                          for peer in self.peers],
                "endpoints": self.endpoints, "handles": self.handles,
                "addresses": self.addresses, "blocks": self.blocks,
                "records": self.records}


def holdings(store: Datastore, name: str) -> NodeHoldings:
    """Everything ``name`` holds. Raises when a block or handle record cannot be read: the
    addresses to free would be decided on partial knowledge."""
    validate_hostname("name", name)
    ipam = IPAM(store)
    state = ipam.read_state()
    state.require_readable(keys.BLOCKS, keys.HANDLES)
    out = NodeHoldings(name)
    kv = store.get(keys.node(name))
    unreadable = []
    if kv is not None:
        try:
            out.node = decode(kv, Node)
        except RecordError:  # removed all the same, as one of its records
            unreadable.append(kv.key)
    for kv in store.list(f"{keys.NODE_PEERS}{name}/"):
        try:
            out.peers.append(decode(kv, BGPPeer))
        except RecordError:
            unreadable.append(kv.key)
    out.peers.sort(key=lambda peer: _address_order(peer.address))
    prefix = keys.endpoints(name)
    out.endpoints = sorted(keys.last(k) for k in state.endpoint_keys if k.startswith(prefix))
    named = state.endpoint_ids()  # this host's endpoints' handles go with them
    held = state.holdings()
    for handle in sorted(set(held) | set(state.handles)):
        record = state.handles.get(handle)
        if handle not in named and (
                handle == tunnel_handle(name) or pending_of(name, handle, record)
                or (record is not None and record.get("host") == name)):
            out.handles.append(handle)
    out.addresses = sorted((address for handle in [*out.endpoints, *out.handles]
                            for addresses in held.get(handle, {}).values()
                            for address in addresses), key=_address_order)
    out.blocks = sorted((cidr for host, cidr in state.affinities.values() if host == name),
                        key=_address_order)
    out.records = sorted(kv.key for kv in store.list(keys.docker_networks(name)))
    if store.get(keys.interface_index(name)) is not None:
        out.records.append(keys.interface_index(name))
    out.records += unreadable
    return out


def remove(store: Datastore, name: str) -> NodeHoldings:
    """Remove ``name`` and everything it holds (see the module's text); returns what was
    removed, with the addresses actually freed. NotFoundError when it holds nothing."""
    plan = holdings(store, name)
    if plan.empty:
        raise NotFoundError(f"node {name}: not found")
    ipam = IPAM(store)
    freed: list[str] = []
    for endpoint_id in plan.endpoints:
        if _readable(store, keys.endpoint(name, endpoint_id)):
            freed += ipam.end_endpoint(name, endpoint_id) or []
        else:  # dropped as it is; the addresses of its id are freed below
            store.delete(keys.endpoint(name, endpoint_id))
    for handle in plan.handles:
        freed += ipam.release_handle(handle)
    # addresses of its handles whose handle record was lost (release_handle goes by it)
    held = ipam.read_state().holdings()
    freed += ipam.release_ips([address for handle in [*plan.endpoints, *plan.handles]
                               for addresses in held.get(handle, {}).values()
                               for address in addresses])
    for start in range(0, len(plan.records), BATCH):
        _delete(store, plan.records[start:start + BATCH])
    ipam.release_host_affinities(name)

    def node_and_peers(tx: Tx) -> None:
        tx.delete(keys.node(name))
        for key, _ in tx.list(f"{keys.NODE_PEERS}{name}/"):
            tx.delete(key)
    transact(store, node_and_peers)
    plan.addresses = sorted(set(freed), key=_address_order)
    return plan


def _readable(store: Datastore, key: str) -> bool:
    kv = store.get(key)
    if kv is None:
        return False
    try:
        decode(kv, Endpoint)
    except RecordError:
        return False
    return True


def _delete(store: Datastore, batch: list[str]) -> None:
    def write(tx: Tx) -> None:
        for key in batch:
            tx.delete(key)
    transact(store, write)


def _address_order(text: str) -> tuple[int, int]:
    net = netaddr.IPNetwork(text)
    return net.version, int(net.network)
