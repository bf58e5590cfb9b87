#!/usr/bin/python
# Copyright: Calico for Docker contributors
# Apache License 2.0 (see LICENSE)
# ruff: noqa: E402

from __future__ import annotations

DOCUMENTATION = r"""
module: bgp_peer
short_description: Manage Calico BGP peers (global, or of one node)
version_added: 0.1.0
description:
  - Adds, changes or removes one BGP peer in the Calico datastore, like
    C(calicoctl bgp peer add). A global peer (no O(node)), such as a top-of-rack router,
    peers with every node; a node's own peer peers with that node only.
  - A peer is identified by its O(address) and O(node); its AS number and password are
    replaced as given, in one transaction.
options:
  address:
    description:
      - The peer's IPv4 or IPv6 address, without a prefix length (a CIDR such as
        C(10.0.0.254/24) fails).
    type: str
    required: true
  as_number:
    description: The peer's AS number. Required with O(state=present).
    type: int
  node:
    description:
      - The node (host name) this peer belongs to; leave out for a global peer.
      - The node must be registered (M(calico.docker.node)); a node that is not fails the
        task, in check mode as in a real run.
    type: str
  password:
    description:
      - TCP MD5 password of the session, 1-80 printable characters without spaces, quotes
        or backslashes. Never shown in results or diffs.
      - Replaced exactly as given; leaving it out removes the password.
    type: str
  accept_default_route:
    description:
      - Accept a default route from this peer (e.g. a top-of-rack router that is the way
        out). From any peer a node accepts only the pools' blocks and addresses inside
        them, plus what this option and O(accept_nets) allow.
    type: bool
    default: false
  accept_nets:
    description:
      - Accept routes inside these CIDRs from this peer (e.g. the outside networks the
        router serves). A /0 is refused; use O(accept_default_route).
    type: list
    elements: str
    default: []
  state:
    description: Whether the peer exists.
    type: str
    choices: [present, absent]
    default: present
extends_documentation_fragment:
  - calico.docker.datastore
  - calico.docker.attributes.policy
seealso:
  - module: calico.docker.bgp_config
  - module: calico.docker.bird_config
author:
  - Calico for Docker contributors (!UNKNOWN)
"""

EXAMPLES = r"""
- name: Every node peers with the top-of-rack router
  calico.docker.bgp_peer:
    address: 10.0.0.254
    as_number: 65000
    password: "{{ vault_tor_bgp_password }}"

- name: Only host-1 peers with this router
  calico.docker.bgp_peer:
    address: 10.0.1.254
    as_number: 65001
    node: host-1

- name: Remove a global peer
  calico.docker.bgp_peer:
    address: 10.0.0.254
    state: absent
"""

RETURN = r"""
peer:
  description: The peer as stored, password masked (null after removal).
  returned: always
  type: dict
  sample: {"address": "10.0.0.254", "as_number": 65000, "node": null, "password": "********"}
diff:
  description: The peer before and after (an empty dict where there is none); a password
    shows as C(********).
  returned: always
  type: dict
  contains:
    before:
      description: The stored peer before the task.
      type: dict
      returned: always
    after:
      description: The stored peer after the task.
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
    MASK,
    ValidationError,
    calico_lib,
    calico_module,
    ensure_absent,
    result,
    run,
)


def shown(peer, changed_password=False):
    """A peer for results and diffs: the password masked."""
    if peer is None:
        return {}
    data = peer.to_dict()
    if data.get("password"):
        data["password"] = MASK + (" (changed)" if changed_password else "")
    return data


def find(client, address, node):
    for peer in client.list_bgp_peers(node):
        if peer.address == address and peer.node == node:
            return peer
    return None


def peer_address(value):
    """The ``address`` option: an address, never a CIDR (the library takes ``ADDR/PREFIX``
    and drops the prefix, which would make ``10.0.0.0/24`` a peer 10.0.0.0)."""
    if isinstance(value, str) and "/" in value:
        raise ValidationError("address", f"{value.strip()} is not allowed; use the peer's "
                                         "address without a prefix length, such as "
                                         "10.0.0.254 or fd00::fe")
    return value


def ensure(module, client):
    p = module.params
    peer_address(p["address"])
    if p["state"] == "absent":
        address = str(calico_lib.model.parse_address("address", p["address"]))
        if p["node"] is not None:
            calico_lib.Node(p["node"])  # validates the name
        current = find(client, address, p["node"])
        return ensure_absent(current,
                             lambda: client.remove_bgp_peer(address, p["node"]), "peer",
                             show=shown)
    wanted = calico_lib.BGPPeer(p["address"], p["as_number"], p["node"], password=p["password"],
                                accept_default_route=p["accept_default_route"],
                                accept_nets=p["accept_nets"])
    current = find(client, wanted.address, wanted.node)
    changed = current is None or current.to_dict() != wanted.to_dict()
    if changed:  # one transaction: BIRD never sees it missing
        # in check mode on the draft: a node that is not registered fails as in a real run
        changed = client.put_bgp_peer(wanted)
    password_changed = current is not None and current.password != wanted.password
    after = shown(wanted, password_changed and bool(current.password))
    return result(changed, shown(current), after, peer=shown(wanted))


def main():
    module = calico_module(
        {
            "address": {"type": "str", "required": True},
            "as_number": {"type": "int"},
            "node": {"type": "str"},
            "password": {"type": "str", "no_log": True},
            "accept_default_route": {"type": "bool", "default": False},
            "accept_nets": {"type": "list", "elements": "str", "default": []},
            "state": {"type": "str", "default": "present", "choices": ["present", "absent"]},
        },
        required_if=[("state", "present", ("as_number",))],
    )
    run(module, lambda client: ensure(module, client), preview=True)


if __name__ == "__main__":
    main()
