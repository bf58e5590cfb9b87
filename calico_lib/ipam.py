"""Block-affinity IP address management (Calico's design, every change one transaction).

Pools are carved into blocks (/26 and /122 by default). A host claims free blocks (host
affinity) and allocates from them first; when no free block is left it borrows free
addresses from other hosts' blocks, unless ``strict_affinity`` is set. Each address is
recorded under a handle (the endpoint id); the handle's record (its per-block counts, the
host that made it and when) is written in the same transaction as the blocks, so a crash
can never leave an address counted but unowned.

Docker asks for an address before it names the endpoint: the plugin holds it under a
*pending* handle (``docker-pending.<epoch seconds>.<random>``, one per request, its host in
the record) until CreateEndpoint hands it to the endpoint's handle. A pending handle older
than the grace period is a leak that ``ipam check --repair`` and ``ipam gc`` may free.

Freed addresses go to the back of the block's free list, so they are not reused at once.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import netaddr

from . import keys, metrics
from .datastore import Datastore, KeyValue
from .errors import (
    AlreadyExistsError,
    DatastoreError,
    InUseError,
    PoolExhaustedError,
    ValidationError,
)
from .model import (
    Endpoint,
    IPAMConfig,
    IPPool,
    Node,
    parse_address,
    parse_network,
    show,
    validate_hostname,
    validate_int,
    validate_name,
)
from .records import RecordError, Unreadable, decode_all, json_object, load_json
from .txn import Tx, View, loads, transact

MAX_PER_REQUEST = 1024
RELEASE_BATCH = 32
#: the handles the Docker plugin holds requested addresses under until CreateEndpoint
PENDING_PREFIX = "docker-pending."
#: seconds a new handle is left alone by gc and repairs: Docker may not list an endpoint,
#: nor have created it, until a moment after its address was assigned
GRACE = 600
HANDLE_FIELDS = ("handle", "blocks", "host", "created")
BLOCK_FIELDS = ("cidr", "affinity", "allocations", "unallocated")


# --------------------------------------------------------------------------- pending handles


#: the handle of a host's VXLAN tunnel address (``calico_lib.tunnel_address``)
TUNNEL_HANDLE_PREFIX = "vxlan-tunnel."


def tunnel_handle(host: str) -> str:
    return TUNNEL_HANDLE_PREFIX + validate_hostname("host", host)


def pending_handle_name(now: float) -> str:
    """A new pending handle: the time it was made in its name (readable even when its
    record is lost), and a random part so that each request has its own."""
    return f"{PENDING_PREFIX}{int(now)}.{secrets.token_hex(4)}"


def is_pending(handle: str) -> bool:
    return handle.startswith(PENDING_PREFIX)


def pending_created(handle: str) -> int | None:
    """The creation time a pending handle's name carries (None: none, e.g. the older
    one-per-host form ``docker-pending.<host>``)."""
    parts = handle[len(PENDING_PREFIX):].split(".") if is_pending(handle) else []
    if len(parts) == 2 and parts[0].isdigit() and len(parts[1]) == 8 and all(
            c in "0123456789abcdef" for c in parts[1]):
        return int(parts[0])
    return None


def pending_of(host: str, handle: str, record: dict[str, Any] | None) -> bool:
    """Whether ``handle`` is a pending handle of ``host``: its record says so, or (a record
    without a host) it is the older one-per-host form that names the host."""
    if not is_pending(handle):
        return False
    if record is not None and record.get("host") is not None:
        return record["host"] == host
    return handle == PENDING_PREFIX + host


def handle_age(handle: str, record: dict[str, Any] | None, now: float) -> float | None:
    """Seconds since ``handle`` was made (None: unknown, e.g. a record older than the
    ``created`` field)."""
    created = record.get("created") if record else None
    if created is None:
        created = pending_created(handle)
    return None if created is None else now - created


def is_fresh(handle: str, record: dict[str, Any] | None, now: float, grace: float) -> bool:
    age = handle_age(handle, record, now)
    return age is not None and age < grace


# --------------------------------------------------------------------------- blocks


@dataclass
class Block:
    """One block: which ordinals are allocated to which handle, and the free list."""

    cidr: str
    affinity: str | None
    allocations: dict[int, str]
    unallocated: list[int]

    @classmethod
    def new(cls, cidr: str, affinity: str | None) -> Block:
        size = netaddr.IPNetwork(cidr).size
        return cls(cidr, affinity, {}, list(range(size)))

    @classmethod
    def load(cls, data: dict[str, Any]) -> Block:
        return cls(data["cidr"], data.get("affinity"),
                   {int(k): v for k, v in data.get("allocations", {}).items()},
                   list(data.get("unallocated", [])))

    def dump(self) -> dict[str, Any]:
        return {"cidr": self.cidr, "affinity": self.affinity,
                "allocations": {str(k): v for k, v in sorted(self.allocations.items())},
                "unallocated": self.unallocated}

    @property
    def network(self) -> netaddr.IPNetwork:
        return netaddr.IPNetwork(self.cidr)

    def address(self, ordinal: int) -> netaddr.IPAddress:
        return netaddr.IPAddress(self.network.first + ordinal, self.network.version)

    def ordinal(self, address: netaddr.IPAddress) -> int:
        return int(address) - self.network.first

    def take(self, handle: str, count: int) -> list[str]:
        """Allocate up to ``count`` addresses from the front of the free list."""
        taken = self.unallocated[:count]
        del self.unallocated[:count]
        for ordinal in taken:
            self.allocations[ordinal] = handle
        return [str(self.address(o)) for o in taken]

    def take_ordinal(self, ordinal: int, handle: str) -> None:
        self.unallocated.remove(ordinal)
        self.allocations[ordinal] = handle

    def free(self, ordinal: int) -> str | None:
        """Release one ordinal to the back of the free list; returns its handle."""
        handle = self.allocations.pop(ordinal, None)
        if handle is not None:
            self.unallocated.append(ordinal)
        return handle


def read_block(kv: KeyValue) -> Block:
    """A stored block, checked field by field; ValueError (the reason) if it is unusable."""
    data = _json(kv)
    _fields(data, BLOCK_FIELDS, "block")
    cidr = keys.cidr_from_part(keys.last(kv.key))
    if data.get("cidr") != cidr:
        raise ValueError(f"cidr {data.get('cidr')!r} does not match its key")
    affinity, allocations = data.get("affinity"), data.get("allocations", {})
    unallocated = data.get("unallocated", [])
    if affinity is not None and not isinstance(affinity, str):
        raise ValueError("affinity is not a host name")
    if not isinstance(allocations, dict) or not all(
            isinstance(k, str) and k.isdigit() and isinstance(v, str) and v
            for k, v in allocations.items()):
        raise ValueError("allocations is not a mapping of ordinals to handles")
    if not isinstance(unallocated, list) or not all(
            isinstance(o, int) and not isinstance(o, bool) for o in unallocated):
        raise ValueError("unallocated is not a list of ordinals")
    try:
        return Block.load(data)
    except (netaddr.AddrFormatError, ValueError, TypeError):
        raise ValueError("cidr is not a CIDR") from None


def read_handle(kv: KeyValue) -> dict[str, Any]:
    """A stored handle record, checked; ValueError (the reason) if it is unusable. Records
    written before ``host`` and ``created`` existed load without them."""
    data = _json(kv)
    _fields(data, HANDLE_FIELDS, "handle record")
    if data.get("handle") != keys.last(kv.key):
        raise ValueError(f"handle {data.get('handle')!r} does not match its key")
    blocks = data.get("blocks", {})
    if not isinstance(blocks, dict) or not all(
            isinstance(n, int) and not isinstance(n, bool) for n in blocks.values()):
        raise ValueError("blocks is not a mapping of block CIDRs to counts")
    if not isinstance(data.get("host"), str | None):
        raise ValueError("host is not a host name")
    created = data.get("created")
    if created is not None and (not isinstance(created, int | float)
                                or isinstance(created, bool)):
        raise ValueError("created is not a time in epoch seconds")
    return data


def _json(kv: KeyValue) -> dict[str, Any]:
    try:
        data = load_json(kv)
    except RecordError:
        raise ValueError("not valid JSON") from None
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    return data


def _fields(data: dict[str, Any], allowed: tuple[str, ...], what: str) -> None:
    unknown = sorted(str(k) for k in set(data) - set(allowed))
    if unknown:
        raise ValueError(f"unknown field {unknown[0]!r} of a {what}; allowed: "
                         f"{', '.join(allowed)}")


@dataclass
class AssignResult:
    ipv4: list[str] = field(default_factory=list)
    ipv6: list[str] = field(default_factory=list)

    @property
    def addresses(self) -> list[str]:
        return self.ipv4 + self.ipv6


@dataclass(frozen=True)
class Problem:
    """One inconsistency found by ``IPAM.check``."""

    kind: str
    subject: str
    detail: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.subject}: {self.detail}"


@dataclass
class State:
    """One consistent read of the IPAM records and the endpoints. Records that cannot be
    read are in ``unreadable`` (one entry per key) and nowhere else."""

    revision: int
    pools: list[IPPool]
    blocks: dict[str, Block]  # block CIDR -> block
    block_keys: set[str]  # every block key, readable or not
    affinities: dict[str, tuple[str, str]]  # affinity key -> (host, block CIDR)
    handles: dict[str, dict[str, Any]]  # handle -> its record
    endpoints: dict[str, Endpoint]  # endpoint key -> endpoint
    endpoint_keys: set[str]  # every endpoint key, readable or not
    unreadable: list[Unreadable]
    #: the tunnel handle of each node record that names a tunnel address -> that address
    tunnels: dict[str, str] = field(default_factory=dict)

    def holdings(self) -> dict[str, dict[str, list[str]]]:
        """Per handle, per block CIDR, the addresses the blocks allocate to it."""
        out: dict[str, dict[str, list[str]]] = {}
        for block in self.blocks.values():
            for ordinal, handle in sorted(block.allocations.items()):
                out.setdefault(handle, {}).setdefault(block.cidr, []).append(
                    str(block.address(ordinal)))
        return out

    def endpoint_ids(self) -> set[str]:
        """The id of every endpoint record, also of those that cannot be read."""
        return {keys.last(k) for k in self.endpoint_keys}

    def hosts(self) -> set[str]:
        """Every host named by an endpoint, a block, a claim or a handle record."""
        found = {k[len(keys.ENDPOINTS):].split("/", 1)[0] for k in self.endpoint_keys}
        found |= {b.affinity for b in self.blocks.values() if b.affinity}
        found |= {host for host, _ in self.affinities.values()}
        found |= {r["host"] for r in self.handles.values() if r.get("host")}
        return found

    def require_readable(self, *prefixes: str) -> None:
        """Raise (naming the key) if a record under ``prefixes`` cannot be read: a decision
        that depends on it would be made on partial knowledge."""
        bad = [u for u in self.unreadable if u.key.startswith(prefixes)]
        if bad:
            more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
            raise DatastoreError(f"{bad[0]}{more}; nothing was changed: run "
                                 "`calicoctl ipam check` and repair or remove it")


@dataclass
class Release:
    """A handle to free, and the endpoint record to remove with it, as a plan saw them.

    ``IPAM.release`` applies it in one transaction only if nothing it was decided on has
    changed: the handle record, the endpoint record, the addresses, and (``absent``)
    endpoint keys that must still not exist.
    """

    handle: str
    addresses: list[str]
    blocks: list[str]  # block CIDRs holding them
    record: dict[str, Any] | None  # the handle record as read (None: none)
    reason: str
    endpoint_key: str | None = None
    endpoint: dict[str, Any] | None = None  # the endpoint record as read
    absent: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"handle": self.handle, "addresses": self.addresses,
                "endpoint": self.endpoint_key, "reason": self.reason}


# --------------------------------------------------------------------------- host interfaces

#: entries of ended endpoints a host's interface index may hold (beyond twice the endpoints
#: its last listing found) before the next write lists the host's endpoints again
INTERFACE_INDEX_SLACK = 64


def take_interface(tx: Tx, endpoint: Endpoint, rebuild: bool = False) -> None:
    """Record in ``tx`` that ``endpoint`` has its host-side interface on its host; raise
    AlreadyExistsError (naming the interface and the other endpoint) when another endpoint
    of the host has it.

    The host's interface index (``keys.interface_index``) says which endpoint has which
    interface; it is read guarded and rewritten, so of two writes that take one interface
    at once only one commits (the other reruns and is refused). An entry counts only while
    its endpoint's record still names the interface (ended endpoints leave theirs). The index
    is rebuilt from the host's endpoint records when it is absent or unreadable, when it has
    grown well past them, and with ``rebuild`` (writes that are not on the Docker plugin's
    fast path: they also see endpoints written without the index).
    """
    key = keys.interface_index(endpoint.host)
    try:
        data = tx.get(key)
    except DatastoreError:  # not JSON: rebuilt
        data = None
    entries = data.get("interfaces") if isinstance(data, dict) else None
    listed = data.get("listed") if isinstance(data, dict) else None
    if (rebuild or not isinstance(entries, dict) or type(listed) is not int
            or len(entries) > 2 * listed + INTERFACE_INDEX_SLACK):
        entries = _list_interfaces(tx, endpoint.host)
        listed = len(entries)
    owner = entries.get(endpoint.interface)
    if (isinstance(owner, str) and owner != endpoint.id
            and _has_interface(tx, endpoint.host, owner, endpoint.interface)):
        raise AlreadyExistsError(
            f"interface: {endpoint.interface} is endpoint {owner}'s on {endpoint.host}; "
            "every endpoint of a host needs its own (Docker plugin: ids alike in their "
            "first 11 characters)")
    entries = {k: v for k, v in entries.items() if isinstance(v, str)}
    entries[endpoint.interface] = endpoint.id
    tx.put(key, {"interfaces": dict(sorted(entries.items())), "listed": listed})


def interface_owner(store: Datastore, host: str, interface: str) -> str | None:
    """The endpoint of ``host`` that has ``interface`` as the host's interface index says
    (and its record confirms), else None."""
    entries = json_object(store.get(keys.interface_index(host))).get("interfaces")
    owner = entries.get(interface) if isinstance(entries, dict) else None
    if not isinstance(owner, str):
        return None
    record = json_object(store.get(keys.endpoint(host, owner)))
    return owner if record.get("interface") == interface else None


def _list_interfaces(tx: Tx, host: str) -> dict[str, str]:
    """Interface -> endpoint id from the records of ``host``'s endpoints (the first by id
    where several name one interface, as snapshots keep it; unreadable records skipped)."""
    found: dict[str, str] = {}
    for kv in tx.store.list(keys.endpoints(host)):
        interface = json_object(kv).get("interface")
        if isinstance(interface, str):
            found.setdefault(interface, keys.last(kv.key))
    return found


def _has_interface(tx: Tx, host: str, endpoint_id: str, interface: str) -> bool:
    """Whether the record of ``endpoint_id`` on ``host`` exists and names ``interface``."""
    try:
        record = tx.get(keys.endpoint(host, endpoint_id))
    except DatastoreError:  # an unreadable record: no snapshot has it
        return False
    return isinstance(record, dict) and record.get("interface") == interface


# --------------------------------------------------------------------------- the IPAM


class IPAM:
    """IP address management over a datastore. Every public method is one transaction."""

    def __init__(self, store: Datastore) -> None:
        self.store = store
        # Per host, what the last assignment saw: the next one starts from it without
        # reading (every decision is guarded, so a stale view only costs a retry).
        self._views: dict[str, View] = {}
        #: epoch seconds; handle records carry it (tests move it to age records)
        self.clock: Callable[[], float] = time.time

    def now(self) -> int:
        return int(self.clock())

    def new_pending_handle(self) -> str:
        """A fresh pending handle for one address Docker asked for (see the module doc)."""
        return pending_handle_name(self.now())

    # -- configuration

    def get_config(self) -> IPAMConfig:
        kv = self.store.get(keys.IPAM_CONFIG)
        return IPAMConfig.from_dict(loads(kv)) if kv else IPAMConfig()

    def set_config(self, config: IPAMConfig) -> None:
        def write(tx: Tx) -> None:
            tx.put(keys.IPAM_CONFIG, config.to_dict())
        transact(self.store, write)

    # -- assignment

    def auto_assign(self, host: str, handle: str, num_ipv4: int = 0, num_ipv6: int = 0,
                    pools: Iterable[str] | None = None) -> AssignResult:
        """Assign ``num_ipv4`` IPv4 and ``num_ipv6`` IPv6 addresses to ``handle`` on ``host``.

        ``pools`` limits the search to those pool CIDRs. All or nothing: when the pools
        cannot give every address asked for, ``PoolExhaustedError`` and nothing changes.
        """
        validate_hostname("host", host)
        validate_name("handle", handle)
        wanted = {4: validate_int("ipv4", num_ipv4, 0, MAX_PER_REQUEST),
                  6: validate_int("ipv6", num_ipv6, 0, MAX_PER_REQUEST)}
        if not any(wanted.values()):
            raise ValidationError("ipv4", "nothing to assign; ask for at least one address")
        only = ({str(parse_network("pools", p)) for p in _items("pools", pools)}
                if pools is not None else None)

        def attempt(tx: Tx) -> AssignResult:
            if tx.seeded:  # a new handle is the common case; the guard checks it
                tx.assume_absent(keys.handle(handle))
            tx.prefetch([keys.IPAM_CONFIG, keys.handle(handle)],
                        [keys.POOLS, keys.affinities(host)])
            config = IPAMConfig.from_dict(tx.get(keys.IPAM_CONFIG, guard=False) or {})
            usable = [p for p in _pools(tx) if not p.disabled
                      and (only is None or p.cidr in only)]
            if only is not None and only - {p.cidr for p in usable}:
                missing = sorted(only - {p.cidr for p in usable})[0]
                raise ValidationError("pools", f"{missing} is not an enabled pool")
            result = AssignResult()
            touched: dict[str, Block] = {}
            for version, count in wanted.items():
                if not count:
                    continue
                got = _assign_family(tx, touched, host, handle, count,
                                     [p for p in usable if p.version == version],
                                     config.strict_affinity)
                if len(got) < count:
                    raise PoolExhaustedError(
                        f"ipv{version}: only {len(got)} of {count} IPv{version} addresses "
                        "are free in the enabled pools; nothing was assigned")
                (result.ipv4 if version == 4 else result.ipv6).extend(got)
            for pool in usable:  # a pool disabled or removed meanwhile fails the commit
                if any(b.network in pool.network for b in touched.values()):
                    tx.guard(keys.pool(pool.cidr))
            _save(tx, touched, handle, {cidr: _count(b, handle) for cidr, b in touched.items()},
                  host, self.now())
            return result

        mine = keys.affinities(host)

        def remember(tx: Tx, revision: int) -> None:
            view = tx.view_after(revision, lambda key: key != keys.BLOCKS and (
                key.startswith(mine) or not key.startswith((keys.HANDLES, keys.AFFINITIES))))
            owned = {keys.block(keys.cidr_from_part(keys.last(k)))
                     for k in view.lists.get(mine, [])}
            view.seen = {k: v for k, v in view.seen.items()
                         if not k.startswith(keys.BLOCKS) or k in owned}
            self._views[host] = view

        try:
            result = transact(self.store, attempt, seed=self._views.pop(host, None),
                              on_commit=remember)
        except Exception:
            metrics.ipam_assignment(wanted, ok=False)
            raise
        metrics.ipam_assignment(wanted, ok=True)  # all or nothing: every address wanted
        return result

    def assign_ip(self, address: str, handle: str, host: str) -> str:
        """Assign one specific address; ``InUseError`` if it is taken."""
        addr = parse_address("ip", address)
        validate_name("handle", handle)
        validate_hostname("host", host)

        def attempt(tx: Tx) -> str:
            tx.prefetch([keys.handle(handle)], [keys.POOLS])
            block, pool = _block_to_write(tx, {}, addr, host)
            _refuse_disabled(pool, addr)
            ordinal = block.ordinal(addr)
            if ordinal in block.allocations:
                raise InUseError(f"ip: {addr} is already assigned "
                                 f"(handle {block.allocations[ordinal]})")
            block.take_ordinal(ordinal, handle)
            _save(tx, {block.cidr: block}, handle, {block.cidr: _count(block, handle)}, host,
                  self.now())
            return str(addr)

        try:
            assigned = transact(self.store, attempt)
        except Exception:
            metrics.ipam_assignment({addr.version: 1}, ok=False)
            raise
        metrics.ipam_assignment({addr.version: 1}, ok=True)
        return assigned

    # -- release

    def release_ips(self, addresses: Iterable[str]) -> list[str]:
        """Release addresses; returns those that were assigned (others are quietly ignored).

        Each run of ``RELEASE_BATCH`` addresses is one transaction (etcd caps the
        operations in one transaction).
        """
        addrs = [parse_address("ip", a) for a in _items("ip", addresses)]
        released = []
        for start in range(0, len(addrs), RELEASE_BATCH):
            released += self._release_batch(addrs[start:start + RELEASE_BATCH])
        return released

    def _release_batch(self, addrs: list[netaddr.IPAddress]) -> list[str]:
        def attempt(tx: Tx) -> list[str]:
            tx.prefetch([], [keys.POOLS])
            blocks = _blocks_for(tx, addrs)
            released, counts, touched = [], {}, {}
            for addr in addrs:
                block = blocks.get(addr)
                if block is None:
                    continue
                handle = block.free(block.ordinal(addr))
                if handle is None:
                    continue
                released.append(str(addr))
                touched[block.cidr] = block
                counts.setdefault(handle, {})
                counts[handle][block.cidr] = counts[handle].get(block.cidr, 0) - 1
            for handle, deltas in counts.items():
                _adjust_handle(tx, handle, deltas)
            _save_blocks(tx, touched)
            return released

        return transact(self.store, attempt)

    def release_handle(self, handle: str) -> list[str]:
        """Release every address of ``handle`` (also addresses a lost handle record missed)."""
        validate_name("handle", handle)

        def attempt(tx: Tx) -> list[str]:
            record = tx.get(keys.handle(handle))
            if record is None:
                return []
            released, touched = [], {}
            for cidr in record.get("blocks", {}):
                data = tx.get(keys.block(cidr))
                if data is None:
                    continue
                block = touched[cidr] = Block.load(data)
                for ordinal, owner in sorted(block.allocations.items()):
                    if owner == handle:
                        block.free(ordinal)
                        released.append(str(block.address(ordinal)))
            tx.delete(keys.handle(handle))
            _save_blocks(tx, touched)
            return released

        return transact(self.store, attempt)

    def claim(self, addresses: Iterable[str], handle: str, host: str,
              endpoint: Endpoint | None = None) -> list[str]:
        """Hand ``addresses`` to ``handle`` (an endpoint id) on ``host``, all in one
        transaction, and write ``endpoint`` (if given) in it too: the Docker plugin learns
        the endpoint id only after the addresses were assigned under pending handles.

        An address may be taken only from a pending handle of ``host``; a free address is
        assigned; one ``handle`` already holds is left as it is (Docker replays calls).
        Anything else raises InUseError naming the address and its owner, and nothing
        changes. ``endpoint`` may not have a host-side interface another endpoint of
        ``host`` has (AlreadyExistsError; the host's interface index tells, see
        ``take_interface``). Returns the addresses that were taken over or assigned.
        """
        addrs = [parse_address("ip", a) for a in _items("ip", addresses)]
        validate_name("handle", handle)
        validate_hostname("host", host)
        if endpoint is not None and (endpoint.host, endpoint.id) != (host, handle):
            raise ValidationError("endpoint", f"endpoint {endpoint.id} on {endpoint.host} "
                                              f"is not {handle} on {host}")
        endpoint_key = keys.endpoint(host, handle)

        def attempt(tx: Tx) -> list[str]:
            tx.prefetch([keys.handle(handle), endpoint_key, keys.interface_index(host)],
                        [keys.POOLS])
            if endpoint is not None and tx.get(endpoint_key) != endpoint.to_dict():
                take_interface(tx, endpoint)
                tx.put(endpoint_key, endpoint.to_dict())
            touched: dict[str, Block] = {}
            deltas: dict[str, dict[str, int]] = {}
            changed = []
            for addr in addrs:
                block, pool = _block_to_write(tx, touched, addr, host)
                ordinal = block.ordinal(addr)
                owner = block.allocations.get(ordinal)
                if owner == handle:
                    continue
                if owner is None:
                    _refuse_disabled(pool, addr)
                    block.take_ordinal(ordinal, handle)
                else:
                    record = tx.get(keys.handle(owner))
                    if not pending_of(host, owner, record):
                        raise InUseError(f"ip: {addr} is held by handle {owner}"
                                         f"{_on_host(record)}; only addresses pending on "
                                         f"{host} can be taken")
                    block.allocations[ordinal] = handle
                    _add(deltas, owner, block.cidr, -1)
                _add(deltas, handle, block.cidr, 1)
                touched[block.cidr] = block
                changed.append(str(addr))
            for owner, counts in sorted(deltas.items()):
                _adjust_handle(tx, owner, counts, host, self.now())
            _save_blocks(tx, touched)
            return changed

        return transact(self.store, attempt)

    def end_endpoint(self, host: str, endpoint_id: str) -> list[str] | None:
        """Remove ``host``'s endpoint record and free its handle, in one transaction (the
        Docker plugin's DeleteEndpoint). Returns the addresses freed, or None when the
        handle is another host's: then only the record goes."""
        validate_hostname("host", host)
        validate_name("id", endpoint_id)

        def attempt(tx: Tx) -> list[str] | None:
            if tx.get(keys.endpoint(host, endpoint_id)) is not None:
                tx.delete(keys.endpoint(host, endpoint_id))
            record = tx.get(keys.handle(endpoint_id))
            if record is None:
                return []
            if record.get("host") not in (None, host):
                return None
            released, touched = [], {}
            for cidr in record.get("blocks", {}):
                data = tx.get(keys.block(cidr))
                if data is None:
                    continue
                block = Block.load(data)
                for ordinal, owner in sorted(block.allocations.items()):
                    if owner == endpoint_id:
                        block.free(ordinal)
                        released.append(str(block.address(ordinal)))
                        touched[cidr] = block
            tx.delete(keys.handle(endpoint_id))
            _save_blocks(tx, touched)
            return released

        return transact(self.store, attempt)

    def release_for_host(self, address: str, host: str) -> str | None:
        """Free ``address`` for ``host``'s Docker plugin (its ReleaseAddress).

        Freed only when held by a pending handle of ``host``, or by a handle of ``host``
        whose endpoint record is gone (the endpoint ended); returns that handle. An address
        not allocated is quietly None (Docker hands back the gateway and addresses
        DeleteEndpoint already freed). Anything else raises InUseError; nothing changes.
        """
        addr = parse_address("ip", address)
        validate_hostname("host", host)

        def attempt(tx: Tx) -> str | None:
            tx.prefetch([], [keys.POOLS])
            block = _blocks_for(tx, [addr]).get(addr)
            owner = block.allocations.get(block.ordinal(addr)) if block else None
            if block is None or owner is None:
                return None
            record = tx.get(keys.handle(owner))
            ended = (record is not None and record.get("host") == host
                     and tx.get(keys.endpoint(host, owner)) is None)
            if not (ended or pending_of(host, owner, record)):
                raise InUseError(f"ip: {addr} is held by handle {owner}{_on_host(record)}, "
                                 f"which is neither pending on {host} nor an ended endpoint "
                                 "of it; not released")
            block.free(block.ordinal(addr))
            _adjust_handle(tx, owner, {block.cidr: -1})
            _save_blocks(tx, {block.cidr: block})
            return owner

        return transact(self.store, attempt)

    def release_host_affinities(self, host: str) -> list[str]:
        """Drop ``host``'s claims: empty blocks are freed, used ones stay (unaffine)."""
        validate_hostname("host", host)

        def release(key: str) -> Callable[[Tx], str]:
            def attempt(tx: Tx) -> str:
                cidr = keys.cidr_from_part(keys.last(key))
                tx.delete(key)
                data = tx.get(keys.block(cidr))
                if data is not None:
                    block = Block.load(data)
                    if block.affinity == host:
                        block.affinity = None
                    _save_blocks(tx, {cidr: block})
                return cidr
            return attempt

        # One transaction per block: each claim is independent of the others.
        return [transact(self.store, release(kv.key))
                for kv in self.store.list(keys.affinities(host))]

    # -- reading

    def handle_addresses(self, handle: str) -> list[str]:
        record = self.store.get(keys.handle(handle))
        if record is None:
            return []
        out = []
        for cidr in loads(record).get("blocks", {}):
            kv = self.store.get(keys.block(cidr))
            if kv:
                block = Block.load(loads(kv))
                out += [str(block.address(o)) for o, h in sorted(block.allocations.items())
                        if h == handle]
        return out

    def handles(self) -> set[str]:
        """Every handle that holds an address (from blocks and handle records)."""
        found = {keys.last(kv.key) for kv in self.store.list(keys.HANDLES)}
        for block in self.blocks():
            found.update(block.allocations.values())
        return found

    def blocks(self) -> list[Block]:
        return [Block.load(loads(kv)) for kv in self.store.list(keys.BLOCKS)]

    def usage(self) -> list[dict[str, Any]]:
        """Per pool: its blocks (CIDR, affinity, used) and totals; pools and blocks in
        address order (IPv4 first), not as text sorts them."""
        pools = sorted((IPPool.from_dict(loads(kv)) for kv in self.store.list(keys.POOLS)),
                       key=lambda p: (p.version, p.network))
        blocks = sorted(self.blocks(), key=lambda b: (b.network.version, b.network))
        out = []
        for pool in pools:
            mine = [b for b in blocks if b.network in pool.network]
            out.append({
                "pool": pool.cidr, "size": pool.network.size,
                "allocated": sum(len(b.allocations) for b in mine),
                "blocks": [{"cidr": b.cidr, "affinity": b.affinity,
                            "allocated": len(b.allocations),
                            "free": len(b.unallocated)} for b in mine],
            })
        return out

    def read_state(self) -> State:
        """Pools, blocks, claims, handle records and endpoints, read in one snapshot."""
        (pool_kvs, block_kvs, aff_kvs, handle_kvs, endpoint_kvs, node_kvs), revision = \
            self.store.read([keys.POOLS, keys.BLOCKS, keys.AFFINITIES, keys.HANDLES,
                             keys.ENDPOINTS, keys.NODES])
        pools, unreadable = decode_all(pool_kvs, IPPool)
        endpoints, bad = decode_all(endpoint_kvs, Endpoint)
        unreadable += bad
        nodes, bad = decode_all(node_kvs, Node)
        unreadable += bad
        state = State(revision, pools, {}, {kv.key for kv in block_kvs}, {}, {},
                      {keys.endpoint(e.host, e.id): e for e in endpoints},
                      {kv.key for kv in endpoint_kvs}, unreadable,
                      {tunnel_handle(n.name): n.ipv4_vxlan_tunnel for n in nodes
                       if n.ipv4_vxlan_tunnel})
        for kv in block_kvs:
            try:
                block = read_block(kv)
                state.blocks[block.cidr] = block
            except ValueError as exc:
                unreadable.append(Unreadable(kv.key, str(exc)))
        for kv in handle_kvs:
            try:
                state.handles[keys.last(kv.key)] = read_handle(kv)
            except ValueError as exc:
                unreadable.append(Unreadable(kv.key, str(exc)))
        for kv in aff_kvs:
            host, _, part = kv.key[len(keys.AFFINITIES):].partition("/")
            try:
                if _json(kv) != {"state": "confirmed"}:
                    raise ValueError('not {"state": "confirmed"}')
                if not host or "/" in part:
                    raise ValueError("not a key of the form affinity/<host>/<block>")
                state.affinities[kv.key] = (host, str(netaddr.IPNetwork(
                    keys.cidr_from_part(part)).cidr))
            except (ValueError, IndexError, netaddr.AddrFormatError) as exc:
                reason = str(exc) if isinstance(exc, ValueError) else "not a block CIDR"
                unreadable.append(Unreadable(kv.key, reason))
        return state

    def pending(self, host: str) -> dict[str, list[str]]:
        """The pending handles of ``host`` and the addresses each holds."""
        validate_hostname("host", host)
        state = self.read_state()
        return {h: [a for addrs in per_block.values() for a in addrs]
                for h, per_block in sorted(state.holdings().items())
                if pending_of(host, h, state.handles.get(h))}

    def check(self, now: float | None = None, grace: float = GRACE) -> list[Problem]:
        """Every inconsistency between pools, blocks, claims, handles and endpoints (see
        ``calico_lib.ipam_check``); pending handles younger than ``grace`` are fine."""
        from .ipam_check import audit  # it builds on this module

        return audit(self, now, grace).problems

    # -- garbage collection

    def gc_plan(self, live: Iterable[str] | None, now: float | None = None,
                grace: float = GRACE) -> list[Release]:
        """What ``gc`` frees: every handle not in ``live`` that no endpoint record (on any
        host) names and that is not younger than ``grace``. ``live=None`` means every
        handle, endpoints' and fresh ones too (``ipam gc --all``).

        Raises when a block, handle or endpoint record cannot be read: nothing is decided
        on partial knowledge.
        """
        now = self.clock() if now is None else now
        state = self.read_state()
        state.require_readable(keys.BLOCKS, keys.HANDLES, keys.ENDPOINTS)
        keep = None if live is None else set(live)
        holdings = state.holdings()
        if any(h.startswith(TUNNEL_HANDLE_PREFIX) for h in holdings):
            state.require_readable(keys.NODES)  # whose tunnel is live depends on them
        used = state.endpoint_ids() | set(state.tunnels)  # a node's tunnel address is live
        absent_hosts = sorted(state.hosts())
        plans = []
        for handle in sorted(set(holdings) | set(state.handles)):
            record = state.handles.get(handle)
            if keep is not None:
                if handle in keep or handle in used:
                    continue
                if is_fresh(handle, record, now, grace):
                    continue
            per_block = holdings.get(handle, {})
            plans.append(Release(
                handle, [a for addrs in per_block.values() for a in addrs], sorted(per_block),
                record, "every handle" if keep is None else "not live and no endpoint",
                absent=[] if keep is None else [keys.endpoint(h, handle)
                                                for h in absent_hosts]))
        return plans

    def release(self, plan: Release) -> list[str] | None:
        """Apply one ``Release`` in one transaction; the addresses freed, or None when
        anything it was decided on changed meanwhile (then nothing changes)."""
        def attempt(tx: Tx) -> list[str] | None:
            tx.prefetch([keys.handle(plan.handle), *plan.absent,  # one round trip
                         *([plan.endpoint_key] if plan.endpoint_key else []),
                         *(keys.block(c) for c in plan.blocks)])
            if tx.get(keys.handle(plan.handle)) != plan.record:
                return None
            if plan.endpoint_key is not None and tx.get(plan.endpoint_key) != plan.endpoint:
                return None
            if any(tx.get(key) is not None for key in plan.absent):
                return None
            cidrs = set(plan.blocks) | set((plan.record or {}).get("blocks", {}))
            freed, touched = [], {}
            for cidr in sorted(cidrs):
                data = tx.get(keys.block(cidr))
                if data is None:
                    continue
                block = Block.load(data)
                for ordinal, owner in sorted(block.allocations.items()):
                    if owner == plan.handle:
                        block.free(ordinal)
                        freed.append(str(block.address(ordinal)))
                        touched[cidr] = block
            if sorted(freed) != sorted(plan.addresses):
                return None  # nothing was written yet: returning drops the whole decision
            if plan.endpoint_key is not None:
                tx.delete(plan.endpoint_key)
            if plan.record is not None:
                tx.delete(keys.handle(plan.handle))
            _save_blocks(tx, touched)
            return freed

        return transact(self.store, attempt)


# --------------------------------------------------------------------------- helpers


def _pools(tx: Tx) -> list[IPPool]:
    return [IPPool.from_dict(v) for _, v in tx.list(keys.POOLS)]


def _pool_for(tx: Tx, addr: netaddr.IPAddress) -> IPPool | None:
    for pool in _pools(tx):
        if addr in pool.network:
            return pool
    return None


def _count(block: Block, handle: str) -> int:
    return sum(1 for h in block.allocations.values() if h == handle)


def _free_blocks(pool: IPPool, existing: set[str]) -> Iterator[str]:
    for subnet in pool.network.subnet(pool.block_size):
        if str(subnet) not in existing:
            yield str(subnet)


def _assign_family(tx: Tx, touched: dict[str, Block], host: str, handle: str, count: int,
                   pools: list[IPPool], strict: bool) -> list[str]:
    """Take ``count`` addresses: affine blocks, then new blocks, then (maybe) borrowed."""
    got: list[str] = []

    def take_from(cidr: str, block: Block) -> None:
        if block.unallocated and len(got) < count:
            got.extend(block.take(handle, count - len(got)))
            touched[cidr] = block

    def load(cidr: str) -> Block | None:
        if cidr in touched:
            return touched[cidr]
        data = tx.get(keys.block(cidr))
        return Block.load(data) if data else None

    # 1. The host's own blocks, in pool order.
    for key, _ in tx.list(keys.affinities(host)):
        cidr = keys.cidr_from_part(keys.last(key))
        if len(got) == count:
            return got
        if any(netaddr.IPNetwork(cidr) in p.network for p in pools):
            block = load(cidr)
            if block is not None and block.affinity == host:
                take_from(cidr, block)
    if len(got) == count:
        return got
    # 2. Claim free blocks (creating a block is guarded on its key being absent).
    existing = {keys.cidr_from_part(keys.last(k)) for k, _ in tx.list(keys.BLOCKS)}
    for pool in pools:
        for cidr in _free_blocks(pool, existing | set(touched)):
            if len(got) == count:
                return got
            tx.require_absent(keys.block(cidr))
            tx.put(keys.affinity(host, cidr), {"state": "confirmed"})
            take_from(cidr, Block.new(cidr, host))
    # 3. Borrow from other hosts' blocks.
    if not strict:
        for key, data in tx.list(keys.BLOCKS):
            if len(got) == count:
                break
            cidr = data["cidr"]
            if cidr in touched or not any(netaddr.IPNetwork(cidr) in p.network for p in pools):
                continue
            tx.guard(key)
            take_from(cidr, Block.load(data))
    return got


def _handle_record(tx: Tx, handle: str, host: str | None, now: int | None,
                   counts: dict[str, int]) -> dict[str, Any]:
    """A handle record with new ``counts``: a record that exists keeps its host and time
    (also when it predates them); a new one gets ``host`` and ``now``."""
    record = tx.get(keys.handle(handle))
    out: dict[str, Any] = {"handle": handle, "blocks": dict(sorted(counts.items()))}
    for name, value in (("host", host), ("created", now)):
        kept = record.get(name) if record is not None else value
        if kept is not None:
            out[name] = kept
    return out


def _adjust_handle(tx: Tx, handle: str, deltas: dict[str, int], host: str | None = None,
                   now: int | None = None) -> None:
    """Add ``deltas`` (block CIDR -> change) to a handle record; drop it when empty."""
    record = tx.get(keys.handle(handle)) or {}
    counts = dict(record.get("blocks", {}))
    for cidr, delta in deltas.items():
        counts[cidr] = counts.get(cidr, 0) + delta
        if counts[cidr] <= 0:
            del counts[cidr]
    if counts:
        tx.put(keys.handle(handle), _handle_record(tx, handle, host, now, counts))
    else:
        tx.delete(keys.handle(handle))


def _save(tx: Tx, touched: dict[str, Block], handle: str, totals: dict[str, int],
          host: str, now: int) -> None:
    """Write the blocks and set the handle's count for each to its new total."""
    record = tx.get(keys.handle(handle)) or {}
    counts = dict(record.get("blocks", {}))
    counts.update({cidr: n for cidr, n in totals.items() if n})
    tx.put(keys.handle(handle), _handle_record(tx, handle, host, now, counts))
    _save_blocks(tx, touched)


def _add(deltas: dict[str, dict[str, int]], handle: str, cidr: str, delta: int) -> None:
    per_block = deltas.setdefault(handle, {})
    per_block[cidr] = per_block.get(cidr, 0) + delta


def _on_host(record: dict[str, Any] | None) -> str:
    host = record.get("host") if record else None
    return f" of host {host}" if host else ""


def _block_to_write(tx: Tx, touched: dict[str, Block], addr: netaddr.IPAddress,
                    host: str) -> tuple[Block, IPPool]:
    """The block ``addr`` belongs in (created, affine to ``host``, when there is none)
    and its pool; ValidationError when the address is in no pool."""
    pool = _pool_for(tx, addr)
    if pool is None:
        raise ValidationError("ip", f"{addr} is not in any pool; add a pool first")
    tx.guard(keys.pool(pool.cidr))
    cidr = str(netaddr.IPNetwork(f"{addr}/{pool.block_size}").cidr)
    if cidr in touched:
        return touched[cidr], pool
    data = tx.get(keys.block(cidr))
    if data is not None:
        return Block.load(data), pool
    tx.put(keys.affinity(host, cidr), {"state": "confirmed"})
    return Block.new(cidr, host), pool


def _refuse_disabled(pool: IPPool, addr: netaddr.IPAddress) -> None:
    if pool.disabled:
        raise ValidationError("ip", f"{addr} is in disabled pool {pool.cidr}; enable the "
                                    "pool or pick another address")


def _save_blocks(tx: Tx, blocks: dict[str, Block]) -> None:
    for cidr, block in blocks.items():
        if not block.allocations and block.affinity is None:
            tx.delete(keys.block(cidr))  # an unclaimed empty block goes back to the pool
        else:
            tx.put(keys.block(cidr), block.dump())


def _blocks_for(tx: Tx, addrs: list[netaddr.IPAddress]) -> dict[netaddr.IPAddress, Block]:
    """The block holding each address (found through its pool, else by scanning blocks)."""
    out: dict[netaddr.IPAddress, Block] = {}
    loaded: dict[str, Block | None] = {}
    scanned: list[Block] | None = None
    for addr in addrs:
        pool = _pool_for(tx, addr)
        cidr = str(netaddr.IPNetwork(f"{addr}/{pool.block_size}").cidr) if pool else None
        if cidr is not None and cidr not in loaded:
            data = tx.get(keys.block(cidr))
            loaded[cidr] = Block.load(data) if data else None
        block = loaded.get(cidr) if cidr else None
        if block is None:  # the pool is gone or changed: look through every block
            if scanned is None:
                scanned = [Block.load(v) for _, v in tx.list(keys.BLOCKS)]
            for candidate in scanned:
                if addr in candidate.network:
                    tx.guard(keys.block(candidate.cidr))
                    block = loaded.setdefault(candidate.cidr, candidate)
                    break
        if block is not None:
            out[addr] = block
    return out


def _items(field_name: str, value: Any) -> list[Any]:
    """A list of values: one string is one value (not its characters); a list or tuple is
    taken as it is; anything else is refused."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple, set, frozenset)):
        return list(value)
    raise ValidationError(field_name, f"{show(value)} is not allowed; use a list")
