"""The Docker plugin's records of Docker networks: the one place they are written and read.

A host records each calico network Docker created on it (Calico's networks are local to a
host) under ``keys.docker_network(host, network id)``, a JSON object::

    {"id": <network id>, "ipv6": <bool>, "pools": [<the --subnet pool, or 0.0.0.0/0 / ::/0>,
     ...], "name": <the network's name in Docker, once learnt>}

Records are read leniently, field by field: a record that cannot be read counts as absent
(its network's name is asked of Docker again, it dedicates no pool).
"""

from __future__ import annotations

from typing import Any

import netaddr

from .. import keys
from ..datastore import Datastore
from ..records import json_object
from ..txn import dumps


class DockerNetworks:
    """The records of ``hostname``'s Docker networks in ``store``."""

    def __init__(self, store: Datastore, hostname: str) -> None:
        self.store = store
        self.hostname = hostname

    def _key(self, network_id: str) -> str:
        return keys.docker_network(self.hostname, network_id)

    def _get(self, network_id: str) -> dict[str, Any]:
        return json_object(self.store.get(self._key(network_id)))

    def create(self, network_id: str, ipv6: bool, pools: list[str | None]) -> None:
        self.store.put(self._key(network_id),
                       dumps({"id": network_id, "ipv6": ipv6, "pools": pools}))

    def delete(self, network_id: str) -> None:
        self.store.delete(self._key(network_id))

    def name(self, network_id: str) -> str | None:
        """The network's Docker name, once ``set_name`` recorded it."""
        name = self._get(network_id).get("name")
        return name if isinstance(name, str) and name else None

    def set_name(self, network_id: str, name: str) -> None:
        """Record the network's Docker name (its record's other fields kept)."""
        record = self._get(network_id) or {"id": network_id}
        record["name"] = name
        self.store.put(self._key(network_id), dumps(record))

    def subnets(self, network_id: str) -> list[str]:
        """The pools the network was created on with --subnet (none for a whole-pool one)."""
        return subnet_pools(self._get(network_id))

    def dedicated_pools(self) -> set[str]:
        """The pools any host's network was created on with --subnet."""
        found: set[str] = set()
        for kv in self.store.list(keys.DOCKER_NETWORKS):
            found.update(subnet_pools(json_object(kv)))
        return found


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
