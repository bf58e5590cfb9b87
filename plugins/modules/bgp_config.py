#!/usr/bin/python
# Copyright: Calico for Docker contributors
# Apache License 2.0 (see LICENSE)
# ruff: noqa: E402

from __future__ import annotations

DOCUMENTATION = r"""
module: bgp_config
short_description: Set Calico's global BGP settings (default AS number, node-to-node mesh)
version_added: 0.1.0
description:
  - Sets the cluster-wide BGP settings in the Calico datastore, like
    C(calicoctl bgp config set). Options left out keep their stored value (defaults AS
    64512, mesh on).
  - Route reflectors are nodes with a cluster id (O(calico.docker.node#module:rr_cluster_id));
    turn the mesh off and give one or more nodes a cluster id.
options:
  as_number:
    description: The AS number of every node without its own.
    type: int
  node_to_node_mesh:
    description: Every node peers with every other node. Turn it off to use route
      reflectors or to peer only with routers (M(calico.docker.bgp_peer)).
    type: bool
extends_documentation_fragment:
  - calico.docker.datastore
  - calico.docker.attributes.policy
seealso:
  - module: calico.docker.node
  - module: calico.docker.bgp_peer
author:
  - Calico for Docker contributors (!UNKNOWN)
"""

EXAMPLES = r"""
- name: Private AS 64512 with the full mesh
  calico.docker.bgp_config:
    as_number: 64512
    node_to_node_mesh: true

- name: Route reflection instead of the mesh
  calico.docker.bgp_config:
    node_to_node_mesh: false
"""

RETURN = r"""
bgp_config:
  description: The settings as stored.
  returned: always
  type: dict
  sample: {"as_number": 64512, "node_to_node_mesh": true}
diff:
  description: The settings before and after.
  returned: always
  type: dict
  contains:
    before:
      description: The stored settings before the task.
      type: dict
      returned: always
    after:
      description: The stored settings after the task.
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
    given,
    result,
    run,
)


def ensure(module, client):
    settings = given(module, "as_number", "node_to_node_mesh")
    before = client.get_bgp_config().to_dict()
    after = calico_lib.BGPConfig.from_dict(dict(before, **settings)).to_dict()
    changed = after != before
    if changed:
        after = client.set_bgp_config(**settings).to_dict()
    return result(changed, before, after, bgp_config=after)


def main():
    module = calico_module({
        "as_number": {"type": "int"},
        "node_to_node_mesh": {"type": "bool"},
    })
    run(module, lambda client: ensure(module, client), preview=True)


if __name__ == "__main__":
    main()
