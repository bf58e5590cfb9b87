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
import ssl
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import etcd3gw
import requests
from etcd3gw import exceptions as etcd_exc

from .. import keys
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


def _session(tls: Any) -> requests.Session:
    """An HTTP session that ignores the environment: $REQUESTS_CA_BUNDLE would replace the
    CA etcd is checked against, and $HTTPS_PROXY would send the datastore's traffic
    (client certificate included) through a proxy."""
    session = requests.Session()
    session.trust_env = False
    if tls is not None:
        session.verify = tls.ca
        if tls.cert and tls.key:
            session.cert = (tls.cert, tls.key)
    return session


class EtcdDatastore(Datastore):
    """``tls`` (an ``EtcdTLS``): HTTPS, etcd's certificate checked against its CA, and this
    client's certificate shown to etcd (which, run with --client-cert-auth, requires it)."""

    def __init__(self, endpoints: Sequence[tuple[str, int]], url: str | None = None,
                 tls: Any = None, user: str | None = None, password: str | None = None
                 ) -> None:
        if not endpoints:
            raise ValueError("at least one etcd endpoint is needed")
        scheme = "etcds://" if tls is not None else "etcd://"
        self.url = url or scheme + ",".join(f"{h}:{p}" for h, p in endpoints)
        self.endpoints = list(endpoints)
        self.tls = tls
        self._clients = [
            etcd3gw.client(host=host, port=port, api_path="/v3/",  # type: ignore[arg-type]
                           timeout=(CONNECT_TIMEOUT, READ_TIMEOUT), session=_session(tls),
                           protocol="https" if tls is not None else "http")
            for host, port in self.endpoints
        ]
        self._current = 0
        self._lock = threading.Lock()
        #: etcd authentication (users and roles): this client's user and password; its
        #: token goes in every request's Authorization header and is renewed when etcd
        #: says it is no longer valid
        self.user, self._password = user, password
        self._auth_off = False

    # -- plumbing

    def _authenticate(self, client: etcd3gw.client.Etcd3Client) -> None:
        """A token for this client's user; none needed while authentication is off (the
        user then exists already, or will once an operator turns authentication on)."""
        client.session.headers.pop("Authorization", None)
        try:
            reply = client.post(client.get_url("/auth/authenticate"),
                                data=json.dumps({"name": self.user,
                                                 "password": self._password}))
        except etcd_exc.Etcd3Exception as exc:
            if "authentication is not enabled" in str(exc.detail_text or exc):
                self._auth_off = True
                return
            raise
        self._auth_off = False
        client.session.headers["Authorization"] = reply["token"]

    def _call(self, fn: Callable[[etcd3gw.client.Etcd3Client], Any]) -> Any:
        """Run ``fn`` against the first endpoint that answers."""
        failures = []
        for step in range(len(self._clients)):
            index = (self._current + step) % len(self._clients)
            client = self._clients[index]
            try:
                if (self.user is not None and not self._auth_off
                        and "Authorization" not in client.session.headers):
                    self._authenticate(client)
                try:
                    result = fn(client)
                except etcd_exc.Etcd3Exception as exc:
                    if self.user is None or not _token_refused(exc):
                        raise
                    self._authenticate(client)  # expired or revoked: a new token, once
                    result = fn(client)
            except etcd_exc.ConnectionFailedError as exc:
                exc.endpoint = (client.host, client.port)  # type: ignore[attr-defined]
                failures.append(f"{client.host}:{client.port}: {self._reason(exc)}")
                continue
            except etcd_exc.ConnectionTimeoutError as exc:
                if "connect timeout" in str(exc.detail_text or exc).lower():
                    failures.append(f"{client.host}:{client.port}: {self._reason(exc)}")
                    continue
                # The request was sent: it must not be sent again elsewhere.
                raise DatastoreUnavailable(
                    f"etcd {client.host}:{client.port} did not answer within "
                    f"{READ_TIMEOUT:.0f}s; a write may or may not have been applied") from None
            except etcd_exc.Etcd3Exception as exc:
                detail = _detail(exc)
                if "HTTP request to an HTTPS server" in detail:
                    failures.append(f"{client.host}:{client.port}: it speaks TLS only; use "
                                    "etcds:// with etcd_ca, etcd_cert and etcd_key")
                    continue
                raise DatastoreError(f"etcd {client.host}:{client.port}: "
                                     f"{self._explain(detail)}") from None
            self._current = index
            return result
        raise DatastoreUnavailable("etcd unreachable (" +
                                   "; ".join(failures) + ")")

    def _reason(self, exc: Exception) -> str:
        return _reason(exc, self.tls)

    def _explain(self, detail: str) -> str:
        """etcd's authentication answers, said for the operator."""
        if "permission denied" in detail:
            return (f"permission denied: user {self.user} may not change these keys "
                    "(hosts write only their own node, endpoints and IPAM records)")
        if "authentication failed" in detail:
            return f"authentication failed for user {self.user}: check etcd_password_file"
        if "user name is empty" in detail:
            return ("authentication is on: give etcd_user and etcd_password_file")
        if "CommonName of client" in detail:
            return ("authentication is on and this client's certificate has a common name, "
                    "which etcd's JSON gateway refuses: use a certificate without one")
        return detail

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
        # a key every Calico user may read (with authentication on, a key outside /calico/
        # is refused to all of them)
        reply = self._post("/kv/range", {"key": _b64(keys.ROOT), "count_only": True})
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
            if response.status_code != 200:  # e.g. a token etcd no longer takes
                text = response.text
                response.close()
                raise etcd_exc.Etcd3Exception(text, response.reason)
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


def _diagnose_eof(exc: Exception, tls: Any) -> str:
    """etcd closed a TLS connection without a word: either it does not speak TLS, or (TLS
    1.3 checks a client certificate after the handshake) it refused this client's
    certificate. One more handshake, made by hand, tells the two apart."""
    host, port = getattr(exc, "endpoint", (None, None))
    if host is None:
        return "it closed the TLS connection"
    context = ssl.create_default_context(cafile=tls.ca)
    context.load_cert_chain(tls.cert, tls.key)
    try:
        with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT) as raw, \
                context.wrap_socket(raw, server_hostname=host) as conn:
            conn.settimeout(READ_TIMEOUT)
            conn.sendall(b"GET /version HTTP/1.1\r\nHost: etcd\r\n\r\n")
            conn.recv(1)
    except ssl.SSLError as err:
        if "certificate" in str(err).lower() or "alert" in str(err).lower():
            return ("it refused this client's certificate: not signed by a CA etcd trusts "
                    f"(etcd_cert {tls.cert})")
        return "it closed the TLS connection: it may not speak TLS (then use etcd://)"
    except OSError:
        return "it closed the TLS connection: it may not speak TLS (then use etcd://)"
    return "it closed the TLS connection"


def _token_refused(exc: etcd_exc.Etcd3Exception) -> bool:
    """etcd wants a (new) token: the old one expired, or authentication went on."""
    text = str(getattr(exc, "detail_text", "") or exc)
    return any(w in text for w in ("invalid auth token", "auth token is expired",
                                   "user name is empty"))


def _reason(exc: Exception, tls: Any = None) -> str:
    """One short line for why one endpoint could not be used, TLS problems named with the
    file to look at."""
    text = getattr(exc, "detail_text", None) or str(exc)
    low = text.lower()
    cert = getattr(tls, "cert", None)
    if "wrong_version_number" in low:
        return "it does not speak TLS; use etcd:// (or run etcd with TLS)"
    if "certificate_verify_failed" in low:
        if "has expired" in low:
            why = "has expired"
        elif "match" in low and ("hostname" in low or "ip address" in low):
            why = "does not name this address"
        else:
            why = "is not signed by the CA"
        return f"its certificate {why} (etcd_ca {tls.ca if tls else None})"
    refused = any(w in low for w in ("certificate_expired", "bad_certificate", "unknown_ca",
                                     "certificate required", "eof occurred"))
    if refused and tls is not None and not cert:
        return "it requires a client certificate: give etcd_cert and etcd_key"
    if "certificate_expired" in low:
        return f"it refused this client's certificate as expired (etcd_cert {cert})"
    if "bad_certificate" in low or "unknown_ca" in low:
        return ("it refused this client's certificate: not signed by a CA etcd trusts "
                f"(etcd_cert {cert})")
    if "certificate required" in low:
        return "it requires a client certificate: give etcd_cert and etcd_key"
    hung_up = any(w in low for w in ("eof occurred", "connection reset", "connection aborted",
                                     "remotedisconnected"))
    if hung_up and tls is not None:
        return _diagnose_eof(exc, tls)
    if hung_up:
        return "it closed the connection without an answer: if it speaks TLS, use etcds://"
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
