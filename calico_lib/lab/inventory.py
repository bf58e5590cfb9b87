"""The lab's Ansible inventory: its node containers reached with community.docker's docker
connection, and site.yml's variables for the lab."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

from .nodes import NodeSpec
from .outside import FabricLayout
from .shell import write_atomic

#: the cluster id of the lab's route reflectors (``--route-reflectors``)
RR_CLUSTER_ID = "10.255.0.1"
POOL4 = "10.200.0.0/16"
POOL6 = "fd00:200::/64"
#: with --fabric: an IPv4 pool without nat_outgoing (the network ``edge``'s), so the outside
#: sees these containers' own addresses
POOL4_ROUTED = "10.201.0.0/16"
#: with --fabric: the network on POOL4_ROUTED
EDGE_NETWORK = "edge"


def lab_pools(ipv6: bool, fabric: bool = False) -> list[dict[str, Any]]:
    """The lab's pools: POOL4 with nat_outgoing, POOL4_ROUTED without (``fabric``), and
    POOL6 without (``ipv6``)."""
    pools: list[dict[str, Any]] = [{"cidr": POOL4, "nat_outgoing": True}]
    if fabric:
        pools.append({"cidr": POOL4_ROUTED, "nat_outgoing": False})
    if ipv6:
        pools.append({"cidr": POOL6})
    return pools


def lab_variables(specs: Sequence[NodeSpec], ipv6: bool, reflected: bool = False,
                  fabric: FabricLayout | None = None) -> dict[str, Any]:
    """site.yml's variables for the lab (see inventory/example/group_vars): etcd on the first
    node (over TLS with client certificates, the roles' default), the mesh (or, ``reflected``,
    route reflectors instead), one pool per IP version, networks frontend and backend on
    every node with Calico's default profile rules (members reach each other, nothing else
    gets in).

    With ``fabric`` (``lab up --fabric``), as a site behind a top-of-rack router: the ToR is
    a global BGP peer of every node (IPv4, and IPv6 in an IPv6 lab) whose routes are
    accepted for the outside network only, and a second IPv4 pool without nat_outgoing
    holds the network ``edge`` (``--subnet``). In racks (``--racks``), Calico's "AS per
    rack": the mesh is off, and each node peers with its rack's ToR only (a per-node peer in
    the rack's AS, the ToR reflecting the rack's routes and bringing the other racks')."""
    pools = lab_pools(ipv6, fabric is not None)
    networks: list[dict[str, Any]] = [{"name": "frontend"}, {"name": "backend"}]
    if fabric is not None:
        networks.append({"name": EDGE_NETWORK, "subnet": [POOL4_ROUTED]})
    if ipv6:
        for network in networks:
            network["ipv6"] = True
    peers: list[dict[str, Any]] = []
    racked = fabric is not None and fabric.racked
    if fabric is not None:
        # one ToR: every node's (global) peer; racks: each node's own rack's
        pairs = [(spec.name, fabric.tors[spec.rack - 1]) for spec in specs] if racked \
            else [(None, fabric.tors[0])]
        for node, tor in pairs:
            for address, subnet in ((tor.fabric4, fabric.subnet4),
                                    (tor.fabric6, fabric.subnet6)):
                if address and subnet:
                    peers.append({"address": address, "as_number": tor.as_number,
                                  **({"node": node} if node else {}),
                                  "accept_nets": [subnet]})
    return {
        "calico_policy_pools": pools,
        "calico_policy_bgp": {"as_number": 64512,
                       "node_to_node_mesh": not (reflected or racked)},
        **({"calico_policy_bgp_peers": peers} if peers else {}),
        # the networks' profiles (docker_network: the plugin puts their containers there)
        "calico_policy_profiles": [
            {"name": n["name"], "default_rules": True, "docker_network": True}
            for n in networks],
        "calico_docker_networks": networks,
        # metrics on, inside each node (docs/observability.md); off by default elsewhere
        "calico_node_agent_metrics_address": "127.0.0.1:9091",
        "calico_docker_plugin_metrics_address": "127.0.0.1:9092",
    }


def inventory(specs: Sequence[NodeSpec], *, docker_host: str, pki_dir: str, ipv6: bool,
              route_reflectors: int = 0, fabric: FabricLayout | None = None
              ) -> dict[str, Any]:
    """The inventory as data: every node in ``calico_nodes``, the first in ``etcd``; the
    first ``route_reflectors`` nodes reflect routes (and the mesh is off); with ``fabric``
    the ToR in ``tor`` (the role calico.docker.tor configures its BIRD), advertising the
    outside network to the nodes; in racks, a ToR per rack and each node in its rack's AS."""
    hosts: dict[str, Any] = {}
    for spec in specs:
        # ansible_host is the container (the docker connection's target); BGP and etcd
        # use the fabric addresses
        host: dict[str, Any] = {"ansible_host": spec.name, "calico_node_bgp_ipv4": spec.ip4,
                                "calico_etcd_address": spec.ip4}
        if spec.ip6:
            host["calico_node_bgp_ipv6"] = spec.ip6
        if spec.index <= route_reflectors:  # one cluster: the reflectors peer
            host["calico_node_rr_cluster_id"] = RR_CLUSTER_ID
        if fabric is not None and fabric.racked:  # AS per rack
            host["calico_node_as_number"] = fabric.tors[spec.rack - 1].as_number
        hosts[spec.name] = host
    return {
        "all": {
            "vars": {
                "ansible_connection": "community.docker.docker",
                "ansible_docker_extra_args": f"-H {docker_host}",
                "ansible_python_interpreter": "/usr/bin/python3",
                "ansible_user": "root",
                # the controller side of etcd's TLS and users (calico.docker.pki): the
                # CA, every certificate and every etcd user's password (.passwords/),
                # kept with the lab's state (`down` removes them); etcd's
                # authentication is on, the roles' default (calico_etcd_auth)
                "calico_pki_dir": pki_dir,
                **lab_variables(specs, ipv6, route_reflectors > 0, fabric),
            },
            "children": {
                "etcd": {"hosts": {specs[0].name: {}}},
                "calico_nodes": {"hosts": hosts},
                **({"tor": tor_group(fabric, specs)} if fabric is not None else {}),
            },
        }
    }


def tor_group(fabric: FabricLayout, specs: Sequence[NodeSpec]) -> dict[str, Any]:
    """The ``tor`` group: each ToR container with its fabric addresses (BIRD's router id is
    the IPv4 one), and the outside network it advertises to the nodes. One ToR: in AS 65000,
    its neighbours every node of ``calico_nodes`` and it accepts their pools' blocks (the
    role's defaults). Racks: each ToR in its rack's AS, its neighbours its rack's nodes
    (``calico_tor_nodes``), and the other ToRs its peers over the outside network
    (``calico_tor_peers``)."""
    hosts: dict[str, Any] = {}
    for tor in fabric.tors:
        host: dict[str, Any] = {"ansible_host": tor.name, "calico_tor_bgp_ipv4": tor.fabric4}
        if tor.fabric6:
            host["calico_tor_bgp_ipv6"] = tor.fabric6
        if fabric.racked:
            host["calico_tor_as_number"] = tor.as_number
            host["calico_tor_nodes"] = [s.name for s in specs if s.rack == tor.rack]
            host["calico_tor_peers"] = [
                {"address": theirs, "as_number": other.as_number, "local": mine}
                for other in fabric.tors if other != tor
                for mine, theirs in ((tor.outside4, other.outside4),
                                     (tor.outside6, other.outside6)) if mine and theirs]
        hosts[tor.name] = host
    group_vars: dict[str, Any] = {"calico_tor_advertise": fabric.subnets}
    if not fabric.racked:
        group_vars = {"calico_tor_as_number": fabric.as_number, **group_vars}
    return {"hosts": hosts, "vars": group_vars}


def write_inventory(path: str, data: dict[str, Any]) -> None:
    """The inventory as YAML (JSON, which is YAML too, when PyYAML is missing)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    try:
        import yaml  # ansible's dependency

        body = yaml.safe_dump(data, default_flow_style=False, sort_keys=False)
    except ImportError:
        body = json.dumps(data, indent=2) + "\n"
    text = ("# Written by `calicoctl lab up`: the lab's node containers, reached with\n"
            "# community.docker's docker connection. Rewritten on every `lab up`.\n"
            "# ansible-playbook -i THIS_FILE playbooks/site.yml (from the checkout)\n"
            + body)
    write_atomic(path, text)
