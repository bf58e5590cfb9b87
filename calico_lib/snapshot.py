"""A consistent snapshot of what one host's dataplane is rendered from."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from . import keys
from .datastore import Datastore
from .model import AgentConfig, BGPConfig, BGPPeer, Endpoint, IPPool, Node, Profile


@dataclass(frozen=True)
class Snapshot:
    hostname: str
    revision: int = 0
    pools: tuple[IPPool, ...] = ()
    profiles: dict[str, Profile] = field(default_factory=dict)
    #: the endpoints of every host (tags are sets of addresses cluster-wide)
    endpoints: tuple[Endpoint, ...] = ()
    config: AgentConfig = field(default_factory=AgentConfig)
    nodes: dict[str, Node] = field(default_factory=dict)
    bgp: BGPConfig = field(default_factory=BGPConfig)
    #: global peers and this host's own peers
    peers: tuple[BGPPeer, ...] = ()
    #: the IPAM blocks affine to this host
    blocks: tuple[str, ...] = ()

    @property
    def local_endpoints(self) -> tuple[Endpoint, ...]:
        return tuple(e for e in self.endpoints if e.host == self.hostname)


def load_snapshot(store: Datastore, hostname: str) -> Snapshot:
    """Read everything the renderers need in one consistent read."""
    (pools, profiles, endpoints, config, nodes, bgp, global_peers, own_peers,
     affinities), revision = store.read(
        [keys.POOLS, keys.PROFILES, keys.ENDPOINTS, keys.AGENT_CONFIG, keys.NODES,
         keys.BGP_CONFIG, keys.GLOBAL_PEERS, f"{keys.NODE_PEERS}{hostname}/",
         keys.affinities(hostname)])
    return Snapshot(
        hostname=hostname,
        revision=revision,
        pools=tuple(IPPool.from_dict(json.loads(kv.value)) for kv in pools),
        profiles={p.name: p for p in (Profile.from_dict(json.loads(kv.value))
                                      for kv in profiles)},
        endpoints=tuple(sorted((Endpoint.from_dict(json.loads(kv.value)) for kv in endpoints),
                               key=lambda e: (e.host, e.id))),
        config=AgentConfig.from_dict(json.loads(config[0].value)) if config else AgentConfig(),
        nodes={n.name: n for n in (Node.from_dict(json.loads(kv.value)) for kv in nodes)},
        bgp=BGPConfig.from_dict(json.loads(bgp[0].value)) if bgp else BGPConfig(),
        peers=tuple(BGPPeer.from_dict(json.loads(kv.value))
                    for kv in global_peers + own_peers),
        blocks=tuple(keys.cidr_from_part(keys.last(kv.key)) for kv in affinities),
    )
