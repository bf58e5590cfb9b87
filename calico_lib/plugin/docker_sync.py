"""This host's Docker-made endpoints and addresses against what Docker still has.

``read_local`` reads the datastore's side, ``DockerAPI.endpoint_ids`` Docker's; ``plan``
(pure) says what Docker has forgotten, and ``apply`` frees it, each item in one guarded
transaction that changes nothing if the item changed since it was read. ``calicoctl ipam
gc --docker`` runs them once; the plugin's ``Syncer`` at start and periodically.

What is freed, only when older than the grace period:
  * an endpoint of this host made by the plugin (labelled ``docker-network``) whose id no
    Docker network lists, with its handle's addresses;
  * a pending handle of this host (Docker asked for an address and never made the
    endpoint, or never handed the address back);
  * a handle of this host named like a Docker endpoint id, with no endpoint record, that
    Docker does not list (CreateEndpoint failed after taking the address and Docker did
    not release it).
Read the datastore before asking Docker: an endpoint made in between is then not in the
plan at all, and the grace period covers one Docker has not listed yet.

The grace is not waited for what Docker is not creating (``urgent``), freed at the next pass
in which Docker answered and does not list them:
  * what Docker said it is done with but the plugin could not free: a DeleteEndpoint that
    failed (the datastore was away), a ReleaseAddress that failed or was refused (at boot,
    Docker hands back the addresses of the endpoints it lost; their records still hold
    them);
  * endpoints made before this plugin process started and at least SETTLE seconds ago
    (their DeleteEndpoint went to a plugin that died, or failed at the shutdown before a
    reboot): Docker lists an endpoint within milliseconds of CreateEndpoint's answer, so
    one the previous process made is either listed by now or gone. Pending addresses keep
    their grace: Docker may still bring one to CreateEndpoint.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

from .. import keys
from ..client import Client
from ..errors import CalicoError
from ..ipam import GRACE, Release, handle_age, is_fresh, pending_of
from ..model import Endpoint

log = logging.getLogger("calico-docker-plugin")
DOCKER_LABEL = "docker-network"
DOCKER_ID_RE = re.compile(r"[0-9a-f]{64}")
#: after a pass that changed nothing because Docker or the datastore did not answer
RETRY = 2.0
#: the least time between two passes (hints can come in bursts: one per lost address)
MIN_GAP = 0.5
#: an endpoint the previous plugin process made is Docker's or gone after this long
SETTLE = 5.0


@dataclass
class Local:
    """What the datastore holds for one host, read in one snapshot."""

    host: str
    endpoints: dict[str, Endpoint]  # this host's Docker-made endpoints, by id
    records: dict[str, dict[str, Any]]  # endpoint id -> its record as stored
    handles: dict[str, dict[str, Any] | None]  # this host's handles -> record (None: lost)
    holdings: dict[str, dict[str, list[str]]]  # handle -> block CIDR -> addresses
    endpoint_ids: set[str]  # ids of every endpoint record of this host, readable or not


def read_local(client: Client, host: str) -> Local:
    """This host's side; raises (naming the key) if a record it depends on cannot be read."""
    state = client.ipam.read_state()
    state.require_readable(keys.BLOCKS, keys.HANDLES, keys.endpoints(host))
    mine = {k: e for k, e in state.endpoints.items() if e.host == host}
    ids = {keys.last(k) for k in state.endpoint_keys if k.startswith(keys.endpoints(host))}
    holdings = state.holdings()
    # this host's handles: by their record, or (records older than the host field) by
    # this host's endpoint of the same id
    handles: dict[str, dict[str, Any] | None] = {
        h: r for h, r in state.handles.items() if r.get("host") == host
        or pending_of(host, h, r) or (r.get("host") is None and h in ids)}
    for handle in holdings:  # addresses whose record is lost
        if handle not in state.handles and (pending_of(host, handle, None) or handle in ids):
            handles[handle] = None
    return Local(
        host=host,
        endpoints={e.id: e for e in mine.values() if DOCKER_LABEL in e.labels},
        records={e.id: e.to_dict() for e in mine.values()},
        handles=handles, holdings=holdings, endpoint_ids=ids)


def plan(local: Local, docker_ids: set[str], now: float, grace: float = GRACE,
         urgent: Collection[str] = ()) -> list[Release]:
    """What Docker has forgotten, as releases; pure (the same inputs, the same plan).
    ``urgent``: handles (endpoint ids, pending handles) Docker said it is done with, freed
    without waiting for the grace."""
    out = []

    def release(handle: str, reason: str, endpoint: Endpoint | None = None) -> None:
        per_block = local.holdings.get(handle, {})
        out.append(Release(
            handle, [a for cidr in sorted(per_block) for a in per_block[cidr]],
            sorted(per_block), local.handles.get(handle), reason,
            endpoint_key=keys.endpoint(local.host, endpoint.id) if endpoint else None,
            endpoint=local.records[endpoint.id] if endpoint else None,
            absent=[] if endpoint else [keys.endpoint(local.host, handle)]))

    for endpoint_id, endpoint in sorted(local.endpoints.items()):
        record = local.handles.get(endpoint_id)
        if endpoint_id in docker_ids or (endpoint_id not in urgent
                                         and is_fresh(endpoint_id, record, now, grace)):
            continue
        if endpoint_id in local.holdings and endpoint_id not in local.handles:
            continue  # the handle is another host's: not this host's to free
        release(endpoint_id, "Docker has no such endpoint", endpoint)
    for handle, record in sorted(local.handles.items()):
        if handle in local.endpoint_ids or handle in docker_ids:
            continue
        if handle not in urgent and is_fresh(handle, record, now, grace):
            continue
        if pending_of(local.host, handle, record):
            release(handle, _stale("pending", handle, record, now))
        elif DOCKER_ID_RE.fullmatch(handle) and handle in local.holdings:
            release(handle, _stale("endpoint gone", handle, record, now))
    return out


def due(local: Local, docker_ids: set[str], now: float, grace: float = GRACE,
        started: float | None = None) -> float | None:
    """When the first item ``plan`` left alone only for its age leaves its grace (None:
    there is none): the next pass is due then, not an interval later. ``started``: as
    ``sync_once``'s (an endpoint made before it is due SETTLE after it was made)."""
    ends = []
    for endpoint_id in local.endpoints:
        if endpoint_id not in docker_ids:
            end = _grace_end(endpoint_id, local.handles.get(endpoint_id), now, grace)
            if end is not None and started is not None and end - grace < started:
                end = min(end, end - grace + SETTLE)
            ends.append(end)
    for handle, record in local.handles.items():
        if handle in local.endpoint_ids or handle in docker_ids:
            continue
        if pending_of(local.host, handle, record) or (
                DOCKER_ID_RE.fullmatch(handle) and handle in local.holdings):
            ends.append(_grace_end(handle, record, now, grace))
    future = [end for end in ends if end is not None and end > now]
    return min(future) if future else None


def _grace_end(handle: str, record: dict[str, Any] | None, now: float, grace: float
               ) -> float | None:
    age = handle_age(handle, record, now)
    return None if age is None else now - age + grace


def urgent_handles(local: Local, ids: Collection[str], addresses: Collection[str]
                   ) -> set[str]:
    """The handles of this host that hold what Docker said it is done with: endpoints by
    id, and the holders of addresses."""
    out = {i for i in ids if i in local.endpoints or i in local.handles}
    if addresses:
        wanted = set(addresses)
        out |= {handle for handle, per_block in local.holdings.items()
                if handle in local.handles or handle in local.endpoints
                if any(a in wanted for addrs in per_block.values() for a in addrs)}
    return out


def made_before(local: Local, cutoff: float, now: float) -> set[str]:
    """This host's Docker-made endpoints whose handle was made before ``cutoff``."""
    out = set()
    for endpoint_id in local.endpoints:
        age = handle_age(endpoint_id, local.handles.get(endpoint_id), now)
        if age is not None and now - age < cutoff:
            out.add(endpoint_id)
    return out


def apply(client: Client, releases: list[Release]) -> list[tuple[Release, list[str] | None]]:
    """Apply each release in its own guarded transaction; per release the addresses freed,
    or None when it changed since it was read (then nothing of it changed)."""
    return [(item, client.ipam.release(item)) for item in releases]


def _stale(what: str, handle: str, record: dict[str, Any] | None, now: float) -> str:
    age = handle_age(handle, record, now)
    return f"{what} for {int(age)} s" if age is not None else f"{what} for an unknown time"


@dataclass
class Pass:
    """What one ``sync_once`` did and found."""

    done: list[tuple[Release, list[str] | None]]
    due: float | None  # when the next item leaves its grace
    interfaces: set[str]  # the interfaces of this host's endpoint records


def sync_once(client: Client, host: str, docker: Any, now: float, grace: float,
              urgent_ids: Collection[str] = (), urgent_addresses: Collection[str] = (),
              started: float | None = None) -> Pass:
    """Read this host's side, then ask Docker, then free what Docker forgot; also when the
    next item leaves its grace (see ``due``). ``started``: when this plugin process
    started (endpoints made before it and SETTLE ago are not waited for). Any Docker
    error raises before anything changed (a change made on partial knowledge changes
    nothing)."""
    local = read_local(client, host)
    docker_ids = docker.endpoint_ids()
    log.debug("docker sync: Docker lists %d endpoint(s); this host has %d Docker-made "
              "endpoint(s) and %d handle(s)", len(docker_ids), len(local.endpoints),
              len(local.handles))
    urgent = urgent_handles(local, urgent_ids, urgent_addresses)
    if started is not None:
        urgent |= made_before(local, min(started, now - SETTLE), now)
    interfaces = {str(r.get("interface")) for r in local.records.values()}
    return Pass(apply(client, plan(local, docker_ids, now, grace, urgent)),
                due(local, docker_ids, now, grace, started), interfaces)


class Syncer:
    """The plugin's loop: at start (retrying quickly until Docker answers, as the plugin
    starts before docker.service) and then every ``interval`` seconds, free the endpoints
    and addresses Docker no longer has, then reprogram the dataplane. A pass that could not
    finish is retried after RETRY seconds; one is also made when an item leaves its grace,
    and soon after the driver reports something Docker is done with (``forgotten``).

    With ``list_unjoined`` and ``delete_link`` it also deletes host veths whose peer no
    container got (``veth.unjoined_veths``) and that no endpoint record of this host names:
    a Join that failed after making the pair, with no DeleteEndpoint after it. The veths
    are listed before the datastore is read, and a Join makes its veth only after its
    endpoint record exists: a veth being joined is never taken for one of those."""

    def __init__(self, client: Client, host: str, docker: Any, interval: float, grace: float,
                 after_change: Any = None, clock: Any = time.time,
                 after_free: Callable[[list[str]], None] | None = None,
                 list_unjoined: Callable[[], list[str]] | None = None,
                 delete_link: Callable[[str], bool] | None = None) -> None:
        self.client, self.host, self.docker = client, host, docker
        self.interval, self.grace = interval, grace
        self.after_change = after_change or (lambda: None)
        #: called with the ids of the endpoints a pass freed (their veths may be left)
        self.after_free = after_free or (lambda ids: None)
        self.list_unjoined = list_unjoined
        self.delete_link = delete_link
        self.clock = clock
        self.started = clock()  # what was made before: see SETTLE
        self.stop = threading.Event()
        self.wake = threading.Event()
        self.synced = False  # True once Docker answered every question
        self._hints_lock = threading.Lock()
        self._ids: set[str] = set()
        self._addresses: set[str] = set()
        self._due: float | None = None

    def forgotten(self, endpoint_id: str | None = None, address: str | None = None) -> None:
        """Docker is done with this endpoint or address, and the plugin could not free it:
        the next pass frees it without the grace (if Docker does not list it)."""
        with self._hints_lock:
            if endpoint_id:
                self._ids.add(endpoint_id)
            if address:
                self._addresses.add(address)
        self.wake.set()

    def run_once(self) -> int:
        """One pass; the number of items freed. Errors are logged, never raised."""
        with self._hints_lock:
            ids, addresses = set(self._ids), set(self._addresses)
        try:
            unjoined = self.list_unjoined() if self.list_unjoined else []  # before the read
            result = sync_once(self.client, self.host, self.docker, self.clock(),
                               self.grace, ids, addresses, self.started)
        except CalicoError as exc:
            log.warning("syncing with Docker: %s; nothing was changed, retrying", exc)
            return -1
        except Exception:  # noqa: BLE001 - a bug must not end the loop
            log.exception("syncing with Docker crashed; nothing more was changed")
            return -1
        self.synced = True
        self._due = result.due
        with self._hints_lock:  # considered: freed, or Docker still has them
            self._ids -= ids
            self._addresses -= addresses
        for name in unjoined:
            if name not in result.interfaces and self.delete_link is not None:
                try:
                    if self.delete_link(name):
                        log.info("deleted %s: no container got it and no endpoint of this "
                                 "host has it", name)
                except CalicoError as exc:
                    log.warning("deleting %s: %s", name, exc)
        freed = []
        for item, freed_addresses in result.done:
            what = item.endpoint_key or item.handle
            if freed_addresses is None:
                log.info("not freeing %s: it changed since it was read", what)
                continue
            freed.append(item)
            log.info("freed %s (%s): %s", what, item.reason,
                     ", ".join(freed_addresses) or "-")
        if freed:
            try:
                self.after_free([i.handle for i in freed if i.endpoint_key])
                self.after_change()
            except Exception:  # noqa: BLE001 - the agent repairs what this missed
                log.exception("reprogramming after the Docker sync failed")
        return len(freed)

    def delay(self, outcome: int) -> float:
        """Seconds until the next pass after one that freed ``outcome`` items (-1: failed)."""
        if outcome < 0 or not self.synced:
            return min(self.interval, RETRY)
        wait = self.interval
        if self._due is not None:
            wait = min(wait, max(MIN_GAP, self._due - self.clock() + 0.5))
        return wait

    def run(self) -> None:
        while not self.stop.is_set():
            outcome = self.run_once()
            self.stop.wait(MIN_GAP)
            self.wake.wait(max(0.0, self.delay(outcome) - MIN_GAP))
            self.wake.clear()

    def halt(self) -> None:
        self.stop.set()
        self.wake.set()

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.run, name="docker-sync", daemon=True)
        thread.start()
        return thread
