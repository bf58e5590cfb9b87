"""etcd v3 through its JSON gateway (etcd3gw), for many hosts.

Endpoints are tried in order; the first that answers is kept until it fails. When none
answers, the call raises ``DatastoreUnavailable`` at once (short connect time-out), before
anything was written.
"""

from __future__ import annotations

import base64
import json
import queue
import socket
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import etcd3gw
import requests
from etcd3gw import exceptions as etcd_exc

from ..errors import CompactedError, DatastoreError, DatastoreUnavailable
from .base import Compare, Datastore, Delete, Event, KeyValue, Op, Put, Watch

CONNECT_TIMEOUT = 2.0
READ_TIMEOUT = 5.0


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _unb64(text: str) -> str:
    return base64.b64decode(text).decode()


def _range_end(prefix: str) -> str:
    if not prefix:  # "\0" as range end: every key
        return _b64("\0")
    raw = prefix.encode()
    return base64.b64encode(raw[:-1] + bytes([raw[-1] + 1])).decode()


def _range_request(item: str, force_prefix: bool = False) -> dict[str, Any]:
    """A key, or (ending in "/", or forced) every key under a prefix, sorted by key."""
    if not item:  # everything
        return {"key": _b64("\0"), "range_end": _b64("\0"),
                "sort_order": "ASCEND", "sort_target": "KEY"}
    if item.endswith("/") or force_prefix:
        return {"key": _b64(item), "range_end": _range_end(item),
                "sort_order": "ASCEND", "sort_target": "KEY"}
    return {"key": _b64(item)}


def _kv(item: dict[str, Any]) -> KeyValue:
    return KeyValue(_unb64(item["key"]), _unb64(item.get("value", "")),
                    int(item.get("mod_revision", 0)))


class EtcdDatastore(Datastore):
    def __init__(self, endpoints: Sequence[tuple[str, int]], url: str | None = None) -> None:
        if not endpoints:
            raise ValueError("at least one etcd endpoint is needed")
        self.url = url or "etcd://" + ",".join(f"{h}:{p}" for h, p in endpoints)
        self.endpoints = list(endpoints)
        self._clients = [
            etcd3gw.client(host=host, port=port, api_path="/v3/",
                           timeout=(CONNECT_TIMEOUT, READ_TIMEOUT))  # type: ignore[arg-type]
            for host, port in self.endpoints
        ]
        self._current = 0
        self._lock = threading.Lock()

    # -- plumbing

    def _call(self, fn: Callable[[etcd3gw.client.Etcd3Client], Any]) -> Any:
        """Run ``fn`` against the first endpoint that answers."""
        failures = []
        for step in range(len(self._clients)):
            index = (self._current + step) % len(self._clients)
            client = self._clients[index]
            try:
                result = fn(client)
            except etcd_exc.ConnectionFailedError as exc:
                failures.append(f"{client.host}:{client.port}: {_reason(exc)}")
                continue
            except etcd_exc.ConnectionTimeoutError as exc:
                if "connect timeout" in str(exc.detail_text or exc).lower():
                    failures.append(f"{client.host}:{client.port}: {_reason(exc)}")
                    continue
                # The request was sent: it must not be sent again elsewhere.
                raise DatastoreUnavailable(
                    f"etcd {client.host}:{client.port} did not answer within "
                    f"{READ_TIMEOUT:.0f}s; a write may or may not have been applied") from None
            except etcd_exc.Etcd3Exception as exc:
                raise DatastoreError(f"etcd {client.host}:{client.port}: "
                                     f"{_detail(exc)}") from None
            self._current = index
            return result
        raise DatastoreUnavailable("etcd unreachable (" +
                                   "; ".join(failures) + ")")

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._call(lambda c: c.post(c.get_url(path), data=json.dumps(body)))

    # -- the contract

    def get(self, key: str) -> KeyValue | None:
        self.reads += 1
        kvs = self._post("/kv/range", {"key": _b64(key)}).get("kvs", [])
        return _kv(kvs[0]) if kvs else None

    def list(self, prefix: str) -> list[KeyValue]:
        return self.list_with_revision(prefix)[0]

    def list_with_revision(self, prefix: str) -> tuple[list[KeyValue], int]:
        self.reads += 1
        reply = self._post("/kv/range", _range_request(prefix, force_prefix=True))
        return ([_kv(item) for item in reply.get("kvs", [])],
                int(reply["header"]["revision"]))

    def read(self, ranges: Sequence[str]) -> tuple[list[list[KeyValue]], int]:
        self.reads += 1
        body = {"success": [{"request_range": _range_request(item)} for item in ranges]}
        reply = self._post("/kv/txn", body)
        out = [[_kv(kv) for kv in resp.get("response_range", {}).get("kvs", [])]
               for resp in reply.get("responses", [])]
        return out, int(reply["header"]["revision"])

    def revision(self) -> int:
        reply = self._post("/kv/range", {"key": _b64("\0"), "count_only": True})
        return int(reply["header"]["revision"])

    def txn(self, compares: Iterable[Compare], ops: Sequence[Op]) -> int | None:
        body: dict[str, Any] = {
            "compare": [{"key": _b64(c.key), "result": "EQUAL", "target": "MOD",
                         "mod_revision": str(c.mod_revision)} for c in compares],
            "success": [],
        }
        for op in ops:
            if isinstance(op, Put):
                body["success"].append(
                    {"request_put": {"key": _b64(op.key), "value": _b64(op.value)}})
            elif isinstance(op, Delete):
                body["success"].append({"request_delete_range": {"key": _b64(op.key)}})
        self.txns += 1
        reply = self._post("/kv/txn", body)
        if not reply.get("succeeded", False):
            return None
        return int(reply["header"]["revision"])

    def watch(self, prefix: str, start_revision: int) -> Watch:
        return _EtcdWatch(self, prefix, start_revision)

    def close(self) -> None:
        for client in self._clients:
            client.session.close()


class _EtcdWatch(Watch):
    """A streaming watch read by a thread into a queue (the gateway streams JSON lines)."""

    def __init__(self, store: EtcdDatastore, prefix: str, start_revision: int) -> None:
        self._queue: queue.Queue[Event | Exception] = queue.Queue()
        self._closed = threading.Event()
        self._response: requests.Response | None = None
        request = {"create_request": {"key": _b64(prefix or "\0"),
                                      "range_end": _range_end(prefix),
                                      "start_revision": str(max(start_revision, 1))}}

        def open_stream(client: etcd3gw.client.Etcd3Client) -> requests.Response:
            try:
                response = client.session.post(
                    client.get_url("/watch"), data=json.dumps(request), stream=True,
                    timeout=(CONNECT_TIMEOUT, READ_TIMEOUT))
            except requests.exceptions.Timeout as exc:
                raise etcd_exc.ConnectionTimeoutError(str(exc)) from None
            except requests.exceptions.ConnectionError as exc:
                raise etcd_exc.ConnectionFailedError(str(exc)) from None
            try:  # the stream is quiet until something changes: no read time-out on it
                response.raw.connection.sock.settimeout(None)
            except AttributeError:
                pass
            return response

        self._response = store._call(open_stream)
        self._thread = threading.Thread(target=self._read, daemon=True,
                                        name=f"etcd-watch {prefix}")
        self._thread.start()

    def _read(self) -> None:
        assert self._response is not None
        try:
            for line in self._response.iter_lines(chunk_size=None):
                if not line.strip():
                    continue
                result = json.loads(line).get("result", {})
                if int(result.get("compact_revision", 0)):
                    raise CompactedError("etcd: watch start revision is compacted "
                                         f"(oldest kept: {result['compact_revision']})")
                for item in result.get("events", []):
                    kv = item["kv"]
                    value = None if item.get("type") == "DELETE" else _unb64(kv.get("value", ""))
                    self._queue.put(Event(_unb64(kv["key"]), value, int(kv["mod_revision"])))
            if not self._closed.is_set():
                raise DatastoreUnavailable("etcd: watch stream ended")
        except Exception as exc:  # handed to the reader of next()
            if not self._closed.is_set():
                self._queue.put(exc if isinstance(exc, DatastoreError)
                                else DatastoreUnavailable(f"etcd watch failed: {exc}"))

    def next(self, timeout: float) -> list[Event]:
        try:
            first = self._queue.get(timeout=timeout)
        except queue.Empty:
            return []
        items = [first]
        while True:  # drain what already arrived, so one call returns a whole burst
            try:
                items.append(self._queue.get_nowait())
            except queue.Empty:
                break
        events = []
        for item in items:
            if isinstance(item, Exception):
                raise item
            events.append(item)
        return events

    def close(self) -> None:
        if self._closed.is_set() or self._response is None:
            return
        self._closed.set()
        # Closing the response would wait for the reader thread's lock: shut the socket
        # down under it instead, so the blocked read returns at once.
        try:
            fd = self._response.raw.fileno()
            with socket.fromfd(fd, socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.shutdown(socket.SHUT_RDWR)
        except (OSError, AttributeError, ValueError):
            pass
        self._thread.join(timeout=5)
        self._response.close()


def _reason(exc: Exception) -> str:
    text = getattr(exc, "detail_text", None) or str(exc)
    for hint in ("Connection refused", "timed out", "Name or service not known",
                 "No route to host"):
        if hint in text:
            return hint.lower()
    return text.splitlines()[0][:120] if text else "no answer"


def _detail(exc: etcd_exc.Etcd3Exception) -> str:
    detail = exc.detail_text or str(exc)
    try:
        detail = json.loads(detail).get("error", detail)
    except (ValueError, AttributeError, TypeError):
        pass
    return str(detail).splitlines()[0][:200]
