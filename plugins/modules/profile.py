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
      - Each rule has the fields below, each match negated by its C(not_) twin; a field left
        out does not match on that property. A field Calico does not know is refused.
    type: list
    elements: dict
    suboptions: &rule
      action:
        description:
          - What a matching packet gets. C(log) logs the packet to the kernel log with the
            prefix C(cali:<profile>:<in|out>:<number>) and goes on to the next rule.
        type: str
        choices: [allow, deny, log]
        default: allow
      protocol:
        description:
          - The IP protocol, C(tcp), C(udp), C(icmp), C(icmpv6), C(sctp) or a protocol number
            1-255.
          - C(icmp) pins the rule to IPv4 and C(icmpv6) to IPv6.
        type: raw
      not_protocol:
        description: Any IP protocol but this one (the same values as C(protocol)).
        type: raw
      src_net:
        description: Source CIDRs (or addresses); the packet's source is in one of them.
        type: list
        elements: str
      not_src_net:
        description: Source CIDRs the packet's source is in none of.
        type: list
        elements: str
      src_tag:
        description: The source is a member of a profile carrying this tag.
        type: str
      not_src_tag:
        description: The source is not a member of a profile carrying this tag.
        type: str
      src_ports:
        description:
          - Source ports, each a number 0-65535 or a range C(a:b) (needs protocol C(tcp),
            C(udp) or C(sctp)).
        type: list
        elements: raw
      not_src_ports:
        description: Source ports (numbers and C(a:b) ranges) the packet's is none of.
        type: list
        elements: raw
      dst_net:
        description: Destination CIDRs (or addresses); the packet's destination is in one of
          them.
        type: list
        elements: str
      not_dst_net:
        description: Destination CIDRs the packet's destination is in none of.
        type: list
        elements: str
      dst_tag:
        description: The destination is a member of a profile carrying this tag.
        type: str
      not_dst_tag:
        description: The destination is not a member of a profile carrying this tag.
        type: str
      dst_ports:
        description:
          - Destination ports, each a number 0-65535 or a range C(a:b) (needs protocol C(tcp),
            C(udp) or C(sctp)).
        type: list
        elements: raw
      not_dst_ports:
        description: Destination ports (numbers and C(a:b) ranges) the packet's is none of.
        type: list
        elements: raw
      icmp_type:
        description: The ICMP type, 0-254 (needs protocol C(icmp) or C(icmpv6)).
        type: int
      not_icmp_type:
        description: Any ICMP type but this one (needs protocol C(icmp) or C(icmpv6)).
        type: int
      icmp_code:
        description: The ICMP code, 0-255 (needs C(icmp_type)).
        type: int
      not_icmp_code:
        description: Any ICMP code but this one (needs C(not_icmp_type)).
        type: int
      ip_version:
        description: Pins the rule to IPv4 or IPv6; when left out the rule applies to both.
        type: int
        choices: [4, 6]
  outbound_rules:
    description:
      - The rules for traffic from the members, in order, with the same fields as
        O(inbound_rules).
    type: list
    elements: dict
    suboptions: *rule
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
  - calico.docker.attributes.policy
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
    ensure_present,
    lookup,
    run,
)

RULE_LISTS = ("inbound_rules", "outbound_rules")

#: the fields of a rule (calico_lib.model.Rule), typed for Ansible: a field Calico does not
#: know is refused by Ansible ("Unsupported parameters"); the library checks the values
RULE_OPTIONS = {
    "action": {"type": "str", "choices": ["allow", "deny", "log"], "default": "allow"},
    "protocol": {"type": "raw"},  # a name or a number 1-255
    "not_protocol": {"type": "raw"},
    **{name: {"type": "list", "elements": "str"}
       for name in ("src_net", "not_src_net", "dst_net", "not_dst_net")},
    **{name: {"type": "str"} for name in ("src_tag", "not_src_tag", "dst_tag", "not_dst_tag")},
    **{name: {"type": "list", "elements": "raw"}  # numbers and "a:b" ranges
       for name in ("src_ports", "not_src_ports", "dst_ports", "not_dst_ports")},
    **{name: {"type": "int"}
       for name in ("icmp_type", "not_icmp_type", "icmp_code", "not_icmp_code")},
    "ip_version": {"type": "int", "choices": [4, 6]},
}


def given_fields(rule):
    """A rule as the task wrote it: Ansible sets every field left out to None, and the
    stored rule (so the diff and idempotence) has only the fields given."""
    return {key: value for key, value in rule.items() if value is not None}


def wanted_profile(module, current):
    p = module.params
    name = p["name"]
    if p["default_rules"] and any(p[key] is not None for key in RULE_LISTS):
        raise ValidationError("default_rules", "leave out inbound_rules and "
                                               "outbound_rules, or set default_rules false")
    if current is None:  # a new profile: the library's defaults for what is not given
        rules = {key: p[key] for key in RULE_LISTS if p[key] is not None}
        return calico_lib.Profile.with_defaults(
            name, tags=p["tags"], labels=p["labels"], docker_network=bool(p["docker_network"]),
            rules=rules or None, default_rules=p["default_rules"])
    base = (calico_lib.Profile.with_defaults(name) if p["default_rules"] else current).to_dict()
    # tags, labels and the Docker-network mark that are not given stay (resetting the rules
    # of a network's profile must not make the plugin refuse the network)
    base["labels"], base["docker_network"] = current.labels, current.docker_network
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
        return ensure_absent(current, lambda: client.remove_profile(p["name"]),
                             "profile")
    current = lookup(client.get_profile, p["name"])
    before = current.to_dict() if current else {}
    return ensure_present(before, wanted_profile(module, current),
                          client.put_profile, "profile")


def main():
    module = calico_module({
        "name": {"type": "str", "required": True},
        "tags": {"type": "list", "elements": "str"},
        "labels": {"type": "dict"},
        "inbound_rules": {"type": "list", "elements": "dict", "options": RULE_OPTIONS},
        "outbound_rules": {"type": "list", "elements": "dict", "options": RULE_OPTIONS},
        "default_rules": {"type": "bool", "default": False},
        "docker_network": {"type": "bool"},
        "state": {"type": "str", "default": "present", "choices": ["present", "absent"]},
    })
    for key in RULE_LISTS:
        if module.params[key] is not None:
            module.params[key] = [given_fields(rule) for rule in module.params[key]]
    run(module, lambda client: ensure(module, client), preview=True)


if __name__ == "__main__":
    main()
