"""Optimistic transactions over a Datastore: read, decide, commit only if nothing changed.

A ``Tx`` remembers the revision of every key it read (as a guard) and every write it
plans; ``commit`` sends them as one datastore transaction. ``transact`` reruns a function
with a fresh ``Tx`` until its commit succeeds, so a lost race is retried, never half-applied.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from .datastore import Compare, Datastore, Delete, KeyValue, Put
from .errors import CalicoError, ConflictError, DatastoreError
from .records import RecordError, load_json

R = TypeVar("R")
MAX_ATTEMPTS = 200


def dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def loads(kv: KeyValue) -> Any:
    """A stored JSON value; bad JSON is a DatastoreError naming the key."""
    try:
        return load_json(kv)
    except RecordError:
        raise DatastoreError(f"datastore key {kv.key} holds bad JSON") from None


@dataclass
class View:
    """What a committed Tx knew: keys at their revisions and prefix listings.

    Seeding the next Tx with it saves its reads; every decision made from it is still
    guarded, so a stale view only costs a failed commit and a fresh retry.
    """

    seen: dict[str, KeyValue | None] = field(default_factory=dict)
    lists: dict[str, list[str]] = field(default_factory=dict)


class Tx:
    def __init__(self, store: Datastore, seed: View | None = None) -> None:
        self.store = store
        self.seeded = seed is not None
        self._seen: dict[str, KeyValue | None] = dict(seed.seen) if seed else {}
        self._lists: dict[str, list[str]] = (
            {k: list(v) for k, v in seed.lists.items()} if seed else {})
        self._guards: dict[str, int] = {}
        self._writes: dict[str, str | None] = {}

    def prefetch(self, keys: Iterable[str] = (), prefixes: Iterable[str] = ()) -> None:
        """Read keys and whole prefixes in one round trip; later gets and lists use them."""
        keys = [k for k in keys if k not in self._seen]
        prefixes = [p for p in prefixes if p not in self._lists]
        if not keys and not prefixes:
            return
        results, _ = self.store.read(keys + prefixes)
        for key, kvs in zip(keys, results[:len(keys)], strict=True):
            self._seen[key] = kvs[0] if kvs else None
        for prefix, kvs in zip(prefixes, results[len(keys):], strict=True):
            self._lists[prefix] = [kv.key for kv in kvs]
            for kv in kvs:
                self._seen.setdefault(kv.key, kv)

    def get(self, key: str, guard: bool = True) -> Any | None:
        """The value of ``key`` (a fresh copy); with ``guard`` the commit needs it unchanged."""
        if key in self._writes:
            text = self._writes[key]
            return None if text is None else json.loads(text)
        if key not in self._seen:
            self._seen[key] = self.store.get(key)
        kv = self._seen[key]
        if guard:
            self._guards[key] = kv.mod_revision if kv else 0
        return loads(kv) if kv else None

    def list(self, prefix: str) -> list[tuple[str, Any]]:
        """Every (key, value) under ``prefix``, including this Tx's own writes; not guarded."""
        if prefix not in self._lists:
            kvs = self.store.list(prefix)
            self._lists[prefix] = [kv.key for kv in kvs]
            for kv in kvs:
                self._seen.setdefault(kv.key, kv)
        keys = set(self._lists[prefix]) | {k for k in self._writes if k.startswith(prefix)}
        out = []
        for key in sorted(keys):
            value = self.get(key, guard=False)
            if value is not None:
                out.append((key, value))
        return out

    def guard(self, key: str) -> None:
        """Commit only if ``key`` is unchanged since it was read (absent stays absent)."""
        self.get(key, guard=True)

    def assume_absent(self, key: str) -> None:
        """Take ``key`` as absent without reading it (a guard checks it at commit)."""
        self._seen.setdefault(key, None)

    def require_absent(self, key: str) -> None:
        """Commit only if ``key`` does not exist then (whatever was read before)."""
        self._guards[key] = 0

    def put(self, key: str, value: Any) -> None:
        self._writes[key] = dumps(value)

    def delete(self, key: str) -> None:
        self._writes[key] = None

    @property
    def writes(self) -> dict[str, str | None]:
        return dict(self._writes)

    def view_after(self, revision: int, keep: Callable[[str], bool]) -> View:
        """This Tx's knowledge once committed at ``revision``, limited to keys ``keep``s."""
        seen = {k: v for k, v in self._seen.items() if keep(k)}
        for key, text in self._writes.items():
            if keep(key):
                seen[key] = None if text is None else KeyValue(key, text, revision)
        lists = {}
        for prefix, names in self._lists.items():
            if keep(prefix):
                current = set(names) | {k for k in self._writes if k.startswith(prefix)}
                lists[prefix] = sorted(k for k in current
                                       if self._writes.get(k, "") is not None)
        return View(seen, lists)

    def commit(self) -> int | None:
        if not self._writes:
            return self.store.revision() if not self._guards else self._check_only()
        compares = [Compare(k, rev) for k, rev in sorted(self._guards.items())]
        ops = [Put(k, v) if v is not None else Delete(k) for k, v in sorted(self._writes.items())]
        return self.store.txn(compares, ops)

    def _check_only(self) -> int | None:
        compares = [Compare(k, rev) for k, rev in sorted(self._guards.items())]
        return self.store.txn(compares, [])


def transact(store: Datastore, fn: Callable[[Tx], R], attempts: int = MAX_ATTEMPTS,
             seed: View | None = None,
             on_commit: Callable[[Tx, int], None] | None = None) -> R:
    """Run ``fn(tx)`` and commit; on a lost race run it again on fresh reads.

    With ``seed`` the first attempt starts from that view instead of reading; if it fails
    or raises, the next attempt reads afresh, so only fresh reads can raise.
    """
    for attempt in range(attempts):
        tx = Tx(store, seed if attempt == 0 else None)
        try:
            result = fn(tx)
        except CalicoError:
            if tx.seeded:
                continue
            raise
        revision = tx.commit()
        if revision is not None:
            if on_commit is not None:
                on_commit(tx, revision)
            return result
        if tx.seeded:
            continue
        # Back off a little, with jitter, so racing writers spread out.
        time.sleep(random.uniform(0, min(0.05, 0.001 * (attempt + 1))))
    raise ConflictError(f"gave up after {attempts} attempts: other writers kept changing "
                        "the same keys; nothing was changed")
