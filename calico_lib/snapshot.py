"""A consistent snapshot of what one host's dataplane is rendered from."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from . import keys
from .datastore import Datastore
from .model import AgentConfig, Endpoint, IPPool, Profile


@dataclass(frozen=True)
class Snapshot:
    hostname: str
    revision: int = 0
    pools: tuple[IPPool, ...] = ()
    profiles: dict[str, Profile] = field(default_factory=dict)
    #: the endpoints of every host (tags are sets of addresses cluster-wide)
    endpoints: tuple[Endpoint, ...] = ()
    config: AgentConfig = field(default_factory=AgentConfig)

    @property
    def local_endpoints(self) -> tuple[Endpoint, ...]:
        return tuple(e for e in self.endpoints if e.host == self.hostname)


def load_snapshot(store: Datastore, hostname: str) -> Snapshot:
    """Read everything the renderers need in one consistent read."""
    (pools, profiles, endpoints, config), revision = store.read(
        [keys.POOLS, keys.PROFILES, keys.ENDPOINTS, keys.AGENT_CONFIG])
    return Snapshot(
        hostname=hostname,
        revision=revision,
        pools=tuple(IPPool.from_dict(json.loads(kv.value)) for kv in pools),
        profiles={p.name: p for p in (Profile.from_dict(json.loads(kv.value))
                                      for kv in profiles)},
        endpoints=tuple(sorted((Endpoint.from_dict(json.loads(kv.value)) for kv in endpoints),
                               key=lambda e: (e.host, e.id))),
        config=AgentConfig.from_dict(json.loads(config[0].value)) if config else AgentConfig(),
    )
