#!/usr/bin/python
# Copyright: Calico for Docker contributors
# Apache License 2.0 (see LICENSE)
# ruff: noqa: E402

from __future__ import annotations

DOCUMENTATION = r"""
module: dataplane
short_description: Bring this host's Calico dataplane in line with the datastore, once
version_added: 0.1.0
description:
  - Runs the agent's reconcile once (like C(calico-agent --once)) on the managed host; it
    renders this host's iptables and ip6tables rules, ipsets and container routes from the
    datastore and applies what differs, each table in one atomic restore. Only chains and
    sets whose names start with C(cali) are ever touched.
  - In check mode nothing is applied, and the diff shows the C(iptables-restore) input and
    the C(ipset) changes that would be applied, so a policy change can be previewed on every
    host before it is made.
  - Check mode also reads this host's routes, links and sysctls and plans them with the
    same code the real run executes, so it predicts every route that would be added,
    corrected or removed (container routes, the blackholes of local blocks), every link
    that would be set up and every sysctl that would be written (C(net.ipv4.ip_forward),
    C(net.ipv6.conf.all.forwarding) and each container interface's proxy ARP settings),
    and the VXLAN device, entries and tunnel routes that would change; RV(routes),
    RV(tunnel) and the diff name them.
  - Holds the host-wide dataplane lock while it works, so it never races the agent or the
    Docker plugin.
options:
  hostname:
    description: This host's name in the datastore. When not given, E(CALICO_HOSTNAME),
      else the system host name (like the agent).
    type: str
  lock_file:
    description: The host-wide dataplane lock shared with the agent and the Docker plugin.
    type: path
    default: /run/calico/dataplane.lock
extends_documentation_fragment:
  - calico.docker.datastore
  - calico.docker.attributes
notes:
  - Needs root, C(iptables-restore), C(ip6tables-restore) and C(ipset) on the host.
  - BIRD's configuration is the job of M(calico.docker.bird_config).
seealso:
  - module: calico.docker.profile
  - module: calico.docker.bird_config
author:
  - Calico for Docker contributors (!UNKNOWN)
"""

EXAMPLES = r"""
- name: Apply the policy now rather than waiting for the agent
  calico.docker.dataplane:

- name: Preview the rule changes a policy change makes on every host
  calico.docker.dataplane:
  check_mode: true
  diff: true
"""

RETURN = r"""
summary:
  description: One line saying what changed (or would change) and how long it took.
  returned: always
  type: str
  sample: "revision 12: changed iptables filter: 4 chains written, 0 removed (3.1 ms)"
hostname:
  description: The host name the dataplane was rendered for.
  returned: always
  type: str
  sample: host-1
revision:
  description: The datastore revision the dataplane was rendered from.
  returned: always
  type: int
  sample: 12
tables:
  description: Per iptables table that needed changes, what was (or would be) written.
  returned: always
  type: list
  elements: dict
  contains:
    version:
      description: The IP version (4 for iptables, 6 for ip6tables).
      type: int
      returned: always
    table:
      description: The table name.
      type: str
      returned: always
    written:
      description: The chains written (created or replaced).
      type: list
      elements: str
      returned: always
    removed:
      description: The stale C(cali) chains removed.
      type: list
      elements: str
      returned: always
    hooks_fixed:
      description: How many jumps from built-in chains were put back in place.
      type: int
      returned: always
ipsets:
  description: The ipsets created, updated and destroyed (or that would be).
  returned: always
  type: dict
  sample: {"created": ["cali4-tag-web"], "updated": [], "destroyed": []}
routes:
  description: What the route applier did (or, in check mode, would do) to the routes,
    links and sysctls.
  returned: always
  type: dict
  sample: {"added": ["10.65.0.7/32"], "removed": [], "missing_interfaces": [],
           "sysctl_writes": 1, "sysctls": ["net.ipv4.ip_forward=1"],
           "conntrack_flushed": [], "links_up": [], "changed": true}
  contains:
    added:
      description: Destinations whose route was (or would be) created or corrected.
      type: list
      elements: str
      returned: always
    removed:
      description: Destinations of stale protocol 80 routes deleted (or to delete).
      type: list
      elements: str
      returned: always
    missing_interfaces:
      description: Interfaces that desired routes name but that do not exist (yet); their
        routes wait for the next run.
      type: list
      elements: str
      returned: always
    sysctl_writes:
      description: How many sysctls were (or would be) written.
      type: int
      returned: always
    sysctls:
      description: The sysctls written (or to write), as C(name=value).
      type: list
      elements: str
      returned: always
    conntrack_flushed:
      description: Addresses whose tracked flows the route applier deleted (always empty
        here, see RV(summary)).
      type: list
      elements: str
      returned: always
    links_up:
      description: Container interfaces that were (or would be) set up.
      type: list
      elements: str
      returned: always
    changed:
      description: Whether anything of the above changed (or would).
      type: bool
      returned: always
tunnel:
  description: What changed (or would change) in the VXLAN device, its neighbour and FDB
    entries and its tunnel routes (null if it was not read).
  returned: always
  type: dict
  sample: {"device": "", "added": ["10.66.2.0/26"], "removed": [], "neighbours": 0,
           "changed": true}
  contains:
    device:
      description: C(created), C(replaced), C(changed) or C(removed); empty when the device
        is as it should be.
      type: str
      returned: always
    added:
      description: Tunnel routes added (or to add).
      type: list
      elements: str
      returned: always
    removed:
      description: Tunnel routes removed (or to remove).
      type: list
      elements: str
      returned: always
    neighbours:
      description: Neighbour, FDB and address entries written or deleted (or to be).
      type: int
      returned: always
    changed:
      description: Whether anything of the above changed (or would).
      type: bool
      returned: always
diff:
  description: The C(ipset restore) and C(iptables-restore) input applied (or that would
    be), then the route, link and sysctl writes and the VXLAN changes, under headers
    naming each part; empty when nothing changes.
  returned: always
  type: dict
  contains:
    prepared:
      description: The text.
      type: str
      returned: always
"""

from ansible_collections.calico.docker.plugins.module_utils.calico import (
    calico_module,
    resolve_hostname,
    run,
)


def prepared(report):
    """The restore inputs of a report as one text, a header before each part."""
    verb = "would be applied" if report.check_mode else "applied"
    parts = []
    if report.sets.before:
        parts.append(f"# ipset restore, before the rules ({verb})\n{report.sets.before}")
    for table in report.tables:
        if table.text:
            tool = "ip6tables" if table.version == 6 else "iptables"
            parts.append(f"# {tool}-restore --noflush, table {table.table} ({verb})\n"
                         f"{table.text}")
    if report.sets.after:
        parts.append(f"# ipset restore, after the rules ({verb})\n{report.sets.after}")
    if report.routes is not None and report.routes.changed:
        lines = [report.routes.summary().removeprefix("changed: "), *report.routes.details]
        parts.append(f"# routes, links and sysctls ({verb})\n" + "\n".join(lines) + "\n")
    tunnel = report.tunnel
    if tunnel is not None and tunnel.changed:
        lines = [tunnel.summary()]
        lines += [f"tunnel route + {dst}" for dst in tunnel.added]
        lines += [f"tunnel route - {dst}" for dst in tunnel.removed]
        parts.append(f"# vxlan ({verb})\n" + "\n".join(lines) + "\n")
    return "".join(parts)


def tunnel_result(tunnel):
    if tunnel is None:
        return None
    return {"device": tunnel.device, "added": list(tunnel.added),
            "removed": list(tunnel.removed), "neighbours": tunnel.neighbours,
            "changed": tunnel.changed}


def ensure(module, client):
    from calico_lib.reconcile import reconcile

    hostname = resolve_hostname(module.params["hostname"])
    report = reconcile(client.store, hostname, module.params["lock_file"],
                       check_mode=module.check_mode)
    sets = report.sets
    return {
        "changed": report.changed,
        "diff": {"prepared": prepared(report)},
        "summary": report.summary(),
        "hostname": hostname,
        "revision": report.revision,
        "tables": [{"version": t.version, "table": t.table, "written": t.written,
                    "removed": t.removed, "hooks_fixed": t.hooks_fixed}
                   for t in report.tables if t.text],
        "ipsets": {"created": sets.created, "updated": sets.updated,
                   "destroyed": sets.destroyed},
        "routes": report.routes.to_dict() if report.routes is not None else None,
        "tunnel": tunnel_result(report.tunnel),
    }


def main():
    module = calico_module({
        "hostname": {"type": "str"},
        "lock_file": {"type": "path", "default": "/run/calico/dataplane.lock"},
    })
    run(module, lambda client: ensure(module, client))


if __name__ == "__main__":
    main()
