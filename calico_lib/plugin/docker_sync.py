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
"""

from __future__ import annotations

import logging
import re
import threading
import time
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


def plan(local: Local, docker_ids: set[str], now: float, grace: float = GRACE
         ) -> list[Release]:
    """What Docker has forgotten, as releases; pure (the same inputs, the same plan)."""
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
        if endpoint_id in docker_ids or is_fresh(endpoint_id, record, now, grace):
            continue
        if endpoint_id in local.holdings and endpoint_id not in local.handles:
            continue  # the handle is another host's: not this host's to free
        release(endpoint_id, "Docker has no such endpoint", endpoint)
    for handle, record in sorted(local.handles.items()):
        if handle in local.endpoint_ids or handle in docker_ids:
            continue
        if is_fresh(handle, record, now, grace):
            continue
        if pending_of(local.host, handle, record):
            release(handle, _stale("pending", handle, record, now))
        elif DOCKER_ID_RE.fullmatch(handle) and handle in local.holdings:
            release(handle, _stale("endpoint gone", handle, record, now))
    return out


def apply(client: Client, releases: list[Release]) -> list[tuple[Release, list[str] | None]]:
    """Apply each release in its own guarded transaction; per release the addresses freed,
    or None when it changed since it was read (then nothing of it changed)."""
    return [(item, client.ipam.release(item)) for item in releases]


def _stale(what: str, handle: str, record: dict[str, Any] | None, now: float) -> str:
    age = handle_age(handle, record, now)
    return f"{what} for {int(age)} s" if age is not None else f"{what} for an unknown time"


def sync_once(client: Client, host: str, docker: Any, now: float, grace: float
              ) -> list[tuple[Release, list[str] | None]]:
    """Read this host's side, then ask Docker, then free what Docker forgot. Any Docker
    error raises before anything changed (a change made on partial knowledge changes
    nothing)."""
    local = read_local(client, host)
    docker_ids = docker.endpoint_ids()
    log.debug("docker sync: Docker lists %d endpoint(s); this host has %d Docker-made "
              "endpoint(s) and %d handle(s)", len(docker_ids), len(local.endpoints),
              len(local.handles))
    return apply(client, plan(local, docker_ids, now, grace))


class Syncer:
    """The plugin's loop: at start (retrying quickly until Docker answers, as the plugin
    starts before docker.service) and then every ``interval`` seconds, free the endpoints
    and addresses Docker no longer has, then reprogram the dataplane."""

    def __init__(self, client: Client, host: str, docker: Any, interval: float, grace: float,
                 after_change: Any = None, clock: Any = time.time) -> None:
        self.client, self.host, self.docker = client, host, docker
        self.interval, self.grace = interval, grace
        self.after_change = after_change or (lambda: None)
        self.clock = clock
        self.stop = threading.Event()
        self.synced = False  # True once Docker answered every question

    def run_once(self) -> int:
        """One pass; the number of items freed. Errors are logged, never raised."""
        try:
            done = sync_once(self.client, self.host, self.docker, self.clock(), self.grace)
        except CalicoError as exc:
            log.warning("syncing with Docker: %s; nothing was changed, retrying", exc)
            return 0
        except Exception:  # noqa: BLE001 - a bug must not end the loop
            log.exception("syncing with Docker crashed; nothing more was changed")
            return 0
        self.synced = True
        freed = 0
        for item, addresses in done:
            what = item.endpoint_key or item.handle
            if addresses is None:
                log.info("not freeing %s: it changed since it was read", what)
                continue
            freed += 1
            log.info("freed %s (%s): %s", what, item.reason, ", ".join(addresses) or "-")
        if freed:
            try:
                self.after_change()
            except Exception:  # noqa: BLE001 - the agent repairs what this missed
                log.exception("reprogramming after the Docker sync failed")
        return freed

    def run(self) -> None:
        while not self.stop.is_set():
            self.run_once()
            self.stop.wait(self.interval if self.synced else min(self.interval, 2.0))

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.run, name="docker-sync", daemon=True)
        thread.start()
        return thread
