"""The Datastore contract (calico_lib/datastore/base.py), run on both backends.

Every test that takes ``datastore`` or ``datastore_url`` runs twice: on a fresh SQLite
file and on the session's etcd server (wiped before each test). etcd revisions keep
growing across tests, so tests only compare revisions with ones they read themselves.
"""

from __future__ import annotations

import json
import multiprocessing
import threading
import time
import urllib.request
from collections.abc import Callable

import pytest

from calico_lib.datastore import (
    DEFAULT_URL,
    Compare,
    Datastore,
    Delete,
    Event,
    KeyValue,
    Put,
    Watch,
    open_datastore,
    resolve_url,
)
from calico_lib.errors import CompactedError, DatastoreUnavailable, ValidationError
from tests.etcd_server import EtcdServer

# --------------------------------------------------------------------------- helpers


def collect(watch: Watch, count: int, timeout: float = 5.0) -> list[Event]:
    """Events from ``watch`` until ``count`` arrived or ``timeout`` passed."""
    events: list[Event] = []
    deadline = time.monotonic() + timeout
    while len(events) < count:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        events.extend(watch.next(min(remaining, 1.0)))
    return events


def cas_increment(store: Datastore, key: str) -> int:
    """Add one to the counter at ``key`` with compare-and-swap; return the conflicts seen."""
    conflicts = 0
    while True:
        current = store.get(key)
        value = int(current.value) if current else 0
        compare = Compare(key, current.mod_revision if current else 0)
        if store.txn([compare], [Put(key, str(value + 1))]) is not None:
            return conflicts
        conflicts += 1


def _cas_worker(url: str, key: str, count: int, barrier, results) -> None:
    """A child process: open its own datastore, then ``count`` CAS increments."""
    try:
        barrier.wait(timeout=60)  # every child opens and writes at the same time
        store = open_datastore(url)
        try:
            for _ in range(count):
                cas_increment(store, key)
        finally:
            store.close()
        results.put(("ok", count))
    except BaseException as exc:  # reported to the parent, which fails the test
        results.put(("error", f"{type(exc).__name__}: {exc}"))


def run_cas_processes(url: str, key: str, processes: int, count: int) -> list[tuple]:
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(processes)
    results = ctx.Queue()
    procs = [ctx.Process(target=_cas_worker, args=(url, key, count, barrier, results))
             for _ in range(processes)]
    for proc in procs:
        proc.start()
    try:
        outcomes = [results.get(timeout=90) for _ in procs]
    finally:
        for proc in procs:
            proc.join(timeout=30)
            if proc.is_alive():
                proc.kill()
                proc.join()
    return outcomes


def assert_one_line(exc: BaseException) -> str:
    text = str(exc)
    assert text and "\n" not in text, repr(text)
    return text


# --------------------------------------------------------------------------- reads and writes


def test_get_missing_key_is_none(datastore: Datastore) -> None:
    assert datastore.get("/test/missing") is None
    assert datastore.list("/test/") == []


def test_put_then_get(datastore: Datastore) -> None:
    revision = datastore.put("/test/k", "v1")
    assert datastore.get("/test/k") == KeyValue("/test/k", "v1", revision)
    assert datastore.revision() == revision
    # an overwrite moves mod_revision on
    revision2 = datastore.put("/test/k", '{"json": "ünïcode"}')
    assert revision2 > revision
    assert datastore.get("/test/k") == KeyValue("/test/k", '{"json": "ünïcode"}', revision2)


def test_revisions_strictly_increase(datastore: Datastore) -> None:
    start = datastore.revision()
    revisions = [datastore.put(f"/test/r/{i % 3}", str(i)) for i in range(10)]
    assert revisions[0] > start
    assert all(a < b for a, b in zip(revisions, revisions[1:], strict=False))
    assert datastore.revision() == revisions[-1]
    assert datastore.get("/test/r/0") == KeyValue("/test/r/0", "9", revisions[9])


LIST_KEYS = ["/test/a/2", "/test/ab", "/test/a/sub/x", "/test/a", "/test/a0", "/test/a.x",
             "/test/a/1", "/test/b/1", "/other/a/1"]


def test_list_prefix_sorted_and_bounded(datastore: Datastore) -> None:
    revisions = {key: datastore.put(key, key.upper()) for key in LIST_KEYS}
    listed = datastore.list("/test/a/")
    assert [kv.key for kv in listed] == ["/test/a/1", "/test/a/2", "/test/a/sub/x"]
    assert listed == [KeyValue(k, k.upper(), revisions[k]) for k in
                      ("/test/a/1", "/test/a/2", "/test/a/sub/x")]
    # without the trailing slash it is a plain string prefix, still sorted by key
    assert [kv.key for kv in datastore.list("/test/a")] == [
        "/test/a", "/test/a.x", "/test/a/1", "/test/a/2", "/test/a/sub/x", "/test/a0",
        "/test/ab"]
    assert [kv.key for kv in datastore.list("/test/")] == sorted(
        k for k in LIST_KEYS if k.startswith("/test/"))
    assert datastore.list("/test/none/") == []


def test_list_with_revision(datastore: Datastore) -> None:
    kvs, revision = datastore.list_with_revision("/test/")
    assert kvs == [] and revision == datastore.revision()
    datastore.put("/test/x/1", "a")
    last = datastore.put("/other/1", "b")  # outside the prefix: still the store revision
    kvs, revision = datastore.list_with_revision("/test/x/")
    assert [kv.key for kv in kvs] == ["/test/x/1"]
    assert revision == last == datastore.revision()


def test_read_mixes_keys_and_prefixes_in_order(datastore: Datastore) -> None:
    for key in ("/test/p/2", "/test/p/1", "/test/one", "/test/pq", "/test/q/1"):
        datastore.put(key, key)
    results, revision = datastore.read(
        ["/test/q/", "/test/one", "/test/missing", "/test/p/", "/test/p/1", "/test/none/"])
    assert revision == datastore.revision()
    assert [[kv.key for kv in result] for result in results] == [
        ["/test/q/1"], ["/test/one"], [], ["/test/p/1", "/test/p/2"], ["/test/p/1"], []]
    assert results[1][0].value == "/test/one"
    assert all(kv.mod_revision <= revision for result in results for kv in result)


def test_read_is_one_snapshot(datastore: Datastore) -> None:
    """A writer updates three keys together; every read sees them all at one version."""
    keys = ["/test/snap/a", "/test/snap/b", "/test/single"]
    datastore.txn([], [Put(k, "0") for k in keys])
    done = threading.Event()
    errors: list[BaseException] = []

    def writer() -> None:  # its own connection, so the reads really race the writes
        try:
            with open_datastore(datastore.url) as other:
                for n in range(1, 100):
                    other.txn([], [Put(k, str(n)) for k in keys])
        except BaseException as exc:
            errors.append(exc)
        finally:
            done.set()

    thread = threading.Thread(target=writer)
    thread.start()
    seen = set()
    try:
        while not done.is_set():
            (snap, single), revision = datastore.read(["/test/snap/", "/test/single"])
            kvs = snap + single
            assert [kv.key for kv in kvs] == keys
            assert len({kv.value for kv in kvs}) == 1, kvs
            assert len({kv.mod_revision for kv in kvs}) == 1, kvs
            assert kvs[0].mod_revision <= revision
            seen.add(kvs[0].value)
    finally:
        thread.join()
    assert not errors
    assert datastore.get("/test/single").value == "99"


# --------------------------------------------------------------------------- transactions


def test_txn_create_if_absent(datastore: Datastore) -> None:
    revision = datastore.txn([Compare("/test/c", 0)], [Put("/test/c", "first")])
    assert revision is not None
    assert datastore.get("/test/c") == KeyValue("/test/c", "first", revision)
    assert datastore.txn([Compare("/test/c", 0)], [Put("/test/c", "second")]) is None
    assert datastore.get("/test/c") == KeyValue("/test/c", "first", revision)
    assert datastore.revision() == revision
    # after a delete the key is absent again
    assert datastore.delete("/test/c") is True
    assert datastore.txn([Compare("/test/c", 0)], [Put("/test/c", "third")]) is not None
    assert datastore.get("/test/c").value == "third"


def test_txn_compare_mod_revision(datastore: Datastore) -> None:
    first = datastore.put("/test/m", "1")
    second = datastore.put("/test/m", "2")
    assert datastore.txn([Compare("/test/m", first)], [Put("/test/m", "stale")]) is None
    assert datastore.txn([Compare("/test/m", 0)], [Put("/test/m", "stale")]) is None
    assert datastore.get("/test/m") == KeyValue("/test/m", "2", second)
    third = datastore.txn([Compare("/test/m", second)], [Put("/test/m", "3")])
    assert third is not None and third > second
    assert datastore.get("/test/m") == KeyValue("/test/m", "3", third)


def test_failed_txn_writes_nothing(datastore: Datastore) -> None:
    r1 = datastore.put("/test/f/1", "one")
    r2 = datastore.put("/test/f/2", "two")
    before = datastore.revision()
    # the first compare holds, the second does not: nothing at all may be applied
    result = datastore.txn(
        [Compare("/test/f/1", r1), Compare("/test/f/2", r1)],
        [Put("/test/f/1", "changed"), Delete("/test/f/2"), Put("/test/f/3", "new")])
    assert result is None
    assert datastore.get("/test/f/1") == KeyValue("/test/f/1", "one", r1)
    assert datastore.get("/test/f/2") == KeyValue("/test/f/2", "two", r2)
    assert datastore.get("/test/f/3") is None
    assert datastore.revision() == before
    with datastore.watch("/test/f/", before + 1) as watch:
        assert watch.next(0.3) == []


def test_txn_applies_every_op_at_one_revision(datastore: Datastore) -> None:
    datastore.put("/test/t/old1", "x")
    datastore.put("/test/t/old2", "y")
    datastore.put("/test/t/keep", "z")
    before = datastore.revision()
    revision = datastore.txn(
        [Compare("/test/t/new1", 0)],
        [Put("/test/t/new1", "a"), Put("/test/t/new2", "b"), Put("/test/t/keep", "z2"),
         Delete("/test/t/old1"), Delete("/test/t/old2")])
    assert revision == before + 1
    assert datastore.revision() == revision
    assert datastore.list("/test/t/") == [
        KeyValue("/test/t/keep", "z2", revision),
        KeyValue("/test/t/new1", "a", revision),
        KeyValue("/test/t/new2", "b", revision),
    ]
    with datastore.watch("/test/t/", revision) as watch:
        events = collect(watch, 5)
    assert {e.revision for e in events} == {revision}
    assert sorted((e.key, e.value) for e in events) == [
        ("/test/t/keep", "z2"), ("/test/t/new1", "a"), ("/test/t/new2", "b"),
        ("/test/t/old1", None), ("/test/t/old2", None)]


def test_delete(datastore: Datastore) -> None:
    datastore.put("/test/d", "x")
    datastore.put("/test/d/child", "y")
    assert datastore.delete("/test/d") is True
    assert datastore.get("/test/d") is None
    assert datastore.get("/test/d/child") is not None  # a delete removes one key only
    assert datastore.delete("/test/d") is False
    assert datastore.delete("/test/never") is False


# --------------------------------------------------------------------------- watches


def test_watch_replays_past_events_for_its_prefix(datastore: Datastore) -> None:
    start = datastore.put("/test/before", "not watched") + 1
    r1 = datastore.put("/test/w/a", "1")
    datastore.put("/test/wx", "shares a string prefix only")
    datastore.put("/test/other/a", "other prefix")
    r2 = datastore.put("/test/w/b", "2")
    r3 = datastore.txn([], [Delete("/test/w/a")])
    r4 = datastore.put("/test/w/a", "again")
    r5 = datastore.txn([], [Delete("/test/w/b"), Put("/test/w/c/deep", "3")])
    expected = [
        Event("/test/w/a", "1", r1),
        Event("/test/w/b", "2", r2),
        Event("/test/w/a", None, r3),
        Event("/test/w/a", "again", r4),
    ]
    with datastore.watch("/test/w/", start) as watch:
        events = collect(watch, 6)
        assert watch.next(0.2) == []  # nothing more
    assert events[:4] == expected
    # the last transaction's two events, in either order within the revision
    assert sorted(events[4:], key=lambda e: e.key) == [
        Event("/test/w/b", None, r5), Event("/test/w/c/deep", "3", r5)]
    assert [e.deleted for e in events[:4]] == [False, False, True, False]
    # a later start revision skips the earlier events
    with datastore.watch("/test/w/", r3) as watch:
        assert collect(watch, 4)[:2] == expected[2:]


def test_watch_sees_new_writes_and_times_out(datastore: Datastore) -> None:
    with datastore.watch("/test/live/", datastore.revision() + 1) as watch:
        began = time.monotonic()
        assert watch.next(0.5) == []
        assert 0.3 <= time.monotonic() - began < 3.0

        revision = datastore.put("/test/live/1", "one")
        datastore.put("/test/elsewhere", "ignored")
        assert collect(watch, 1) == [Event("/test/live/1", "one", revision)]

        # a write made while next() is blocked wakes it up
        timer = threading.Timer(0.3, datastore.put, ("/test/live/2", "two"))
        timer.start()
        try:
            began = time.monotonic()
            events = watch.next(10.0)
            waited = time.monotonic() - began
        finally:
            timer.join()
        assert [(e.key, e.value, e.deleted) for e in events] == [("/test/live/2", "two", False)]
        assert waited < 5.0

        datastore.delete("/test/live/1")
        (event,) = collect(watch, 1)
        assert event.key == "/test/live/1" and event.value is None and event.deleted
        assert event.revision == datastore.revision()


def test_watch_close_is_idempotent(datastore: Datastore) -> None:
    watch = datastore.watch("/test/c/", datastore.revision() + 1)
    began = time.monotonic()
    watch.close()
    watch.close()
    assert time.monotonic() - began < 4.0
    datastore.put("/test/c/1", "after close")
    assert watch.next(0.2) == []
    with datastore.watch("/test/c/", datastore.revision()) as other:  # closes on exit
        pass
    other.close()


# --------------------------------------------------------------------------- concurrency


def test_threads_cas_counter(datastore: Datastore) -> None:
    threads, per_thread = 4, 50
    errors: list[BaseException] = []
    conflicts = []

    def work() -> None:
        try:
            conflicts.append(sum(cas_increment(datastore, "/test/counter")
                                 for _ in range(per_thread)))
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert not errors, errors
    assert len(conflicts) == threads
    assert datastore.get("/test/counter").value == str(threads * per_thread)


@pytest.mark.slow
def test_processes_cas_counter(datastore: Datastore, datastore_url: str) -> None:
    processes, per_process = 4, 50
    datastore.put("/test/other", "x")  # the store exists before the children open it
    outcomes = run_cas_processes(datastore_url, "/test/counter", processes, per_process)
    assert outcomes == [("ok", per_process)] * processes
    assert datastore.get("/test/counter").value == str(processes * per_process)


@pytest.mark.slow
def test_sqlite_many_processes_never_locked(tmp_path) -> None:
    """Eight processes write one file at once: no "database is locked", no lost update."""
    url = "sqlite:///" + str(tmp_path / "busy.db")
    open_datastore(url).close()  # created once, as calicoctl/the plugin would find it
    outcomes = run_cas_processes(url, "/test/counter", 8, 25)
    errors = [o for o in outcomes if o[0] != "ok"]
    assert not any("locked" in str(o) for o in errors), errors
    assert not errors
    with open_datastore(url) as store:
        assert store.get("/test/counter").value == str(8 * 25)


@pytest.mark.slow
def test_sqlite_many_processes_open_new_file_at_once(tmp_path) -> None:
    """Eight processes open one brand-new file at the same moment and all write."""
    url = "sqlite:///" + str(tmp_path / "new.db")
    outcomes = run_cas_processes(url, "/test/counter", 8, 5)
    assert outcomes == [("ok", 5)] * 8
    with open_datastore(url) as store:
        assert store.get("/test/counter").value == str(8 * 5)


# --------------------------------------------------------------------------- compaction


def test_sqlite_event_log_is_trimmed(tmp_path, monkeypatch) -> None:
    from calico_lib.datastore import sqlite

    monkeypatch.setattr(sqlite, "EVENT_HISTORY", 10)
    with open_datastore("sqlite:///" + str(tmp_path / "trim.db")) as store:
        for i in range(1100):
            store.put(f"/test/k/{i % 7}", str(i))
        assert store.revision() == 1100
        # the trim ran at revision 1000 and kept revisions 991..1000 (and everything later)
        for start in (1, 990):
            with store.watch("/test/", start) as watch, pytest.raises(CompactedError) as info:
                watch.next(1.0)
            assert_one_line(info.value)
        with store.watch("/test/", 991) as watch:
            events = collect(watch, 110)
        assert [e.revision for e in events] == list(range(991, 1101))
        assert events[-1] == Event("/test/k/0", "1099", 1100)  # 1099 % 7 == 0
        # reads are not affected by the trim
        assert len(store.list("/test/k/")) == 7


def test_sqlite_quiet_watch_survives_trim(tmp_path, monkeypatch) -> None:
    """A watch polled now and then is not compacted by many writes under other prefixes."""
    from calico_lib.datastore import sqlite

    monkeypatch.setattr(sqlite, "EVENT_HISTORY", 200)  # more than the polling gap
    with open_datastore("sqlite:///" + str(tmp_path / "quiet.db")) as store:
        with store.watch("/test/quiet/", store.revision() + 1) as watch:
            for chunk in range(12):
                assert watch.next(0) == []  # caught up: nothing under the prefix
                for i in range(100):
                    store.put("/test/busy", str(chunk * 100 + i))
            assert store.revision() == 1200  # trimmed at 1000, to 801 and later
            revision = store.put("/test/quiet/k", "v")
            assert collect(watch, 1) == [Event("/test/quiet/k", "v", revision)]


@pytest.mark.etcd
def test_etcd_compacted_watch() -> None:
    """On etcd too, a watch below the compacted revision raises CompactedError."""
    with EtcdServer() as server, open_datastore(server.url) as store:
        for i in range(5):
            store.put("/test/k", str(i))
        revision = store.revision()
        body = json.dumps({"revision": str(revision), "physical": True}).encode()
        request = urllib.request.Request(
            f"http://{server.host}:{server.port}/v3/kv/compaction", data=body, method="POST")
        urllib.request.urlopen(request, timeout=10).close()
        watch = store.watch("/test/", 2)
        try:
            with pytest.raises(CompactedError):
                collect(watch, 1)
        finally:
            watch.close()
        with store.watch("/test/", revision + 1) as watch:
            store.put("/test/k", "new")
            assert [e.value for e in collect(watch, 1)] == ["new"]


# --------------------------------------------------------------------------- etcd failures


def _timed(call: Callable[[], object]) -> tuple[BaseException, float]:
    began = time.monotonic()
    with pytest.raises(DatastoreUnavailable) as info:
        call()
    return info.value, time.monotonic() - began


@pytest.mark.parametrize("call", [
    lambda s: s.get("/test/k"),
    lambda s: s.txn([Compare("/test/k", 0)], [Put("/test/k", "v")]),
    lambda s: s.list("/test/"),
    lambda s: s.revision(),
], ids=["get", "txn", "list", "revision"])
def test_etcd_unreachable(call) -> None:
    store = open_datastore("etcd://127.0.0.1:1")  # opening does not connect
    try:
        exc, elapsed = _timed(lambda: call(store))
    finally:
        store.close()
    assert elapsed < 5.0
    assert "127.0.0.1:1" in assert_one_line(exc)


@pytest.mark.etcd
def test_etcd_failover_to_second_endpoint(etcd_server: EtcdServer) -> None:
    from tests.conftest import wipe_etcd

    wipe_etcd(etcd_server)
    url = f"etcd://127.0.0.1:1,{etcd_server.host}:{etcd_server.port}"
    with open_datastore(url) as store:
        began = time.monotonic()
        revision = store.put("/test/fo", "v")
        assert store.get("/test/fo") == KeyValue("/test/fo", "v", revision)
        with store.watch("/test/", revision) as watch:
            assert collect(watch, 1) == [Event("/test/fo", "v", revision)]
        assert time.monotonic() - began < 5.0


@pytest.mark.etcd
def test_etcd_paused_server_is_unavailable(etcd_server: EtcdServer) -> None:
    from tests.conftest import wipe_etcd

    wipe_etcd(etcd_server)
    with open_datastore(etcd_server.url) as store:
        store.put("/test/p", "before")
        etcd_server.pause()
        try:
            exc, elapsed = _timed(
                lambda: store.txn([Compare("/test/q", 0)], [Put("/test/q", "during")]))
        finally:
            etcd_server.resume()
        assert elapsed < 15.0
        text = assert_one_line(exc)
        assert f"{etcd_server.host}:{etcd_server.port}" in text
        # and it recovers once etcd is back
        assert store.get("/test/p").value == "before"


# --------------------------------------------------------------------------- URLs


@pytest.mark.parametrize("url", ["mysql://x", "etcd://host", "etcd://h:99999", "etcd://h:0",
                                 "etcd://h:1,", "sqlite:///", "sqlite:////tmp/dir/",
                                 "sqlite://relative.db", "http://127.0.0.1:2379"])
def test_bad_urls(url: str) -> None:
    with pytest.raises(ValidationError) as info:
        open_datastore(url)
    assert info.value.field == "datastore"
    text = assert_one_line(info.value)
    assert text.startswith("datastore: ")
    assert "sqlite:////" in text and "etcd://" in text  # says what is allowed


def test_good_urls_open(tmp_path) -> None:
    url = "sqlite:///" + str(tmp_path / "sub" / "new.db")
    with open_datastore(url) as store:
        assert store.url == url
        assert store.get("/x") is None
    assert (tmp_path / "sub" / "new.db").exists()
    store = open_datastore("etcd://127.0.0.1:2379,[::1]:2380")
    try:
        assert store.endpoints == [("127.0.0.1", 2379), ("::1", 2380)]
    finally:
        store.close()


@pytest.fixture
def config_file(tmp_path):
    path = tmp_path / "calico.conf"
    path.write_text("# the datastore for calicoctl\n"
                    "other = value\n"
                    "datastore = sqlite:////tmp/x.db  # trailing comment\n")
    return str(path)


def test_resolve_url_precedence(monkeypatch, tmp_path, config_file) -> None:
    monkeypatch.setenv("CALICO_DATASTORE", "etcd://env:2379")
    assert resolve_url("etcd://explicit:2379", config_file=config_file) == \
        "etcd://explicit:2379"
    assert resolve_url(None, config_file=config_file) == "etcd://env:2379"
    monkeypatch.setenv("CALICO_DATASTORE", "")  # empty: as if unset
    assert resolve_url(None, config_file=config_file) == "sqlite:////tmp/x.db"
    monkeypatch.delenv("CALICO_DATASTORE")
    assert resolve_url(None, config_file=config_file) == "sqlite:////tmp/x.db"
    assert resolve_url("", config_file=config_file) == "sqlite:////tmp/x.db"
    missing = str(tmp_path / "missing.conf")
    assert resolve_url(None, config_file=missing) == DEFAULT_URL
    assert DEFAULT_URL == "sqlite:////var/lib/calico/calico.db"
    commented = tmp_path / "commented.conf"
    commented.write_text("# datastore = etcd://nope:1\n\n")
    assert resolve_url(None, config_file=str(commented)) == DEFAULT_URL


def test_open_datastore_uses_environment(monkeypatch, tmp_path) -> None:
    url = "sqlite:///" + str(tmp_path / "env.db")
    monkeypatch.setenv("CALICO_DATASTORE", url)
    with open_datastore() as store:
        assert store.url == url
        store.put("/test/k", "v")
    assert (tmp_path / "env.db").exists()
