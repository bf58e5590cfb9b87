"""calicoctl: a thin command line over ``calico_lib.Client``.

Exit codes: 0 ok, 1 a failed check (or an operational failure), 2 bad input.
``--datastore`` and ``-o table|json`` are accepted before or after the command.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from .client import Client, connect
from .errors import CalicoError, ValidationError
from .model import BGPPeer, Endpoint, IPAMConfig, IPPool, Node, Profile, Rule

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
                      disabled=a.disabled))


def pool_set(c: Client, a: argparse.Namespace) -> None:
    c.update_pool(a.cidr, nat_outgoing=a.nat_outgoing, disabled=a.disabled)


def pool_list(c: Client, a: argparse.Namespace) -> None:
    emit(a, [p.to_dict() for p in c.list_pools()],
         ["cidr", "block_size", "nat_outgoing", "disabled"])


def profile_add(c: Client, a: argparse.Namespace) -> None:
    if a.rules:
        try:
            rules = json.loads(_read_file("rules", a.rules))
        except ValueError as exc:
            raise ValidationError("rules", f"{a.rules} is not JSON ({exc})") from None
        if not isinstance(rules, dict):
            raise ValidationError("rules", "use a JSON object with inbound_rules and "
                                           "outbound_rules lists")
        profile = Profile.from_dict({"name": a.name, "tags": a.tag or [a.name],
                                     "labels": _labels(a.label), **rules})
    else:
        profile = Profile.with_default_rules(a.name)
        profile.tags = sorted(set(profile.tags) | set(a.tag or []))
        profile.labels = Profile(a.name, labels=_labels(a.label)).labels
    c.add_profile(profile)


def profile_list(c: Client, a: argparse.Namespace) -> None:
    profiles = c.list_profiles()
    if a.output == "json":
        emit(a, [p.to_dict() for p in profiles])
        return
    emit(a, [{"name": p.name, "tags": p.tags, "labels": p.labels,
              "inbound": len(p.inbound_rules), "outbound": len(p.outbound_rules)}
             for p in profiles], ["name", "tags", "labels", "inbound", "outbound"])


def profile_show(c: Client, a: argparse.Namespace) -> None:
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


RULE_FIELDS = ("protocol", "src_net", "src_tag", "src_ports", "dst_net", "dst_tag",
               "dst_ports", "icmp_type", "icmp_code")


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


def node_add(c: Client, a: argparse.Namespace) -> None:
    c.add_node(Node(a.name, ipv4=a.ip, ipv6=a.ip6, as_number=a.as_number,
                    rr_cluster_id=a.rr_cluster_id))


def node_list(c: Client, a: argparse.Namespace) -> None:
    emit(a, [n.to_dict() for n in c.list_nodes()],
         ["name", "ipv4", "ipv6", "as_number", "rr_cluster_id"])


def node_status(c: Client | None, a: argparse.Namespace) -> int:
    """This host's BGP sessions from BIRD; exit 1 when one is not Established."""
    from .dataplane.bird import bgp_sessions

    sessions = bgp_sessions(a.bird_socket)
    rows = [{"peer": s.peer, "type": s.kind, "state": s.state, "since": s.since,
             "info": s.info, "name": s.name} for s in sessions]
    if a.output == "json":
        emit(a, rows)
    elif rows:
        emit(a, rows, ["peer", "type", "state", "since", "info"])
    else:
        print("no BGP sessions configured")
    return 0 if all(s.established for s in sessions) else 1


def peer_add(c: Client, a: argparse.Namespace) -> None:
    c.add_bgp_peer(BGPPeer(a.address, a.as_number, a.node, password=a.password))


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
    problems = c.ipam.check()
    if a.output == "json":
        emit(a, {"ok": not problems, "problems": [vars(p) for p in problems]})
    elif problems:
        for problem in problems:
            print(problem)
    else:
        print("IPAM is consistent")
    return 1 if problems else 0


def ipam_gc(c: Client, a: argparse.Namespace) -> None:
    live = list(a.live or [])
    if a.docker:
        # Docker's endpoints on this host are live; so are endpoints of other hosts and
        # handles not made by the Docker plugin (only this host's Docker is asked).
        from .agent import resolve_hostname
        from .plugin.docker_api import DockerAPI
        from .plugin.driver import pending_handle

        api = DockerAPI(a.docker_socket)
        known = api.endpoint_ids()
        if known is None:
            raise CalicoError(f"docker: cannot list endpoints through {a.docker_socket}; "
                              "nothing was released")
        host = resolve_hostname(a.hostname)
        docker_made = {e.id for e in c.list_endpoints(host)
                       if "docker-network" in e.labels}
        live += [e.id for e in c.list_endpoints() if e.id not in docker_made or e.id in known]
        live += [h for h in c.ipam.handles() if not _docker_handle(h, host, docker_made)]
        live.append(pending_handle(host))  # an address Docker is being given right now
        stale = docker_made - known
        for endpoint_id in sorted(stale):  # the endpoint records go with their addresses
            c.remove_endpoint(host, endpoint_id)
    if a.live_file:
        text = _read_file("live_file", a.live_file)
        live += [line.strip() for line in text.splitlines() if line.strip()]
    freed = c.ipam.gc(live)
    if a.output == "json":
        emit(a, {"released_handles": freed})
    else:
        for handle in freed:
            print(handle)


def _docker_handle(handle: str, host: str, docker_made: set[str]) -> bool:
    return handle in docker_made or (len(handle) == 64 and all(
        ch in "0123456789abcdef" for ch in handle))


def ipam_config_set(c: Client, a: argparse.Namespace) -> None:
    c.ipam.set_config(IPAMConfig(strict_affinity=a.strict_affinity))


def ipam_config_show(c: Client, a: argparse.Namespace) -> None:
    emit(a, c.ipam.get_config().to_dict(), ["strict_affinity"])


def _read_file(field_name: str, path: str) -> str:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except OSError as exc:
        raise ValidationError(field_name, f"cannot read {path}: {exc.strerror}") from None


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
    common.add_argument("--datastore", metavar="URL", default=argparse.SUPPRESS,
                        help="sqlite:////path.db or etcd://host:port[,host:port]; default: "
                             "$CALICO_DATASTORE, /etc/calico/calico.conf, "
                             "sqlite:////var/lib/calico/calico.db")
    common.add_argument("-o", "--output", choices=("table", "json"), default=argparse.SUPPRESS,
                        help="output format (default: table)")

    parser = _Parser(prog="calicoctl", parents=[common],
                     description="Manage Calico networking for Docker.")
    groups = parser.add_subparsers(dest="group", required=True, metavar="COMMAND")

    def command(sub: Any, name: str, handler: Handler, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, parents=[common], help=help_text, description=help_text)
        p.set_defaults(handler=handler)
        return p

    def group(sub: Any, name: str, help_text: str) -> Any:
        p = sub.add_parser(name, help=help_text, description=help_text)
        return p.add_subparsers(dest=f"{name}_command", required=True, metavar="COMMAND")

    # pool
    pool = group(groups, "pool", "IP pools that container addresses come from")
    p = command(pool, "add", pool_add, "add a pool")
    p.add_argument("cidr")
    p.add_argument("--nat-outgoing", action="store_true",
                   help="masquerade traffic from the pool to destinations outside all pools")
    p.add_argument("--disabled", action="store_true", help="give no new addresses from it")
    p.add_argument("--block-size", type=int, metavar="N",
                   help="prefix length of its blocks (default 26 for IPv4, 122 for IPv6)")
    p = command(pool, "set", pool_set, "change a pool's flags")
    p.add_argument("cidr")
    p.add_argument("--nat-outgoing", type=_bool_arg, metavar="true|false")
    p.add_argument("--disabled", type=_bool_arg, metavar="true|false")
    p = command(pool, "remove", lambda c, a: c.remove_pool(a.cidr), "remove an unused pool")
    p.add_argument("cidr")
    command(pool, "list", pool_list, "list pools")

    # profile
    profile = group(groups, "profile", "profiles: groups of containers and their rules")
    p = command(profile, "add", profile_add, "add a profile (default rules: members reach "
                "each other, all outbound allowed)")
    p.add_argument("name")
    p.add_argument("--tag", action="append", help="extra tag (repeatable)")
    p.add_argument("--label", action="append", metavar="KEY=VALUE")
    p.add_argument("--rules", metavar="FILE",
                   help="JSON file with inbound_rules and outbound_rules instead of defaults")
    p = command(profile, "remove", lambda c, a: c.remove_profile(a.name), "remove a profile")
    p.add_argument("name")
    command(profile, "list", profile_list, "list profiles")
    p = command(profile, "show", profile_show, "show a profile and its rules")
    p.add_argument("name")
    rule = profile.add_parser("rule", help="edit a profile's rules").add_subparsers(
        dest="rule_command", required=True, metavar="COMMAND")
    p = command(rule, "add", rule_add, "add a rule")
    p.add_argument("profile")
    p.add_argument("direction", choices=("inbound", "outbound"))
    p.add_argument("action", choices=("allow", "deny"))
    p.add_argument("--position", type=int, metavar="N", help="1-based place (default: last)")
    p.add_argument("--ip-version", type=int, choices=(4, 6))
    for name in RULE_FIELDS:
        for key in (name, f"not_{name}"):
            flag = "--" + key.replace("_", "-")
            if name.endswith("_net"):
                p.add_argument(flag, dest=key, action="append", metavar="CIDR")
            else:
                p.add_argument(flag, dest=key)
    p = command(rule, "remove", rule_remove, "remove a rule by its number in `profile show`")
    p.add_argument("profile")
    p.add_argument("direction", choices=("inbound", "outbound"))
    p.add_argument("number", type=int)

    # node
    node = group(groups, "node", "hosts that run containers and BIRD")
    p = command(node, "add", node_add, "add a node")
    p.add_argument("name")
    p.add_argument("--ip", metavar="ADDR", help="BGP IPv4 address")
    p.add_argument("--ip6", metavar="ADDR6", help="BGP IPv6 address")
    p.add_argument("--as", dest="as_number", metavar="ASN", help="AS number (default: global)")
    p.add_argument("--rr-cluster-id", metavar="ID",
                   help="make the node a route reflector of this cluster")
    p = command(node, "remove", lambda c, a: c.remove_node(a.name), "remove a node")
    p.add_argument("name")
    command(node, "list", node_list, "list nodes")
    p = command(node, "status", node_status, "this host's BGP sessions (exit 1 when one is "
                "not Established)")
    p.add_argument("--bird-socket", default="/run/bird/bird.ctl", metavar="PATH")

    # bgp
    bgp = group(groups, "bgp", "BGP peers and settings")
    peer = bgp.add_parser("peer", help="BGP peers").add_subparsers(
        dest="peer_command", required=True, metavar="COMMAND")
    p = command(peer, "add", peer_add, "add a peer of every node or of one node")
    p.add_argument("address")
    p.add_argument("--as", dest="as_number", required=True, metavar="ASN")
    p.add_argument("--node", metavar="NAME")
    p.add_argument("--password", help="TCP MD5 password of the session (never printed)")
    p = command(peer, "remove", lambda c, a: c.remove_bgp_peer(a.address, a.node),
                "remove a peer")
    p.add_argument("address")
    p.add_argument("--node", metavar="NAME")
    p = command(peer, "list", peer_list, "list peers")
    p.add_argument("--node", metavar="NAME")
    config = bgp.add_parser("config", help="global BGP settings").add_subparsers(
        dest="config_command", required=True, metavar="COMMAND")
    p = command(config, "set", bgp_config_set, "change global BGP settings")
    p.add_argument("--as", dest="as_number", metavar="ASN", help="default AS number")
    p.add_argument("--mesh", choices=("on", "off"), help="node-to-node mesh")
    command(config, "show", bgp_config_show, "show global BGP settings")

    # endpoint
    endpoint = group(groups, "endpoint", "container endpoints")
    p = command(endpoint, "add", endpoint_add, "add an endpoint")
    p.add_argument("--host", required=True)
    p.add_argument("--interface", required=True, metavar="IF")
    p.add_argument("--ip", action="append", metavar="ADDR", help="IPv4 or IPv6 (repeatable)")
    p.add_argument("--mac")
    p.add_argument("--profile", action="append", required=True, metavar="P")
    p.add_argument("--id", help="endpoint id (default: a new random id)")
    p.add_argument("--label", action="append", metavar="KEY=VALUE")
    p = command(endpoint, "remove",
                lambda c, a: c.remove_endpoint(a.host, a.id, release_addresses=True),
                "remove an endpoint and release its addresses")
    p.add_argument("id")
    p.add_argument("--host", required=True)
    p = command(endpoint, "list", endpoint_list, "list endpoints")
    p.add_argument("--host")

    # agent settings
    settings = group(groups, "config", "settings of every host's agent")
    p = command(settings, "set", lambda c, a: c.set_agent_config(
        default_endpoint_to_host_action=a.default_endpoint_to_host_action),
        "change agent settings")
    p.add_argument("--default-endpoint-to-host-action", choices=("accept", "drop"),
                   required=True,
                   help="container-to-host traffic its outbound rules allowed (DHCP, DNS and "
                        "IPv6 neighbour discovery always pass)")
    command(settings, "show", lambda c, a: emit(a, c.get_agent_config().to_dict(),
                                                ["default_endpoint_to_host_action"]),
            "show agent settings")

    # ipam
    ipam = group(groups, "ipam", "IP address management")
    p = command(ipam, "assign", ipam_assign, "assign addresses to a handle (prints them)")
    p.add_argument("--host", required=True)
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
    command(ipam, "check", ipam_check, "check consistency (exit 1 when inconsistent)")
    p = command(ipam, "gc", ipam_gc, "release every handle not in the live set")
    p.add_argument("--live", action="append", metavar="HANDLE")
    p.add_argument("--live-file", metavar="FILE", help="one live handle per line")
    p.add_argument("--docker", action="store_true",
                   help="also free addresses of Docker endpoints this host's Docker no "
                        "longer has (other handles are kept)")
    p.add_argument("--docker-socket", default="/var/run/docker.sock", metavar="PATH")
    p.add_argument("--hostname", help="this host's name (default: $CALICO_HOSTNAME, else "
                                      "the system host name)")
    config = ipam.add_parser("config", help="IPAM settings").add_subparsers(
        dest="config_command", required=True, metavar="COMMAND")
    p = command(config, "set", ipam_config_set, "change IPAM settings")
    p.add_argument("--strict-affinity", type=_bool_arg, required=True, metavar="true|false")
    command(config, "show", ipam_config_show, "show IPAM settings")

    # lab (no datastore: containers on this machine's Docker)
    lab = group(groups, "lab", "a local multi-host lab: node containers calico-lab-1..N "
                "on the Docker network calico-lab-fabric (needs root)")
    p = lab.add_parser("up", help="build the node image (cached), start the nodes and "
                       "deploy with playbooks/site.yml", description="build the node image "
                       "(cached), start the nodes and deploy with playbooks/site.yml")
    p.set_defaults(handler=lab_command)
    p.add_argument("--nodes", type=_node_count, default=3, metavar="N",
                   help="node count, 1 to 50 (default 3)")
    p.add_argument("--ipv6", action="store_true", help="IPv6 on the fabric and the networks")
    p.add_argument("--skip-deploy", action="store_true", help="start the nodes only")
    for name, text in (("down", "remove the lab's containers, volumes, network and state"),
                       ("image", "build the node image if needed and print its tag")):
        lab.add_parser(name, help=text, description=text).set_defaults(handler=lab_command)
    return parser


def _node_count(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 50:
        raise argparse.ArgumentTypeError(f"{text!r} is not allowed; use 1 to 50")
    return int(text)


def lab_command(c: Client | None, a: argparse.Namespace) -> int:
    from . import lab  # docker and ansible helpers: loaded only for lab commands

    return lab.cli(a)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.output = getattr(args, "output", "table")
    try:
        if args.handler in (node_status, lab_command):  # BIRD or Docker, not the datastore
            code = args.handler(None, args)
        else:
            with connect(getattr(args, "datastore", None)) as client:
                code = args.handler(client, args)
    except CalicoError as exc:
        print(f"calicoctl: {exc}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:
        print(f"calicoctl: {exc}", file=sys.stderr)
        return 1
    return code or 0


if __name__ == "__main__":
    sys.exit(main())
