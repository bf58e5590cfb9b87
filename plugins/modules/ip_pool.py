#!/usr/bin/python
# Copyright: Calico for Docker contributors
# Apache License 2.0 (see LICENSE)
# ruff: noqa: E402

from __future__ import annotations

DOCUMENTATION = r"""
module: ip_pool
short_description: Manage Calico IP pools (the ranges container addresses come from)
version_added: 0.1.0
description:
  - Adds, changes or removes one IP pool in the Calico datastore, like
    C(calicoctl pool add) and C(calicoctl pool set).
  - A pool's CIDR and block size are fixed once it exists; its C(nat_outgoing),
    C(disabled) and C(vxlan_mode) settings can change at any time.
  - Removing a pool is refused while addresses are assigned from it.
options:
  cidr:
    description:
      - The pool's range, IPv4 or IPv6, for example C(10.65.0.0/16) or C(fd00:65::/48).
      - Host bits are cleared, so C(10.65.1.0/16) names the pool C(10.65.0.0/16).
    type: str
    required: true
  nat_outgoing:
    description:
      - Masquerade traffic from containers in this pool to destinations outside every pool.
      - When not given, a new pool gets V(false) and an existing pool keeps its setting.
    type: bool
  disabled:
    description:
      - A disabled pool gives out no new addresses; assigned addresses stay.
      - When not given, a new pool gets V(false) and an existing pool keeps its setting.
    type: bool
  vxlan_mode:
    description:
      - How the pool's traffic goes between hosts, as Calico's C(vxlanMode) and
        C(calicoctl pool add --vxlan).
      - V(never) routes it natively; V(always) encapsulates it in VXLAN to every other
        host; V(cross-subnet) encapsulates it only to hosts on another subnet (see the
        M(calico.docker.node) module's C(ipv4_subnet)) and routes it natively to the others.
      - IPv4 pools only; an IPv6 pool with a value other than V(never) fails.
      - An existing pool is set to the value given, so a task that leaves this option out
        turns encapsulation off (V(never)).
    type: str
    choices: [never, always, cross-subnet]
    default: never
  block_size:
    description:
      - Prefix length of the blocks the pool is carved into (20-32 for IPv4, 116-128 for
        IPv6). Defaults to 26 for IPv4 and 122 for IPv6 for a new pool.
      - It cannot change once the pool exists; a different value fails.
    type: int
  state:
    description: Whether the pool exists.
    type: str
    choices: [present, absent]
    default: present
extends_documentation_fragment:
  - calico.docker.datastore
  - calico.docker.attributes.policy
notes:
seealso:
  - module: calico.docker.docker_network
  - module: calico.docker.calico_info
author:
  - Calico for Docker contributors (!UNKNOWN)
"""

EXAMPLES = r"""
- name: An IPv4 pool with outgoing NAT
  calico.docker.ip_pool:
    cidr: 10.65.0.0/16
    nat_outgoing: true

- name: An IPv6 pool with /120 blocks on an etcd datastore
  calico.docker.ip_pool:
    cidr: fd00:65::/48
    block_size: 120
    datastore: etcd://10.0.0.10:2379

- name: An IPv4 pool whose traffic is VXLAN-encapsulated only between hosts on different subnets
  calico.docker.ip_pool:
    cidr: 10.66.0.0/16
    vxlan_mode: cross-subnet

- name: Stop giving out addresses from a pool
  calico.docker.ip_pool:
    cidr: 10.65.0.0/16
    disabled: true

- name: Remove a pool (refused while addresses are assigned from it)
  calico.docker.ip_pool:
    cidr: 10.65.0.0/16
    state: absent
"""

RETURN = r"""
pool:
  description:
    - The pool as stored (null after removal); C(vxlan_mode) is there only when it is not
      V(never).
  returned: always
  type: dict
  sample: {"cidr": "10.65.0.0/16", "block_size": 26, "nat_outgoing": true, "disabled": false,
           "vxlan_mode": "cross-subnet"}
diff:
  description: The pool before and after (an empty dict where there is none).
  returned: always
  type: dict
  contains:
    before:
      description: The stored pool before the task.
      type: dict
      returned: always
    after:
      description: The stored pool after the task.
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
    ValidationError,
    calico_lib,
    calico_module,
    ensure_absent,
    given,
    lookup,
    result,
    run,
)


def ensure(module, client):
    p = module.params
    if p["state"] == "absent":
        cidr = calico_lib.IPPool(p["cidr"]).cidr
        current = lookup(client.get_pool, cidr)
        return ensure_absent(current, lambda: client.remove_pool(cidr), "pool")

    flags = dict(given(module, "nat_outgoing", "disabled"), vxlan_mode=p["vxlan_mode"])
    wanted = calico_lib.IPPool(p["cidr"], block_size=p["block_size"], **flags)
    current = lookup(client.get_pool, wanted.cidr)
    if current is None:
        client.add_pool(wanted)
        return result(True, {}, wanted.to_dict(), pool=wanted.to_dict())

    if p["block_size"] is not None and wanted.block_size != current.block_size:
        raise ValidationError(
            "block_size", f"pool {current.cidr} has /{current.block_size} blocks; a pool's "
                          "block size cannot change (remove the pool and add it again)")
    before = current.to_dict()
    # through the model: validated, and in its stored form (vxlan_mode left out when never)
    after = calico_lib.IPPool.from_dict(dict(current.to_dict(), **flags)).to_dict()
    changed = after != before
    if changed:
        client.update_pool(current.cidr, **flags)
    return result(changed, before, after, pool=after)


def main():
    module = calico_module({
        "cidr": {"type": "str", "required": True},
        "nat_outgoing": {"type": "bool"},
        "disabled": {"type": "bool"},
        "vxlan_mode": {"type": "str", "default": "never",
                       "choices": ["never", "always", "cross-subnet"]},
        "block_size": {"type": "int"},
        "state": {"type": "str", "default": "present", "choices": ["present", "absent"]},
    })
    run(module, lambda client: ensure(module, client), preview=True)


if __name__ == "__main__":
    main()
