"""This host's Docker-made endpoints and addresses against what Docker still has.

``read_local`` reads the datastore's side, ``DockerAPI.endpoint_ids`` Docker's; ``plan``
(pure) says what Docker has forgotten, and ``apply`` frees it, each item in one guarded
transaction that changes nothing if the item changed since it was read. ``calicoctl ipam
gc --docker`` runs them once; the plugin can run them periodically.

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

import re
from dataclasses import dataclass
from typing import Any

from .. import keys
from ..client import Client
from ..ipam import GRACE, Release, handle_age, is_fresh, pending_of
from ..model import Endpoint

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
