"""Block-affinity IP address management (Calico's design, every change one transaction).

Pools are carved into blocks (/26 and /122 by default). A host claims free blocks (host
affinity) and allocates from them first; when no free block is left it borrows free
addresses from other hosts' blocks, unless ``strict_affinity`` is set. Each address is
recorded under a handle (the endpoint id); the handle's counts are written in the same
transaction as the blocks, so a crash can never leave an address counted but unowned.

Freed addresses go to the back of the block's free list, so they are not reused at once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import netaddr

from . import keys
from .datastore import Datastore
from .errors import InUseError, PoolExhaustedError, ValidationError
from .model import IPAMConfig, IPPool, _hostname, _int, _name, parse_address, parse_network
from .txn import Tx, View, loads, transact

MAX_PER_REQUEST = 1024
RELEASE_BATCH = 32


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


# --------------------------------------------------------------------------- the IPAM


class IPAM:
    """IP address management over a datastore. Every public method is one transaction."""

    def __init__(self, store: Datastore) -> None:
        self.store = store
        # Per host, what the last assignment saw: the next one starts from it without
        # reading (every decision is guarded, so a stale view only costs a retry).
        self._views: dict[str, View] = {}

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
        _hostname("host", host)
        _name("handle", handle)
        wanted = {4: _int("ipv4", num_ipv4, 0, MAX_PER_REQUEST),
                  6: _int("ipv6", num_ipv6, 0, MAX_PER_REQUEST)}
        if not any(wanted.values()):
            raise ValidationError("ipv4", "nothing to assign; ask for at least one address")
        only = {str(parse_network("pools", p)) for p in pools} if pools is not None else None

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
            _save(tx, touched, handle, {cidr: _count(b, handle) for cidr, b in touched.items()})
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

        return transact(self.store, attempt, seed=self._views.pop(host, None),
                        on_commit=remember)

    def assign_ip(self, address: str, handle: str, host: str) -> str:
        """Assign one specific address; ``InUseError`` if it is taken."""
        addr = parse_address("ip", address)
        _name("handle", handle)
        _hostname("host", host)

        def attempt(tx: Tx) -> str:
            tx.prefetch([keys.handle(handle)], [keys.POOLS])
            pool = _pool_for(tx, addr)
            if pool is None:
                raise ValidationError("ip", f"{addr} is not in any pool; add a pool first")
            if pool.disabled:
                raise ValidationError("ip", f"{addr} is in disabled pool {pool.cidr}; "
                                            "enable the pool or pick another address")
            tx.guard(keys.pool(pool.cidr))
            cidr = str(netaddr.IPNetwork(f"{addr}/{pool.block_size}").cidr)
            data = tx.get(keys.block(cidr))
            if data is None:
                block = Block.new(cidr, host)
                tx.put(keys.affinity(host, cidr), {"state": "confirmed"})
            else:
                block = Block.load(data)
            ordinal = block.ordinal(addr)
            if ordinal in block.allocations:
                raise InUseError(f"ip: {addr} is already assigned "
                                 f"(handle {block.allocations[ordinal]})")
            block.take_ordinal(ordinal, handle)
            _save(tx, {cidr: block}, handle, {cidr: _count(block, handle)})
            return str(addr)

        return transact(self.store, attempt)

    # -- release

    def release_ips(self, addresses: Iterable[str]) -> list[str]:
        """Release addresses; returns those that were assigned (others are quietly ignored).

        Each run of ``RELEASE_BATCH`` addresses is one transaction (etcd caps the
        operations in one transaction).
        """
        addrs = [parse_address("ip", a) for a in addresses]
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
        _name("handle", handle)

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

    def reassign(self, address: str, handle: str) -> str | None:
        """Give an assigned address to ``handle`` (the Docker plugin learns the endpoint id
        only after the address was assigned). Returns the previous handle, or None when the
        address is not assigned (nothing changes)."""
        addr = parse_address("ip", address)
        _name("handle", handle)

        def attempt(tx: Tx) -> str | None:
            tx.prefetch([], [keys.POOLS])
            block = _blocks_for(tx, [addr]).get(addr)
            if block is None:
                return None
            ordinal = block.ordinal(addr)
            previous = block.allocations.get(ordinal)
            if previous is None or previous == handle:
                return previous
            block.allocations[ordinal] = handle
            _adjust_handle(tx, previous, {block.cidr: -1})
            _adjust_handle(tx, handle, {block.cidr: 1})
            _save_blocks(tx, {block.cidr: block})
            return previous

        return transact(self.store, attempt)

    def release_host_affinities(self, host: str) -> list[str]:
        """Drop ``host``'s claims: empty blocks are freed, used ones stay (unaffine)."""
        _hostname("host", host)

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
        """Per pool: its blocks (CIDR, affinity, used) and totals."""
        pools = [IPPool.from_dict(loads(kv)) for kv in self.store.list(keys.POOLS)]
        blocks = self.blocks()
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

    def check(self) -> list[Problem]:
        """Every inconsistency between pools, blocks, affinities and handles."""
        (pool_kvs, block_kvs, aff_kvs, handle_kvs), _ = self.store.read(
            [keys.POOLS, keys.BLOCKS, keys.AFFINITIES, keys.HANDLES])
        pools = [IPPool.from_dict(loads(kv)) for kv in pool_kvs]
        blocks = [Block.load(loads(kv)) for kv in block_kvs]
        problems: list[Problem] = []
        seen: dict[str, str] = {}
        counted: dict[str, dict[str, int]] = {}
        for block in blocks:
            net = block.network
            if not any(net in p.network for p in pools):
                problems.append(Problem("outside-pool", block.cidr,
                                        "block is not inside any pool"))
            ordinals = list(block.allocations) + block.unallocated
            if sorted(ordinals) != list(range(net.size)):
                problems.append(Problem("corrupt-block", block.cidr, "allocated and free "
                                        "ordinals do not cover the block exactly once"))
            for ordinal, handle in block.allocations.items():
                addr = str(block.address(ordinal))
                if addr in seen:
                    problems.append(Problem("duplicate", addr, f"allocated in {seen[addr]} "
                                            f"and {block.cidr}"))
                seen[addr] = block.cidr
                per_block = counted.setdefault(handle, {})
                per_block[block.cidr] = per_block.get(block.cidr, 0) + 1
            if block.affinity and keys.affinity(block.affinity, block.cidr) not in {
                    kv.key for kv in aff_kvs}:
                problems.append(Problem("affinity", block.cidr, f"block names host "
                                        f"{block.affinity} but that host has no claim on it"))
        block_cidrs = {b.cidr: b for b in blocks}
        for kv in aff_kvs:
            host, part = kv.key[len(keys.AFFINITIES):].split("/", 1)
            cidr = keys.cidr_from_part(part)
            if block_cidrs.get(cidr) is None or block_cidrs[cidr].affinity != host:
                problems.append(Problem("affinity", cidr, f"host {host} claims a block that "
                                        "is not affine to it"))
        recorded = {keys.last(kv.key): loads(kv).get("blocks", {}) for kv in handle_kvs}
        for handle, per_block in sorted(counted.items()):
            if handle not in recorded:
                problems.append(Problem("address-without-handle", handle,
                                        f"{sum(per_block.values())} address(es) allocated "
                                        "but no handle record"))
            elif recorded[handle] != per_block:
                problems.append(Problem("count-mismatch", handle, f"handle records "
                                        f"{recorded[handle]} but blocks hold {per_block}"))
        for handle in sorted(set(recorded) - set(counted)):
            problems.append(Problem("handle-without-address", handle,
                                    "handle record but no allocated address"))
        return problems

    def gc(self, live_handles: Iterable[str]) -> list[str]:
        """Release every handle not in ``live_handles``; returns the handles freed."""
        live = set(live_handles)
        handles = {keys.last(kv.key) for kv in self.store.list(keys.HANDLES)}
        for block in self.blocks():
            handles.update(block.allocations.values())
        dead = sorted(handles - live)
        for handle in dead:
            self._release_everywhere(handle)
        return dead

    def _release_everywhere(self, handle: str) -> None:
        """Like release_handle, but also finds addresses whose handle record is lost."""
        def attempt(tx: Tx) -> None:
            touched = {}
            for key, data in tx.list(keys.BLOCKS):
                block = Block.load(data)
                mine = [o for o, h in block.allocations.items() if h == handle]
                if mine:
                    tx.guard(key)
                    for ordinal in mine:
                        block.free(ordinal)
                    touched[block.cidr] = block
            tx.delete(keys.handle(handle))
            _save_blocks(tx, touched)
        transact(self.store, attempt)


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


def _adjust_handle(tx: Tx, handle: str, deltas: dict[str, int]) -> None:
    """Add ``deltas`` (block CIDR -> change) to a handle record; drop it when empty."""
    record = tx.get(keys.handle(handle)) or {"blocks": {}}
    counts = record.setdefault("blocks", {})
    for cidr, delta in deltas.items():
        counts[cidr] = counts.get(cidr, 0) + delta
        if counts[cidr] <= 0:
            del counts[cidr]
    if counts:
        tx.put(keys.handle(handle), {"handle": handle, "blocks": dict(sorted(counts.items()))})
    else:
        tx.delete(keys.handle(handle))


def _save(tx: Tx, touched: dict[str, Block], handle: str, totals: dict[str, int]) -> None:
    """Write the blocks and set the handle's count for each to its new total."""
    record = tx.get(keys.handle(handle)) or {"blocks": {}}
    counts = dict(record.get("blocks", {}))
    counts.update({cidr: n for cidr, n in totals.items() if n})
    tx.put(keys.handle(handle), {"handle": handle, "blocks": dict(sorted(counts.items()))})
    _save_blocks(tx, touched)


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
