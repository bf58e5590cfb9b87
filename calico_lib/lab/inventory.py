"""The lab's Ansible inventory: its node containers reached with community.docker's docker
connection, and site.yml's variables for the lab."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

from .nodes import NodeSpec
from .shell import write_atomic

#: the cluster id of the lab's route reflectors (``--route-reflectors``)
RR_CLUSTER_ID = "10.255.0.1"
POOL4 = "10.200.0.0/16"
POOL6 = "fd00:200::/64"


def lab_variables(specs: Sequence[NodeSpec], ipv6: bool, reflected: bool = False
                  ) -> dict[str, Any]:
    """site.yml's variables for the lab (see inventory/example/group_vars): etcd on the first
    node (over TLS with client certificates, the roles' default), the mesh (or, ``reflected``,
    route reflectors instead), one pool per IP version, networks frontend and backend on
    every node with Calico's default profile rules (members reach each other, nothing else
    gets in)."""
    pools: list[dict[str, Any]] = [{"cidr": POOL4, "nat_outgoing": True}]
    networks: list[dict[str, Any]] = [{"name": "frontend"}, {"name": "backend"}]
    if ipv6:
        pools.append({"cidr": POOL6})
        for network in networks:
            network["ipv6"] = True
    return {
        "policy_pools": pools,
        "policy_bgp": {"as_number": 64512, "node_to_node_mesh": not reflected},
        # the networks' profiles (docker_network: the plugin puts their containers there)
        "policy_profiles": [{"name": n["name"], "default_rules": True, "docker_network": True}
                            for n in networks],
        "docker_calico_networks": networks,
        # metrics on, inside each node (docs/observability.md); off by default elsewhere
        "node_agent_metrics_address": "127.0.0.1:9091",
        "docker_plugin_metrics_address": "127.0.0.1:9092",
    }


def inventory(specs: Sequence[NodeSpec], *, docker_host: str, pki_dir: str, ipv6: bool,
              route_reflectors: int = 0) -> dict[str, Any]:
    """The inventory as data: every node in ``calico_nodes``, the first in ``etcd``; the
    first ``route_reflectors`` nodes reflect routes (and the mesh is off)."""
    hosts: dict[str, Any] = {}
    for spec in specs:
        # ansible_host is the container (the docker connection's target); BGP and etcd
        # use the fabric addresses
        host: dict[str, Any] = {"ansible_host": spec.name, "node_bgp_ipv4": spec.ip4,
                                "etcd_address": spec.ip4}
        if spec.ip6:
            host["node_bgp_ipv6"] = spec.ip6
        if spec.index <= route_reflectors:  # one cluster: the reflectors peer
            host["node_rr_cluster_id"] = RR_CLUSTER_ID
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
                # authentication is on, the roles' default (etcd_auth)
                "pki_dir": pki_dir,
                **lab_variables(specs, ipv6, route_reflectors > 0),
            },
            "children": {
                "etcd": {"hosts": {specs[0].name: {}}},
                "calico_nodes": {"hosts": hosts},
            },
        }
    }


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
