#!/usr/bin/python
# Copyright: Calico for Docker contributors
# Apache License 2.0 (see LICENSE)
# ruff: noqa: E402

from __future__ import annotations

DOCUMENTATION = r"""
module: calico_info
short_description: Read Calico's state (pools, profiles, nodes, peers, BGP sessions, IPAM check)
version_added: 0.1.0
description:
  - Returns what the Calico datastore holds (pools, profiles, nodes, BGP peers and settings,
    this host's endpoints), the result of the IPAM consistency check
    (C(calicoctl ipam check)), and this host's BGP sessions as BIRD reports them
    (C(calicoctl node status)).
  - With O(explain), also whether given flows would pass Calico's rules and which rule
    decides (C(calicoctl policy explain)).
  - Changes nothing, ever.
options:
  hostname:
    description: This host's name in the datastore (for its endpoints). When not given,
      E(CALICO_HOSTNAME), else the system host name (like the agent).
    type: str
  bird_socket:
    description: BIRD's control socket. When it does not exist, RV(bgp_sessions) is empty
      and RV(notes) says why.
    type: path
    default: /run/bird/bird.ctl
  explain:
    description:
      - Flows to explain (C(calicoctl policy explain)) - whether the first packet of each
        would pass Calico's rules, and which profile rule decides, from the rules each
        host on its way renders. Results in RV(explanations), in the same order.
    type: list
    elements: dict
    default: []
    suboptions:
      from:
        description: The source - an address, or an endpoint id (or a unique start of one).
        type: str
        required: true
      to:
        description: The destination - an address, or an endpoint id (or a unique start of
          one).
        type: str
        required: true
      protocol:
        description: C(tcp), C(udp), C(sctp), C(icmp), C(icmpv6) or a number; by default
          C(tcp) when O(explain[].port) is set, else C(icmp) (a ping).
        type: str
      port:
        description: The destination port (C(tcp), C(udp), C(sctp)).
        type: int
      source_port:
        description: The source port; by default 32768, the first ephemeral one.
        type: int
      icmp_type:
        description: The ICMP type; by default an echo request.
        type: int
      icmp_code:
        description: The ICMP code.
        type: int
      ip_version:
        description: The IP version, for endpoints that have both; by default 4 where both
          ends have it.
        type: int
        choices: [4, 6]
extends_documentation_fragment:
  - calico.docker.datastore
  - calico.docker.attributes.info
seealso:
  - module: calico.docker.dataplane
author:
  - Calico for Docker contributors (!UNKNOWN)
"""

EXAMPLES = r"""
- name: Read Calico's state
  calico.docker.calico_info:
  register: calico

- name: Why can frontend not reach the backend on 8080?
  calico.docker.calico_info:
    explain:
      - from: 10.65.0.5
        to: 10.65.1.7
        port: 8080
  register: why

- name: Show the verdict and the rules that decided
  ansible.builtin.debug:
    msg: "{{ why.explanations[0].verdict }}: {{ why.explanations[0].steps
             | map(attribute='detail') | list }}"

- name: Every BGP session of this host is up
  ansible.builtin.assert:
    that:
      - calico.bgp_sessions | rejectattr('established') | list | length == 0
      - calico.ipam_ok
"""

RETURN = r"""
hostname:
  description: The host name the endpoints and sessions are for.
  returned: always
  type: str
  sample: host-1
pools:
  description: The IP pools.
  returned: always
  type: list
  elements: dict
  sample: [{"cidr": "10.65.0.0/16", "block_size": 26, "nat_outgoing": true,
            "disabled": false}]
profiles:
  description: The profiles with their tags, labels and rules.
  returned: always
  type: list
  elements: dict
nodes:
  description: The registered nodes.
  returned: always
  type: list
  elements: dict
  sample: [{"name": "host-1", "ipv4": "10.0.0.1", "ipv6": null, "as_number": null,
            "rr_cluster_id": null}]
bgp_peers:
  description: The global peers and every node's own peers, passwords masked.
  returned: always
  type: list
  elements: dict
  sample: [{"address": "10.0.0.254", "as_number": 65000, "node": null, "password": null}]
bgp_config:
  description: The global BGP settings.
  returned: always
  type: dict
  sample: {"as_number": 64512, "node_to_node_mesh": true}
endpoints:
  description: This host's endpoints (container interfaces).
  returned: always
  type: list
  elements: dict
ipam_ok:
  description: Whether the IPAM consistency check found nothing wrong.
  returned: always
  type: bool
  sample: true
ipam_problems:
  description: The problems the IPAM check found (kind, subject, detail).
  returned: always
  type: list
  elements: dict
  sample: [{"kind": "leak", "subject": "10.65.0.7", "detail": "no endpoint holds it"}]
bgp_sessions:
  description: This host's Calico BGP sessions as BIRD reports them; empty when BIRD's
    socket does not exist.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: BIRD's protocol name (C(Mesh_...), C(Global_...), C(Node_...)).
      type: str
      returned: always
    type:
      description: C(mesh), C(global) or C(node).
      type: str
      returned: always
    peer:
      description: The peer's address.
      type: str
      returned: always
    state:
      description: BIRD's protocol state.
      type: str
      returned: always
    since:
      description: Since when it is in that state.
      type: str
      returned: always
    info:
      description: BIRD's info column (C(Established) when the session is up).
      type: str
      returned: always
    established:
      description: Whether the session is up.
      type: bool
      returned: always
    multihop:
      description: Whether the peer is off this host's subnet, reached through routers
        (see M(calico.docker.node)'s O(calico.docker.node#module:ipv4_subnet)).
      type: bool
      returned: always
explanations:
  description: One per O(explain) item - the verdict and the decision path.
  returned: always
  type: list
  elements: dict
  contains:
    packet:
      description: The packet judged, as one line.
      type: str
      returned: always
      sample: tcp 10.65.0.5 port 32768 -> 10.65.1.7 port 8080
    allowed:
      description: Whether Calico's rules let it through.
      type: bool
      returned: always
    verdict:
      description: C(allowed) or C(dropped).
      type: str
      returned: always
    source:
      description: What the source is (endpoint, host or other address).
      type: str
      returned: always
    destination:
      description: What the destination is.
      type: str
      returned: always
    steps:
      description: Each decision on the way - C(host), C(stage) (C(anti-spoofing),
        C(outbound), C(inbound), C(endpoint), C(to-host), C(bgp-guard), C(dispatch),
        C(forward), C(nat)), C(verdict), C(chain), C(position), C(detail), and for profile
        rules C(profile), C(rule_number) and C(rule) as the user wrote it.
      type: list
      elements: dict
      returned: always
    notes:
      description: What the walk cannot see (for example an address no container holds).
      type: list
      elements: str
      returned: always
    trace:
      description: Every iptables rule that matched, in order (host, chain, position, rule).
      type: list
      elements: dict
      returned: always
notes:
  description: What could not be read and why (for example that BIRD is not running).
  returned: always
  type: list
  elements: str
"""

import os

from ansible_collections.calico.docker.plugins.module_utils.calico import (
    MASK,
    CalicoError,
    calico_module,
    fail,
    resolve_hostname,
    run,
)


def sessions(socket, notes):
    from calico_lib.dataplane.bird import bgp_sessions

    if not os.path.exists(socket):
        notes.append(f"bgp_sessions: BIRD's socket {socket} does not exist (BIRD is not "
                     "running here)")
        return []
    try:
        found = bgp_sessions(socket)
    except CalicoError as exc:
        notes.append(f"bgp_sessions: {exc}")
        return []
    return [{"name": s.name, "type": s.kind, "peer": s.peer, "state": s.state,
             "since": s.since, "info": s.info, "established": s.established,
             "multihop": s.multihop} for s in found]


def peer(data):
    if data.get("password"):
        data["password"] = MASK
    return data


def explain(client, item):
    return client.explain(item["from"], item["to"], item["protocol"], item["port"],
                          src_port=item["source_port"], icmp_type=item["icmp_type"],
                          icmp_code=item["icmp_code"],
                          ip_version=item["ip_version"]).to_dict()


def gather(module, client, hostname):
    notes = []
    problems = client.ipam.check()
    return {
        "changed": False,
        "hostname": hostname,
        "pools": [p.to_dict() for p in client.list_pools()],
        "profiles": [p.to_dict() for p in client.list_profiles()],
        "nodes": [n.to_dict() for n in client.list_nodes()],
        "bgp_peers": [peer(p.to_dict()) for p in client.list_bgp_peers()],
        "bgp_config": client.get_bgp_config().to_dict(),
        "endpoints": [e.to_dict() for e in client.list_endpoints(hostname)],
        "ipam_ok": not problems,
        "ipam_problems": [{"kind": p.kind, "subject": p.subject, "detail": p.detail}
                          for p in problems],
        "bgp_sessions": sessions(module.params["bird_socket"], notes),
        "explanations": [explain(client, item) for item in module.params["explain"]],
        "notes": notes,
    }


def main():
    module = calico_module({
        "hostname": {"type": "str"},
        "bird_socket": {"type": "path", "default": "/run/bird/bird.ctl"},
        "explain": {"type": "list", "elements": "dict", "default": [], "options": {
            "from": {"type": "str", "required": True},
            "to": {"type": "str", "required": True},
            "protocol": {"type": "str"},
            "port": {"type": "int"},
            "source_port": {"type": "int"},
            "icmp_type": {"type": "int"},
            "icmp_code": {"type": "int"},
            "ip_version": {"type": "int", "choices": [4, 6]},
        }},
    })
    try:  # a bad argument is named before the datastore is opened
        hostname = resolve_hostname(module.params["hostname"])
    except CalicoError as exc:
        fail(module, exc)
    run(module, lambda client: gather(module, client, hostname), read_only=True)


if __name__ == "__main__":
    main()
