"""The datastore key layout (documented in docs/datastore.md). Values are JSON objects."""

from __future__ import annotations

ROOT = "/calico/v1/"

BGP_CONFIG = ROOT + "config/bgp"
IPAM_CONFIG = ROOT + "config/ipam"
AGENT_CONFIG = ROOT + "config/agent"

POOLS = ROOT + "pools/"
#: rewritten with every pool change, so a pool write can compare on "no pool changed"
POOLS_GUARD = ROOT + "meta/pools"
PROFILES = ROOT + "profiles/"
NODES = ROOT + "nodes/"
#: rewritten with every node write, so two nodes cannot claim one BGP address at once
NODES_GUARD = ROOT + "meta/nodes"
ENDPOINTS = ROOT + "endpoints/"
#: per host, which endpoint has which host-side interface (``{"interfaces": {interface:
#: endpoint id}, "listed": n}``): rewritten by every endpoint write that checks it, so two
#: endpoints written at once cannot take one interface
INTERFACE_INDEX = ROOT + "meta/interfaces/"
GLOBAL_PEERS = ROOT + "bgp/peers/global/"
NODE_PEERS = ROOT + "bgp/peers/node/"

DOCKER_NETWORKS = ROOT + "docker/networks/"

BLOCKS = ROOT + "ipam/blocks/"
AFFINITIES = ROOT + "ipam/affinity/"
HANDLES = ROOT + "ipam/handles/"


def cidr_part(cidr: str) -> str:
    """CIDRs in keys use "-" for "/": 10.0.0.0/26 -> 10.0.0.0-26."""
    return cidr.replace("/", "-")


def cidr_from_part(part: str) -> str:
    return part.rsplit("-", 1)[0] + "/" + part.rsplit("-", 1)[1]


def pool(cidr: str) -> str:
    return POOLS + cidr_part(cidr)


def profile(name: str) -> str:
    return PROFILES + name


def node(name: str) -> str:
    return NODES + name


def endpoints(host: str) -> str:
    return f"{ENDPOINTS}{host}/"


def endpoint(host: str, endpoint_id: str) -> str:
    return f"{ENDPOINTS}{host}/{endpoint_id}"


def peer(address: str, node_name: str | None = None) -> str:
    if node_name is None:
        return GLOBAL_PEERS + address
    return f"{NODE_PEERS}{node_name}/{address}"


def interface_index(host: str) -> str:
    """The interface index of ``host`` (a guard key, like the pools' and nodes')."""
    return INTERFACE_INDEX + host


def docker_networks(host: str) -> str:
    """A host's records of its Docker networks (Calico's networks are local to a host)."""
    return f"{DOCKER_NETWORKS}{host}/"


def docker_network(host: str, network_id: str) -> str:
    return f"{DOCKER_NETWORKS}{host}/{network_id}"


def block(cidr: str) -> str:
    return BLOCKS + cidr_part(cidr)


def affinities(host: str) -> str:
    return f"{AFFINITIES}{host}/"


def affinity(host: str, cidr: str) -> str:
    return f"{AFFINITIES}{host}/{cidr_part(cidr)}"


def handle(handle_id: str) -> str:
    return HANDLES + handle_id


def last(key: str) -> str:
    return key.rsplit("/", 1)[1]
