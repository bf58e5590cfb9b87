#!/usr/bin/python
# Copyright: Calico for Docker contributors
# Apache License 2.0 (see LICENSE)
# ruff: noqa: E402

from __future__ import annotations

DOCUMENTATION = r"""
module: datastore_access
short_description: Give each kind of Calico writer only its rights in etcd (users and roles)
version_added: 0.1.0
description:
  - Makes etcd's users and roles exactly Calico's, then turns etcd's authentication on, so
    that each client may write only what its kind of writer may
    (C(calico_lib.datastore.access)).
  - User V(calico-operator) reads and writes everything under C(/calico/) (the policy role,
    C(calicoctl) of operators).
  - User V(calico-host.<node>) of each host in O(hosts) reads everything under
    C(/calico/v1/) and writes only its own node record, endpoints, block affinities and
    Docker network records, and the shared IPAM blocks and handles. Pools, profiles, BGP
    settings and peers are the operators' alone.
  - Other V(calico-host.*) users (hosts that left) are removed; users of other programs
    are left alone. Run it with etcd's V(root) password; the root user is made if needed.
  - etcd's JSON gateway refuses a client certificate that has a common name once
    authentication is on, so the clients' certificates must have none (the
    C(calico.docker.pki) role issues them so).
options:
  hosts:
    description: The node names of every Calico host.
    type: list
    elements: str
    required: true
  passwords:
    description:
      - The password of each user, by user name (V(calico-operator) and every
        V(calico-host.<node>)). A user whose password differs gets this one.
    type: dict
    required: true
  root_password:
    description: The password of etcd's V(root) user (set when the user is made).
    type: str
    required: true
extends_documentation_fragment:
  - calico.docker.datastore
  - calico.docker.attributes
seealso:
  - module: calico.docker.node
author:
  - Calico for Docker contributors (!UNKNOWN)
"""

EXAMPLES = r"""
- name: Hosts write only their own records
  calico.docker.datastore_access:
    hosts: "{{ groups['all'] }}"
    passwords: "{{ calico_etcd_passwords }}"
    root_password: "{{ calico_etcd_root_password }}"
    datastore: etcds://192.0.2.11:2379
    etcd_ca: /etc/calico/pki/ca.crt
    etcd_cert: /etc/calico/pki/client.crt
    etcd_key: /etc/calico/pki/client.key
"""

RETURN = r"""
access:
  description: What changed (or, in check mode, would change); passwords are never shown.
  returned: always
  type: dict
  sample: {"users_added": ["calico-host.host-3"], "passwords_set": [], "users_removed": [],
           "granted": {"calico-host.host-3": ["readwrite /calico/v1/endpoints/host-3/*"]},
           "revoked": {}, "auth_enabled_now": false}
"""

from ansible_collections.calico.docker.plugins.module_utils.calico import (
    calico_module,
    run,
)


def ensure(module, client):
    from calico_lib.datastore.access import Access, wanted_roles

    p = module.params
    access = Access(client.store, p["root_password"])
    roles = wanted_roles(p["hosts"])
    passwords = {str(k): str(v) for k, v in (p["passwords"] or {}).items()}
    plan = (access.plan(roles, passwords) if module.check_mode
            else access.apply(roles, passwords))
    return {"changed": plan.changed, "access": plan.to_dict(),
            "diff": {"before": "", "after": ""}}


def main():
    module = calico_module({
        "hosts": {"type": "list", "elements": "str", "required": True},
        "passwords": {"type": "dict", "required": True, "no_log": True},
        "root_password": {"type": "str", "required": True, "no_log": True},
    })
    run(module, lambda client: ensure(module, client))


if __name__ == "__main__":
    main()
