"""The datastore contract both backends implement (etcd v3 semantics).

Every write bumps one global revision. A transaction applies all of its operations
only when every comparison holds; ``Compare(key, 0)`` means "the key does not exist".
"""

from __future__ import annotations

import abc
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class KeyValue:
    key: str
    value: str
    mod_revision: int


@dataclass(frozen=True)
class Compare:
    """Holds when ``key`` was last modified at ``mod_revision`` (0: the key is absent)."""

    key: str
    mod_revision: int


@dataclass(frozen=True)
class Put:
    key: str
    value: str


@dataclass(frozen=True)
class Delete:
    key: str


Op = Put | Delete


@dataclass(frozen=True)
class Event:
    """A change seen by a watch: ``value`` is None for a deletion."""

    key: str
    value: str | None
    revision: int

    @property
    def deleted(self) -> bool:
        return self.value is None


class Watch(abc.ABC):
    """Changes under a prefix, from a revision on, in revision order."""

    @abc.abstractmethod
    def next(self, timeout: float) -> list[Event]:
        """Wait up to ``timeout`` seconds for changes; return them (empty on time-out).

        Raises ``CompactedError`` when the start revision is no longer kept.
        """

    @abc.abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Datastore(abc.ABC):
    """A revisioned key-value store with compare-and-swap transactions and watches."""

    url: str
    #: round trips made, for benchmarks and tests: reads (get, list, read) and transactions
    reads: int = 0
    txns: int = 0

    @abc.abstractmethod
    def get(self, key: str) -> KeyValue | None: ...

    @abc.abstractmethod
    def list(self, prefix: str) -> list[KeyValue]:
        """Every key starting with ``prefix``, sorted by key."""

    @abc.abstractmethod
    def list_with_revision(self, prefix: str) -> tuple[list[KeyValue], int]:
        """``list`` plus the store revision the listing was read at (to watch from)."""

    @abc.abstractmethod
    def read(self, ranges: Sequence[str]) -> tuple[list[list[KeyValue]], int]:
        """Several reads in one consistent snapshot (one round trip), and its revision.

        A range ending in "/" lists that prefix; any other range gets that one key.
        """

    @abc.abstractmethod
    def txn(self, compares: Iterable[Compare], ops: Sequence[Op]) -> int | None:
        """Apply ``ops`` atomically if every compare holds.

        Returns the new revision, or None when a comparison failed (nothing written).
        """

    @abc.abstractmethod
    def revision(self) -> int:
        """The store's current revision."""

    @abc.abstractmethod
    def watch(self, prefix: str, start_revision: int) -> Watch:
        """Changes under ``prefix`` with revision >= ``start_revision``."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""

    # Conveniences built on the primitives.

    def put(self, key: str, value: str) -> int:
        revision = self.txn([], [Put(key, value)])
        assert revision is not None
        return revision

    def delete(self, key: str) -> bool:
        """Delete ``key``; False when it did not exist."""
        while True:
            current = self.get(key)
            if current is None:
                return False
            if self.txn([Compare(key, current.mod_revision)], [Delete(key)]) is not None:
                return True

    def __enter__(self) -> Datastore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
