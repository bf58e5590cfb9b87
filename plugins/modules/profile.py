#!/usr/bin/python
# Copyright: Calico for Docker contributors
# Apache License 2.0 (see LICENSE)
# ruff: noqa: E402

from __future__ import annotations

DOCUMENTATION = r"""
module: profile
short_description: Manage Calico profiles (the tags, labels and rules in front of containers)
version_added: 0.1.0
description:
  - Creates, replaces or removes one profile in the Calico datastore. Every Docker network
    of the C(calico) driver has a profile named after the network's name.
  - A rule list that is given replaces the stored one exactly, in the order given; a rule
    list that is left out stays as it is on an existing profile (and is empty on a new one,
    which drops that traffic).
options:
  name:
    description: The profile's name (the Docker network's name for a network's profile).
    type: str
    required: true
  tags:
    description:
      - Tags every member of the profile carries (rules match them with C(src_tag) and
        C(dst_tag)).
      - Replaced exactly when given; when not given, an existing profile keeps its tags and a
        new profile gets its own name as its tag.
    type: list
    elements: str
  labels:
    description:
      - Labels of the profile, a mapping of names to values.
      - Replaced exactly when given; when not given an existing profile keeps its labels.
    type: dict
  inbound_rules:
    description:
      - The rules for traffic to the members, in order; the first match decides and traffic
        no rule allows is dropped.
      - Each rule is a mapping with the fields of a Calico rule, each match negated by its
        C(not_) twin; C(action) is C(allow) (the default), C(deny) or C(log) (logs the
        packet to the kernel log with the prefix C(cali:<profile>:<in|out>:<number>) and
        goes on to the next rule); C(protocol) is C(tcp), C(udp), C(icmp), C(icmpv6),
        C(sctp) or a number 1-255; C(src_net) and
        C(dst_net) are lists of CIDRs; C(src_tag) and C(dst_tag) name a tag;
        C(src_ports) and C(dst_ports) are lists of ports and C(a:b) ranges (tcp, udp, sctp);
        C(icmp_type) and C(icmp_code) are numbers; C(ip_version) is 4 or 6 to pin the rule
        to one IP version.
    type: list
    elements: dict
  outbound_rules:
    description:
      - The rules for traffic from the members, in order, with the same fields as
        O(inbound_rules).
    type: list
    elements: dict
  docker_network:
    description:
      - The profile of the Docker networks of this name (C(calico) driver), which the plugin
        puts their containers in. A network named like a profile without this mark is
        refused, so that no Docker user joins an operator's group by naming a network.
      - A network's profile needs no record (it then has the default rules); give its rules
        here with O(docker_network=true). When not given, an existing profile keeps its mark
        and a new one has none.
    type: bool
  default_rules:
    description:
      - Give the profile Calico's default rules, like C(calicoctl profile add) does; inbound
        allowed from members of the same profile (the tag O(name)), outbound allowed.
      - Only without O(inbound_rules) and O(outbound_rules). Unless O(tags) is given, the
        profile's tags include O(name) then, so that the default inbound rule matches.
    type: bool
    default: false
  state:
    description: Whether the profile exists.
    type: str
    choices: [present, absent]
    default: present
extends_documentation_fragment:
  - calico.docker.datastore
  - calico.docker.attributes
seealso:
  - module: calico.docker.dataplane
author:
  - Calico for Docker contributors (!UNKNOWN)
"""

EXAMPLES = r"""
- name: The profile of network frontend with the default rules
  calico.docker.profile:
    name: frontend
    default_rules: true

- name: Web servers take HTTP(S) from anywhere and SSH from the admin network only
  calico.docker.profile:
    name: web
    tags: [web]
    labels:
      tier: frontend
    inbound_rules:
      - action: allow
        protocol: tcp
        dst_ports: [80, 443]
      - action: allow
        protocol: tcp
        src_net: [10.0.0.0/24]
        dst_ports: [22]
      - action: allow
        src_tag: web
      - action: allow
        protocol: icmp
    outbound_rules:
      - action: deny
        dst_net: [169.254.169.254/32]
      - action: allow

- name: Remove a profile
  calico.docker.profile:
    name: old
    state: absent
"""

RETURN = r"""
profile:
  description: The profile as stored (null after removal).
  returned: always
  type: dict
  sample:
    name: frontend
    tags: [frontend]
    labels: {}
    inbound_rules: [{"action": "allow", "src_tag": "frontend"}]
    outbound_rules: [{"action": "allow"}]
diff:
  description: The profile before and after (an empty dict where there is none).
  returned: always
  type: dict
  contains:
    before:
      description: The stored profile before the task.
      type: dict
      returned: always
    after:
      description: The stored profile after the task.
      type: dict
      returned: always
"""

from ansible_collections.calico.docker.plugins.module_utils.calico import (
    ValidationError,
    calico_lib,
    calico_module,
    ensure_absent,
    ensure_present,
    lookup,
    run,
)

RULE_LISTS = ("inbound_rules", "outbound_rules")


def wanted_profile(module, current):
    p = module.params
    name = p["name"]
    if p["default_rules"]:
        if any(p[key] is not None for key in RULE_LISTS):
            raise ValidationError("default_rules", "leave out inbound_rules and "
                                                   "outbound_rules, or set default_rules false")
        base = calico_lib.Profile.with_default_rules(name).to_dict()
    elif current is not None:
        base = current.to_dict()
    else:
        base = calico_lib.Profile(name, tags=[name]).to_dict()
    if current is not None:  # tags and labels that are not given stay
        base["labels"] = current.labels
        base["tags"] = sorted(set(current.tags) | set(base["tags"] if p["default_rules"] else []))
    for key in ("tags", "labels", "docker_network") + RULE_LISTS:
        if p[key] is not None:
            base[key] = p[key]
    return calico_lib.Profile.from_dict(base)


def ensure(module, client):
    p = module.params
    calico_lib.Profile(p["name"])  # a bad name fails before anything is read
    if p["state"] == "absent":  # a network's profile without a record has nothing to remove
        current = lookup(client.get_profile, p["name"], True)
        return ensure_absent(module, current, lambda: client.remove_profile(p["name"]),
                             "profile")
    current = lookup(client.get_profile, p["name"])
    before = current.to_dict() if current else {}
    return ensure_present(module, before, wanted_profile(module, current),
                          client.put_profile, "profile")


def main():
    module = calico_module({
        "name": {"type": "str", "required": True},
        "tags": {"type": "list", "elements": "str"},
        "labels": {"type": "dict"},
        "inbound_rules": {"type": "list", "elements": "dict"},
        "outbound_rules": {"type": "list", "elements": "dict"},
        "default_rules": {"type": "bool", "default": False},
        "docker_network": {"type": "bool"},
        "state": {"type": "str", "default": "present", "choices": ["present", "absent"]},
    })
    run(module, lambda client: ensure(module, client))


if __name__ == "__main__":
    main()
