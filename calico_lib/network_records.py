"""The Docker plugin's records of Docker networks: the one place they are written and read.

A host records each calico network Docker created on it (Calico's networks are local to a
host) under ``keys.docker_network(host, network id)``, a JSON object::

    {"id": <network id>, "ipv6": <bool>, "pools": [<the --subnet pool, or 0.0.0.0/0 / ::/0>,
     ...], "created": <time.time() of its CreateNetwork>, "mtu": <-o
     com.docker.network.driver.mtu, when given>, "name": <the network's name in Docker,
     once learnt>}

Docker does not pass a network's name to CreateNetwork, and answers for the network only
once it has stored it, milliseconds after CreateNetwork answered: the plugin learns the name
then (and at the network's first CreateEndpoint at the latest). A network record that names
its network makes the network's profile exist for operators (``Client.get_profile``,
``add_rule``) before any container joined, without the host writing any profile: hosts may
write their Docker network records, never policy.

Records are read leniently, field by field: a record that cannot be read counts as absent
(its network's name is asked of Docker again, it dedicates no pool, it has no MTU).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import netaddr

from . import keys
from .datastore import Datastore, KeyValue
from .errors import CalicoError, DatastoreError
from .model import Profile
from .records import json_object
from .txn import Tx, dumps, transact

#: seconds within which the plugin learns a new network's name (Docker answers for it
#: milliseconds after CreateNetwork): a reader that does not find a profile waits this
#: long at most for the names of networks created so recently
NAMING = 2.0
#: the MTUs a network may be given (-o com.docker.network.driver.mtu); IPv6 needs 1280
MTU_MIN, MTU_MIN_V6, MTU_MAX = 576, 1280, 9000


class DockerNetworks:
    """The records of ``hostname``'s Docker networks in ``store``."""

    def __init__(self, store: Datastore, hostname: str) -> None:
        self.store = store
        self.hostname = hostname

    def _key(self, network_id: str) -> str:
        return keys.docker_network(self.hostname, network_id)

    def _get(self, network_id: str) -> dict[str, Any]:
        return json_object(self.store.get(self._key(network_id)))

    def create(self, network_id: str, ipv6: bool, pools: list[str | None],
               mtu: int | None = None) -> float | None:
        """Record a network; a replayed CreateNetwork (Docker replays calls after restarts)
        keeps the name already learnt and the creation time. Returns the creation time
        (what ``learnt`` is told), None when the record has the network's name already."""
        key = self._key(network_id)

        def write(tx: Tx) -> float | None:
            old = _tx_record(tx, key)
            record: dict[str, Any] = {"id": network_id, "ipv6": ipv6, "pools": pools,
                                      "created": time.time()}
            if mtu is not None:
                record["mtu"] = mtu
            if old.get("id") == network_id and isinstance(old.get("created"), (int, float)):
                record["created"] = old["created"]
                if isinstance(old.get("name"), str) and old["name"]:
                    record["name"] = old["name"]
            if old != record:
                tx.put(key, record)
            return None if "name" in record else float(record["created"])
        return transact(self.store, write)

    def delete(self, network_id: str) -> None:
        self.store.delete(self._key(network_id))

    def name(self, network_id: str) -> str | None:
        """The network's Docker name, once ``set_name`` or ``learnt`` recorded it."""
        return record_name(self._get(network_id))

    def set_name(self, network_id: str, name: str) -> None:
        """Record the network's Docker name (its record's other fields kept)."""
        record = self._get(network_id) or {"id": network_id}
        record["name"] = name
        self.store.put(self._key(network_id), dumps(record))

    def learnt(self, network_id: str, created: float, name: str) -> bool:
        """Record the name Docker gave the network made at ``created``, unless its record
        is gone (DeleteNetwork: never brought back), was made again since, or has a name;
        True when it was written."""
        key = self._key(network_id)

        def write(tx: Tx) -> bool:
            record = _tx_record(tx, key)
            if not record or record.get("created") != created or record_name(record):
                return False
            record["name"] = name
            tx.put(key, record)
            return True
        return transact(self.store, write)

    def subnets(self, network_id: str) -> list[str]:
        """The pools the network was created on with --subnet (none for a whole-pool one)."""
        return subnet_pools(self._get(network_id))

    def mtu(self, network_id: str) -> int | None:
        """The MTU the network was created with (-o com.docker.network.driver.mtu)."""
        return record_mtu(self._get(network_id))

    def dedicated_pools(self) -> set[str]:
        """The pools any host's network was created on with --subnet."""
        found: set[str] = set()
        for kv in self.store.list(keys.DOCKER_NETWORKS):
            found.update(subnet_pools(json_object(kv)))
        return found


def _tx_record(tx: Tx, key: str) -> dict[str, Any]:
    try:
        record = tx.get(key)
    except DatastoreError:  # not JSON: as absent
        return {}
    return record if isinstance(record, dict) else {}


def record_name(record: dict[str, Any]) -> str | None:
    name = record.get("name")
    return name if isinstance(name, str) and name else None


def record_mtu(record: dict[str, Any]) -> int | None:
    mtu = record.get("mtu")
    if isinstance(mtu, int) and not isinstance(mtu, bool) and MTU_MIN <= mtu <= MTU_MAX:
        return mtu
    return None


def profile_name(name: str) -> bool:
    """Whether a Docker network's name can name its profile (the plugin refuses its
    containers otherwise)."""
    try:
        Profile.with_defaults(name, docker_network=True)
    except CalicoError:
        return False
    return True


def network_names(kvs: Iterable[KeyValue], now: float) -> tuple[set[str], bool]:
    """The names every host's network records give that can name a profile (the profiles
    of those networks), and whether a network created within ``NAMING`` seconds of ``now``
    has no name yet (the plugin is learning it)."""
    names: set[str] = set()
    naming = False
    for kv in kvs:
        record = json_object(kv)
        name = record_name(record)
        if name:
            if profile_name(name):
                names.add(name)
            continue
        created = record.get("created")
        if isinstance(created, (int, float)) and not isinstance(created, bool) \
                and created >= now - NAMING:
            naming = True
    return names, naming


def subnet_pools(record: dict[str, Any]) -> list[str]:
    """The --subnet pools a network record names (a whole-pool network's are 0.0.0.0/0 and
    ::/0: left out)."""
    pools = record.get("pools")
    out = []
    for pool in pools if isinstance(pools, list) else []:
        try:
            net = netaddr.IPNetwork(pool)
        except (netaddr.AddrFormatError, TypeError, ValueError):
            continue
        if net.prefixlen:
            out.append(str(net.cidr))
    return out
