"""The embedded datastore: one SQLite file (WAL), safe for many processes on one host.

Writers serialise on ``BEGIN IMMEDIATE``; readers see consistent WAL snapshots. Each
transaction bumps one global revision and records its changes in an event log, which
watches poll; the log is trimmed to the last ``EVENT_HISTORY`` revisions.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager

from ..errors import CompactedError, DatastoreMissing, DatastoreUnavailable
from .base import Compare, Datastore, Delete, Event, KeyValue, Op, Put, Watch

MEMORY = ":memory:"
EVENT_HISTORY = 10000
POLL_INTERVAL = 0.05

SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (
    key TEXT PRIMARY KEY, value TEXT NOT NULL, mod_revision INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS events (
    revision INTEGER NOT NULL, key TEXT NOT NULL, value TEXT
);
CREATE INDEX IF NOT EXISTS events_by_revision ON events (revision);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO meta VALUES ('revision', 0), ('compacted', 0);
"""


def _private(path: str) -> None:
    """Make the store file (and the -wal and -shm files SQLite makes with the same mode)
    readable by its owner only: it holds BGP passwords. A store made earlier with a wider
    mode is narrowed."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        if os.fstat(fd).st_mode & 0o077:
            os.fchmod(fd, 0o600)
    finally:
        os.close(fd)
    for suffix in ("-wal", "-shm"):
        try:
            if os.stat(path + suffix).st_mode & 0o077:
                os.chmod(path + suffix, 0o600)
        except FileNotFoundError:
            pass


def prefix_end(prefix: str) -> str:
    """The smallest string greater than every string starting with ``prefix``."""
    return prefix[:-1] + chr(ord(prefix[-1]) + 1) if prefix else "\U0010ffff"


class SqliteDatastore(Datastore):
    """``create=False`` opens only an existing store: a mistyped path is an error naming
    it, never a new empty store that every read then answers from."""

    def __init__(self, path: str, timeout: float = 30.0, create: bool = True) -> None:
        self.path = path
        self.url = f"sqlite:///{path}"
        self._lock = threading.RLock()
        if not create and path != MEMORY and not os.path.isfile(path):
            raise DatastoreMissing(f"sqlite datastore {path}: no such file; check the "
                                   "datastore URL (a first write creates it)")
        try:
            if path != MEMORY:
                parent = os.path.dirname(os.path.abspath(path))
                os.makedirs(parent, mode=0o700, exist_ok=True)
                _private(path)
            self._db = sqlite3.connect(path, timeout=timeout, isolation_level=None,
                                       check_same_thread=False)
            self._db.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
            self._enable_wal(timeout)
            self._db.execute("PRAGMA synchronous = NORMAL")
            with self._write():
                for statement in SCHEMA.strip().split(";"):
                    if statement.strip():
                        self._db.execute(statement)
        except (sqlite3.Error, OSError) as exc:
            raise DatastoreUnavailable(f"sqlite datastore {path}: {exc}") from None

    @classmethod
    def in_memory(cls) -> SqliteDatastore:
        """An empty store that lives in this process only (check mode on a new host)."""
        return cls(MEMORY)

    # -- plumbing

    def _enable_wal(self, timeout: float) -> None:
        """Switch to WAL; that pragma ignores busy_timeout when processes open a new file
        at once, so retry it until the time-out."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._db.execute("PRAGMA journal_mode = WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise DatastoreUnavailable(f"sqlite datastore {self.path}: {exc}") from None
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            else:
                self._db.execute("COMMIT")

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """A consistent snapshot for several selects."""
        with self._lock:
            try:
                self._db.execute("BEGIN")
                yield self._db
            except sqlite3.Error as exc:
                raise DatastoreUnavailable(f"sqlite datastore {self.path}: {exc}") from None
            finally:
                if self._db.in_transaction:
                    self._db.execute("COMMIT")

    def _revision(self, db: sqlite3.Connection, name: str = "revision") -> int:
        return db.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()[0]

    # -- the contract

    def get(self, key: str) -> KeyValue | None:
        self.reads += 1
        with self._read() as db:
            row = db.execute("SELECT key, value, mod_revision FROM kv WHERE key = ?",
                             (key,)).fetchone()
        return KeyValue(*row) if row else None

    def list(self, prefix: str) -> list[KeyValue]:
        return self.list_with_revision(prefix)[0]

    def list_with_revision(self, prefix: str) -> tuple[list[KeyValue], int]:
        self.reads += 1
        with self._read() as db:
            rows = db.execute(
                "SELECT key, value, mod_revision FROM kv WHERE key >= ? AND key < ? "
                "ORDER BY key", (prefix, prefix_end(prefix))).fetchall()
            revision = self._revision(db)
        return [KeyValue(*row) for row in rows], revision

    def read(self, ranges: Sequence[str]) -> tuple[list[list[KeyValue]], int]:
        self.reads += 1
        out = []
        with self._read() as db:
            for item in ranges:
                if item.endswith("/"):
                    rows = db.execute(
                        "SELECT key, value, mod_revision FROM kv WHERE key >= ? AND key < ? "
                        "ORDER BY key", (item, prefix_end(item))).fetchall()
                else:
                    rows = db.execute("SELECT key, value, mod_revision FROM kv WHERE key = ?",
                                      (item,)).fetchall()
                out.append([KeyValue(*row) for row in rows])
            revision = self._revision(db)
        return out, revision

    def revision(self) -> int:
        with self._read() as db:
            return self._revision(db)

    def txn(self, compares: Iterable[Compare], ops: Sequence[Op]) -> int | None:
        self.txns += 1
        with self._write() as db:
            for cmp in compares:
                row = db.execute("SELECT mod_revision FROM kv WHERE key = ?",
                                 (cmp.key,)).fetchone()
                if (row[0] if row else 0) != cmp.mod_revision:
                    return None
            revision = self._revision(db)
            if not ops:
                return revision
            revision += 1
            changed = False
            for op in ops:
                if isinstance(op, Put):
                    db.execute("INSERT OR REPLACE INTO kv VALUES (?, ?, ?)",
                               (op.key, op.value, revision))
                    db.execute("INSERT INTO events VALUES (?, ?, ?)",
                               (revision, op.key, op.value))
                    changed = True
                elif isinstance(op, Delete):
                    if db.execute("DELETE FROM kv WHERE key = ?", (op.key,)).rowcount:
                        db.execute("INSERT INTO events VALUES (?, ?, NULL)",
                                   (revision, op.key))
                        changed = True
            if not changed:  # as etcd: deleting nothing makes no new revision
                return revision - 1
            db.execute("UPDATE meta SET value = ? WHERE name = 'revision'", (revision,))
            if revision % 1000 == 0 and revision > EVENT_HISTORY:
                floor = revision - EVENT_HISTORY
                db.execute("DELETE FROM events WHERE revision <= ?", (floor,))
                db.execute("UPDATE meta SET value = ? WHERE name = 'compacted'", (floor,))
            return revision

    def watch(self, prefix: str, start_revision: int) -> Watch:
        return _SqliteWatch(self, prefix, start_revision)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _events_from(self, prefix: str, start: int) -> tuple[list[Event], int]:
        """Events under ``prefix`` from revision ``start``, and the revision read at."""
        with self._read() as db:
            if start <= self._revision(db, "compacted"):
                raise CompactedError(
                    f"sqlite datastore {self.path}: revision {start} is compacted")
            rows = db.execute(
                "SELECT key, value, revision FROM events WHERE revision >= ? "
                "AND key >= ? AND key < ? ORDER BY revision, rowid",
                (start, prefix, prefix_end(prefix))).fetchall()
            revision = self._revision(db)
        return [Event(*row) for row in rows], revision


class _SqliteWatch(Watch):
    def __init__(self, store: SqliteDatastore, prefix: str, start_revision: int) -> None:
        self._store = store
        self._prefix = prefix
        self._next = max(start_revision, 1)
        self._closed = False

    def next(self, timeout: float) -> list[Event]:
        deadline = time.monotonic() + timeout
        while not self._closed:
            events, revision = self._store._events_from(self._prefix, self._next)
            # Nothing under the prefix up to ``revision``: later trims cannot lose it.
            self._next = max(self._next, revision + 1)
            if events:
                return events
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            time.sleep(min(POLL_INTERVAL, remaining))
        return []

    def close(self) -> None:
        self._closed = True
