"""``calicoctl ipam check``: every inconsistency among pools, blocks, claims (affinities),
handle records and endpoints, and the repairs that are safe without a human.

Blocks are the truth: handle records and claims are rewritten from them. Every endpoint
address must be allocated to the endpoint's handle (its id), no address may be on two
endpoints, and every allocation must belong to an endpoint, except a pending handle
younger than the grace period (Docker is creating its endpoint). What only a human can
decide is reported and never repaired: an address on two endpoints, an endpoint address
another handle holds, an allocation no endpoint uses (``calicoctl ipam gc`` frees those),
blocks outside every pool or overlapping.

A record that cannot be read is a finding too (one line naming its key); repairs that
depend on records of its kind are then held back. Every repair is its own guarded
transaction that decides again on fresh reads, so a repair planned on a stale read
changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import netaddr

from . import keys
from .errors import CalicoError
from .ipam import (
    GRACE,
    IPAM,
    Block,
    Problem,
    Release,
    State,
    _adjust_handle,
    _block_to_write,
    _save_blocks,
    handle_age,
    is_fresh,
    is_pending,
    pending_created,
)
from .model import Endpoint
from .txn import Tx, transact


@dataclass
class Repair:
    """One safe repair: what it writes (``subject``, a key) and how (``action``)."""

    kind: str  # the kind of finding it repairs
    subject: str
    action: str
    run: Callable[[], bool] = field(repr=False)  # False: changed meanwhile, nothing written
    needs: tuple[str, ...] = ()  # key prefixes whose records must all be readable


@dataclass
class Outcome:
    repair: Repair
    result: str  # "repaired", "would repair", "changed", "held", "failed"
    note: str = ""

    def __str__(self) -> str:
        if self.result in ("repaired", "would repair"):
            return f"{self.result}: {self.repair.subject}: {self.repair.action}"
        return f"not repaired: {self.repair.subject}: {self.note}"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.repair.kind, "subject": self.repair.subject,
                "action": self.repair.action, "result": self.result, "note": self.note}


@dataclass
class Audit:
    problems: list[Problem]
    repairs: list[Repair]
    state: State = field(repr=False)

    @property
    def ok(self) -> bool:
        return not self.problems


def audit(ipam: IPAM, now: float | None = None, grace: float = GRACE) -> Audit:
    """Read everything once and list the findings and the repairs they allow."""
    now = ipam.clock() if now is None else now
    state = ipam.read_state()
    found = _Findings(ipam, state, now, grace)
    found.unreadable()
    found.blocks()
    found.claims()
    found.handles()
    found.endpoints()
    return Audit(found.problems, found.repairs, state)


def repair(audit_: Audit, dry_run: bool = False) -> list[Outcome]:
    """Run (or with ``dry_run`` only describe) each repair of ``audit_``."""
    bad = [u.key for u in audit_.state.unreadable]
    out = []
    for fix in audit_.repairs:
        if fix.needs and any(k.startswith(fix.needs) for k in bad):
            out.append(Outcome(fix, "held", "a record it depends on cannot be read"))
        elif dry_run:
            out.append(Outcome(fix, "would repair"))
        else:
            try:
                done = fix.run()
            except CalicoError as exc:
                out.append(Outcome(fix, "failed", str(exc)))
                continue
            out.append(Outcome(fix, "repaired") if done else Outcome(
                fix, "changed", "changed since it was read; nothing written (check again)"))
    return out


class _Findings:
    def __init__(self, ipam: IPAM, state: State, now: float, grace: float) -> None:
        self.ipam, self.state, self.now, self.grace = ipam, state, now, grace
        self.problems: list[Problem] = []
        self.repairs: list[Repair] = []
        self.bad_keys = {u.key for u in state.unreadable}
        # addresses inside blocks that cannot be read: nothing is said about them
        self.unknown = [netaddr.IPNetwork(keys.cidr_from_part(keys.last(k)))
                        for k in self.bad_keys if k.startswith(keys.BLOCKS)
                        and _is_cidr(keys.cidr_from_part(keys.last(k)))]
        self.holdings = state.holdings()

    def add(self, kind: str, subject: str, detail: str, fix: Repair | None = None) -> None:
        self.problems.append(Problem(kind, subject, detail))
        if fix is not None:
            self.repairs.append(fix)

    def unreadable(self) -> None:
        for item in sorted(self.state.unreadable, key=lambda u: u.key):
            self.add("unreadable", item.key, item.reason)

    # ------------------------------------------------------------------ blocks, claims

    def blocks(self) -> None:
        seen: dict[str, str] = {}
        for cidr, block in sorted(self.state.blocks.items()):
            key = keys.block(cidr)
            if not any(block.network in p.network for p in self.state.pools):
                self.add("outside-pool", key, "block is not inside any pool")
            if sorted(list(block.allocations) + block.unallocated) != list(
                    range(block.network.size)):
                self.add("corrupt-block", key, "allocated and free ordinals do not cover "
                                               "the block exactly once")
            for ordinal in sorted(block.allocations):
                addr = str(block.address(ordinal))
                if addr in seen:
                    self.add("duplicate", key, f"address {addr} is also allocated in "
                                               f"{keys.block(seen[addr])}")
                seen.setdefault(addr, cidr)

    def claims(self) -> None:
        for cidr, block in sorted(self.state.blocks.items()):
            claim = keys.affinity(block.affinity, cidr) if block.affinity else None
            if claim and claim not in self.state.affinities and claim not in self.bad_keys:
                self.add("affinity-missing", keys.block(cidr), f"block is affine to host "
                         f"{block.affinity} but the claim {claim} is missing",
                         Repair("affinity-missing", claim, "write the claim the block names",
                                _add_claim(self.ipam, block.affinity, cidr)))
        for key, (host, cidr) in sorted(self.state.affinities.items()):
            block = self.state.blocks.get(cidr)
            if block is None and keys.block(cidr) in self.state.block_keys:
                continue  # the block cannot be read: undecided
            if block is None or block.affinity != host:
                now = f"is affine to {block.affinity}" if block and block.affinity else (
                    "has no affinity" if block else "does not exist")
                self.add("affinity-stale", key, f"host {host} claims block {cidr}, which "
                         f"{now}", Repair("affinity-stale", key, "delete the claim (the "
                                          "block says otherwise)",
                                          _drop_claim(self.ipam, host, cidr)))

    # ------------------------------------------------------------------ handle records

    def handles(self) -> None:
        counted = {h: {c: len(a) for c, a in per_block.items()}
                   for h, per_block in self.holdings.items()}
        for handle in sorted(set(counted) | set(self.state.handles)):
            key = keys.handle(handle)
            if key in self.bad_keys:
                continue
            record = self.state.handles.get(handle)
            per_block = counted.get(handle, {})
            fix = Repair("", key, "rewrite the record from the blocks",
                         _rewrite_handle(self.ipam, handle, self._host_hint(handle)),
                         needs=(keys.BLOCKS,))
            if record is None:
                fix.kind = "address-without-handle"
                self.add(fix.kind, key, f"{sum(per_block.values())} address(es) allocated "
                         "but no handle record", fix)
            elif not per_block:
                fix.kind, fix.action = "handle-without-address", "delete the record"
                self.add(fix.kind, key, "handle record but no allocated address", fix)
            elif record.get("blocks") != per_block:
                fix.kind = "count-mismatch"
                self.add(fix.kind, key, f"handle records {record.get('blocks')} but blocks "
                         f"hold {per_block}", fix)

    def _host_hint(self, handle: str) -> str | None:
        hosts = {e.host for e in self.state.endpoints.values() if e.id == handle}
        return hosts.pop() if len(hosts) == 1 else None

    # ------------------------------------------------------------------ endpoints

    def endpoints(self) -> None:
        owner: dict[str, str] = {}
        for handle, per_block in self.holdings.items():
            for addrs in per_block.values():
                for addr in addrs:
                    owner.setdefault(addr, handle)
        users: dict[str, list[str]] = {}
        for key, endpoint in sorted(self.state.endpoints.items()):
            for addr in endpoint.addresses:
                users.setdefault(addr, []).append(key)
        for addr, used_by in sorted(users.items()):
            if len(used_by) > 1:
                self.add("address-on-two-endpoints", used_by[0], f"address {addr} is also "
                         f"on {', '.join(used_by[1:])}")
        for key, endpoint in sorted(self.state.endpoints.items()):
            for addr in endpoint.addresses:
                held = owner.get(addr)
                if held == endpoint.id:
                    continue
                if held is not None:
                    self.add("endpoint-address-taken", key, f"address {addr} is allocated "
                             f"to handle {held}, not to the endpoint's handle {endpoint.id}")
                    continue
                ip = netaddr.IPAddress(addr)
                if any(ip in net for net in self.unknown):
                    continue  # its block cannot be read: undecided
                fix = None
                if len(users[addr]) == 1 and any(ip in p.network for p in self.state.pools):
                    fix = Repair("endpoint-address-free", key, f"allocate {addr} to handle "
                                 f"{endpoint.id}", _allocate(self.ipam, key, endpoint, addr),
                                 needs=(keys.ENDPOINTS,))
                where = "" if fix or len(users[addr]) > 1 else " (and it is in no pool)"
                self.add("endpoint-address-free", key, f"address {addr} is not allocated"
                         f"{where}", fix)
        self._allocations()

    def _allocations(self) -> None:
        used = self.state.endpoint_ids()
        on_endpoint: dict[str, set[str]] = {}
        for endpoint in self.state.endpoints.values():
            on_endpoint.setdefault(endpoint.id, set()).update(endpoint.addresses)
        unread_ids = {keys.last(k) for k in self.bad_keys if k.startswith(keys.ENDPOINTS)}
        for handle, per_block in sorted(self.holdings.items()):
            key = keys.handle(handle)
            addrs = [a for cidr in sorted(per_block) for a in per_block[cidr]]
            if handle in self.state.tunnels:
                other = [a for a in addrs if a != self.state.tunnels[handle]]
                if other:
                    self.add("address-not-on-node", key, f"{', '.join(other)} allocated to "
                             f"tunnel handle {handle} but not its node's tunnel address; "
                             "its agent releases it")
                continue
            if handle in used:
                extra = [a for a in addrs if a not in on_endpoint.get(handle, set())]
                if extra and handle not in unread_ids:
                    self.add("address-not-on-endpoint", key, f"{', '.join(extra)} allocated "
                             f"to handle {handle} but on none of its endpoints; release "
                             "with `calicoctl ipam release --ip`")
                continue
            record = self.state.handles.get(handle)
            if not is_pending(handle):
                self.add("allocation-without-endpoint", key, f"{_few(addrs)} allocated but "
                         f"no endpoint has id {handle}; free with `calicoctl ipam gc`")
                continue
            if is_fresh(handle, record, self.now, self.grace):
                continue
            age = handle_age(handle, record, self.now)
            since = "for an unknown time" if age is None else f"for {int(age)} s"
            plan = Release(handle, addrs, sorted(per_block), record, "stale pending")
            fix = Repair("stale-pending", key, f"release {', '.join(addrs)}",
                         lambda plan=plan: self.ipam.release(plan) is not None,
                         needs=(keys.BLOCKS,))
            self.add("stale-pending", key, f"{_few(addrs)} pending {since}, longer than the "
                     f"grace period of {int(self.grace)} s: Docker never made the endpoint",
                     None if key in self.bad_keys else fix)


def _few(addrs: list[str]) -> str:
    shown = ", ".join(addrs[:4]) + (", ..." if len(addrs) > 4 else "")
    return f"{len(addrs)} address(es) ({shown})"


def _is_cidr(text: str) -> bool:
    try:
        netaddr.IPNetwork(text)
    except (netaddr.AddrFormatError, ValueError, TypeError):
        return False
    return True


# ---------------------------------------------------------------------- repairs
# Each decides again inside its own transaction: what it reads is guarded, and when the
# finding no longer holds it writes nothing and says so.


def _add_claim(ipam: IPAM, host: str, cidr: str) -> Callable[[], bool]:
    def attempt(tx: Tx) -> bool:
        block = tx.get(keys.block(cidr))
        if block is None or block.get("affinity") != host:
            return False
        if tx.get(keys.affinity(host, cidr)) is not None:
            return False
        tx.put(keys.affinity(host, cidr), {"state": "confirmed"})
        return True
    return lambda: transact(ipam.store, attempt)


def _drop_claim(ipam: IPAM, host: str, cidr: str) -> Callable[[], bool]:
    def attempt(tx: Tx) -> bool:
        if tx.get(keys.affinity(host, cidr)) is None:
            return False
        block = tx.get(keys.block(cidr))
        if block is not None and block.get("affinity") == host:
            return False
        tx.delete(keys.affinity(host, cidr))
        return True
    return lambda: transact(ipam.store, attempt)


def _rewrite_handle(ipam: IPAM, handle: str, host: str | None) -> Callable[[], bool]:
    def attempt(tx: Tx) -> bool:
        counts: dict[str, int] = {}
        for key, data in tx.list(keys.BLOCKS):
            block = Block.load(data)
            mine = sum(1 for owner in block.allocations.values() if owner == handle)
            if mine:
                tx.guard(key)  # the counts hold only while these blocks stay as read
                counts[block.cidr] = mine
        record = tx.get(keys.handle(handle))
        if not counts:
            if record is None:
                return False
            tx.delete(keys.handle(handle))
            return True
        if record is not None and record.get("blocks") == counts:
            return False
        new: dict[str, Any] = {"handle": handle, "blocks": dict(sorted(counts.items()))}
        kept_host = (record or {}).get("host", host)
        created = (record or {}).get("created", pending_created(handle))
        if kept_host is not None:
            new["host"] = kept_host
        if created is not None:
            new["created"] = created
        tx.put(keys.handle(handle), new)
        return True
    return lambda: transact(ipam.store, attempt)


def _allocate(ipam: IPAM, key: str, endpoint: Endpoint, addr: str) -> Callable[[], bool]:
    ip = netaddr.IPAddress(addr)

    def attempt(tx: Tx) -> bool:
        data = tx.get(key)
        if data is None or addr not in Endpoint.from_dict(data).addresses:
            return False
        block, _ = _block_to_write(tx, {}, ip, endpoint.host)
        ordinal = block.ordinal(ip)
        if ordinal in block.allocations:
            return False
        block.take_ordinal(ordinal, endpoint.id)
        _adjust_handle(tx, endpoint.id, {block.cidr: 1}, endpoint.host, ipam.now())
        _save_blocks(tx, {block.cidr: block})
        return True
    return lambda: transact(ipam.store, attempt)
