"""A consistent snapshot of what one host's dataplane is rendered from."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import netaddr

from . import keys
from .datastore import Datastore, KeyValue
from .errors import ValidationError
from .model import (
    AgentConfig,
    BGPConfig,
    BGPPeer,
    Endpoint,
    IPPool,
    Node,
    Profile,
    parse_network,
)
from .records import DecodeCache, Unreadable, decode_all


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
    #: by host (this one included), its blocks inside pools that encapsulate (VXLAN):
    #: empty when no pool does. A block two hosts claim is nobody's here.
    host_blocks: dict[str, tuple[str, ...]] = field(default_factory=dict)
    #: records that could not be read and were left out (reported, never fatal)
    unreadable: tuple[Unreadable, ...] = ()

    @cached_property
    def local_endpoints(self) -> tuple[Endpoint, ...]:
        return tuple(e for e in self.endpoints if e.host == self.hostname)


def load_snapshot(store: Datastore, hostname: str, cache: DecodeCache | None = None
                  ) -> Snapshot:
    """Read everything the renderers need in one consistent read.

    A record that cannot be read is left out and listed in ``unreadable``: the rest of
    the host's dataplane is still rendered from everything else. With ``cache`` (kept
    by a long-running reader), records unchanged since its last read are not decoded
    again and are the same objects as then.
    """
    if cache is not None:
        cache.next_read()
    (pools, profiles, endpoints, config, nodes, bgp, global_peers, own_peers,
     affinities), revision = store.read(
        [keys.POOLS, keys.PROFILES, keys.ENDPOINTS, keys.AGENT_CONFIG, keys.NODES,
         keys.BGP_CONFIG, keys.GLOBAL_PEERS, f"{keys.NODE_PEERS}{hostname}/",
         keys.AFFINITIES])
    bad: list[Unreadable] = []

    def read(kvs: list[KeyValue], cls: type) -> list:
        good, skipped = decode_all(kvs, cls, cache)
        bad.extend(skipped)
        return good

    agent_config = read(config, AgentConfig)
    bgp_config = read(bgp, BGPConfig)
    all_endpoints = _one_per_interface(read(endpoints, Endpoint), bad)
    all_pools = tuple(read(pools, IPPool))
    mine = keys.affinities(hostname)
    return Snapshot(
        hostname=hostname,
        revision=revision,
        pools=all_pools,
        profiles=with_network_profiles({p.name: p for p in read(profiles, Profile)},
                                       all_endpoints),
        endpoints=all_endpoints,
        config=agent_config[0] if agent_config else AgentConfig(),
        nodes=_one_per_address(read(nodes, Node), hostname, bad),
        bgp=bgp_config[0] if bgp_config else BGPConfig(),
        peers=tuple(read(global_peers + own_peers, BGPPeer)),
        blocks=tuple(b for b in (_block(kv, bad) for kv in affinities
                                 if kv.key.startswith(mine)) if b),
        host_blocks=_encapsulated_blocks(affinities, all_pools, hostname, bad),
        unreadable=tuple(bad),
    )


def _block(kv: KeyValue, bad: list[Unreadable]) -> str | None:
    """The block CIDR an affinity key names (it goes into BIRD's config: validate it)."""
    part = keys.last(kv.key)
    try:
        if "-" not in part:
            raise ValidationError("cidr", "no prefix length")
        cidr = parse_network("cidr", keys.cidr_from_part(part))
    except ValidationError as exc:
        bad.append(Unreadable(kv.key, f"not a block affinity ({exc})"))
        return None
    return str(cidr)


def _encapsulated_blocks(affinities: list[KeyValue], pools: tuple[IPPool, ...],
                         hostname: str, bad: list[Unreadable]) -> dict[str, tuple[str, ...]]:
    """Every host's blocks inside pools that encapsulate; a block that more than one host
    claims (each host writes its own affinities: a host may lie) is left out for the
    others, never for this host."""
    nets = [p.network for p in pools if p.encapsulates]
    if not nets:
        return {}
    claims: dict[str, list[str]] = {}
    for kv in affinities:
        host = kv.key[len(keys.AFFINITIES):].split("/", 1)[0]
        if host == hostname:
            block = _block(kv, [])  # this host's own are reported with ``blocks``
        else:
            block = _block(kv, bad)
        if block is not None and any(netaddr.IPNetwork(block) in n for n in nets):
            claims.setdefault(block, []).append(host)
    out: dict[str, list[str]] = {}
    for block, hosts in sorted(claims.items()):
        if len(hosts) > 1:
            for host in hosts:
                if host != hostname:
                    bad.append(Unreadable(keys.affinity(host, block), f"block {block} is "
                               f"also claimed by {sorted(set(hosts) - {host})[0]}: left out"))
        for host in hosts:
            if len(hosts) == 1 or host == hostname:
                out.setdefault(host, []).append(block)
    return {host: tuple(blocks) for host, blocks in sorted(out.items())}


def _one_per_interface(endpoints: list[Endpoint], bad: list[Unreadable]
                       ) -> tuple[Endpoint, ...]:
    """Endpoints sorted by (host, id); of several on one host with the same interface (a
    kernel name two objects may not share) only the first is kept."""
    out: list[Endpoint] = []
    taken: dict[tuple[str, str], str] = {}
    for ep in sorted(endpoints, key=lambda e: (e.host, e.id)):
        first = taken.setdefault((ep.host, ep.interface), ep.id)
        if first != ep.id:
            bad.append(Unreadable(keys.endpoint(ep.host, ep.id), f"interface {ep.interface} "
                                  f"is endpoint {first}'s on {ep.host}: left out"))
            continue
        out.append(ep)
    return tuple(out)


def _one_per_address(nodes: list[Node], hostname: str, bad: list[Unreadable]
                     ) -> dict[str, Node]:
    """Nodes by name, without the ones whose BGP address another node also claims (BIRD
    would refuse the whole config); this host's own node is always kept."""
    owners: dict[str, list[str]] = {}
    for node in nodes:
        for address in (node.ipv4, node.ipv6):
            if address:
                owners.setdefault(address, []).append(node.name)
    out = {}
    for node in nodes:
        shared = [a for a in (node.ipv4, node.ipv6)
                  if a and len(owners[a]) > 1]
        if shared and node.name != hostname:
            others = sorted(set(owners[shared[0]]) - {node.name})
            bad.append(Unreadable(keys.node(node.name), f"address {shared[0]} is also node "
                                  f"{others[0]}'s: left out"))
            continue
        out[node.name] = node
    return out


#: the label the Docker plugin puts on its endpoints (the network's id)
DOCKER_LABEL = "docker-network"


def with_network_profiles(profiles: dict[str, Profile], endpoints: tuple[Endpoint, ...]
                          ) -> dict[str, Profile]:
    """``profiles`` plus the default profile of every Docker network whose profile has no
    record yet (the plugin writes no policy: hosts may not)."""
    out = dict(profiles)
    for ep in endpoints:
        if DOCKER_LABEL in ep.labels:
            for name in ep.profiles:
                if name not in out:
                    out[name] = Profile.with_default_rules(name, docker_network=True)
    return dict(sorted(out.items()))
