"""Is every host right? What the fault campaign (bench/faults.py) and its short version
(tests/test_faults.py) measure, in one place.

One check round asks every host for its facts and probes the connectivity matrix; a pure
``verdict`` over the answers says what is wrong. The facts of one host come from
``HOST_PROBE``, a script run on that host (``python -c HOST_PROBE ARGS_JSON``: in a lab node
with the node's virtualenv, in a test namespace with this checkout's Python) that prints
JSON:

  * ``docker``: every endpoint on the host's Calico networks as Docker lists it (network,
    container, endpoint id, addresses), or Docker's error;
  * ``endpoints``: the host's endpoint records in the datastore;
  * ``sets``: the members of every ``cali4-t-``/``cali6-t-`` ipset (a network's group);
  * ``routes``: the main routing table (IPv4 and IPv6);
  * ``links``: the host-side ``cali`` interfaces;
  * ``drift``: ``reconcile(check_mode=True)``: whether the kernel's ipsets and iptables differ
    from what the datastore says this host should have (and what would change);
  * ``bgp`` (with a BIRD socket): every Calico BGP session and its state;
  * ``ipam`` (one host per round): the ``ipam check`` findings with a given grace, and every
    endpoint record of every host (for duplicates).

The verdict, exactly:

  dataplane right (what "converged" means), on every host:
    routes    every address of every container Docker lists (on any host) has its route:
              on its own host the longest match goes out its endpoint's cali interface, on
              every other host through the owning host's fabric address (the block route
              BIRD learned, or a /32); no protocol-80 (Calico) /32 route is left for an
              address no live local container has;
    ipsets    each network's group set holds exactly the addresses Docker lists on that
              network on all hosts (no stale member, none missing), on every host that has
              the set; a host with a local container on a network has its set;
    drift     the check-mode reconcile would change nothing (iptables and ipsets are what
              the datastore says);
    matrix    every probe as expected (same network passes, other networks are dropped,
              plus what a fault's policy allows);
    bgp       (hosts with BIRD) every session Established;
    answers   every host's Docker and the datastore answered.
  records (counted, not part of convergence; the goal is 0 of each once converged):
    stale     endpoint records of a host, made by the Docker plugin, that Docker on that
              host does not list;
    leaked    ``ipam check`` findings with the grace given (addresses held without an
              endpoint, pending longer than the plugin's sync should allow, records that
              disagree), except those counted as duplicates;
    duplicate an address on two live containers (Docker's view, all hosts), on two endpoint
              records, or an endpoint address held by another handle;
    orphans   host-side cali interfaces no endpoint record of the host names.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from calico_lib.render import names

#: Run on one host: ``python -c HOST_PROBE '{"hostname": ..., ...}'``; prints its facts. With
#: ``"serve": true`` it answers each line on stdin (a JSON object of options to override,
#: e.g. ``{"ipam": true}``) with the facts of that moment, one line each: a lab's check
#: rounds then pay for Python, the imports and etcd's TLS handshake once.
HOST_PROBE = r'''
import json, subprocess, sys, time
ARGS = json.loads(sys.argv[1])
state = {"client": None}

def sh(*argv):
    return subprocess.run(argv, capture_output=True, text=True, timeout=30).stdout

def facts(args):
    out = {"host": args["hostname"], "errors": []}
    try:
        from calico_lib.plugin.docker_api import DockerAPI
        docker = DockerAPI(args.get("docker_socket") or "/var/run/docker.sock")
        found = []
        for net in docker.get("/networks"):
            if net.get("Driver") != "calico":
                continue
            info = docker.network(net["Id"])
            for c in (info.get("Containers") or {}).values():
                found.append({"network": info.get("Name"), "container": c.get("Name"),
                              "id": c.get("EndpointID"),
                              "ipv4": (c.get("IPv4Address") or "").split("/")[0],
                              "ipv6": (c.get("IPv6Address") or "").split("/")[0]})
        out["docker"] = found
    except Exception as exc:
        out["errors"].append(f"docker: {exc}")

    client = state["client"]
    try:
        if client is None:
            from calico_lib import connect
            client = state["client"] = connect(args.get("datastore"))
        out["endpoints"] = [{"id": e.id, "interface": e.interface, "addresses": e.addresses,
                             "profiles": e.profiles, "docker": "docker-network" in e.labels}
                            for e in client.list_endpoints(args["hostname"])]
    except Exception as exc:
        out["errors"].append(f"datastore: {exc}")

    sets = {}
    for line in sh("ipset", "save").splitlines():
        words = line.split()
        if len(words) >= 2 and words[0] == "create" and words[1][5:8] == "-t-":
            sets.setdefault(words[1], [])
        elif len(words) >= 3 and words[0] == "add" and words[1] in sets:
            sets[words[1]].append(words[2])
    out["sets"] = sets
    routes = []
    for family in ("-4", "-6"):
        try:
            routes += json.loads(sh("ip", "-j", family, "route", "show", "table", "main")
                                 or "[]")
        except ValueError:
            out["errors"].append(f"ip {family} route: not JSON")
    out["routes"] = routes
    out["links"] = [link["ifname"] for link in json.loads(sh("ip", "-j", "link", "show")
                                                          or "[]")
                    if link.get("ifname", "").startswith("cali")]

    if args.get("bird_socket"):
        try:
            from calico_lib.dataplane.bird import bgp_sessions
            out["bgp"] = [[s.name, s.info] for s in bgp_sessions(args["bird_socket"])]
        except Exception as exc:
            out["errors"].append(f"birdc: {exc}")

    if client is not None:
        try:
            from calico_lib.reconcile import reconcile
            report = reconcile(client.store, args["hostname"], args["lock_file"],
                               check_mode=True)
            out["drift"] = {"changed": report.changed, "summary": report.summary()}
        except Exception as exc:
            out["errors"].append(f"check-mode reconcile: {exc}")
        if args.get("ipam"):
            try:
                from calico_lib.ipam_check import audit
                found = audit(client.ipam, grace=args["grace"])
                out["ipam"] = {
                    "problems": [[p.kind, p.subject, p.detail] for p in found.problems],
                    "endpoints": [{"host": e.host, "id": e.id, "addresses": e.addresses}
                                  for e in found.state.endpoints.values()]}
            except Exception as exc:
                out["errors"].append(f"ipam check: {exc}")
    return out

if ARGS.get("serve"):
    for line in sys.stdin:
        try:
            print(json.dumps(facts({**ARGS, **json.loads(line or "{}")})), flush=True)
        except Exception as exc:
            print(json.dumps({"errors": [f"probe: {exc}"]}), flush=True)
else:
    print(json.dumps(facts(ARGS)))
'''


def probe_args(hostname: str, lock_file: str, *, datastore: str | None = None,
               docker_socket: str | None = None, ipam: bool = False,
               grace: float = 60.0, bird_socket: str | None = None,
               serve: bool = False) -> str:
    """HOST_PROBE's argument (JSON). ``datastore`` None: the host's calico.conf."""
    return json.dumps({"hostname": hostname, "lock_file": lock_file, "datastore": datastore,
                       "docker_socket": docker_socket, "ipam": ipam, "grace": grace,
                       "bird_socket": bird_socket, "serve": serve})


# ------------------------------------------------------------------------------ the matrix


@dataclass(frozen=True)
class Probe:
    """One connectivity probe: from container ``src`` (on host ``host``) to ``address``."""

    key: str
    host: str
    src: str
    address: str
    kind: str  # "icmp" or "tcp/PORT"
    expected: bool


def probe_script(probes: Iterable[Probe]) -> str:
    """A busybox shell script that runs the probes in parallel and prints ``KEY pass|drop``
    per probe (ping: one packet, 1 s; tcp: an HTTP request answered 200, 1 s)."""
    lines = [
        "probe() {",
        '  case "$2" in',
        '    icmp) if [ "${3#*:}" != "$3" ]; then ping6 -c 1 -W 1 "$3"; '
        'else ping -c 1 -W 1 "$3"; fi >/dev/null 2>&1 ;;',
        "    tcp/*) printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 1 \"$3\" \"${2#tcp/}\" "
        "2>/dev/null | grep -q '200 OK' ;;",
        '  esac && echo "$1 pass" || echo "$1 drop"',
        "}",
    ]
    lines += [f"probe {p.key} {p.kind} {p.address} &" for p in probes]
    lines.append("wait")
    return "\n".join(lines)


def parse_probe_output(text: str) -> dict[str, bool]:
    out = {}
    for line in text.splitlines():
        words = line.split()
        if len(words) == 2 and words[1] in ("pass", "drop"):
            out[words[0]] = words[1] == "pass"
    return out


@dataclass(frozen=True)
class Resident:
    """A long-lived workload the matrix probes between."""

    name: str
    host: str
    network: str


def matrix(residents: Sequence[Resident], facts: dict[str, dict[str, Any]],
           allowed: Iterable[tuple[str, str, str]] = ()) -> list[Probe]:
    """Probes from every resident to every other one Docker lists: ping always, plus
    ``tcp/80``; same network passes, other networks are dropped unless ``allowed`` holds
    (source network, destination network, kind)."""
    extra = set(allowed)
    where = {(e["container"], e["network"]): e for host, f in facts.items()
             for e in f.get("docker", [])}
    probes = []
    for src in residents:
        if (src.name, src.network) not in where:
            continue
        for dst in residents:
            target = where.get((dst.name, dst.network))
            if dst is src or target is None or not target["ipv4"]:
                continue
            for kind in ("icmp", "tcp/80"):
                same = src.network == dst.network
                probes.append(Probe(f"p{len(probes)}", src.host, src.name, target["ipv4"],
                                    kind, same or (src.network, dst.network, kind) in extra))
    return probes


# ------------------------------------------------------------------------------ the verdict


KINDS = ("errors", "routes", "ipsets", "drift", "matrix", "bgp", "stale", "leaked",
         "duplicates", "orphans")


@dataclass
class Verdict:
    errors: list[str] = field(default_factory=list)
    routes: list[str] = field(default_factory=list)
    ipsets: list[str] = field(default_factory=list)
    drift: list[str] = field(default_factory=list)
    matrix: list[str] = field(default_factory=list)
    bgp: list[str] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)
    leaked: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    orphans: list[str] = field(default_factory=list)

    @property
    def converged(self) -> bool:
        """The dataplane is right on every host (see the module's doc)."""
        return not (self.errors or self.routes or self.ipsets or self.drift or self.matrix
                    or self.bgp)

    @property
    def clean(self) -> bool:
        return not (self.stale or self.leaked or self.duplicates or self.orphans)

    def problems(self, limit: int = 6) -> str:
        """What is wrong, a few items per kind, on one line each."""
        lines = []
        for name in KINDS:
            items: list[str] = getattr(self, name)
            if items:
                more = f" (+{len(items) - limit} more)" if len(items) > limit else ""
                lines.append(f"{name}: " + "; ".join(items[:limit]) + more)
        return "\n".join(lines) or "nothing"

    def counts(self) -> str:
        """One line: how many items of each kind are wrong."""
        return ", ".join(f"{name} {len(getattr(self, name))}" for name in KINDS
                         if getattr(self, name)) or "all right"


def _net(dst: str, v6: bool) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    if dst == "default":
        return ipaddress.ip_network("::/0" if v6 else "0.0.0.0/0")
    return ipaddress.ip_network(dst, strict=False)


def longest_match(routes: list[dict[str, Any]], address: str) -> dict[str, Any] | None:
    ip = ipaddress.ip_address(address)
    best, best_len = None, -1
    for route in routes:
        try:
            net = _net(route.get("dst", ""), ip.version == 6)
        except ValueError:
            continue
        if net.version == ip.version and ip in net and net.prefixlen > best_len:
            best, best_len = route, net.prefixlen
    return best


def verdict(facts: dict[str, dict[str, Any]], fabric: dict[str, str | dict[str, str]],
            results: dict[str, bool] | None = None, probes: Sequence[Probe] = (),
            hosts: Iterable[str] | None = None) -> Verdict:
    """What is wrong, from every host's facts (``facts``: host -> HOST_PROBE's answer),
    the hosts' fabric addresses (for routes between hosts: a host's address, or, where hosts
    are in racks, host -> the next hop it routes that host's containers through, its ToR)
    and the matrix ``results`` of
    ``probes``. ``hosts``: the hosts that must have answered (default: those in facts)."""
    v = Verdict()
    wanted = list(hosts) if hosts is not None else list(facts)
    for host in wanted:
        if host not in facts:
            v.errors.append(f"{host}: no answer")
        else:
            v.errors += [f"{host}: {e}" for e in facts[host].get("errors", [])]
    live: dict[str, tuple[str, dict[str, Any]]] = {}  # address -> (host, docker endpoint)
    seen: dict[str, list[str]] = {}
    for host, f in facts.items():
        for e in f.get("docker", []):
            for addr in (e["ipv4"], e["ipv6"]):
                if addr:
                    live[addr] = (host, e)
                    seen.setdefault(addr, []).append(f"{e['container']}@{host}")
    v.duplicates += [f"{addr} on {', '.join(users)}" for addr, users in sorted(seen.items())
                     if len(users) > 1]

    for host, f in facts.items():
        docker_ids = {e["id"] for e in f.get("docker", [])}
        records = f.get("endpoints", [])
        if "docker" in f and "endpoints" in f:
            v.stale += [f"{host}/{r['id'][:12]} ({', '.join(r['addresses'])})"
                        for r in records if r["docker"] and r["id"] not in docker_ids]
        if "endpoints" in f:
            interfaces = {r["interface"] for r in records}
            v.orphans += [f"{host}/{link}" for link in f.get("links", [])
                          if link not in interfaces]
        v.bgp += [f"{host}: {name} {info}" for name, info in f.get("bgp", [])
                  if not info.startswith("Established")]
        if f.get("drift", {}).get("changed"):
            v.drift.append(f"{host}: {f['drift']['summary']}")
        _check_routes(v, host, f, live, fabric)
        _check_sets(v, host, f, live)
        ipam = f.get("ipam")
        if ipam:
            for kind, subject, detail in ipam["problems"]:
                item = f"{kind}: {subject}: {detail}"
                if kind in ("address-on-two-endpoints", "endpoint-address-taken"):
                    v.duplicates.append(item)
                else:
                    v.leaked.append(item)
    if results is not None:
        for p in probes:
            got = results.get(p.key)
            if got != p.expected:
                what = "no answer" if got is None else ("passed" if got else "dropped")
                v.matrix.append(f"{p.kind} {p.src}@{p.host} -> {p.address}: {what}, "
                                f"expected {'pass' if p.expected else 'drop'}")
    return v


def _check_routes(v: Verdict, host: str, f: dict[str, Any],
                  live: dict[str, tuple[str, dict[str, Any]]],
                  fabric: dict[str, str | dict[str, str]]) -> None:
    routes = f.get("routes", [])
    for addr, (owner, e) in sorted(live.items()):
        route = longest_match(routes, addr)
        if owner == host:
            want = "cali" + e["id"][:11]
            if route is None or route.get("dev") != want or route.get("gateway"):
                v.routes.append(f"{host}: {addr} ({e['container']}) not via {want}: "
                                f"{_show(route)}")
        elif owner in fabric and ":" not in addr:
            hop = fabric[owner]
            gateway = hop if isinstance(hop, str) else hop.get(host)
            if route is None or route.get("gateway") != gateway:
                v.routes.append(f"{host}: {addr} ({e['container']}@{owner}) not via "
                                f"{gateway}: {_show(route)}")
    mine = {addr for addr, (owner, _) in live.items() if owner == host}
    for route in routes:
        dst = route.get("dst", "")
        if str(route.get("protocol")) == "80" and route.get("type", "unicast") == "unicast" \
                and (dst.endswith(("/32", "/128")) or "/" not in dst) \
                and dst.split("/")[0] not in mine:
            v.routes.append(f"{host}: stale Calico route {dst} dev {route.get('dev')}")


def _show(route: dict[str, Any] | None) -> str:
    if route is None:
        return "no route"
    parts = [route.get("type", ""), route.get("dst", ""),
             f"via {route['gateway']}" if route.get("gateway") else "",
             f"dev {route['dev']}" if route.get("dev") else "",
             f"proto {route['protocol']}" if route.get("protocol") else ""]
    return " ".join(p for p in parts if p)


def _check_sets(v: Verdict, host: str, f: dict[str, Any],
                live: dict[str, tuple[str, dict[str, Any]]]) -> None:
    expected: dict[str, set[str]] = {}
    local_sets: set[str] = set()
    for addr, (owner, e) in live.items():
        name = names.tag_set(e["network"], 6 if ":" in addr else 4)
        expected.setdefault(name, set()).add(addr)
        if owner == host:
            local_sets.add(name)
    sets = {name: {m.split("/")[0] for m in members}
            for name, members in f.get("sets", {}).items()}
    for name, members in sorted(sets.items()):
        want = expected.get(name, set())
        if members - want:
            v.ipsets.append(f"{host}: {name} has stale {', '.join(sorted(members - want))}")
        if want - members:
            v.ipsets.append(f"{host}: {name} lacks {', '.join(sorted(want - members))}")
    for name in sorted(local_sets - set(sets)):
        v.ipsets.append(f"{host}: no set {name} for its local containers")
