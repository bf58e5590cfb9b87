"""calicoctl: a thin command line over ``calico_lib.Client``.

Exit codes: 0 ok, 1 a failed check (or an operational failure), 2 bad input.
``--datastore`` and ``-o table|json`` are accepted before or after the command.

``--dry-run`` on a command that changes what hosts render (pools, profiles and rules, nodes,
BGP peers and settings, endpoints, agent settings) runs it on a draft of the datastore and
prints each host's dataplane change instead (``calico_lib.preview``); nothing is written.
A dry run is a check: a change the real command would refuse exits 1 with its message.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from . import datastore
from .client import Client, connect
from .errors import CalicoError, DatastoreMissing, ValidationError
from .model import (
    ACTIONS,
    VXLAN_MODES,
    BGPPeer,
    Endpoint,
    IPAMConfig,
    IPPool,
    Node,
    Profile,
    Rule,
    show,
)

Handler = Callable[[Client, argparse.Namespace], int | None]


# ------------------------------------------------------------------------------ output


def emit(args: argparse.Namespace, data: Any, columns: Sequence[str] | None = None) -> None:
    """Print ``data`` (a dict or a list of dicts) as JSON or as a table."""
    if args.output == "json":
        print(json.dumps(data, indent=2, sort_keys=True))
        return
    rows = data if isinstance(data, list) else [data]
    if columns is None:
        columns = list(rows[0]) if rows else []
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    print("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


def _cell(value: Any) -> str:
    if value is None or value == [] or value == {}:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    if isinstance(value, dict):
        return ",".join(f"{k}={v}" for k, v in value.items())
    return str(value)


def rule_text(rule: Rule) -> str:
    """A rule as one readable line: "allow tcp from tag web to ports 80,443"."""
    parts = [rule.action]
    data = rule.to_dict()
    data.pop("action", None)
    for key, value in data.items():
        word = key.replace("_", " ").replace("not ", "not-")
        parts.append(f"{word} {_cell(value)}")
    return " ".join(parts)


# ------------------------------------------------------------------------------ commands


def pool_add(c: Client, a: argparse.Namespace) -> None:
    c.add_pool(IPPool(a.cidr, block_size=a.block_size, nat_outgoing=a.nat_outgoing,
                      disabled=a.disabled, vxlan_mode=a.vxlan))


def pool_set(c: Client, a: argparse.Namespace) -> None:
    c.update_pool(a.cidr, nat_outgoing=a.nat_outgoing, disabled=a.disabled,
                  vxlan_mode=a.vxlan)


def pool_list(c: Client, a: argparse.Namespace) -> None:
    pools = c.list_pools()
    if a.output == "json":  # the pools as stored (vxlan_mode only when not never)
        emit(a, [p.to_dict() for p in pools])
        return
    emit(a, [dict(p.to_dict(), vxlan=p.vxlan_mode) for p in pools],
         ["cidr", "block_size", "nat_outgoing", "disabled", "vxlan"])


def profile_add(c: Client, a: argparse.Namespace) -> None:
    rules = None
    if a.rules:
        text = _read_file("rules", a.rules)
        try:
            rules = json.loads(text)
        except ValueError as exc:
            raise ValidationError("rules", f"{show(a.rules)} is not JSON ({exc})") from None
        if not isinstance(rules, dict):
            raise ValidationError("rules", "use a JSON object with inbound_rules and "
                                           "outbound_rules lists")
    # --tag adds to the name's own tag, with a rules file or without
    tags = sorted({a.name, *(a.tag or [])})
    c.add_profile(Profile.with_defaults(a.name, tags=tags, labels=_labels(a.label),
                                        docker_network=a.docker_network, rules=rules))


def profile_list(c: Client, a: argparse.Namespace) -> None:
    profiles = c.list_profiles()
    if a.output == "json":
        emit(a, [p.to_dict() for p in profiles])
        return
    emit(a, [{"name": p.name, "tags": p.tags, "labels": p.labels,
              "inbound": len(p.inbound_rules), "outbound": len(p.outbound_rules)}
             for p in profiles], ["name", "tags", "labels", "inbound", "outbound"])


def profile_show(c: Client, a: argparse.Namespace) -> None:
    if a.counters:
        return profile_counters(c, a)
    profile = c.get_profile(a.name)
    if a.output == "json":
        emit(a, profile.to_dict())
        return
    print(f"Profile {profile.name}")
    print(f"  tags:   {_cell(profile.tags)}")
    print(f"  labels: {_cell(profile.labels)}")
    for direction in ("inbound", "outbound"):
        rules = getattr(profile, f"{direction}_rules")
        print(f"  {direction} rules:")
        for number, rule in enumerate(rules, 1):
            print(f"    {number:>3}  {rule_text(rule)}")
        if not rules:
            print("      (none: everything is dropped)")


def profile_counters(c: Client, a: argparse.Namespace) -> None:
    from .counters import profile_counters as read
    from .explain import short_id
    from .hostname import resolve_hostname

    found = read(c.store, resolve_hostname(a.hostname), a.name)
    if a.output == "json":
        emit(a, found.to_dict())
        return
    print(f"Profile {found.profile} on {found.host}: packets (bytes) per rule since the "
          "agent wrote it, IPv4 / IPv6")
    for direction in ("inbound", "outbound"):
        print(f"  {direction} rules:")
        rules = [r for r in found.rules if r.direction == direction]
        for r in rules:
            print(f"    {r.number:>3}  {_counts(r.count)}  {rule_text(r.rule)}")
        if not rules:
            print("      (none)")
    if found.drops:
        print("  dropped at the end of an endpoint's chain (no profile allowed it):")
        for d in found.drops:
            print(f"         {_counts(d.count)}  {d.direction} to/from {d.interface} "
                  f"(endpoint {short_id(d.endpoint)})")
    for note in found.notes:
        print(f"  note: {note}")


def _counts(count: Any) -> str:
    return " / ".join(f"{count.packets[v]} ({count.bytes[v]} B)" for v in (4, 6)).ljust(24)


def policy_explain(c: Client, a: argparse.Namespace) -> int:
    from .explain import explain

    def containers(name: str) -> list[str]:
        from .plugin.docker_api import DockerAPI, DockerError
        try:
            return DockerAPI(a.docker_socket).container_endpoint_ids(name)
        except DockerError:
            return []  # no Docker here, or no such container: the name is unknown

    found = explain(c.store, a.source, a.destination, a.protocol, a.port, a.source_port,
                    a.icmp_type, a.icmp_code, a.ip_version, containers)
    if a.output == "json":
        emit(a, found.to_dict())
    else:
        print("\n".join(found.lines(trace=a.trace)))
    return 0


RULE_FIELDS = ("protocol", "src_net", "src_tag", "src_ports", "dst_net", "dst_tag",
               "dst_ports", "icmp_type", "icmp_code")
#: each rule flag's help (its --not-... twin negates it)
RULE_HELP = {
    "protocol": "the protocol: tcp, udp, icmp, icmpv6, sctp or a number 1-255",
    "src_net": "from this CIDR (repeatable: any of them)",
    "src_tag": "from the containers with this tag (a profile's members)",
    "src_ports": "from these ports: comma-separated ports or ranges, e.g. 80,8000:8080 "
                 "(tcp, udp or sctp)",
    "dst_net": "to this CIDR (repeatable: any of them)",
    "dst_tag": "to the containers with this tag",
    "dst_ports": "to these ports: comma-separated ports or ranges, e.g. 80,8000:8080 "
                 "(tcp, udp or sctp)",
    "icmp_type": "this ICMP type, 0-254 (with --protocol icmp or icmpv6)",
    "icmp_code": "this ICMP code, 0-255 (with --icmp-type)",
}
RULE_METAVAR = {"protocol": "PROTO", "src_tag": "TAG", "dst_tag": "TAG",
                "src_ports": "PORTS", "dst_ports": "PORTS", "icmp_type": "TYPE",
                "icmp_code": "CODE"}


def rule_add(c: Client, a: argparse.Namespace) -> None:
    fields: dict[str, Any] = {"action": a.action, "ip_version": a.ip_version}
    for name in RULE_FIELDS:
        for key in (name, f"not_{name}"):
            value = getattr(a, key)
            if value is not None:
                fields[key] = value
    rule = Rule(**fields)
    position = None if a.position is None else a.position - 1
    try:
        c.add_rule(a.profile, a.direction, rule, position)
    except ValidationError as exc:  # the Client counts from 0, the command line from 1
        if exc.field != "position":
            raise
        count = _rule_count(c, a.profile, a.direction)
        raise ValidationError("position", f"{a.position} is out of range; use 1-"
                                          f"{count + 1}") from None


def rule_remove(c: Client, a: argparse.Namespace) -> None:
    try:
        c.remove_rule(a.profile, a.direction, a.number - 1)
    except ValidationError as exc:
        if exc.field != "index":
            raise
        count = _rule_count(c, a.profile, a.direction)
        raise ValidationError("number", f"{a.number} is out of range; the profile has "
                                        f"{count} {a.direction} rule(s)") from None


def _rule_count(c: Client, profile: str, direction: str) -> int:
    return len(getattr(c.get_profile(profile), f"{direction}_rules"))


def _with_subnet(value: str | None) -> tuple[str | None, str | None]:
    """``--ip ADDR[/PREFIX]``: the address, and with a prefix the host's subnet too (Calico's
    ``ipv4Address: 10.0.0.1/24``); the node record checks both."""
    if value is None or "/" not in value:
        return value, None
    return value.split("/", 1)[0], value


def node_add(c: Client, a: argparse.Namespace) -> None:
    ipv4, ipv4_subnet = _with_subnet(a.ip)
    ipv6, ipv6_subnet = _with_subnet(a.ip6)
    c.add_node(Node(a.name, ipv4=ipv4, ipv6=ipv6, as_number=a.as_number,
                    rr_cluster_id=a.rr_cluster_id, ipv4_subnet=ipv4_subnet,
                    ipv6_subnet=ipv6_subnet))


def node_set(c: Client, a: argparse.Namespace) -> None:
    changes: dict[str, Any] = {}
    for option, version in (("ip", 4), ("ip6", 6)):
        if getattr(a, option) is not None:  # the address and its subnet go together
            address, subnet = _with_subnet(getattr(a, option))
            changes.update({f"ipv{version}": address, f"ipv{version}_subnet": subnet})
    if a.as_number is not None:
        changes["as_number"] = a.as_number
    if a.rr_cluster_id is not None:
        changes["rr_cluster_id"] = a.rr_cluster_id
    if not changes:
        raise ValidationError("node", "nothing to change; give --ip, --ip6, --as or "
                                      "--rr-cluster-id")
    c.update_node(a.name, **changes)


NODE_COLUMNS = ["name", "ipv4", "ipv4_subnet", "ipv6", "ipv6_subnet", "as_number",
                "rr_cluster_id"]


def node_list(c: Client, a: argparse.Namespace) -> None:
    emit(a, [n.to_dict() for n in c.list_nodes()], NODE_COLUMNS)


def node_show(c: Client, a: argparse.Namespace) -> None:
    emit(a, c.get_node(a.name).to_dict(), NODE_COLUMNS)


def node_remove(c: Client, a: argparse.Namespace) -> None:
    gone = c.remove_node(a.name)
    if a.output == "json":
        emit(a, gone.to_dict())
        return
    print(f"removed node {a.name}: {len(gone.endpoints)} endpoint(s), "
          f"{len(gone.addresses)} address(es) freed, {len(gone.blocks)} block claim(s), "
          f"{len(gone.peers)} BGP peer(s), {len(gone.records)} other record(s)")


def node_status(c: Client | None, a: argparse.Namespace) -> int:
    """This host's BGP sessions from BIRD; exit 1 when one is not Established."""
    from .dataplane.bird import bgp_sessions

    sessions = bgp_sessions(a.bird_socket)
    rows = [{"peer": s.peer, "type": s.kind, "multihop": s.multihop, "state": s.state,
             "since": s.since, "info": s.info, "name": s.name} for s in sessions]
    if a.output == "json":
        emit(a, rows)
    elif rows:
        emit(a, rows, ["peer", "type", "multihop", "state", "since", "info"])
    else:
        print("no BGP sessions configured")
    return 0 if all(s.established for s in sessions) else 1


def diags(c: Client | None, a: argparse.Namespace) -> int:
    """One archive of this host's diagnostics; it opens the datastore itself (read-only), so
    a datastore that does not answer is noted in the archive instead of stopping it."""
    from .diags import collect

    result = collect(output=a.archive, hostname=a.hostname, bird_socket=a.bird_socket,
                     bird_config=a.bird_config, log_lines=a.log_lines,
                     datastore_options=datastore.options(a))
    if a.output == "json":
        emit(a, result.to_dict())
    else:
        print(result.path)
        for failure in result.failures:  # stdout stays the path alone
            print(f"calicoctl: diags: not collected: {failure}", file=sys.stderr)
    return 0


def peer_add(c: Client, a: argparse.Namespace) -> None:
    c.add_bgp_peer(BGPPeer(a.address, a.as_number, a.node, password=_password(a),
                           accept_default_route=a.accept_default_route,
                           accept_nets=a.accept_net or []))


def _password(a: argparse.Namespace) -> str | None:
    """The session password from --password-file (first line), $CALICO_BGP_PASSWORD, or
    --password (visible to every user in `ps`: the other two are not)."""
    given = [n for n in ("password", "password_file") if getattr(a, n) is not None]
    if len(given) > 1:
        raise ValidationError("password", "give --password or --password-file, not both")
    if a.password_file is not None:
        lines = _read_file("password_file", a.password_file).splitlines()
        if not lines or not lines[0]:
            raise ValidationError("password_file", f"{show(a.password_file)} is empty; put "
                                                   "the password on its first line")
        return lines[0]
    if a.password is not None:
        print("calicoctl: warning: --password is visible to other users in `ps`; use "
              "--password-file or $CALICO_BGP_PASSWORD", file=sys.stderr)
        return a.password
    return os.environ.get("CALICO_BGP_PASSWORD") or None


def peer_list(c: Client, a: argparse.Namespace) -> None:
    rows = []
    for peer in c.list_bgp_peers(a.node):
        row = peer.to_dict()
        if row.pop("password", None):
            row["password"] = "********"  # never printed
        rows.append(row)
    extra = ["password"] if any("password" in r for r in rows) else []
    emit(a, rows, ["address", "as_number", "node", *extra])


def bgp_config_set(c: Client, a: argparse.Namespace) -> None:
    mesh = None if a.mesh is None else a.mesh == "on"
    c.set_bgp_config(as_number=a.as_number, node_to_node_mesh=mesh)


def bgp_config_show(c: Client, a: argparse.Namespace) -> None:
    emit(a, c.get_bgp_config().to_dict(), ["as_number", "node_to_node_mesh"])


def endpoint_add(c: Client, a: argparse.Namespace) -> None:
    import uuid

    ips = a.ip or []
    endpoint = Endpoint(
        id=a.id or uuid.uuid4().hex, host=a.host, interface=a.interface, mac=a.mac,
        ipv4_nets=[i for i in ips if ":" not in i], ipv6_nets=[i for i in ips if ":" in i],
        profiles=a.profile, labels=_labels(a.label))
    c.add_endpoint(endpoint, assign_addresses=True)
    emit(a, endpoint.to_dict(), ["id", "host", "interface", "ipv4_nets", "ipv6_nets",
                                 "profiles"])


def endpoint_list(c: Client, a: argparse.Namespace) -> None:
    emit(a, [e.to_dict() for e in c.list_endpoints(a.host)],
         ["host", "id", "interface", "mac", "ipv4_nets", "ipv6_nets", "profiles", "state"])


def config_set(c: Client, a: argparse.Namespace) -> None:
    c.set_agent_config(default_endpoint_to_host_action=a.default_endpoint_to_host_action)


def config_show(c: Client, a: argparse.Namespace) -> None:
    emit(a, c.get_agent_config().to_dict(), ["default_endpoint_to_host_action"])


def datastore_check(c: Client, a: argparse.Namespace) -> int:
    problems = c.check_records()
    if a.output == "json":
        emit(a, {"ok": not problems, "unreadable": [vars(p) for p in problems]})
    elif problems:
        for problem in problems:
            print(problem)
    else:
        print("every record is readable")
    return 1 if problems else 0


def ipam_assign(c: Client, a: argparse.Namespace) -> None:
    if a.ip:
        if a.ipv4 or a.ipv6:
            raise ValidationError("ip", "--ip assigns one given address; leave out "
                                        "--ipv4/--ipv6")
        addresses = {"ipv4": [], "ipv6": []}
        addr = c.ipam.assign_ip(a.ip, a.handle, a.host)
        addresses["ipv6" if ":" in addr else "ipv4"].append(addr)
    else:
        num4, num6 = a.ipv4, a.ipv6
        if num4 is None and num6 is None:
            num4 = 1
        result = c.ipam.auto_assign(a.host, a.handle, num4 or 0, num6 or 0, pools=a.pool)
        addresses = {"ipv4": result.ipv4, "ipv6": result.ipv6}
    if a.output == "json":
        emit(a, addresses)
    else:
        for addr in addresses["ipv4"] + addresses["ipv6"]:
            print(addr)


def ipam_release(c: Client, a: argparse.Namespace) -> None:
    if bool(a.ip) == bool(a.handle):
        raise ValidationError("ip", "give either --ip ADDR (repeatable) or --handle ID")
    released = c.ipam.release_ips(a.ip) if a.ip else c.ipam.release_handle(a.handle)
    if a.output == "json":
        emit(a, {"released": released})
    else:
        for addr in released:
            print(addr)


def ipam_release_affinity(c: Client, a: argparse.Namespace) -> None:
    for cidr in c.ipam.release_host_affinities(a.host):
        print(cidr)


def ipam_show(c: Client, a: argparse.Namespace) -> None:
    usage = c.ipam.usage()
    if a.output == "json":
        emit(a, usage)
        return
    emit(a, [{"pool": u["pool"], "size": u["size"], "allocated": u["allocated"],
              "blocks": len(u["blocks"])} for u in usage],
         ["pool", "size", "allocated", "blocks"])
    blocks = [dict(b, pool=u["pool"]) for u in usage for b in u["blocks"]]
    if blocks:
        print()
        emit(a, blocks, ["cidr", "pool", "affinity", "allocated", "free"])


def ipam_check(c: Client, a: argparse.Namespace) -> int:
    from .ipam_check import audit, repair

    if a.dry_run and not a.repair:
        raise ValidationError("dry_run", "--dry-run goes with --repair")
    found = audit(c.ipam, grace=a.grace)
    outcomes = repair(found, dry_run=a.dry_run) if a.repair else []
    left = audit(c.ipam, grace=a.grace) if a.repair and not a.dry_run else found
    if a.output == "json":
        report: dict[str, Any] = {"ok": left.ok, "problems": [vars(p) for p in found.problems]}
        if a.repair:
            report["repairs"] = [o.to_dict() for o in outcomes]
            report["remaining"] = [vars(p) for p in left.problems]
        emit(a, report)
        return 0 if left.ok else 1
    for problem in found.problems:
        print(problem)
    for outcome in outcomes:
        print(outcome)
    if not found.problems:
        print("IPAM is consistent")
    elif a.repair and not a.dry_run:
        print("IPAM is consistent now" if left.ok else
              f"{len(left.problems)} finding(s) left: they need a human (see above)")
    return 0 if left.ok else 1


def ipam_gc(c: Client, a: argparse.Namespace) -> int:
    from .ipam import Release

    plan: list[Release]  # the parser made sure exactly one scope was given
    if a.docker:
        from .hostname import resolve_hostname
        from .plugin import docker_sync
        from .plugin.docker_api import DockerAPI

        host = resolve_hostname(a.hostname)
        local = docker_sync.read_local(c, host)  # the datastore first: see docker_sync
        try:
            known = DockerAPI(a.docker_socket).endpoint_ids()
        except CalicoError as exc:
            raise CalicoError(f"{exc}; nothing was released") from None
        plan = docker_sync.plan(local, known, c.ipam.clock(), a.grace)
    elif a.all:
        plan = c.ipam.gc_plan(None)
        if not a.dry_run and plan:
            _confirm_everything(a, plan)
    else:
        live = list(a.live or [])
        if a.live_file:
            text = _read_file("live_file", a.live_file)
            live += [line.strip() for line in text.splitlines() if line.strip()]
        plan = c.ipam.gc_plan(live, grace=a.grace)
    done = [(item, None if a.dry_run else c.ipam.release(item)) for item in plan]
    changed = [item for item, freed in done if freed is None and not a.dry_run]
    if a.output == "json":
        emit(a, {"dry_run": a.dry_run,
                 "released": [item.to_dict() for item, freed in done
                              if a.dry_run or freed is not None],
                 "skipped": [item.to_dict() for item in changed]})
    else:
        verb = "would release" if a.dry_run else "released"
        for item, freed in done:
            if freed is None and not a.dry_run:
                print(f"skipped handle {item.handle}: changed since it was read")
                continue
            endpoint = f"; endpoint {item.endpoint_key} removed" if item.endpoint_key else ""
            if a.dry_run and item.endpoint_key:
                endpoint = f"; would remove endpoint {item.endpoint_key}"
            addresses = ", ".join(item.addresses if a.dry_run else freed or []) or "no address"
            print(f"{verb} handle {item.handle}: {addresses} ({item.reason}){endpoint}")
    return 1 if changed else 0


CONFIRM_WORD = "release-everything"


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 10**9:
        raise argparse.ArgumentTypeError(f"{text!r} is not allowed; use seconds, 0 or more")
    return value


def _confirm_everything(a: argparse.Namespace, plan: list[Any]) -> None:
    """``gc --all`` frees addresses running containers use: a typed word, or the flag."""
    if a.yes_release_everything:
        return
    count = sum(len(item.addresses) for item in plan)
    if not sys.stdin.isatty():
        raise ValidationError("all", f"would release all {count} allocated address(es) "
                                     "(running containers' too); not confirmed: stdin is not "
                                     "a terminal, add --yes-release-everything")
    # the question goes to stderr: stdout carries only what was released
    print(f"This releases all {count} allocated address(es) of {len(plan)} handle(s), also "
          f"those of running containers, which may then be given to new ones.\nType "
          f"{CONFIRM_WORD} to go on: ", end="", file=sys.stderr, flush=True)
    answer = sys.stdin.readline()
    if answer.strip() != CONFIRM_WORD:
        raise ValidationError("all", "not confirmed; nothing was released")


def ipam_config_set(c: Client, a: argparse.Namespace) -> None:
    c.ipam.set_config(IPAMConfig(strict_affinity=a.strict_affinity))


def ipam_config_show(c: Client, a: argparse.Namespace) -> None:
    emit(a, c.ipam.get_config().to_dict(), ["strict_affinity"])


def _read_file(field_name: str, path: str) -> str:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except OSError as exc:
        raise ValidationError(field_name, f"cannot read {show(path)}: "
                                          f"{exc.strerror}") from None
    except UnicodeDecodeError:
        raise ValidationError(field_name, f"{show(path)} is not UTF-8 text") from None


def _labels(items: list[str] | None) -> dict[str, str]:
    labels = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValidationError("label", f"{item!r} is not allowed; use KEY=VALUE")
        labels[key] = value
    return labels


# ------------------------------------------------------------------------------ parser


def _bool_arg(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("true", "yes", "on", "1"):
        return True
    if lowered in ("false", "no", "off", "0"):
        return False
    raise argparse.ArgumentTypeError(f"{text!r} is not allowed; use true or false")


class _Parser(argparse.ArgumentParser):
    """argparse with calicoctl's error shape: one line on stderr, exit 2 (bad input)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"calicoctl: {' '.join(message.split())}\n")


def build_parser() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    datastore.add_arguments(common)
    common.add_argument("-o", "--output", choices=("table", "json"), default=argparse.SUPPRESS,
                        help="output format (default: table)")

    parser = _Parser(prog="calicoctl", parents=[common],
                     description="Manage Calico networking for Docker.")
    groups = parser.add_subparsers(dest="group", required=True, metavar="COMMAND")

    def command(sub: Any, name: str, handler: Handler, help_text: str,
                preview: bool = False) -> argparse.ArgumentParser:
        p = sub.add_parser(name, parents=[common], help=help_text, description=help_text)
        p.set_defaults(handler=handler)
        if preview:
            p.add_argument("--dry-run", dest="preview", action="store_true", help=DRY_RUN_HELP)
        return p

    def group(sub: Any, name: str, help_text: str) -> Any:
        p = sub.add_parser(name, help=help_text, description=help_text)
        return p.add_subparsers(dest=f"{name}_command", required=True, metavar="COMMAND")

    # pool
    pool = group(groups, "pool", "IP pools that container addresses come from")
    p = command(pool, "add", pool_add, "add a pool", preview=True)
    p.add_argument("cidr")
    p.add_argument("--nat-outgoing", action="store_true",
                   help="masquerade traffic from the pool to destinations outside all pools")
    p.add_argument("--disabled", action="store_true", help="give no new addresses from it")
    p.add_argument("--block-size", type=int, metavar="N",
                   help="prefix length of its blocks (default 26 for IPv4, 122 for IPv6)")
    p.add_argument("--vxlan", choices=VXLAN_CHOICES, default="never",
                   help=VXLAN_HELP + " (default: never)")
    p = command(pool, "set", pool_set, "change a pool's flags", preview=True)
    p.add_argument("cidr")
    p.add_argument("--nat-outgoing", type=_bool_arg, metavar="true|false")
    p.add_argument("--disabled", type=_bool_arg, metavar="true|false")
    p.add_argument("--vxlan", choices=VXLAN_CHOICES, help=VXLAN_HELP)
    p = command(pool, "remove", lambda c, a: c.remove_pool(a.cidr), "remove an unused pool",
                preview=True)
    p.add_argument("cidr")
    command(pool, "list", pool_list, "list pools")

    # profile
    profile = group(groups, "profile", "profiles: groups of containers and their rules")
    p = command(profile, "add", profile_add, "add a profile (default rules: members reach "
                "each other, all outbound allowed)", preview=True)
    p.add_argument("name")
    p.add_argument("--tag", action="append", help="extra tag (repeatable)")
    p.add_argument("--label", action="append", metavar="KEY=VALUE")
    p.add_argument("--rules", metavar="FILE",
                   help="JSON file with inbound_rules and outbound_rules instead of defaults")
    p.add_argument("--docker-network", action="store_true",
                   help="the profile of the Docker networks of this name (their containers "
                        "join it); without it, a network named so is refused")
    p = command(profile, "remove", lambda c, a: c.remove_profile(a.name, force=a.force),
                "remove a profile (refused while endpoints use it)", preview=True)
    p.add_argument("name")
    p.add_argument("--force", action="store_true",
                   help="remove it although endpoints use it (their traffic is then dropped)")
    command(profile, "list", profile_list, "list profiles")
    p = command(profile, "show", profile_show, "show a profile and its rules")
    p.add_argument("name")
    p.add_argument("--counters", action="store_true",
                   help="packets and bytes per rule on this host (iptables counters), and "
                        "what each endpoint's chain dropped at its end")
    p.add_argument("--hostname", help="this host's name, for --counters (default: "
                                      "$CALICO_HOSTNAME, else the system host name)")
    rule = profile.add_parser("rule", help="edit a profile's rules").add_subparsers(
        dest="rule_command", required=True, metavar="COMMAND")
    p = command(rule, "add", rule_add, "add a rule", preview=True)
    p.add_argument("profile")
    p.add_argument("direction", choices=("inbound", "outbound"))
    p.add_argument("action", choices=ACTIONS)
    p.add_argument("--position", type=int, metavar="N", help="1-based place (default: last)")
    p.add_argument("--ip-version", type=int, choices=(4, 6))
    for name in RULE_FIELDS:
        for key in (name, f"not_{name}"):
            flag = "--" + key.replace("_", "-")
            what = RULE_HELP[name] if key == name else f"not {RULE_HELP[name]}"
            if name.endswith("_net"):
                p.add_argument(flag, dest=key, action="append", metavar="CIDR", help=what)
            else:
                p.add_argument(flag, dest=key, metavar=RULE_METAVAR.get(name), help=what)
    p = command(rule, "remove", rule_remove, "remove a rule by its number in `profile show`",
                preview=True)
    p.add_argument("profile")
    p.add_argument("direction", choices=("inbound", "outbound"))
    p.add_argument("number", type=int)

    # policy
    policy = group(groups, "policy", "what the rules do")
    p = command(policy, "explain", policy_explain,
                "would the first packet of a flow pass, and which rule decides: the "
                "rendered chains of each host on its way, walked for that packet")
    p.add_argument("--from", dest="source", required=True, metavar="ENDPOINT|CONTAINER|IP",
                   help="an endpoint id (or its start), a container on this host, or an "
                        "address")
    p.add_argument("--to", dest="destination", required=True,
                   metavar="ENDPOINT|CONTAINER|IP")
    p.add_argument("--protocol", help="tcp, udp, sctp, icmp, icmpv6 or a number (default: "
                                      "tcp with --port, else icmp: a ping)")
    p.add_argument("--port", type=int, help="destination port")
    p.add_argument("--source-port", type=int,
                   help="source port (default 32768, the first ephemeral one)")
    p.add_argument("--icmp-type", type=int, help="default: echo request")
    p.add_argument("--icmp-code", type=int)
    p.add_argument("--ip-version", type=int, choices=(4, 6),
                   help="for endpoints with both (default: 4 when both ends have it)")
    p.add_argument("--trace", action="store_true", help="also every iptables rule matched")
    p.add_argument("--docker-socket", default="/var/run/docker.sock", metavar="PATH",
                   help="where container names are looked up")

    # node
    node = group(groups, "node", "hosts that run containers and BIRD")
    for name, handler, text in (
            ("add", node_add, "add a node"),
            ("set", node_set, "change a node (what is not given stays; its peers too)")):
        p = command(node, name, handler, text, preview=True)
        p.add_argument("name")
        p.add_argument("--ip", metavar="ADDR[/PREFIX]",
                       help="BGP IPv4 address; with /PREFIX (e.g. 10.0.0.1/24, as Calico's "
                            "ipv4Address) also the host's subnet: BGP peers outside it are "
                            "reached through routers (multihop); without, every peer is "
                            "taken to share the host's subnet")
        p.add_argument("--ip6", metavar="ADDR6[/PREFIX]",
                       help="BGP IPv6 address; with /PREFIX (e.g. 2001:db8::1/64) also the "
                            "host's IPv6 subnet")
        p.add_argument("--as", dest="as_number", metavar="ASN",
                       help="AS number (default: global)")
        p.add_argument("--rr-cluster-id", metavar="ID",
                       help="make the node a route reflector of this cluster")
    p = command(node, "remove", node_remove, "remove a host from the cluster: its "
                "endpoints and their addresses, its pending and tunnel addresses, block "
                "claims and Docker network records, then its node record and own BGP peers "
                "(stop the host's calico-agent and Docker plugin first)", preview=True)
    p.add_argument("name")
    command(node, "list", node_list, "list nodes")
    p = command(node, "show", node_show, "show a node")
    p.add_argument("name")
    p = command(node, "status", node_status, "this host's BGP sessions (exit 1 when one is "
                "not Established)")
    p.add_argument("--bird-socket", default="/run/bird/bird.ctl", metavar="PATH")

    # bgp
    bgp = group(groups, "bgp", "BGP peers and settings")
    peer = bgp.add_parser("peer", help="BGP peers").add_subparsers(
        dest="peer_command", required=True, metavar="COMMAND")
    p = command(peer, "add", peer_add, "add a peer of every node or of one node", preview=True)
    p.add_argument("address")
    p.add_argument("--as", dest="as_number", required=True, metavar="ASN")
    p.add_argument("--node", metavar="NAME")
    p.add_argument("--password-file", metavar="FILE", help="TCP MD5 password of the "
                   "session, on the file's first line (never printed); or set "
                   "$CALICO_BGP_PASSWORD")
    p.add_argument("--password", help="the password itself (other users see it in `ps`: "
                   "prefer --password-file)")
    p.add_argument("--accept-default-route", action="store_true",
                   help="accept a default route from it (only the pools' blocks otherwise)")
    p.add_argument("--accept-net", action="append", metavar="CIDR",
                   help="accept routes inside CIDR from it (repeatable)")
    p = command(peer, "remove", lambda c, a: c.remove_bgp_peer(a.address, a.node),
                "remove a peer", preview=True)
    p.add_argument("address")
    p.add_argument("--node", metavar="NAME")
    p = command(peer, "list", peer_list, "list peers")
    p.add_argument("--node", metavar="NAME")
    config = bgp.add_parser("config", help="global BGP settings").add_subparsers(
        dest="config_command", required=True, metavar="COMMAND")
    p = command(config, "set", bgp_config_set, "change global BGP settings", preview=True)
    p.add_argument("--as", dest="as_number", metavar="ASN", help="default AS number")
    p.add_argument("--mesh", choices=("on", "off"), help="node-to-node mesh")
    command(config, "show", bgp_config_show, "show global BGP settings")

    # endpoint
    endpoint = group(groups, "endpoint", "container endpoints")
    p = command(endpoint, "add", endpoint_add, "add an endpoint", preview=True)
    p.add_argument("--host", required=True)
    p.add_argument("--interface", required=True, metavar="IF")
    p.add_argument("--ip", action="append", metavar="ADDR", help="IPv4 or IPv6 (repeatable)")
    p.add_argument("--mac")
    p.add_argument("--profile", action="append", required=True, metavar="P")
    p.add_argument("--id", help="endpoint id (default: a new random id)")
    p.add_argument("--label", action="append", metavar="KEY=VALUE")
    p = command(endpoint, "remove",
                lambda c, a: c.remove_endpoint(a.host, a.id, release_addresses=True),
                "remove an endpoint and release its addresses", preview=True)
    p.add_argument("id")
    p.add_argument("--host", required=True)
    p = command(endpoint, "list", endpoint_list, "list endpoints")
    p.add_argument("--host")

    # agent settings
    settings = group(groups, "config", "settings of every host's agent")
    p = command(settings, "set", config_set, "change agent settings", preview=True)
    p.add_argument("--default-endpoint-to-host-action", choices=("accept", "drop"),
                   required=True,
                   help="container-to-host traffic its outbound rules allowed (DHCP, DNS and "
                        "IPv6 neighbour discovery always pass)")
    command(settings, "show", config_show, "show agent settings")

    # the datastore itself
    store = group(groups, "datastore", "the datastore's records")
    command(store, "check", datastore_check, "list records readers must skip because they "
            "cannot be read (exit 1 when there are any)")

    # ipam
    ipam = group(groups, "ipam", "IP address management")
    p = command(ipam, "assign", ipam_assign, "assign addresses to a handle (prints them)")
    p.add_argument("--host", "--hostname", dest="host", required=True,
                   help="the host whose blocks the addresses come from")
    p.add_argument("--handle", required=True, metavar="ID")
    p.add_argument("--ipv4", type=int, metavar="N", help="IPv4 addresses (default 1)")
    p.add_argument("--ipv6", type=int, metavar="M", help="IPv6 addresses")
    p.add_argument("--ip", metavar="ADDR", help="assign this address")
    p.add_argument("--pool", action="append", metavar="CIDR", help="only from these pools")
    p = command(ipam, "release", ipam_release, "release addresses")
    p.add_argument("--ip", action="append", metavar="ADDR")
    p.add_argument("--handle", metavar="ID")
    p = command(ipam, "release-affinity", ipam_release_affinity,
                "release a host's block claims")
    p.add_argument("--host", required=True)
    command(ipam, "show", ipam_show, "show pool and block usage")
    from .ipam import GRACE

    p = command(ipam, "check", ipam_check,
                "check blocks, claims, handles and endpoints against each other (exit 1 when "
                "inconsistent); --repair fixes what is safe to fix")
    p.add_argument("--repair", action="store_true",
                   help="fix what needs no human: handle records and claims from the blocks, "
                        "free addresses endpoints use, stale pending addresses; report the "
                        "rest (exit 1 while findings remain)")
    p.add_argument("--dry-run", action="store_true", help="with --repair: say what it would do")
    p.add_argument("--grace", type=_seconds, default=GRACE, metavar="SECONDS",
                   help=f"pending addresses younger than this are fine (default {GRACE})")
    p = command(ipam, "gc", ipam_gc,
                "free addresses nothing uses, in one explicit scope: --docker, --live/"
                "--live-file, or --all")
    scope = p.add_mutually_exclusive_group(required=True)  # a destructive default is none
    scope.add_argument("--docker", action="store_true",
                       help="free this host's Docker endpoints (records and addresses) and "
                            "pending addresses that this host's Docker no longer has; aborts, "
                            "changing nothing, on any Docker error")
    scope.add_argument("--live", action="append", metavar="HANDLE",
                       help="free every handle except these (repeatable); handles of existing "
                            "endpoints and new handles are always kept")
    scope.add_argument("--live-file", metavar="FILE", help="like --live, one handle per line")
    scope.add_argument("--all", action="store_true",
                       help="free every address in the cluster, running containers' too; asks "
                            f"for the word {CONFIRM_WORD} on a terminal, else needs "
                            "--yes-release-everything")
    p.add_argument("--yes-release-everything", action="store_true",
                   help="confirm --all without a terminal")
    p.add_argument("--dry-run", action="store_true", help="print what would be freed, free "
                                                         "nothing")
    p.add_argument("--grace", type=_seconds, default=GRACE, metavar="SECONDS",
                   help=f"keep handles younger than this (default {GRACE})")
    p.add_argument("--docker-socket", default="/var/run/docker.sock", metavar="PATH")
    p.add_argument("--hostname", "--host", dest="hostname",
                   help="this host's name (default: $CALICO_HOSTNAME, else the system host "
                        "name)")
    config = ipam.add_parser("config", help="IPAM settings").add_subparsers(
        dest="config_command", required=True, metavar="COMMAND")
    p = command(config, "set", ipam_config_set, "change IPAM settings")
    p.add_argument("--strict-affinity", type=_bool_arg, required=True, metavar="true|false")
    command(config, "show", ipam_config_show, "show IPAM settings")

    # lab (no datastore: containers on this machine's Docker)
    lab = group(groups, "lab", "a local multi-host lab: node containers calico-lab-1..N "
                "on the Docker network calico-lab-fabric (needs root)")
    # a second lab beside the default one (tests of an installed package) comes from the
    # environment, so the fixed names stay the only ones the options offer
    lab_env = ("environment: CALICO_LAB_PREFIX, CALICO_LAB_SUBNET4, CALICO_LAB_SUBNET6 and "
               "CALICO_LAB_STATE_DIR make another lab beside calico-lab (give them to `lab "
               "down` too); CALICO_LAB_OUTSIDE_SUBNET4 and CALICO_LAB_OUTSIDE_SUBNET6 choose "
               "the outside network of --fabric (default: 198.18.0.0/15 holding the fabric's "
               "last 17 bits, 198.19.250.0/24, and 2001:db8::/32 holding its bits 32 to 127, "
               "2001:db8:1ab::/64); CALICO_LAB_REPO names a checkout to deploy from "
               "(default: the checkout this package runs from, else the collection installed "
               "with it)")
    p = lab.add_parser("up", help="build the node image (cached), start the nodes and "
                       "deploy with playbooks/site.yml", description="build the node image "
                       "(cached), start the nodes and deploy with playbooks/site.yml",
                       epilog=lab_env)
    p.set_defaults(handler=lab_command)
    p.add_argument("--nodes", type=_node_count, default=3, metavar="N",
                   help="node count, 1 to 50 (default 3)")
    p.add_argument("--ipv6", action="store_true", help="IPv6 on the fabric and the networks")
    p.add_argument("--route-reflectors", type=int, default=0, metavar="R",
                   help="make the first R nodes BGP route reflectors and turn the "
                        "node-to-node mesh off (default 0: the mesh)")
    p.add_argument("--fabric", action="store_true",
                   help="add the outside world: a top-of-rack router calico-lab-tor (BIRD 2, "
                        "AS 65000, deployed by the tor role; every node's global BGP peer) "
                        "and a host calico-lab-outside on its own network "
                        "calico-lab-outside-net, reaching the pools through the ToR only; "
                        "with a second IPv4 pool without nat_outgoing and its network edge")
    p.add_argument("--racks", type=int, default=1, metavar="R",
                   help="split the nodes in R racks (default 1), each its own network "
                        "calico-lab-fabric-1..R (the fabric subnets split in R parts) with "
                        "its ToR calico-lab-tor-1..R in AS 65000+R, Calico's \"AS per "
                        "rack\": each node in its rack's AS peers with its ToR only (the "
                        "mesh off), the ToR reflects the rack's routes and peers with the "
                        "other ToRs over the outside network; implies --fabric")
    p.add_argument("--skip-deploy", action="store_true", help="start the nodes only")
    for name, text in (("down", "remove the lab's containers, volumes, network and state"),
                       ("image", "build the node image if needed and print its tag")):
        lab.add_parser(name, help=text, description=text,
                       epilog=lab_env).set_defaults(handler=lab_command)

    # diags: it opens the datastore itself, so a store that does not answer is noted
    from .dataplane.bird import DEFAULT_CONFIG, DEFAULT_SOCKET
    from .diags import DEFAULT_LOG_LINES

    text = ("write one .tar.gz of this host's diagnostics (datastore view, iptables, ipsets, "
            "routes, links, BIRD, logs, versions; passwords masked); prints its path")
    p = command(groups, "diags", diags, text)
    p.add_argument("--archive", metavar="FILE",
                   help="the archive (default: calico-diags-HOST-UTCTIME.tar.gz here; a "
                        "folder: that name in it)")
    p.add_argument("--hostname", help="this host's name (default: $CALICO_HOSTNAME, else "
                                      "the system host name)")
    p.add_argument("--bird-socket", default=DEFAULT_SOCKET, metavar="PATH",
                   help=f"BIRD's control socket (default {DEFAULT_SOCKET})")
    p.add_argument("--bird-config", default=DEFAULT_CONFIG, metavar="PATH",
                   help=f"BIRD's config, copied with passwords masked (default "
                        f"{DEFAULT_CONFIG})")
    p.add_argument("--log-lines", type=_log_lines, default=DEFAULT_LOG_LINES, metavar="N",
                   help=f"journal lines per unit (default {DEFAULT_LOG_LINES})")
    return parser


def _log_lines(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 10**7:
        raise argparse.ArgumentTypeError(f"{text!r} is not allowed; use 1 to 10000000")
    return int(text)


def _node_count(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 50:
        raise argparse.ArgumentTypeError(f"{text!r} is not allowed; use 1 to 50")
    return int(text)


def lab_command(c: Client | None, a: argparse.Namespace) -> int:
    from . import lab  # docker and ansible helpers: loaded only for lab commands

    return lab.cli(a)


def dry_run(c: Client, a: argparse.Namespace) -> int:
    """Run the command on a draft of the datastore; print what every host would change."""
    from .preview import Draft

    draft = Draft(c.store)
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # what the command itself prints
            a.handler(draft.client, a)
    except CalicoError as exc:
        print(f"calicoctl: dry run: {exc}", file=sys.stderr)
        return 1  # the check failed: the real command would refuse the change
    found = draft.plan()
    writes = draft.writes
    put = sorted(k for k, v in writes.items() if v is not None)
    deleted = sorted(k for k, v in writes.items() if v is None)
    if a.output == "json":
        emit(a, {"dry_run": True, "records": {"put": put, "deleted": deleted},
                 **found.to_dict()})
        return 0
    print(f"dry run, nothing written: {len(put)} record(s) would be written, "
          f"{len(deleted)} removed")
    print("\n".join(found.lines()))
    return 0


#: a pool's --vxlan (IPPool.vxlan_mode), as Calico's vxlanMode
VXLAN_CHOICES = sorted(VXLAN_MODES)
VXLAN_HELP = ("how the pool's traffic goes between hosts (IPv4 pools only): never routes it "
              "natively; always encapsulates it in VXLAN to every other host; cross-subnet "
              "encapsulates it only to hosts on another subnet")

#: commands that can preview their change with --dry-run
DRY_RUN_HELP = ("print what every host's dataplane would change (rules, ipset members, "
                "routes, BIRD), write nothing; exit 1 if the change would be refused")

#: commands that never write to the datastore
READ_ONLY = frozenset({pool_list, profile_list, profile_show, policy_explain, node_list,
                       node_show, peer_list, bgp_config_show, endpoint_list, config_show,
                       datastore_check, ipam_show, ipam_check, ipam_config_show, diags})


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.output = getattr(args, "output", "table")
    try:
        if args.handler in (node_status, lab_command, diags):  # they open what they need
            code = args.handler(None, args)
        else:
            # commands that only read never create a store (a mistyped path is an error)
            create = args.handler not in READ_ONLY or getattr(args, "repair", False)
            if getattr(args, "preview", False):
                code = _dry_run(args)
            else:
                with connect(**datastore.options(args), create=create) as client:
                    code = args.handler(client, args)
    except CalicoError as exc:
        print(f"calicoctl: {exc}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:
        print(f"calicoctl: {exc}", file=sys.stderr)
        return 1
    return code or 0


def _dry_run(args: argparse.Namespace) -> int:
    """A dry run never creates an embedded store: without one it starts from an empty one."""
    try:
        client = connect(**datastore.options(args), create=False)
    except DatastoreMissing as exc:
        from .datastore.sqlite import SqliteDatastore

        print(f"calicoctl: warning: {exc}: the dry run starts from an empty datastore",
              file=sys.stderr)
        client = Client(SqliteDatastore.in_memory())
    with client:
        return dry_run(client, args)


if __name__ == "__main__":
    sys.exit(main())
