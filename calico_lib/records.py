"""Stored records read back into model objects, one bad record at a time.

A record another host, an older or newer version, or a hand edit wrote may not be valid
JSON, may carry unknown fields, or may sit under a key that does not name it (an endpoint
of host A stored under host B's prefix would make host B render it as its own). Such a
record is *unreadable*: readers skip it and report it, so one bad record never stops a
host from reconciling everything else.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from . import keys
from .datastore import KeyValue
from .errors import CalicoError
from .model import AgentConfig, BGPConfig, BGPPeer, Endpoint, IPAMConfig, IPPool, Node, Profile

log = logging.getLogger("calico_lib.records")
T = TypeVar("T")


@dataclass(frozen=True)
class Unreadable:
    """A record that could not be read: its key and why (one line each)."""

    key: str
    reason: str

    def __str__(self) -> str:
        return f"unreadable record {safe_key(self.key)}: {self.reason}"


def safe_key(key: str) -> str:
    """A key as logs and messages show it: as is, or escaped when it holds control
    characters (keys come from the datastore, where any writer may have put them)."""
    return key if key.isprintable() else repr(key)


def _expected_key(obj: Any) -> str | None:
    """The key an object must be stored under (None: any key of its prefix is fine)."""
    if isinstance(obj, IPPool):
        return keys.pool(obj.cidr)
    if isinstance(obj, Profile):
        return keys.profile(obj.name)
    if isinstance(obj, Node):
        return keys.node(obj.name)
    if isinstance(obj, Endpoint):
        return keys.endpoint(obj.host, obj.id)
    if isinstance(obj, BGPPeer):
        return keys.peer(obj.address, obj.node)
    return None


def load_json(kv: KeyValue) -> Any:
    """The JSON value stored in ``kv``; ``RecordError`` (naming the key) if it is not JSON.
    Every stored value is parsed here: any writer may have put anything there."""
    try:
        return json.loads(kv.value)
    except ValueError:
        raise RecordError(kv.key, "not valid JSON") from None
    except RecursionError:
        raise RecordError(kv.key, "JSON nested too deep") from None


def json_object(kv: KeyValue | None) -> dict[str, Any]:
    """The JSON object stored in ``kv``; {} when there is none or it is not a JSON object
    (for records read field by field, each field checked where it is used)."""
    if kv is None:
        return {}
    try:
        data = load_json(kv)
    except RecordError:
        return {}
    return data if isinstance(data, dict) else {}


def decode(kv: KeyValue, cls: Callable[..., T]) -> T:
    """The record ``kv`` as a ``cls``; ``RecordError`` (one line naming the key) if it is
    not valid JSON, not a valid ``cls``, or stored under a key that does not name it."""
    data = load_json(kv)
    try:
        obj = cls.from_dict(data)  # type: ignore[attr-defined]
    except CalicoError as exc:
        raise RecordError(kv.key, str(exc)) from None
    except (TypeError, ValueError, KeyError, AttributeError) as exc:  # wrong shapes
        raise RecordError(kv.key, f"not a valid {getattr(cls, '__name__', 'record')} "
                                  f"({type(exc).__name__})") from None
    expected = _expected_key(obj)
    if expected is not None and expected != kv.key:
        raise RecordError(kv.key, f"its content belongs under {safe_key(expected)}")
    return obj


class DecodeCache:
    """Records decoded by the last read, by key: a record stored with the same text is the
    same object the next time (no JSON or validation work), which lets the renderer see
    what did not change by identity. Only the keys of the last read are kept. The
    objects are shared between reads: readers must not change them."""

    def __init__(self) -> None:
        self._last: dict[str, tuple[Any, str, Any]] = {}
        self._now: dict[str, tuple[Any, str, Any]] = {}

    def next_read(self) -> None:
        self._last, self._now = self._now, {}

    def decode(self, kv: KeyValue, cls: Callable[..., T]) -> T:
        hit = self._last.get(kv.key)
        if hit is not None and hit[0] is cls and hit[1] == kv.value:
            obj = hit[2]
        else:
            obj = decode(kv, cls)
        self._now[kv.key] = (cls, kv.value, obj)
        return obj


def decode_all(kvs: Iterable[KeyValue], cls: Callable[..., T],
               cache: DecodeCache | None = None) -> tuple[list[T], list[Unreadable]]:
    """Every readable record of ``kvs``, and the unreadable ones."""
    good: list[T] = []
    bad: list[Unreadable] = []
    for kv in kvs:
        try:
            good.append(cache.decode(kv, cls) if cache is not None else decode(kv, cls))
        except RecordError as exc:
            bad.append(exc.unreadable)
    return good, bad


class RecordError(CalicoError):
    """A stored record cannot be read; the message names its key."""

    def __init__(self, key: str, reason: str) -> None:
        self.unreadable = Unreadable(key, reason)
        super().__init__(str(self.unreadable))


#: the model class of each kind of record, by key prefix (IPAM records are checked by
#: ``IPAM.check``; the guard key under meta/ holds no model)
KINDS: tuple[tuple[str, Any], ...] = (
    (keys.POOLS, IPPool), (keys.PROFILES, Profile), (keys.NODES, Node),
    (keys.ENDPOINTS, Endpoint), (keys.GLOBAL_PEERS, BGPPeer), (keys.NODE_PEERS, BGPPeer),
    (keys.BGP_CONFIG, BGPConfig), (keys.IPAM_CONFIG, IPAMConfig),
    (keys.AGENT_CONFIG, AgentConfig),
)


def check_records(kvs: Iterable[KeyValue]) -> list[Unreadable]:
    """Every record among ``kvs`` (any keys) that a reader would have to skip."""
    bad: list[Unreadable] = []
    for kv in kvs:
        for prefix, cls in KINDS:
            if kv.key == prefix or (prefix.endswith("/") and kv.key.startswith(prefix)):
                bad += decode_all([kv], cls)[1]
                break
    return bad


class Reporter:
    """Logs each unreadable record once per process (keyed by key and reason), so a
    long-running reader does not repeat the same warning on every pass."""

    def __init__(self, logger: logging.Logger = log) -> None:
        self.logger = logger
        self._seen: set[Unreadable] = set()

    def report(self, unreadable: Iterable[Unreadable]) -> None:
        for item in unreadable:
            if item not in self._seen:
                self._seen.add(item)
                self.logger.warning("skipping %s", item)
