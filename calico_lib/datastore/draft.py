"""A draft: a copy of a datastore's records at one revision that takes writes and keeps them.

Previews and dry runs make their change with the real ``Client`` (so the same validation and
the same transactions run) on a draft, then compare what every host renders from the copy
as it was and as it is after the change; the real datastore is never written.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence

from ..errors import CalicoError
from .base import Compare, Datastore, Delete, KeyValue, Op, Put, Watch
from .sqlite import prefix_end


class DraftDatastore(Datastore):
    """``records`` (one consistent listing, read at ``revision``) in memory; transactions
    are checked and applied as the real store would, here only."""

    def __init__(self, records: Iterable[KeyValue], revision: int, url: str = "draft") -> None:
        self.url = url
        self._kv = {kv.key: kv for kv in records}
        self._keys = sorted(self._kv)
        self._revision = revision
        #: every key a transaction put (its value) or deleted (None), last write wins
        self.writes: dict[str, str | None] = {}

    @classmethod
    def of(cls, store: Datastore, prefix: str) -> DraftDatastore:
        """A draft of everything under ``prefix`` in ``store``, read in one round trip."""
        records, revision = store.list_with_revision(prefix)
        return cls(records, revision, store.url)

    def get(self, key: str) -> KeyValue | None:
        self.reads += 1
        return self._kv.get(key)

    def list(self, prefix: str) -> list[KeyValue]:
        self.reads += 1
        return self._range(prefix)

    def _range(self, prefix: str) -> list[KeyValue]:
        start = bisect.bisect_left(self._keys, prefix)
        end = bisect.bisect_left(self._keys, prefix_end(prefix))
        return [self._kv[key] for key in self._keys[start:end]]

    def list_with_revision(self, prefix: str) -> tuple[list[KeyValue], int]:
        return self.list(prefix), self._revision

    def read(self, ranges: Sequence[str]) -> tuple[list[list[KeyValue]], int]:
        self.reads += 1
        out = []
        for item in ranges:
            if item.endswith("/"):
                out.append(self._range(item))
            else:
                kv = self._kv.get(item)
                out.append([kv] if kv is not None else [])
        return out, self._revision

    def txn(self, compares: Iterable[Compare], ops: Sequence[Op]) -> int | None:
        self.txns += 1
        for cmp in compares:
            kv = self._kv.get(cmp.key)
            if (kv.mod_revision if kv else 0) != cmp.mod_revision:
                return None
        if not ops:
            return self._revision
        self._revision += 1
        for op in ops:
            if isinstance(op, Put):
                if op.key not in self._kv:
                    bisect.insort(self._keys, op.key)
                self._kv[op.key] = KeyValue(op.key, op.value, self._revision)
                self.writes[op.key] = op.value
            elif isinstance(op, Delete) and op.key in self._kv:
                del self._kv[op.key]
                self._keys.remove(op.key)
                self.writes[op.key] = None
        return self._revision

    def revision(self) -> int:
        return self._revision

    def watch(self, prefix: str, start_revision: int) -> Watch:
        raise CalicoError("a draft datastore has no watches")
