#!/usr/bin/env python3
"""The main job (`make demo`): show and check Calico networking on the local lab.

Runs against the lab that `calicoctl lab up` made (its state in /var/lib/calico-lab):

  1. workloads: containers on the Calico networks frontend and backend, spread over the
     nodes (fe-1 on node 1, fe-2 and be-1 on node 2, be-2 on node 3), each serving HTTP on
     tcp/80 and tcp/8080;
  2. BGP: every node's sessions Established (`calicoctl node status` in the node), and a
     route on every node to every other node's address blocks, via that node;
  2b. the datastore: etcd answers only TLS with a client certificate of the lab's CA. From
     a workload container on every node, a plain-HTTP request and a TLS request without a
     client certificate to every etcd member (read everything, write a key) get no data,
     while calicoctl on every node (with that host's own certificate and etcd user) works;
  2c. least privilege: etcd's authentication is on and every host is its own etcd user
     (calico-host.<node>). A Python snippet with calico_lib on node 2, with node 2's own
     credentials (calico.conf), tries to write node 1's endpoint record
     /calico/v1/endpoints/<node 1>/probe and a profile: both "permission denied"; calicoctl
     with the operator's credentials on the policy host (user calico-operator) writes a
     profile and another host's endpoint record (and removes them again);
  3. a connectivity matrix, IPv4 and IPv6 (when the lab has IPv6): ping, tcp/80 and tcp/8080
     from every container to every other. Same network (across nodes) passes, across
     networks everything is dropped;
  4. a profile change with Ansible (playbooks/demo-policy.yml: the backend also lets the
     frontend in on tcp/80), previewed first with --check --diff: the preview names exactly
     the nodes with backend containers, each with the new rule in cali-pi-backend, and the
     check run changes no node's iptables/ip6tables/ipsets nor the datastore; then applied:
     every node's kernel gains and loses exactly the previewed rules (by chain and
     cali:<hash> comment). Then the matrix again: exactly frontend -> backend tcp/80 passes
     in addition;
  5. troubleshooting: `calicoctl policy explain` for one allowed pair (frontend -> backend
     tcp/80, naming the backend rule that lets it in) and one dropped pair (tcp/8080, dropped
     at the end of the backend container's chain), then `calicoctl profile show backend
     --counters` on the backend's node before and after a few more requests: that rule's
     packet counter goes up; the agent's and the plugin's Prometheus metrics on that node;
  6. the outside world (a lab made with `calicoctl lab up --fabric`, as `make demo` does): a
     top-of-rack router (calico-lab-tor, BIRD 2 in AS 65000, deployed by the tor role of
     playbooks/site.yml) and a host beyond it (calico-lab-outside) on a network of its own,
     whose only way to the pools is the ToR. Containers edge-1 (node 1) and edge-2 (node 3)
     on the network edge, whose pool 10.201.0.0/16 has no nat_outgoing, and edge-borrowed
     (node 2) with a borrowed address: `docker run --ip` with a free address of edge-1's
     block (its owner from `calicoctl ipam show`), so node 2 exports a /32 for it; the ToR's
     `birdc show route`: every block of the pools via the node that owns it, and from the
     nodes only that /32 besides, via node 2 (no /32 or /128 of a container that stays in
     its block); every node's route to the outside network, learned from the ToR; the
     sessions on both sides. Then, IPv4 and IPv6: outside -> every container (tcp/80)
     dropped; a rule with Ansible (playbooks/demo-outside.yml: src_net = the outside network
     into the profile edge); edge (the borrowed address too) reachable from outside on every
     node, the others still dropped, and each edge container saw (its /cgi-bin/peer logs it)
     the outside host's own address; containers -> outside: the outside host sees the
     container's own address from edge's pool and over IPv6, the node's from the
     nat_outgoing pool; an egress rule (edge may not call the outside network) refuses
     edge's containers and no other, then goes again. Last, BIRD stops on the ToR: outside
     traffic stops, the nodes keep their mesh routes; it starts again and the seconds until
     the routes and the traffic are back are printed;
  7. `calicoctl ipam check`;
  8. every rule the demo added goes again: the backend (and edge) profile is put back to
     Calico's default rules with the playbook that changed it (-e demo_allow_frontend_http=
     false, -e demo_outside_allow=false), at the end and after a failed step too, and a
     check says it is (--keep-policy leaves the rules in place, to explore them).

Every expectation is a check; the exit status is 1 when any of them failed (2 when the lab is
not there). Re-running is fine: the demo's containers are replaced and the backend (and
edge) profile is put back to its default rules first, should an earlier run have left it.
The containers stay, for README.md's "Using it" and the lines printed at the end.

    .venv/bin/python scripts/demo.py [--keep-policy]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import io
import ipaddress
import json
import os
import re
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from calico_lib.dataplane.iptables import parse_save, rule_hash  # noqa: E402
from calico_lib.lab import Lab, LabError, read_state  # noqa: E402
from calico_lib.preview import chain_changes  # noqa: E402
from calico_lib.render import names  # noqa: E402

CALICOCTL = "/opt/calico/venv/bin/calicoctl"
PYTHON = "/opt/calico/venv/bin/python"
PKI = "/etc/calico/pki"
#: calicoctl as the operator: the operator's certificate and etcd user (on the policy host)
OPERATOR = ("--etcd-cert", f"{PKI}/operator.crt", "--etcd-key", f"{PKI}/operator.key",
            "--etcd-user", "calico-operator", "--etcd-password-file", f"{PKI}/operator-password")
#: run on a node with calico_lib and that node's own credentials (calico.conf): try to write
#: another host's endpoint record and a profile; prints each outcome as JSON
HOST_WRITES = '''
import json, sys, calico_lib
from calico_lib.datastore import Put
from calico_lib.errors import CalicoError
key, out = sys.argv[1], {}
with calico_lib.connect() as c:
    out["user"] = c.store.user
    for name, write in ((key, lambda: c.store.txn([], [Put(key, "{}")])),
                        ("profile demo-probe", lambda: c.add_profile("demo-probe"))):
        try:
            write()
            out[name] = "WRITTEN"
        except CalicoError as exc:
            out[name] = str(exc)
print(json.dumps(out))
'''
#: run on a node with calico_lib: the highest free address of the block argv[1] (empty when
#: the block is full)
FREE_ADDRESS = '''
import sys, calico_lib
with calico_lib.connect() as c:
    block = next(b for b in c.ipam.blocks() if b.cidr == sys.argv[1])
    print(block.address(max(block.unallocated)) if block.unallocated else "")
'''
DEMO_LABEL = "calico-demo"
IMAGE = "busybox"
#: every workload serves HTTP on both ports (busybox httpd, /www/index.html)
SERVE = "httpd -p 80 -h /www && httpd -p 8080 -h /www && exec sleep 999999999"
PROBES = ("icmp", "tcp/80", "tcp/8080")
#: /cgi-bin/peer in every workload: answers with the address the container saw the request
#: come from (busybox httpd's REMOTE_ADDR) and logs it to /tmp/peers.log
PEER_CGI = """#!/bin/sh
echo "$REMOTE_ADDR" >> /tmp/peers.log
printf 'Content-Type: text/plain\\r\\n\\r\\n%s\\n' "$REMOTE_ADDR"
"""
#: run by python3 on the outside host: GET each (key, address, port, path) at once, 3 s
#: each; prints {key: {"ok": bool, "body": ..., "error": ...}} as JSON
OUTSIDE_GET = r'''
import concurrent.futures, json, socket, sys
def get(job):
    key, addr, port, path = job
    try:
        with socket.create_connection((addr, port), timeout=float(sys.argv[2])) as conn:
            conn.sendall(f"GET {path} HTTP/1.0\r\nHost: demo\r\n\r\n".encode())
            data = b""
            while chunk := conn.recv(4096):
                data += chunk
    except OSError as exc:
        return key, {"ok": False, "error": type(exc).__name__}
    head, _, body = data.decode(errors="replace").partition("\r\n\r\n")
    return key, {"ok": " 200 " in head.split("\r\n")[0] + " ", "body": body.strip()}
jobs = json.loads(sys.argv[1])
with concurrent.futures.ThreadPoolExecutor(max(len(jobs), 1)) as pool:
    print(json.dumps(dict(pool.map(get, jobs))))
'''
#: the profiles whose rules the demo changes, and how it puts each back to Calico's default
#: rules: the playbook that changes it, and that playbook's variable turning the change off
RESTORE = {"backend": ("playbooks/demo-policy.yml", "demo_allow_frontend_http=false"),
           "edge": ("playbooks/demo-outside.yml", "demo_outside_allow=false")}
ROUTE_TIMEOUT = 60.0
#: how long the nodes' kernels may take to show an applied change (agents apply on their own
#: within a second or two; the playbook's second play applies too)
APPLY_TIMEOUT = 20.0
#: a node's firewall in one read: both rule sets (every table) and the ipsets
KERNEL_READ = "iptables-save && echo @@v6 && ip6tables-save && echo @@sets && ipset save"
#: a kernel rule of ours: (IP version, table, chain, the hash in its cali:<hash> comment)
RuleKey = tuple[int, str, str, str]


@dataclass(eq=False)  # hashed by identity: a key of the probe jobs
class Workload:
    name: str
    network: str
    node: str
    ip4: str = ""
    ip6: str = ""
    #: `docker run --ip`: this IPv4 address instead of one the plugin picks
    chosen_ip4: str = ""

    @property
    def label(self) -> str:
        return f"{self.name}@{self.node.rsplit('-', 1)[-1]}"


@dataclass
class Report:
    """Checks and their outcome; printed as they happen."""

    passed: int = 0
    failures: list[str] = field(default_factory=list)

    def check(self, ok: bool, what: str, quiet: bool = False) -> bool:
        if ok:
            self.passed += 1
            if not quiet:
                print(f"  ok    {what}")
        else:
            self.failures.append(what)
            print(f"  FAIL  {what}")
        return ok


@dataclass
class Kernel:
    """One node's firewall as read with iptables-save, ip6tables-save and ipset save."""

    #: both filter tables and the ipsets, without comment lines and chain counters
    text: str
    #: (IP version, table, cali chain) -> the hash of each of its rules, in order
    rules: dict[tuple[int, str, str], list[str | None]]

    @classmethod
    def parse(cls, out: str) -> Kernel:
        v4, _, rest = out.partition("@@v6\n")
        v6, _, sets = rest.partition("@@sets\n")
        text, rules = [], {}
        for version, save in ((4, v4), (6, v6)):
            table = ""
            lines: dict[str, list[str]] = {}
            for line in save.splitlines():
                if line.startswith("*"):
                    table = line[1:]
                elif table and not line.startswith("#"):
                    lines.setdefault(table, []).append(re.sub(r" \[\d+:\d+\]$", "", line))
            text += [f"ip{'6' if version == 6 else ''}tables filter"] + lines.get("filter", [])
            for name, body in lines.items():
                for chain, digests in parse_save("\n".join(body)).chains.items():
                    rules[(version, name, chain)] = digests
        text += ["ipsets"] + sorted(sets.splitlines())
        return cls("\n".join(text), rules)

    def changes(self, after: Kernel) -> tuple[Counter[RuleKey], Counter[RuleKey]]:
        """The rules of ours that came and went from this read to ``after``, chain by chain
        (compared as the preview compares renders: a rule that moves is gone and new)."""
        added: Counter[RuleKey] = Counter()
        removed: Counter[RuleKey] = Counter()
        for key in set(self.rules) | set(after.rules):
            came, went = chain_changes(self.rules.get(key, []), after.rules.get(key, []))
            added.update((*key, str(h)) for h in came)
            removed.update((*key, str(h)) for h in went)
        return added, removed


@dataclass
class HostPreview:
    """One host's iptables/ip6tables lines in a preview: (sign, IP version, table, chain,
    rule spec) each, sign "+" for a rule added and "-" for one removed."""

    rules: list[tuple[str, int, str, str, str]] = field(default_factory=list)

    def keyed(self, sign: str) -> Counter[RuleKey]:
        """The rules added ("+") or removed ("-") as a kernel names them."""
        return Counter((v, t, c, rule_hash(spec)) for s, v, t, c, spec in self.rules
                       if s == sign)


def dataplane_blocks(log: str) -> list[list[str]]:
    """The `dataplane:` blocks of a --check --diff run's output: each a summary line, then
    every changed host's name and its indented lines (rules, ipsets, routes, BIRD)."""
    blocks: list[list[str]] = []
    block: list[str] | None = None
    for line in log.splitlines():
        if line.startswith("dataplane: "):
            block = [line]
            blocks.append(block)
        elif block is not None and (line.startswith("  ") or re.fullmatch(r"\S+:", line)):
            block.append(line)
        else:  # the callback's next line (`changed: [host] => (item=...)`) ends it
            block = None
    return blocks


def parse_preview(block: Sequence[str]) -> dict[str, HostPreview]:
    """Each host of a `dataplane:` block and its rule lines."""
    hosts: dict[str, HostPreview] = {}
    host, table = "", None
    for line in block[1:]:
        if not line.startswith(" "):
            host, table = line[:-1], None
            hosts[host] = HostPreview()
        elif not line.startswith("    "):  # a section: "iptables filter:", "ipset ...", ...
            found = re.fullmatch(r"  ip(6?)tables (\S+):", line)
            table = (6 if found.group(1) else 4, found.group(2)) if found else None
        elif table:
            rule = re.fullmatch(r"    ([+-]) -A (\S+) (.*)", line)
            if rule:
                hosts[host].rules.append((rule.group(1), *table, rule.group(2),
                                          rule.group(3)))
    return hosts


def heading(text: str) -> None:
    print(f"\n=== {text}", flush=True)


def table(rows: Sequence[Sequence[str]], header: Sequence[str], indent: str = "  ") -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    print(indent + "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip())
    for row in rows:
        print(indent + "  ".join(str(c).ljust(w)
                                 for c, w in zip(row, widths, strict=True)).rstrip())


def normalise(address: str) -> str:
    """An address as a server reported it: busybox httpd's "[::ffff:10.0.0.1]" is 10.0.0.1."""
    return address.strip().strip("[]").removeprefix("::ffff:")


def parse_bird_routes(text: str) -> list[dict[str, Any]]:
    """`birdc show route`: one {net, kind, proto, best, via: [next hops]} per route (a
    prefix with several routes has one per line of its; `*` marks the best)."""
    routes: list[dict[str, Any]] = []
    net = ""
    for line in text.splitlines():
        first = re.match(r"(\S+/\d+)\s+(\w+)\s+\[(\S+?)[\s\]].*?\](\s+\*)?", line)
        other = re.match(r"\s+(\w+)\s+\[(\S+?)[\s\]].*?\](\s+\*)?", line)
        via = re.match(r"\s+via\s+(\S+)", line)
        if first:
            net = first.group(1)
            routes.append({"net": net, "kind": first.group(2), "proto": first.group(3),
                           "best": bool(first.group(4)), "via": []})
        elif via and routes:
            routes[-1]["via"].append(via.group(1))
        elif other and net and other.group(1) != "via":
            routes.append({"net": net, "kind": other.group(1), "proto": other.group(2),
                           "best": bool(other.group(3)), "via": []})
    return routes


class Demo:
    def __init__(self, state: dict[str, Any]) -> None:
        self.state = state
        self.nodes = [n["name"] for n in state["nodes"]]
        self.fabric = {n["name"]: (n["ip4"], n.get("ip6")) for n in state["nodes"]}
        self.ipv6 = bool(state.get("ipv6"))
        self.lab = Lab(nodes=len(self.nodes), ipv6=self.ipv6, prefix=state["prefix"],
                       subnet4=state["subnet4"],
                       subnet6=state.get("subnet6") or "fd7a:ca1:1ab::/64",
                       docker_host=state.get("docker_host"))
        self.report = Report()
        self.workloads: list[Workload] = []
        #: `lab up --fabric`: the ToR, the outside host and their network (lab.json's)
        self.world: dict[str, Any] | None = state.get("fabric")
        #: the containers of the network edge (its pool has no nat_outgoing), with --fabric
        self.edge: list[Workload] = []
        #: edge's container with a borrowed address (in ``edge``), and that address's block
        #: and the block's owner
        self.borrowed: tuple[Workload, str, str] | None = None

    # ---------------------------------------------------------------- helpers

    def sh(self, node: str, script: str, check: bool = True, timeout: float = 60.0) -> str:
        return self.lab.node_exec(node, "sh", "-c", script, step="demo", check=check,
                                  timeout=timeout).stdout

    def calicoctl(self, node: str, *args: str) -> Any:
        proc = self.lab.node_exec(node, CALICOCTL, *args, "-o", "json", step="demo",
                                  check=False)
        if proc.returncode != 0 and not proc.stdout.strip():
            return proc.returncode, proc.stderr.strip()
        try:
            return proc.returncode, json.loads(proc.stdout) if proc.stdout.strip() else None
        except ValueError:
            return proc.returncode, proc.stdout + proc.stderr

    def playbook(self, *extra: str, log_name: str = "demo-policy.log",
                 quiet: bool = False, name: str = "playbooks/demo-policy.yml") -> str:
        """Run playbooks/demo-policy.yml (or ``name``); its output (the log in the lab's
        state dir). ``quiet``: without the line per task (a failure still names the task)."""
        # the lab's line per task and the preview are both read from the default callback's
        # text: not whatever stdout callback this environment may name
        os.environ["ANSIBLE_STDOUT_CALLBACK"] = "default"
        shown = self.lab.shell.out
        if quiet:
            self.lab.shell.out = io.StringIO()
        try:
            self.lab.deploy(name, extra, log_name=log_name, step="policy change")
        finally:
            self.lab.shell.out = shown
        with open(os.path.join(self.lab.state_dir, log_name)) as handle:
            return handle.read()

    def kernels(self) -> dict[str, Kernel]:
        """Every node's firewall, read in parallel."""
        with concurrent.futures.ThreadPoolExecutor(max_workers=len(self.nodes)) as pool:
            reads = pool.map(lambda node: Kernel.parse(self.sh(node, KERNEL_READ)), self.nodes)
            return dict(zip(self.nodes, reads, strict=True))

    # ---------------------------------------------------------------- 0: the lab

    def check_lab(self) -> None:
        heading(f"The lab: {len(self.nodes)} nodes on {self.state['network']}"
                + (" (IPv4 and IPv6)" if self.ipv6 else " (IPv4 only; `lab up --ipv6` adds "
                   "IPv6)"))
        rows = []
        for node in self.nodes:
            state = self.lab.node_exec(node, "systemctl", "is-system-running", check=False,
                                       step="demo").stdout.strip()
            services = self.lab.node_exec(
                node, "systemctl", "is-active", "etcd", "bird", "calico-agent",
                "calico-docker-plugin", "docker", check=False, step="demo").stdout.split()
            ip4, ip6 = self.fabric[node]
            rows.append([node, ip4, ip6 or "-", state,
                         " ".join(f"{n}={s}" for n, s in zip(
                             ("etcd", "bird", "agent", "plugin", "docker"), services,
                             strict=False))])
        table(rows, ["NODE", "IPv4", "IPv6", "SYSTEMD", "SERVICES"])
        for row in rows:
            services = dict(item.split("=") for item in row[4].split())
            self.report.check(all(services.get(s) == "active"
                                  for s in ("bird", "agent", "plugin", "docker")),
                              f"{row[0]}: BIRD, calico-agent, the plugin and Docker active")

    # ---------------------------------------------------------------- 1: workloads

    def layout(self) -> list[Workload]:
        n = len(self.nodes)

        def node(i: int) -> str:
            return self.nodes[min(i, n) - 1]

        backend_nodes = (2, 3) if n >= 3 else (1, 2)
        return [Workload("fe-1", "frontend", node(1)), Workload("fe-2", "frontend", node(2)),
                Workload("be-1", "backend", node(backend_nodes[0])),
                Workload("be-2", "backend", node(backend_nodes[1]))]

    def at_default(self, profile: str) -> bool:
        """Whether ``profile`` has Calico's default rules: its members may come in, all
        outbound is allowed."""
        code, found = self.calicoctl(self.nodes[0], "profile", "show", profile)
        return code == 0 and isinstance(found, dict) \
            and found.get("inbound_rules") == [{"action": "allow", "src_tag": profile}] \
            and found.get("outbound_rules") == [{"action": "allow"}]

    def reset_policy(self) -> None:
        if self.at_default("backend"):
            return
        print("  the backend profile is not at its default rules (an earlier demo?): "
              "resetting it with Ansible")
        self.playbook("-e", RESTORE["backend"][1])

    def restore_policy(self) -> None:
        """Put back every profile whose rules the demo changes (backend's, and edge's with
        --fabric) to Calico's default rules, with the playbooks that changed them; a check
        per profile."""
        heading("Putting back the rules the demo changed")
        for profile in ("backend", "edge") if self.world else ("backend",):
            try:
                if not self.at_default(profile):
                    playbook, off = RESTORE[profile]
                    print(f"  ansible-playbook {playbook} -e {off}")
                    self.playbook("-e", off, name=playbook,
                                  log_name=f"demo-restore-{profile}.log", quiet=True)
                ok, why = self.at_default(profile), ""
            except LabError as exc:
                ok, why = False, f": {exc}"
            self.report.check(ok, f"the {profile} profile is back to its default rules (its "
                              "members in, all outbound allowed)" + why)

    def start_workloads(self) -> None:
        heading("Workloads on the Calico networks frontend and backend")
        for node in self.nodes:  # an earlier demo's containers
            self.sh(node, f"ids=$(docker ps -aq --filter label={DEMO_LABEL}); "
                          "[ -z \"$ids\" ] || docker rm -f $ids >/dev/null")
        self.reset_policy()
        self.workloads = self.layout()
        self.start(self.workloads)

    def start(self, workloads: Sequence[Workload]) -> None:
        """Start the containers (serving HTTP, with the peer-logging CGI), show and check
        their addresses."""
        for w in workloads:
            chosen = ["--ip", w.chosen_ip4] if w.chosen_ip4 else []
            self.lab.node_exec(w.node, "docker", "run", "-d", "--name", w.name, "--hostname",
                               w.name, "--label", f"{DEMO_LABEL}=1", "--net", w.network,
                               *chosen, IMAGE, "sh", "-c", SERVE, step="workloads",
                               timeout=120)
            self.lab.node_exec(w.node, "docker", "exec", "-i", w.name, "sh", "-c",
                               "mkdir -p /www/cgi-bin && cat > /www/cgi-bin/peer && "
                               "chmod 755 /www/cgi-bin/peer", step="workloads",
                               input_bytes=PEER_CGI.encode())
            info = json.loads(self.lab.node_exec(w.node, "docker", "inspect", w.name,
                                                 step="workloads").stdout)[0]
            net = info["NetworkSettings"]["Networks"][w.network]
            w.ip4, w.ip6 = net.get("IPAddress", ""), net.get("GlobalIPv6Address", "")
        table([[w.name, w.network, w.node, w.ip4 or "-", w.ip6 or "-"]
               for w in workloads], ["CONTAINER", "NETWORK", "NODE", "IPv4", "IPv6"])
        for w in workloads:
            self.report.check(bool(w.ip4) and (bool(w.ip6) or not self.ipv6),
                              f"{w.name} on {w.node} has an IPv4"
                              + (" and an IPv6" if self.ipv6 else "") + " address")

    # ---------------------------------------------------------------- 2: BGP and routes

    def check_bgp(self) -> None:
        heading("BGP sessions (calicoctl node status in every node)")
        # the mesh: every other node, per IP version; with --fabric the ToR too (global)
        per_node = (len(self.nodes) - 1) * (2 if self.ipv6 else 1) \
            + len(self.tor_addresses())
        deadline = time.monotonic() + ROUTE_TIMEOUT
        while True:  # a ToR's sessions may still be coming up right after a deploy
            found = {node: self.calicoctl(node, "node", "status") for node in self.nodes}
            if time.monotonic() > deadline or all(
                    code == 0 for code, _ in found.values()):
                break
            time.sleep(2)
        rows = []
        for node in self.nodes:
            code, sessions = found[node]
            sessions = sessions if isinstance(sessions, list) else []
            for s in sessions:
                rows.append([node, s.get("peer"), s.get("type"), s.get("info"),
                             s.get("since")])
            established = [s for s in sessions if s.get("info") == "Established"]
            self.report.check(code == 0 and len(established) == per_node,
                              f"{node}: {len(established)} of {per_node} BGP sessions "
                              "Established", quiet=True)
        table(rows, ["NODE", "PEER", "TYPE", "STATE", "SINCE"])
        failed = [f for f in self.report.failures if "BGP sessions Established" in f]
        if not failed:
            print(f"  ok    every node: {per_node} BGP session{'s' * (per_node != 1)} "
                  "Established" + (" (the mesh, and the ToR as a global peer)"
                                   if self.world else ""))

        heading("Routes to the other nodes' address blocks (BIRD, proto bird)")
        if len(self.nodes) == 1:
            print("  one node: no other node's blocks to route to")
            return
        deadline = time.monotonic() + ROUTE_TIMEOUT
        while True:
            missing, rows = self.route_rows()
            if not missing or time.monotonic() > deadline:
                break
            time.sleep(2)
        table(rows, ["NODE", "BLOCK", "OWNER", "ROUTE"])
        for what in missing:
            self.report.check(False, what)
        if not missing:
            self.report.check(bool(rows), f"every node routes to every other node's blocks "
                              f"({len(rows)} routes)")

    def route_rows(self) -> tuple[list[str], list[list[str]]]:
        code, usage = self.calicoctl(self.nodes[0], "ipam", "show")
        blocks = [(b["cidr"], b["affinity"]) for pool in (usage or []) if code == 0
                  for b in pool.get("blocks", [])]
        blocks = [(cidr, (owner or "").removeprefix("host:")) for cidr, owner in blocks]
        rows, missing = [], []
        tables = {node: self.sh(node, "ip -4 route; ip -6 route") for node in self.nodes}
        for node in self.nodes:
            for cidr, owner in blocks:
                if owner == node or owner not in self.fabric:
                    continue
                v6 = ipaddress.ip_network(cidr).version == 6
                via = self.fabric[owner][1 if v6 else 0]
                line = next((r for r in tables[node].splitlines()
                             if r.split()[:1] == [cidr]), "")
                ok = f"via {via}" in line and "proto bird" in line
                rows.append([node, cidr, owner, " ".join(line.split()[1:6]) if line
                             else "(none)"])
                if not ok:
                    missing.append(f"{node}: a route to {cidr} (of {owner}) via {via}")
        return missing, rows

    # ---------------------------------------------------------------- 2b: the datastore

    def etcd_members(self) -> list[tuple[str, str]]:
        """(node, fabric IPv4 address) of every etcd member, from the lab's inventory."""
        import yaml  # ansible's dependency

        with open(self.state["inventory"]) as handle:
            inventory = yaml.safe_load(handle)
        members = (inventory["all"].get("children", {}).get("etcd") or {}).get("hosts") or {}
        return [(name, self.fabric[name][0]) for name in members if name in self.fabric]

    def workload_probe(self, w: Workload, jobs: list[tuple[str, str]]) -> dict[str, str]:
        """Run busybox wget in workload ``w`` for each (key, wget arguments); the output
        (errors included) and exit status of each."""
        script = "\n".join(
            # busybox's `wget -T` crashes (1.35, static): `timeout` bounds it instead
            f"out=$(timeout 5 wget -q -O - {args} 2>&1); "
            f"echo \"{key} rc=$? $(echo $out | head -c 300)\""
            for key, args in jobs)
        out = self.lab.node_exec(w.node, "docker", "exec", w.name, "sh", "-c", script,
                                 step="datastore", timeout=120).stdout
        return {line.split(" ", 1)[0]: line.split(" ", 1)[1] for line in out.splitlines()
                if " " in line}

    def check_datastore(self) -> None:
        members = self.etcd_members()
        heading("The datastore: etcd over TLS, only with a client certificate of the lab's CA")
        if not members:
            self.report.check(False, "the lab's inventory names the etcd members")
            return
        # everything (key \0 to the end) and a write, as a workload would try them
        read = "--post-data '{\"key\":\"AA==\",\"range_end\":\"AA==\"}'"
        write = ("--post-data '{\"key\":\"L2NhbGljby9pbnRydWRlcg==\","
                 "\"value\":\"eA==\"}'")  # /calico/intruder = x
        probes = []
        for name, addr in members:
            for scheme, extra in (("plain HTTP", ""), ("TLS, no client cert",
                                                       "--no-check-certificate ")):
                url = ("http" if scheme == "plain HTTP" else "https") + f"://{addr}:2379"
                probes.append((name, addr, scheme, "read", f"{extra}{read} {url}/v3/kv/range"))
                probes.append((name, addr, scheme, "write", f"{extra}{write} {url}/v3/kv/put"))
        sources: list[Workload] = []  # one workload on every node that has one
        for w in self.workloads:
            if all(s.node != w.node for s in sources):
                sources.append(w)
        rows = []
        for w in sources:
            jobs = [(f"q{i}", p[4]) for i, p in enumerate(probes)]
            results = self.workload_probe(w, jobs)
            for i, (name, addr, scheme, what, _) in enumerate(probes):
                got = results.get(f"q{i}", "rc=? (no answer)")
                leaked = '"header"' in got or '"kvs"' in got
                reason = got.split(" ", 1)[1] if " " in got else got
                rows.append([w.label, f"{name} ({addr})", scheme, what,
                             "DATA!" if leaked else "refused",
                             reason.replace("wget: ", "")[:60]])
                self.report.check(not leaked, f"{w.label} -> etcd {name}: {scheme} {what} "
                                  "gets no data", quiet=True)
        table(rows, ["FROM", "ETCD MEMBER", "REQUEST", "WHAT", "RESULT", "WHY"])
        failed = [f for f in self.report.failures if "gets no data" in f]
        if not failed:
            print(f"  ok    from a workload on every node: {len(rows)} requests to "
                  f"{len(members)} etcd member(s) without a client certificate, none got data")

        heading("calicoctl on every node, with the host's own certificate and etcd user "
                "(calico.conf)")
        rows = []
        for node in self.nodes:
            subject = self.sh(node, f"openssl x509 -noout -subject -in {PKI}/client.crt "
                                    "2>/dev/null || echo '?'", check=False).strip()
            conf = dict(line.split(" = ", 1) for line in self.sh(
                node, "cat /etc/calico/calico.conf", check=False).splitlines()
                if " = " in line and not line.startswith("#"))
            url, user = conf.get("datastore", ""), conf.get("etcd_user", "")
            mode = self.sh(node, f"stat -c '%a %U' {conf.get('etcd_password_file', '-')} "
                                 "2>/dev/null || echo missing", check=False).strip()
            code, pools = self.calicoctl(node, "pool", "list")
            ok = code == 0 and isinstance(pools, list) and len(pools) > 0
            rows.append([node, subject.replace("subject=", "").strip(), user or "-", mode,
                         f"{len(pools)} pools" if ok else f"exit {code}: {str(pools)[:60]}"])
            self.report.check(ok and url.startswith("etcds://"),
                              f"{node}: calicoctl works over etcds:// with its own certificate",
                              quiet=True)
            self.report.check(user == f"calico-host.{node}" and mode == "600 root",
                              f"{node}: its own etcd user calico-host.{node}, password file "
                              "0600 root", quiet=True)
        table(rows, ["NODE", "CLIENT CERTIFICATE", "ETCD USER", "PASSWORD FILE",
                     "calicoctl pool list"])
        if not [f for f in self.report.failures if "calicoctl works" in f
                or "its own etcd user" in f]:
            print("  ok    calicoctl works on every node, each as its own etcd user")
        self.check_least_privilege(members[0][0])

    def check_least_privilege(self, policy_host: str) -> None:
        heading("Least privilege: a host's etcd user writes only its own records; the "
                "operator's writes everything")
        if len(self.nodes) < 2:
            print("  one node: no other host to write for")
            return
        host, victim = self.nodes[1], self.nodes[0]
        key = f"/calico/v1/endpoints/{victim}/probe"
        proc = self.lab.node_exec(host, PYTHON, "-c", HOST_WRITES, key, step="least privilege",
                                  check=False, timeout=60)
        try:
            result = json.loads(proc.stdout)
        except ValueError:
            result = {"user": "?", key: proc.stderr.strip()[-200:],
                      "profile demo-probe": proc.stderr.strip()[-200:]}
        rows = []
        for what in (key, "profile demo-probe"):
            got = str(result.get(what, "?"))
            denied = "permission denied" in got
            rows.append([f"{result.get('user')} (calico_lib on {host})", what,
                         "refused" if denied else got[:70],
                         got.split(": ", 1)[-1][:70] if denied else ""])
            self.report.check(result.get("user") == f"calico-host.{host}" and denied,
                              f"{host}'s own etcd user may not write {what}", quiet=True)
        if any(r[2] == "WRITTEN" for r in rows):  # put it right, as the operator
            self.lab.node_exec(policy_host, CALICOCTL, *OPERATOR, "endpoint", "remove",
                               "--host", victim, "probe", step="least privilege", check=False)

        # the operator, on the policy host: a profile and another host's endpoint record
        other = self.nodes[-1] if self.nodes[-1] != policy_host else self.nodes[1]
        steps = [("profile demo-probe", ["profile", "add", "demo-probe"]),
                 (f"/calico/v1/endpoints/{other}/probe",
                  ["endpoint", "add", "--host", other, "--interface", "calidemoprobe",
                   "--profile", "demo-probe", "--id", "probe"])]
        for what, args in steps:
            proc = self.lab.node_exec(policy_host, CALICOCTL, *OPERATOR, *args,
                                      step="least privilege", check=False, timeout=60)
            ok = proc.returncode == 0
            rows.append([f"calico-operator (calicoctl on {policy_host})", what,
                         "written" if ok else "FAILED",
                         "" if ok else (proc.stderr or proc.stdout).strip()[-70:]])
            self.report.check(ok, f"the operator writes {what} (calicoctl on {policy_host})",
                              quiet=True)
        for args in (["endpoint", "remove", "--host", other, "probe"],
                     ["profile", "remove", "demo-probe"]):  # and removes them again
            self.lab.node_exec(policy_host, CALICOCTL, *OPERATOR, *args,
                               step="least privilege", check=False, timeout=60)
        table(rows, ["WHO", "WRITES", "RESULT", "WHY"])
        if not [f for f in self.report.failures if "may not write" in f
                or "the operator writes" in f]:
            print(f"  ok    {host}'s credentials are refused {victim}'s endpoint record and a "
                  "profile; the operator's write both")

    # ---------------------------------------------------------------- 3/4: the matrix

    def expected(self, src: Workload, dst: Workload, probe: str, after: bool) -> bool:
        if src.network == dst.network:
            return True
        return after and src.network == "frontend" and dst.network == "backend" \
            and probe == "tcp/80"

    def probe_script(self, jobs: list[tuple[str, str, str]]) -> str:
        """One shell script that runs every probe of one source container in parallel and
        prints `ID pass|drop` per probe."""
        lines = [
            "probe() {",
            '  case "$2" in',
            '    icmp) if [ "${3#*:}" != "$3" ]; then ping6 -c 1 -W 2 "$3"; '
            'else ping -c 1 -W 2 "$3"; fi >/dev/null 2>&1 ;;',
            "    tcp/*) printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 \"$3\" \"${2#tcp/}\" "
            "2>/dev/null | grep -q '200 OK' ;;",
            '  esac && echo "$1 pass" || echo "$1 drop"',
            "}",
        ]
        lines += [f"probe {key} {probe} {addr} &" for key, probe, addr in jobs]
        lines.append("wait")
        return "\n".join(lines)

    def run_probes(self, jobs: dict[Workload, list[tuple[str, str, str]]]) -> dict[str, bool]:
        def one(src: Workload) -> dict[str, bool]:
            out = self.lab.node_exec(src.node, "docker", "exec", src.name, "sh", "-c",
                                     self.probe_script(jobs[src]), step="matrix",
                                     timeout=60).stdout
            return {k: v == "pass" for k, v in (line.split() for line in out.splitlines()
                                                 if len(line.split()) == 2)}

        results: dict[str, bool] = {}
        with concurrent.futures.ThreadPoolExecutor(max_workers=len(jobs) or 1) as pool:
            for part in pool.map(one, [src for src in jobs if jobs[src]]):
                results.update(part)
        return results

    def matrix(self, after: bool) -> None:
        families = [4, 6] if self.ipv6 else [4]
        keys: dict[str, tuple[Workload, Workload, int, str]] = {}
        jobs: dict[Workload, list[tuple[str, str, str]]] = {w: [] for w in self.workloads}
        for src in self.workloads:
            for dst in self.workloads:
                if src is dst:
                    continue
                for family in families:
                    addr = dst.ip4 if family == 4 else dst.ip6
                    for probe in PROBES:
                        key = f"p{len(keys)}"
                        keys[key] = (src, dst, family, probe)
                        jobs[src].append((key, probe, addr))
        results = self.run_probes(jobs)
        # an unexpected drop is tried once more (a first packet can meet a cold neighbour
        # cache); an unexpected pass is a leak and stands
        again: dict[Workload, list[tuple[str, str, str]]] = {w: [] for w in self.workloads}
        for key, (src, dst, family, probe) in keys.items():
            if not results.get(key, False) and self.expected(src, dst, probe, after):
                again[src].append((key, probe, dst.ip4 if family == 4 else dst.ip6))
        if any(again.values()):
            time.sleep(1)
            results.update(self.run_probes(again))

        for family in families:
            print(f"\n  IPv{family}: ping, tcp/80, tcp/8080 from the row's container to the "
                  "column's (+ passes, . dropped, ! not as expected)")
            header = ["from \\ to"] + [w.label for w in self.workloads]
            rows = []
            for src in self.workloads:
                row = [f"{src.label} ({src.network})"]
                for dst in self.workloads:
                    if src is dst:
                        row.append("")
                        continue
                    cell = []
                    for probe in PROBES:
                        key = next(k for k, v in keys.items()
                                   if v == (src, dst, family, probe))
                        got = results.get(key, False)
                        mark = "+" if got else "."
                        if got != self.expected(src, dst, probe, after):
                            mark += "!"
                        cell.append(mark)
                    row.append(" ".join(cell))
                rows.append(row)
            table(rows, header, indent="    ")
        print()
        groups: dict[str, list[bool]] = {}
        for key, (src, dst, family, probe) in keys.items():
            want = self.expected(src, dst, probe, after)
            ok = results.get(key, False) == want
            if not ok:
                self.report.check(False, f"IPv{family} {probe} {src.label} -> {dst.label}: "
                                  f"{'dropped' if want else 'passed'}, expected "
                                  f"{'to pass' if want else 'a drop'}")
            if src.network == dst.network:
                group = f"same network, across nodes: everything passes (IPv{family})"
            elif want:
                group = f"frontend -> backend tcp/80 passes (IPv{family})"
            else:
                group = (f"{src.network} -> {dst.network}: "
                         + ("everything else" if after and src.network == "frontend"
                            else "everything") + f" dropped (IPv{family})")
            groups.setdefault(group, []).append(ok)
        for group, oks in groups.items():
            if all(oks):
                self.report.check(True, f"{group}, {len(oks)} probes")

    # ---------------------------------------------------------------- 4: the change

    def change_policy(self) -> None:
        heading("Policy change with Ansible: playbooks/demo-policy.yml (frontend may call "
                "the backend on tcp/80)")
        preview, before = self.preview_policy()
        print("\n  applying it:")
        self.playbook()
        code, profile = self.calicoctl(self.nodes[0], "profile", "show", "backend")
        if isinstance(profile, dict):
            print("  backend's inbound rules now:")
            for rule in profile.get("inbound_rules", []):
                print("    " + " ".join(f"{k}={v}" for k, v in rule.items()))
        self.report.check(code == 0 and isinstance(profile, dict) and any(
            r.get("protocol") == "tcp" and r.get("src_tag") == "frontend"
            for r in profile.get("inbound_rules", [])),
            "the backend profile lets frontend in on tcp/80")
        if preview is not None:
            self.check_applied(preview, before)

    def preview_policy(self) -> tuple[dict[str, HostPreview] | None, dict[str, Kernel]]:
        """Run the change with --check --diff first and show its preview; the preview per
        host and every node's firewall after the check run."""
        log_name = "demo-policy-check.log"
        print("  first a preview: ansible-playbook playbooks/demo-policy.yml --check --diff "
              f"(log: {os.path.join(self.lab.state_dir, log_name)})")
        code, profile = self.calicoctl(self.nodes[0], "profile", "show", "backend")
        before = self.kernels()
        # The profile task's diff ends with the preview (diff.prepared), which Ansible's
        # default callback prints as is: "dataplane: <summary>", then every changed host's
        # name and its indented lines. The policy role runs that task in a loop and does not
        # register it, so the preview is read from the run's output, as a reader sees it.
        log = self.playbook("--check", "--diff", log_name=log_name, quiet=True)
        after = self.kernels()
        code_after, profile_after = self.calicoctl(self.nodes[0], "profile", "show", "backend")
        blocks = dataplane_blocks(log)
        for line in blocks[0] if blocks else []:
            print("    " + line)
        if not self.report.check(len(blocks) == 1, "the check run's diff has one preview "
                                 "(the backend profile's)"
                                 + ("" if len(blocks) == 1 else f", not {len(blocks)}")):
            return None, after
        preview = parse_preview(blocks[0])
        backend = sorted({w.node for w in self.workloads if w.network == "backend"})
        self.report.check(sorted(preview) == backend, "the preview names exactly the nodes "
                          f"with backend containers: {', '.join(sorted(preview)) or 'none'}")
        families = [4, 6] if self.ipv6 else [4]
        chain = names.profile_inbound("backend")
        for node in backend:
            added = [(v, spec) for sign, v, table, c, spec in preview.get(
                node, HostPreview()).rules if sign == "+" and table == "filter" and c == chain]
            found = [v for v in families if any(
                version == v and "-p tcp " in spec
                and f"--match-set {names.tag_set('frontend', v)} src" in spec
                and re.search(r"--dports? (?:\S*,)?80(?:[,\s]|$)", spec)
                for version, spec in added)]
            self.report.check(found == families, f"{node}: the preview adds to {chain} the "
                              "rule for frontend's set on tcp/80 ("
                              + " and ".join(f"IPv{v}" for v in families) + ")")
        changed = [n for n in self.nodes if before[n] != after[n]]
        self.report.check(not changed and code == code_after == 0
                          and profile == profile_after,
                          "the check run changed nothing: every node's iptables, ip6tables "
                          "and ipsets, and the backend profile in the datastore, are as before"
                          + (f" (changed on {', '.join(changed)})" if changed else "")
                          + ("" if profile == profile_after else " (the profile changed)"))
        return preview, after

    def check_applied(self, preview: dict[str, HostPreview], before: dict[str, Kernel]
                      ) -> None:
        """Every node's kernel gained and lost exactly the rules its preview named (none
        for a node the preview does not name)."""
        want = {n: (preview.get(n, HostPreview()).keyed("+"),
                    preview.get(n, HostPreview()).keyed("-")) for n in self.nodes}
        deadline = time.monotonic() + APPLY_TIMEOUT
        while True:
            after = self.kernels()
            got = {n: before[n].changes(after[n]) for n in self.nodes}
            if got == want or time.monotonic() > deadline:
                break
            time.sleep(1)
        for node in self.nodes:
            (added, removed), (want_added, want_removed) = got[node], want[node]
            counts = f"+{added.total()}, -{removed.total()}"
            if node in preview:
                what = f"{node}: its rules changed exactly as previewed ({counts})"
            else:
                what = f"{node}: not in the preview, its rules unchanged ({counts})"
            ok = (added, removed) == (want_added, want_removed)
            if not ok:
                chains = sorted({k[2] for k in (added - want_added) + (want_added - added)
                                 + (removed - want_removed) + (want_removed - removed)})
                what += (f"; previewed +{want_added.total()}, -{want_removed.total()}; "
                         f"differs in {', '.join(chains)}")
            self.report.check(ok, what)

    def troubleshoot(self) -> None:
        heading("Troubleshooting: calicoctl policy explain, calicoctl profile show "
                "--counters")
        fe = next(w for w in self.workloads if w.network == "frontend")
        be = next((w for w in self.workloads if w.network == "backend" and w.node != fe.node),
                  next(w for w in self.workloads if w.network == "backend"))
        decided = None
        for port, allowed in ((80, True), (8080, False)):
            args = ("policy", "explain", "--from", fe.ip4, "--to", be.ip4, "--port", str(port))
            text = self.lab.node_exec(fe.node, CALICOCTL, *args, step="demo",
                                      check=False).stdout
            print(f"\n  $ calicoctl {' '.join(args)}      # {fe.label} -> {be.label}")
            print("\n".join("    " + line for line in text.splitlines()))
            code, found = self.calicoctl(fe.node, *args)
            ok = code == 0 and isinstance(found, dict) and found.get("allowed") is allowed
            steps = found.get("steps", []) if isinstance(found, dict) else []
            if allowed:
                decided = next((s for s in steps if s.get("profile") == "backend"
                                and s.get("verdict") == "allow"), None)
                ok = ok and decided is not None and decided["rule"].get("src_tag") == "frontend"
                self.report.check(ok, f"explain: {fe.label} -> {be.label} tcp/80 allowed by "
                                  "the backend rule that lets frontend in")
            else:
                ok = ok and bool(steps) and steps[-1].get("stage") == "endpoint"
                self.report.check(ok, f"explain: {fe.label} -> {be.label} tcp/8080 dropped, "
                                  "no backend rule allows it")
        if decided is None:
            return
        number = decided["rule_number"]

        def packets() -> int:
            code, found = self.calicoctl(be.node, "profile", "show", "backend", "--counters")
            if code != 0 or not isinstance(found, dict):
                return -1
            rule = next((r for r in found.get("rules", []) if r["direction"] == "inbound"
                         and r["number"] == number), None)
            return sum(rule["packets"].values()) if rule else -1

        before = packets()
        self.run_probes({fe: [(f"c{i}", "tcp/80", be.ip4) for i in range(3)]})
        after = packets()
        print(f"\n  $ calicoctl profile show backend --counters      # on {be.node}")
        text = self.lab.node_exec(be.node, CALICOCTL, "profile", "show", "backend",
                                  "--counters", step="demo", check=False).stdout
        print("\n".join("    " + line for line in text.splitlines()))
        self.report.check(0 <= before < after, f"backend inbound rule {number}'s counter on "
                          f"{be.node} went up with 3 requests: {before} -> {after} packets")
        self.check_metrics(be.node)

    def check_metrics(self, node: str) -> None:
        """The agent's and the plugin's Prometheus metrics (on in the lab)."""
        wanted = {9091: ("calico_agent_apply_time_seconds_count",
                         "calico_agent_active_local_endpoints"),
                  9092: ('calico_plugin_request_duration_seconds_count{call="NetworkDriver.Join"}',
                         'calico_ipam_assignments_total{ip_version="4"}')}
        print(f"\n  Prometheus metrics on {node} (agent :9091, plugin :9092):")
        for port, series in wanted.items():
            text = self.sh(node, f"{PYTHON} -c 'import urllib.request; print(urllib.request."
                                 f"urlopen(\"http://127.0.0.1:{port}/metrics\").read()"
                                 f".decode())'", check=False)
            values = {}
            for line in text.splitlines():
                name, _, value = line.rpartition(" ")
                if name in series:
                    values[name] = float(value)
                    print(f"    {name} {value}")
            self.report.check(all(values.get(s, 0) > 0 for s in series),
                              f"{node}: {', '.join(series)} scraped and above 0")

    def check_ipam(self) -> None:
        heading("IPAM consistency (calicoctl ipam check)")
        code, result = self.calicoctl(self.nodes[0], "ipam", "check")
        if isinstance(result, dict):
            for problem in result.get("problems", []):
                print(f"    {problem}")
        self.report.check(code == 0, "IPAM is consistent")

    # ---------------------------------------------------------------- 6: the outside world

    def tor_addresses(self) -> list[str]:
        """The ToR's fabric addresses (the nodes' global peer), with --fabric."""
        if not self.world:
            return []
        tor = self.world["tor"]
        return [a for a in (tor["ip4"], tor.get("ip6") if self.ipv6 else None) if a]

    def outside_nets(self) -> list[str]:
        """The outside network's subnets (IPv4, and IPv6 in an IPv6 lab)."""
        world = self.world or {}
        return [n for n in (world.get("subnet4"), world.get("subnet6") if self.ipv6 else None)
                if n]

    def tor_exec(self, *argv: str, check: bool = False, timeout: float = 30.0) -> str:
        assert self.world is not None
        return self.lab.node_exec(self.world["tor"]["name"], *argv, step="outside",
                                  check=check, timeout=timeout).stdout

    def blocks(self) -> dict[str, str]:
        """Every block with an owner: CIDR -> the owning node."""
        code, usage = self.calicoctl(self.nodes[0], "ipam", "show")
        found = {}
        for pool in (usage or []) if code == 0 and isinstance(usage, list) else []:
            for block in pool.get("blocks", []):
                owner = (block.get("affinity") or "").removeprefix("host:")
                if owner in self.fabric:
                    found[block["cidr"]] = owner
        return found

    def outside_world(self) -> None:
        if not self.world:
            heading("The outside world")
            print("  not in this lab: `calicoctl lab up --fabric` adds a top-of-rack router "
                  "and a host beyond it (make demo does)")
            return
        world, tor, outside = self.world, self.world["tor"], self.world["outside"]
        heading(f"The outside world: {outside['name']} reaches the containers through the "
                f"top-of-rack router {tor['name']}, without NAT or gateways")
        print(f"""
  {outside['name']} ({', '.join(a for a in (outside['ip4'], outside['ip6']) if a)}) sits on \
{world['network']} ({', '.join(self.outside_nets())}),
  a Docker network of its own: its only way to the pools is {tor['name']} \
({tor['outside_ip4']}), a router
  running BIRD 2 in AS {world['as_number']} (configured by the tor role of \
playbooks/site.yml). On the fabric
  ({', '.join(self.tor_addresses())}) every node peers with it (a global BGP peer): it \
learns the pools'
  blocks from the nodes and advertises {', '.join(self.outside_nets())} to them.""")
        self.start_edge()
        self.check_tor_routes()
        self.check_node_outside_routes()
        self.check_tor_sessions()

        heading("Outside -> containers, Calico's default rules: nothing from outside gets in")
        self.outside_matrix(allowed=False)
        heading("A rule with Ansible (playbooks/demo-outside.yml): the outside network may "
                "call edge on tcp/80")
        self.playbook(name="playbooks/demo-outside.yml", log_name="demo-outside.log")
        self.show_edge_profile()
        heading("Outside -> containers after the rule")
        self.outside_matrix(allowed=True)

        heading(f"Containers -> {outside['name']}: which source address it sees")
        self.egress(denied=False)
        heading("An egress rule with Ansible: edge may not call the outside network")
        print("  ansible-playbook playbooks/demo-outside.yml -e demo_outside_deny_egress=true "
              f"(log: {os.path.join(self.lab.state_dir, 'demo-outside.log')})")
        self.playbook("-e", "demo_outside_deny_egress=true", name="playbooks/demo-outside.yml",
                      log_name="demo-outside.log", quiet=True)
        self.show_edge_profile()
        self.egress(denied=True)
        print("\n  and back: ansible-playbook playbooks/demo-outside.yml (edge may call out "
              "again)")
        self.playbook(name="playbooks/demo-outside.yml", log_name="demo-outside.log",
                      quiet=True)
        code, profile = self.calicoctl(self.nodes[0], "profile", "show", "edge")
        self.report.check(isinstance(profile, dict)
                          and profile.get("outbound_rules") == [{"action": "allow"}],
                          "edge's outbound rules are back to: allow")
        self.tor_failure()

    def start_edge(self) -> None:
        heading("Containers on the network edge: its pool (10.201.0.0/16) has no nat_outgoing")
        if not self.at_default("edge"):
            print("  the edge profile is not at its default rules (an earlier demo?): "
                  "resetting it with Ansible")
            self.playbook("-e", RESTORE["edge"][1], name=RESTORE["edge"][0],
                          log_name="demo-outside.log", quiet=True)
        n = len(self.nodes)
        self.edge = [Workload("edge-1", "edge", self.nodes[0]),
                     Workload("edge-2", "edge", self.nodes[min(3, n) - 1])]
        if self.edge[1].node == self.edge[0].node and n > 1:
            self.edge[1].node = self.nodes[1]
        self.start(self.edge)
        pools = {p["cidr"]: p for p in self.pools()}
        for w in self.edge:
            self.report.check(ipaddress.ip_address(w.ip4) in ipaddress.ip_network(
                "10.201.0.0/16") and pools.get("10.201.0.0/16", {}).get("nat_outgoing")
                is False, f"{w.label}'s IPv4 address is in 10.201.0.0/16, a pool without "
                "nat_outgoing")
        self.start_borrowed()

    def start_borrowed(self) -> None:
        """One more edge container, on another node than its address's block: the free
        address of edge-1's block (whose owner `calicoctl ipam show` names), given with
        `docker run --ip`. Its node exports a /32 for it (docs/bgp.md)."""
        self.borrowed = None
        if len(self.nodes) < 2:
            return
        blocks = self.blocks()
        first = self.edge[0]
        cidr = next((c for c in blocks if ":" not in c and ipaddress.ip_address(first.ip4)
                     in ipaddress.ip_network(c)), None)
        if not self.report.check(cidr is not None, f"calicoctl ipam show names the block of "
                                 f"{first.label}'s address {first.ip4}", quiet=True):
            return
        assert cidr is not None
        owner = blocks[cidr]
        busy = {w.node for w in self.edge}
        node = next((n for n in self.nodes if n != owner and n not in busy),
                    next(n for n in self.nodes if n != owner))
        address = self.lab.node_exec(owner, PYTHON, "-c", FREE_ADDRESS, cidr,
                                     step="workloads", check=False).stdout.strip()
        if not self.report.check(bool(address), f"a free address in {cidr}", quiet=True):
            return
        w = Workload("edge-borrowed", "edge", node, chosen_ip4=address)
        print(f"\n  a borrowed address: {first.label}'s block {cidr} belongs to {owner} "
              f"(calicoctl ipam show);\n  its free address {address} goes to a container on "
              f"{node}:\n    $ docker run --net edge --ip {address} ...      # on {node}")
        self.start([w])
        after = self.blocks()
        self.report.check(w.ip4 == address and after.get(cidr) == owner,
                          f"{w.label} has {address} in {owner}'s block {cidr}: borrowed"
                          + ("" if w.ip4 == address else f" (got {w.ip4 or 'none'})"))
        self.edge.append(w)
        self.borrowed = (w, cidr, owner)

    def pools(self) -> list[dict[str, Any]]:
        code, pools = self.calicoctl(self.nodes[0], "pool", "list")
        return pools if code == 0 and isinstance(pools, list) else []

    # ------------------------------------------------------------ the ToR's routes

    def tor_routes(self) -> list[dict[str, Any]]:
        """The ToR's routes as BIRD shows them: each {net, proto, best, via: [...]}."""
        return parse_bird_routes(self.tor_exec("birdc", "show", "route"))

    def route_problems(self, routes: list[dict[str, Any]], blocks: dict[str, str]
                       ) -> list[str]:
        """What is wrong with the ToR's routes: a block missing, its best next hop not its
        node, or a route from the nodes that is neither a block nor a borrowed address."""
        problems = []
        borrowed = self.borrowed_routes()
        learned = [r for r in routes if any(v in self.node_addresses() for v in r["via"])]
        by_net: dict[str, list[dict[str, Any]]] = {}
        for r in learned:
            by_net.setdefault(r["net"], []).append(r)
        for cidr, owner in sorted(blocks.items()):
            if ipaddress.ip_network(cidr).version == 6 and not self.ipv6:
                continue
            best = [r for r in by_net.get(cidr, []) if r["best"]]
            want = self.fabric[owner][1 if ":" in cidr else 0]
            if not best:
                problems.append(f"the ToR has no route to {cidr} (of {owner})")
            elif set(best[0]["via"]) != {want}:
                problems.append(f"the ToR's route to {cidr} (of {owner}) goes via "
                                f"{', '.join(best[0]['via'])}, not {want}")
        for net_text, node in borrowed.items():
            best = [r for r in by_net.get(net_text, []) if r["best"]]
            want = self.fabric[node][1 if ":" in net_text else 0]
            if not best:
                problems.append(f"the ToR has no route to the borrowed {net_text} (on {node})")
            elif set(best[0]["via"]) != {want}:
                problems.append(f"the ToR's route to the borrowed {net_text} goes via "
                                f"{', '.join(best[0]['via'])}, not {want} ({node}, which "
                                "runs it)")
        for net_text, found in by_net.items():
            if net_text in blocks or net_text in borrowed:
                continue
            net = ipaddress.ip_network(net_text)
            block = next((b for b in blocks if ipaddress.ip_network(b).version == net.version
                          and net.subnet_of(ipaddress.ip_network(b))), None)  # type: ignore
            best = next((r for r in found if r["best"]), found[0])
            if net.prefixlen != net.max_prefixlen or block is None:
                problems.append(f"the ToR learned {net_text}: neither a block of the pools "
                                "nor an address of one")
            elif self.fabric[blocks[block]][0 if net.version == 4 else 1] in best["via"]:
                # from the block's own node: a container that stays in its block
                problems.append(f"the ToR learned {net_text}, an address that stays in its "
                                f"block {block}")
            else:
                problems.append(f"the ToR learned {net_text}, a borrowed address of no demo "
                                "container")
        return problems

    def borrowed_routes(self) -> dict[str, str]:
        """The borrowed address's /32 -> the node that runs its container."""
        if self.borrowed is None:
            return {}
        w = self.borrowed[0]
        return {f"{w.ip4}/32": w.node}

    def node_addresses(self) -> set[str]:
        return {a for pair in self.fabric.values() for a in pair if a}

    def check_tor_routes(self) -> None:
        tor = self.world["tor"]["name"] if self.world else ""
        heading(f"{tor}'s routes (docker exec {tor} birdc show route)")
        deadline = time.monotonic() + ROUTE_TIMEOUT
        while True:
            blocks = self.blocks()
            routes = self.tor_routes()
            problems = self.route_problems(routes, blocks)
            if not problems or time.monotonic() > deadline:
                break
            time.sleep(2)
        text = self.tor_exec("birdc", "show", "route")
        print("\n".join("    " + line for line in text.splitlines()[1:] if line.strip()))
        nodes = {a: n for n, pair in self.fabric.items() for a in pair if a}
        rows = []
        for r in routes:
            if not r["best"]:
                continue
            owner = blocks.get(r["net"], "")
            hops = ", ".join(f"{v} ({nodes.get(v, '?')})" for v in r["via"]) or r["kind"]
            what = f"block of {owner}" if owner else \
                "the outside network" if r["net"] in self.outside_nets() else ""
            if self.borrowed and r["net"] in self.borrowed_routes():
                w, cidr, owner = self.borrowed
                what = f"{w.label}, borrowed from {cidr} of {owner}"
            rows.append([r["net"], r["proto"], hops, what])
        print("\n  the ToR's best route to each prefix (every node passes each block on, with "
              "the block's own node as\n  the next hop: whichever session BIRD prefers, the "
              "traffic goes straight to that node):")
        table(rows, ["PREFIX", "LEARNED OVER", "NEXT HOP", "WHAT"], indent="    ")
        for problem in problems:
            self.report.check(False, problem)
        if not problems:
            count = sum(1 for c in blocks if ":" not in c or self.ipv6)
            self.report.check(bool(blocks), f"the ToR routes each of the {count} blocks of the "
                              "pools to the node that owns it")
            if self.borrowed:
                w, cidr, owner = self.borrowed
                self.report.check(True, f"and learned only one more prefix from the nodes: "
                                  f"{w.label}'s borrowed {w.ip4}/32 (in {owner}'s block "
                                  f"{cidr}), via {w.node}, which runs it; no container /32 "
                                  "or /128 that stays in its block")
            else:
                self.report.check(True, "and learned nothing else from the nodes (no "
                                  "container /32 or /128 that stays in its block)")

    def check_node_outside_routes(self) -> None:
        assert self.world is not None
        heading("Every node's route to the outside network, learned from the ToR (proto bird)")
        tor4, tor6 = self.world["tor"]["ip4"], self.world["tor"].get("ip6")
        wanted = [(self.world["subnet4"], tor4)]
        if self.ipv6 and self.world.get("subnet6"):
            wanted.append((self.world["subnet6"], tor6))
        deadline = time.monotonic() + ROUTE_TIMEOUT
        while True:
            rows, missing = [], []
            for node in self.nodes:
                for net, via in wanted:
                    line = self.sh(node, f"ip {'-6 ' if ':' in net else ''}route show {net}",
                                   check=False).strip()
                    rows.append([node, line or "(none)"])
                    if f"via {via}" not in line or "proto bird" not in line:
                        missing.append(f"{node}: a route to {net} via {via} (proto bird)")
            if not missing or time.monotonic() > deadline:
                break
            time.sleep(2)
        table(rows, ["NODE", "ip route show <outside network>"])
        for what in missing:
            self.report.check(False, what)
        if not missing:
            self.report.check(True, f"every node routes {', '.join(n for n, _ in wanted)} via "
                              "the ToR, learned over BGP")

    def check_tor_sessions(self) -> None:
        assert self.world is not None
        node = self.nodes[0]
        heading(f"The ToR's sessions: calicoctl node status on {node}, birdc show protocols on "
                "the ToR")
        text = self.lab.node_exec(node, CALICOCTL, "node", "status", step="outside",
                                  check=False).stdout
        print(f"  $ calicoctl node status      # on {node}")
        print("\n".join("    " + line for line in text.splitlines()))
        code, sessions = self.calicoctl(node, "node", "status")
        tor = {s.get("peer"): s for s in sessions or [] if isinstance(sessions, list)
               and s.get("type") == "global"}
        for address in self.tor_addresses():
            self.report.check(str(tor.get(address, {}).get("info", "")).startswith(
                "Established"), f"{node}: its session with the ToR {address} (global peer) "
                "Established")
        text = self.tor_exec("birdc", "show", "protocols")
        print(f"\n  $ birdc show protocols      # on {self.world['tor']['name']}")
        print("\n".join("    " + line for line in text.splitlines()[1:]))
        neighbours = self.node_addresses() if self.ipv6 else {
            a for a in self.node_addresses() if ":" not in a}
        established = 0
        for line in text.splitlines():
            words = line.split()
            if len(words) >= 6 and words[1] == "BGP" and words[3] == "up" \
                    and "Established" in line:
                established += 1
        self.report.check(established == len(neighbours), f"the ToR: {established} of "
                          f"{len(neighbours)} BGP sessions with the nodes Established")

    # ------------------------------------------------------------ traffic

    def outside_get(self, jobs: list[tuple[str, str, int, str]], timeout: float = 3.0
                    ) -> dict[str, dict[str, Any]]:
        """GET each (key, address, port, path) from the outside host at once."""
        assert self.world is not None
        out = self.lab.node_exec(self.world["outside"]["name"], "python3", "-c", OUTSIDE_GET,
                                 json.dumps(jobs), str(timeout), step="outside",
                                 check=False, timeout=60).stdout
        try:
            return json.loads(out)
        except ValueError:
            return {}

    def outside_matrix(self, allowed: bool) -> None:
        assert self.world is not None
        outside = self.world["outside"]
        targets = self.workloads + self.edge
        families = [4, 6] if self.ipv6 else [4]
        jobs = [(f"{w.name}/{v}", w.ip4 if v == 4 else w.ip6, 80, "/cgi-bin/peer")
                for w in targets for v in families]
        results = self.outside_get(jobs)

        def want(w: Workload) -> bool:
            return allowed and w.network == "edge"

        again = [j for j in jobs if want(next(w for w in targets if w.name == j[0][:-2]))
                 and not results.get(j[0], {}).get("ok")]
        if again:  # a first packet can meet a cold neighbour cache
            time.sleep(1)
            results.update(self.outside_get(again))
        seen_by = {4: outside["ip4"], 6: outside.get("ip6")}
        print(f"\n  from {outside['name']}: GET http://<container>:80/cgi-bin/peer, which "
              "answers with the address the container saw\n  (+ passes, . dropped, "
              "! not as expected)")
        rows = []
        for w in targets:
            row = [w.label, w.network]
            for v in families:
                got = results.get(f"{w.name}/{v}", {})
                mark = "+" if got.get("ok") else "."
                if bool(got.get("ok")) != want(w):
                    mark += "!"
                saw = normalise(got.get("body", "")) if got.get("ok") else ""
                row += [w.ip4 if v == 4 else w.ip6, mark + (f" saw {saw}" if saw else "")]
            rows.append(row)
        header = ["CONTAINER", "NETWORK", "IPv4", "tcp/80"]
        if self.ipv6:
            header += ["IPv6", "tcp/80"]
        table(rows, header, indent="    ")
        print()
        for v in families:
            for w in targets:
                got = results.get(f"{w.name}/{v}", {})
                if bool(got.get("ok")) != want(w):
                    self.report.check(False, f"IPv{v} outside -> {w.label} tcp/80: "
                                      f"{'passed' if got.get('ok') else 'dropped'}, expected "
                                      f"{'to pass' if want(w) else 'a drop'}")
            others = [w for w in targets if not want(w)]
            if all(not results.get(f"{w.name}/{v}", {}).get("ok") for w in others):
                self.report.check(True, f"IPv{v}: outside -> " + (
                    "frontend, backend: dropped" if allowed else "every container: dropped")
                    + f" ({len(others)} containers)")
            if allowed:
                edge = [w for w in targets if want(w)]
                saw = {w.name: normalise(results.get(f"{w.name}/{v}", {}).get("body", ""))
                       for w in edge}
                logged = {w.name: [normalise(a) for a in self.peers_logged(w)] for w in edge}
                if all(results.get(f"{w.name}/{v}", {}).get("ok") for w in edge):
                    ok = all(a == seen_by[v] for a in saw.values()) \
                        and all(seen_by[v] in peers for peers in logged.values())
                    self.report.check(ok, f"IPv{v}: outside -> edge passes on every node; each "
                                      "container saw (and logged) the outside host's own "
                                      f"address {seen_by[v]}" + ("" if ok else
                                                                 f" (saw {saw})"))
        if allowed:
            for w in targets:
                if want(w):
                    print(f"    {w.name}'s /tmp/peers.log (busybox httpd's REMOTE_ADDR): "
                          + ", ".join(self.peers_logged(w)[-len(families):]))

    def peers_logged(self, w: Workload) -> list[str]:
        """The addresses the container's /cgi-bin/peer logged, oldest first."""
        return self.lab.node_exec(w.node, "docker", "exec", w.name, "cat", "/tmp/peers.log",
                                  step="outside", check=False).stdout.split()

    def show_edge_profile(self) -> None:
        code, profile = self.calicoctl(self.nodes[0], "profile", "show", "edge")
        if not isinstance(profile, dict):
            self.report.check(False, f"calicoctl profile show edge: {profile}")
            return
        for direction in ("inbound", "outbound"):
            print(f"  edge's {direction} rules now:")
            for rule in profile.get(f"{direction}_rules", []):
                print("    " + " ".join(f"{k}={v}" for k, v in rule.items()))
        nets = sorted(self.outside_nets())
        self.report.check(code == 0 and any(
            r.get("action") == "allow" and sorted(r.get("src_net") or []) == nets
            for r in profile.get("inbound_rules", [])),
            f"the edge profile lets {', '.join(nets)} in (src_net)")

    def egress(self, denied: bool) -> None:
        """From a container of every network to the outside host's server: what address
        it saw (the container's own from a pool without NAT and over IPv6, the node's from
        the NAT pool); with ``denied``, edge's containers do not get out."""
        assert self.world is not None
        outside = self.world["outside"]
        sources = [next(w for w in self.workloads if w.network == "frontend"),
                   next(w for w in self.workloads if w.network == "backend"), *self.edge]
        families = [4, 6] if self.ipv6 else [4]
        addr = {4: outside["ip4"], 6: f"[{outside.get('ip6')}]"}
        tag = f"{time.time():.0f}"
        results = {}
        with concurrent.futures.ThreadPoolExecutor(max_workers=len(sources)) as pool:
            for w, found in zip(sources, pool.map(lambda w: self.workload_probe(w, [
                    (f"v{v}", f"http://{addr[v]}/{w.name}-v{v}-{tag}") for v in families]),
                    sources), strict=True):
                results[w.name] = found
        log = self.lab.node_exec(outside["name"], "cat", "/var/log/peers.log",
                                 step="outside", check=False).stdout
        logged = {}
        for line in log.splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[2].endswith(f"-{tag}"):
                logged[parts[2].lstrip("/")] = parts[1]
        pools = {p["cidr"]: p for p in self.pools()}
        rows = []
        checks: list[tuple[bool, str]] = []
        for w in sources:
            pool4 = next((c for c in pools if ":" not in c and ipaddress.ip_address(w.ip4)
                          in ipaddress.ip_network(c)), "?")
            nat = bool(pools.get(pool4, {}).get("nat_outgoing"))
            row = [w.label, f"{pool4}{' (NAT)' if nat else ''}"]
            for v in families:
                got = results[w.name].get(f"v{v}", "rc=? (no answer)")
                rc, _, body = got.partition(" ")
                saw = normalise(body) if rc == "rc=0" else ""
                own = w.ip4 if v == 4 else w.ip6
                node = self.fabric[w.node][0]
                expect = None if denied and w.network == "edge" else (
                    node if v == 4 and nat else own)
                seen = logged.get(f"{w.name}-v{v}-{tag}", "")
                what = ("its node's" if saw == node else "its own" if saw == own
                        else "another") + " address" if saw else "no answer"
                row.append(f"{saw} ({what})" if saw else f"- ({what})")
                if expect is None:
                    checks.append((not saw and not seen, f"IPv{v} {w.label} -> outside: "
                                   "refused by edge's egress rule"
                                   + ("" if not saw else f" (got out as {saw})")))
                    continue
                whose = f"its node's address {expect}" if expect == node \
                    else f"the container's own address {expect}"
                checks.append((saw == expect == seen,
                               f"IPv{v} {w.label} -> outside passes; the outside host saw "
                               f"{whose}" + ("" if saw == expect == seen else
                                             f" (answered {saw or 'nothing'}, logged "
                                             f"{seen or 'nothing'})")))
            rows.append(row)
        print(f"\n  from the row's container: wget http://{outside['ip4']}/..."
              + (f" and http://{addr[6]}/..." if self.ipv6 else "")
              + f"; {outside['name']}'s server answers with (and logs) the address it saw")
        header = ["FROM", "ITS IPv4 POOL", "IPv4: it saw"]
        if self.ipv6:
            header.append("IPv6: it saw")
        table(rows, header, indent="    ")
        print()
        for ok, what in checks:
            self.report.check(ok, what)

    # ------------------------------------------------------------ failure

    def tor_failure(self) -> None:
        assert self.world is not None
        tor = self.world["tor"]["name"]
        heading(f"Failure: BIRD stops on {tor}, then starts again")
        edge = self.edge[0]
        families = [4, 6] if self.ipv6 else [4]
        jobs = [(f"{edge.name}/{v}", edge.ip4 if v == 4 else edge.ip6, 80, "/cgi-bin/peer")
                for v in families]

        def traffic() -> bool:
            found = self.outside_get(jobs, timeout=1.0)
            return all(found.get(key, {}).get("ok") for key, *_ in jobs)

        def tor_has_routes() -> bool:
            blocks = self.blocks()
            return not self.route_problems(self.tor_routes(), blocks) and bool(blocks)

        def nodes_have_routes() -> bool:
            for node in self.nodes:
                for net in self.outside_nets():
                    line = self.sh(node, f"ip {'-6 ' if ':' in net else ''}route show {net}",
                                   check=False)
                    if "proto bird" not in line:
                        return False
            return True

        self.report.check(traffic(), f"before: outside -> {edge.label} tcp/80 passes")
        print(f"  $ docker exec {tor} systemctl stop bird")
        self.tor_exec("systemctl", "stop", "bird", check=True)
        stopped = time.monotonic()
        while traffic() and time.monotonic() - stopped < 20:
            time.sleep(0.5)
        down = not traffic()
        self.report.check(down, f"outside -> {edge.label} tcp/80 no longer passes (checked "
                          f"{time.monotonic() - stopped:.1f}s after BIRD stopped on the ToR)")
        kernel = self.tor_exec("sh", "-c", "ip route; ip -6 route")
        left = [line for line in kernel.splitlines()
                if any(line.startswith(b + " ") for b in self.blocks())]
        self.report.check(not left, "the ToR's kernel has no route to a block any more"
                          + (f" (still: {'; '.join(left)})" if left else ""))
        missing, rows = self.route_rows()
        self.report.check(not missing, f"the nodes keep their mesh routes to each other's "
                          f"blocks ({len(rows)} routes)" + (f"; missing: {missing}"
                                                             if missing else ""))
        nodes_out = [n for n in self.nodes if "proto bird" in self.sh(
            n, f"ip route show {self.world['subnet4']}", check=False)]
        print(f"  the nodes' learned routes to {self.world['subnet4']}: "
              + (f"still on {', '.join(nodes_out)} (BGP graceful restart keeps them a while)"
                 if nodes_out else "gone"))

        print(f"  $ docker exec {tor} systemctl start bird")
        self.tor_exec("systemctl", "start", "bird", check=True)
        started = time.monotonic()
        routes_back = traffic_back = None
        while time.monotonic() - started < 120 and (routes_back is None
                                                    or traffic_back is None):
            if routes_back is None and tor_has_routes() and nodes_have_routes():
                routes_back = time.monotonic() - started
            if traffic_back is None and traffic():
                traffic_back = time.monotonic() - started
            time.sleep(0.3)
        self.report.check(routes_back is not None, "routes back: the ToR's to every block"
                          + (" and to the borrowed /32" if self.borrowed else "")
                          + ", every node's to the outside network"
                          + (f", within {routes_back:.1f}s of BIRD's start" if routes_back
                             is not None else ": not within 120s"))
        self.report.check(traffic_back is not None, f"traffic back: outside -> {edge.label} "
                          "tcp/80 passes again"
                          + (f", within {traffic_back:.1f}s of BIRD's start" if traffic_back
                             is not None else ": not within 120s"))

    # ---------------------------------------------------------------- run

    def run(self, keep_policy: bool = False) -> int:
        start = time.monotonic()
        try:
            self.check_lab()
            self.start_workloads()
            self.check_bgp()
            self.check_datastore()
            heading("Connectivity with Calico's default profiles")
            self.matrix(after=False)
            self.change_policy()
            heading("Connectivity after the change")
            self.matrix(after=True)
            self.troubleshoot()
            self.outside_world()
            self.check_ipam()
        finally:  # a failed step too: no rule of the demo's is left behind
            if not keep_policy:
                self.restore_policy()
        heading(f"Result ({time.monotonic() - start:.0f}s)")
        if self.report.failures:
            print(f"  {len(self.report.failures)} of "
                  f"{len(self.report.failures) + self.report.passed} checks FAILED:")
            for failure in self.report.failures:
                print(f"    - {failure}")
            return 1
        print(f"  all {self.report.passed} checks passed. Try it yourself:")
        w = self.workloads[0]
        print(f"    docker exec -it {w.node} docker exec -it {w.name} sh")
        print(f"    docker exec {self.nodes[0]} calicoctl profile show backend")
        print(f"    docker exec -it {self.nodes[0]} bash      # then README.md's \"Using it\"")
        if self.world:
            print(f"    docker exec {self.world['tor']['name']} birdc show route      "
                  "# the top-of-rack router")
            print(f"    docker exec {self.world['outside']['name']} cat /var/log/peers.log"
                  "      # who called the outside host")
        print("    .venv/bin/calicoctl lab down      # remove the lab")
        return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep-policy", action="store_true",
                        help="leave the rules the demo added (backend's, and edge's with "
                             "--fabric) in place at the end, to explore them")
    args = parser.parse_args(argv)
    try:
        state = read_state()
    except LabError as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 2
    try:
        return Demo(state).run(keep_policy=args.keep_policy)
    except LabError as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
