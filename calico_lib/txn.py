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
from typing import Any, TypeVar

from .datastore import Compare, Datastore, Delete, KeyValue, Put
from .errors import ConflictError, DatastoreError

R = TypeVar("R")
MAX_ATTEMPTS = 200


def dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _loads(kv: KeyValue) -> Any:
    try:
        return json.loads(kv.value)
    except ValueError:
        raise DatastoreError(f"datastore key {kv.key} holds bad JSON") from None


class Tx:
    def __init__(self, store: Datastore) -> None:
        self.store = store
        self._seen: dict[str, KeyValue | None] = {}
        self._lists: dict[str, list[str]] = {}
        self._guards: dict[str, int] = {}
        self._writes: dict[str, str | None] = {}

    def prefetch(self, keys: Iterable[str] = (), prefixes: Iterable[str] = ()) -> None:
        """Read keys and whole prefixes in one round trip; later gets and lists use them."""
        keys, prefixes = list(keys), list(prefixes)
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
        return _loads(kv) if kv else None

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

    def commit(self) -> int | None:
        if not self._writes:
            return self.store.revision() if not self._guards else self._check_only()
        compares = [Compare(k, rev) for k, rev in sorted(self._guards.items())]
        ops = [Put(k, v) if v is not None else Delete(k) for k, v in sorted(self._writes.items())]
        return self.store.txn(compares, ops)

    def _check_only(self) -> int | None:
        compares = [Compare(k, rev) for k, rev in sorted(self._guards.items())]
        return self.store.txn(compares, [])


def transact(store: Datastore, fn: Callable[[Tx], R], attempts: int = MAX_ATTEMPTS) -> R:
    """Run ``fn(tx)`` and commit; on a lost race run it again on fresh reads."""
    for attempt in range(attempts):
        tx = Tx(store)
        result = fn(tx)
        if tx.commit() is not None:
            return result
        # Back off a little, with jitter, so racing writers spread out.
        time.sleep(random.uniform(0, min(0.05, 0.001 * (attempt + 1))))
    raise ConflictError(f"gave up after {attempts} attempts: other writers kept changing "
                        "the same keys; nothing was changed")
