#!/usr/bin/python
# Copyright: Calico for Docker contributors
# Apache License 2.0 (see LICENSE)
# ruff: noqa: E402

from __future__ import annotations

DOCUMENTATION = r"""
module: node
short_description: Register Calico nodes (hosts that run containers and BIRD)
version_added: 0.1.0
description:
  - Creates, replaces or removes one node record in the Calico datastore, like
    C(calicoctl node add). BIRD peers with the nodes (the node-to-node mesh or route
    reflectors) at the addresses recorded here.
  - The record is exactly what the task gives; an option left out is cleared.
  - Removing a node removes the host from the cluster, as C(calicoctl node remove) and
    Calico's C(calicoctl delete node) do, in this order, each step its own transaction - its
    endpoints (members of their profiles' groups on every other host) and the addresses
    they hold; the addresses of its pending and tunnel handles; its Docker network records
    and interface index; its block claims (empty blocks are freed); last its node record and
    its own BGP peers. A removal cut short is finished by running the task again. The diff
    shows all of it. Stop the host's C(calico-agent) and Docker plugin first, or they write
    their records back.
options:
  name:
    description: The node's host name, as the agent knows it (C(--hostname), else
      E(CALICO_HOSTNAME), else the system host name).
    type: str
    required: true
  ipv4:
    description:
      - The node's IPv4 address; BIRD's router id and the address other nodes peer with.
        A node without one takes no part in BGP.
      - C(ADDR/PREFIX) is accepted; the prefix is dropped (the host's subnet is
        O(ipv4_subnet)).
      - It must be a unicast address. Unspecified, loopback, link-local, multicast and
        broadcast addresses fail, as does the network or broadcast address of the prefix
        given with it or of O(ipv4_subnet) (except in a /31 or /32).
    type: str
  ipv4_subnet:
    description:
      - "The host's IPv4 subnet, in CIDR (such as C(10.0.0.0/24)): the network of the
        interface that holds O(ipv4), as Calico's C(ipv4Address: 10.0.0.1/24) gives it
        (host bits are cleared). It must hold O(ipv4)."
      - A BGP peer outside it (a node, a global peer or this node's own peer) is reached
        through routers, with BIRD's C(multihop), and its routes' next hops are resolved
        through the host's kernel routes.
      - Left out, every peer is taken to be on the host's subnet (records made before this
        option existed); the C(calico.docker.node) role fills it in from the facts.
    type: str
  ipv6:
    description:
      - The node's IPv6 address, for IPv6 BGP sessions; C(ADDR/PREFIX) is accepted as for
        O(ipv4).
      - It must be a unicast address. Unspecified, loopback, link-local and multicast
        addresses fail, as does the subnet-router anycast address (the network address) of
        the prefix given with it or of O(ipv6_subnet) (except in a /127 or /128).
    type: str
  ipv6_subnet:
    description: The host's IPv6 subnet (such as C(2001:db8::/64)), which must hold
      O(ipv6); as O(ipv4_subnet) for IPv6 sessions.
    type: str
  as_number:
    description: The node's own AS number; when not given, the global one of
      M(calico.docker.bgp_config).
    type: int
  rr_cluster_id:
    description:
      - Makes this node a route reflector with this cluster id (a dotted quad such as
        C(224.0.0.1)). With the node-to-node mesh off, nodes without a cluster id peer with
        the route reflectors only.
    type: str
  state:
    description: Whether the node is registered.
    type: str
    choices: [present, absent]
    default: present
extends_documentation_fragment:
  - calico.docker.datastore
  - calico.docker.attributes.policy
seealso:
  - module: calico.docker.bgp_config
  - module: calico.docker.bgp_peer
author:
  - Calico for Docker contributors (!UNKNOWN)
"""

EXAMPLES = r"""
- name: Register this host
  calico.docker.node:
    name: "{{ ansible_facts['hostname'] }}"
    ipv4: "{{ ansible_facts['default_ipv4']['address'] }}"

- name: Register this host with its subnet (peers on other subnets are multihop)
  calico.docker.node:
    name: "{{ ansible_facts['hostname'] }}"
    ipv4: "{{ ansible_facts['default_ipv4']['address'] }}"
    ipv4_subnet: >-
      {{ ansible_facts['default_ipv4']['network'] }}/{{ ansible_facts['default_ipv4']['prefix'] }}

- name: A route reflector with its own AS
  calico.docker.node:
    name: rr-1
    ipv4: 10.0.0.2
    ipv6: fd00::2
    as_number: 64513
    rr_cluster_id: 224.0.0.1

- name: Deregister a host (its own BGP peers go too)
  calico.docker.node:
    name: old-host
    state: absent
"""

RETURN = r"""
node:
  description: The node record as stored (null after removal).
  returned: always
  type: dict
  sample: {"name": "host-1", "ipv4": "10.0.0.1", "ipv6": null, "as_number": null,
           "rr_cluster_id": null, "ipv4_subnet": "10.0.0.0/24"}
diff:
  description: The node record before and after (an empty dict where there is none).
  returned: always
  type: dict
  contains:
    before:
      description:
        - The stored record before the task.
        - With O(state=absent), the record plus what is removed with it - C(peers), the
          node's own BGP peers (passwords shown as C(********)); C(endpoints), the ids of
          its endpoints; C(handles), its IPAM handles no endpoint names (pending, its
          tunnel address's, ended endpoints'); C(addresses), the addresses all of them
          hold; C(blocks), its block claims; C(records), the keys of its Docker network
          records and interface index. A host with no node record but such records left
          shows C(name) and them.
      type: dict
      returned: always
    after:
      description: The stored record after the task.
      type: dict
      returned: always
    prepared:
      description:
        - In check mode, what every host's dataplane would do (M(calico.docker.dataplane)'s
          rule lines, ipset members, routes and BIRD configuration lines added and
          removed), after a summary line (see RV(dataplane.summary)).
      type: str
      returned: check mode with diff
dataplane:
  description:
    - In check mode, the change every host's dataplane would make (see
      C(calicoctl --dry-run)), computed with the agents' renderers from the datastore as
      it is and as the task would leave it; only hosts that change are listed.
  returned: check mode
  type: dict
  contains:
    summary:
      description: 'One line, such as C(3 hosts: +2 rules, -0; 1 host unaffected).'
      type: str
      returned: always
    hosts:
      description:
        - Per changed host, C(rules_added) and C(rules_removed), C(iptables) (per IP version
          and table, the C(-A chain rule) lines C(added) and C(removed)), C(ipsets) (per set,
          the members C(added) and C(removed)), C(routes_added), C(routes_removed), and
          C(bird) (a unified diff of BIRD's configuration, passwords masked).
      type: dict
      returned: always
"""

from ansible_collections.calico.docker.plugins.module_utils.calico import (
    calico_lib,
    calico_module,
    ensure_absent,
    ensure_present,
    lookup,
    run,
)

FIELDS = ("ipv4", "ipv6", "as_number", "rr_cluster_id", "ipv4_subnet", "ipv6_subnet")


def ensure(module, client):
    p = module.params
    if p["state"] == "absent":
        # everything the host holds goes with it (client.remove_node): the diff shows it
        held = client.node_holdings(p["name"])
        return ensure_absent(None if held.empty else held,
                             lambda: client.remove_node(p["name"]), "node")
    current = lookup(client.get_node, p["name"])
    # the tunnel address is the host's agent's to set: kept as it is
    wanted = calico_lib.Node(p["name"], **{key: p[key] for key in FIELDS},
                             ipv4_vxlan_tunnel=current.ipv4_vxlan_tunnel if current else None)
    before = current.to_dict() if current else {}
    return ensure_present(before, wanted, client.put_node, "node")


def main():
    module = calico_module({
        "name": {"type": "str", "required": True},
        "ipv4": {"type": "str"},
        "ipv6": {"type": "str"},
        "as_number": {"type": "int"},
        "rr_cluster_id": {"type": "str"},
        "ipv4_subnet": {"type": "str"},
        "ipv6_subnet": {"type": "str"},
        "state": {"type": "str", "default": "present", "choices": ["present", "absent"]},
    })
    run(module, lambda client: ensure(module, client), preview=True)


if __name__ == "__main__":
    main()
