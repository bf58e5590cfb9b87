#!/usr/bin/env python3
"""VXLAN per pool (`make demo`, before the main demo): show and check it on the racks lab of
`calicoctl lab up --nodes 3 --ipv6 --racks 2` (nodes 1 and 2 in rack 1, node 3 in rack 2,
each rack a subnet behind its ToR, which accepts from the nodes only the inventory's pools):

  1. the nodes' subnets (node records' ipv4_subnet) and racks;
  2. as the operator, the pool 10.210.0.0/16 --vxlan never (no ToR accepts it, as a cloud
     carries no container addresses), the Docker network vx on it and vx-1..3 on node 1..3;
  3. never: vx-1 -> vx-3 fails, and vx-1 -> vx-2 (same rack) too: in racks the nodes learn
     each other's blocks only from their ToR, which drops this pool;
  4. cross-subnet: node 1 routes node 3's block through vxlan.calico (onlink, node 3's
     tunnel address) and node 2's natively; both pings work; vxlan.calico's TX counter
     grows for vx-3 only;
  5. always, during a ping every 10 ms vx-1 -> vx-2: packets lost and the stall printed;
     node 2's block moves to vxlan.calico, the counter grows for vx-2 too;
  6. clean up: containers, networks, encapsulation off (the agents release their tunnel
     addresses, the pool's last addresses), the pool; no vxlan.calico remains.

Exit status 1 when a check failed, 2 without a racks lab. Re-runs replace an earlier run's
containers, networks and pool.

    .venv/bin/python scripts/demo_vxlan.py
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import netaddr

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from calico_lib.lab import Lab, LabError, read_state  # noqa: E402

CALICOCTL = "/opt/calico/venv/bin/calicoctl"
PKI = "/etc/calico/pki"
#: calicoctl as the operator (on the policy host), as scripts/demo.py
OPERATOR = ("--etcd-cert", f"{PKI}/operator.crt", "--etcd-key", f"{PKI}/operator.key",
            "--etcd-user", "calico-operator", "--etcd-password-file", f"{PKI}/operator-password")
POOL, NETWORK, LABEL, IMAGE = "10.210.0.0/16", "vx", "calico-demo-vxlan", "busybox"
DEVICE = "vxlan.calico"
WAIT = 30.0
#: the live flow: one ping every 10 ms for this many packets
FLOW_COUNT, FLOW_INTERVAL = 800, 0.01


def heading(text: str) -> None:
    print(f"\n=== {text}", flush=True)


def table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  " + "  ".join(str(c).ljust(w)
                               for c, w in zip(row, widths, strict=True)).rstrip())


def wait(condition: Callable[[], Any], timeout: float = WAIT) -> tuple[Any, float]:
    """Poll ``condition`` until it is truthy or ``timeout``: (its last value, seconds)."""
    start = time.monotonic()
    while not (value := condition()) and time.monotonic() - start < timeout:
        time.sleep(0.5)
    return value, time.monotonic() - start


class VxlanDemo:
    def __init__(self, state: dict[str, Any]) -> None:
        self.state = state
        self.nodes = [n["name"] for n in state["nodes"]]
        self.lab = Lab(nodes=len(self.nodes), ipv6=bool(state.get("ipv6")),
                       prefix=state["prefix"], subnet4=state["subnet4"],
                       subnet6=state.get("subnet6") or "fd7a:ca1:1ab::/64",
                       docker_host=state.get("docker_host"))
        self.passed, self.failures = 0, []
        self.ips: dict[str, str] = {}  # container -> IPv4 address
        self.records: dict[str, dict[str, Any]] = {}

    # ------------------------------------------------------------------ helpers

    def check(self, ok: bool, what: str) -> bool:
        self.passed += bool(ok)
        if not ok:
            self.failures.append(what)
        print(f"  {'ok  ' if ok else 'FAIL'}  {what}", flush=True)
        return ok

    def sh(self, node: str, script: str, check: bool = True, timeout: float = 60) -> str:
        return self.lab.node_exec(node, "sh", "-c", script, step="vxlan demo", check=check,
                                  timeout=timeout).stdout

    def ctl(self, *args: str) -> tuple[int, Any]:
        """calicoctl -o json as the operator, on the policy host (node 1): (exit status,
        the JSON, or the error)."""
        proc = self.lab.node_exec(self.nodes[0], CALICOCTL, *OPERATOR, *args, "-o", "json",
                                  step="vxlan demo", check=False, timeout=60)
        if proc.returncode != 0 or not proc.stdout.strip():
            return proc.returncode, (proc.stderr or proc.stdout).strip() or None
        return 0, json.loads(proc.stdout)

    def set_mode(self, mode: str) -> None:
        code, out = self.ctl("pool", "set", POOL, "--vxlan", mode)
        self.check(code == 0, f"the operator: pool set {POOL} --vxlan {mode}"
                   + ("" if code == 0 else f": {out}"))

    def pool(self) -> dict[str, Any] | None:
        _, pools = self.ctl("pool", "list")
        return next((p for p in pools or [] if p.get("cidr") == POOL), None)

    def blocks(self) -> dict[str, list[str]]:
        """node -> its blocks of the pool."""
        _, usage = self.ctl("ipam", "show")
        out: dict[str, list[str]] = {}
        for p in usage or []:
            for b in p.get("blocks", []):
                if netaddr.IPNetwork(b["cidr"]) in netaddr.IPNetwork(POOL):
                    out.setdefault((b.get("affinity") or "").removeprefix("host:"),
                                   []).append(b["cidr"])
        return out

    def node_record(self, node: str) -> dict[str, Any]:
        _, record = self.ctl("node", "show", node)
        return record if isinstance(record, dict) else {}

    def routes(self, node: str, proto: str = "") -> dict[str, dict[str, Any]]:
        """``node``'s IPv4 routes inside the pool by destination (``proto`` "81": the
        agent's tunnel routes only)."""
        out = self.sh(node, f"ip -j -4 route show root {POOL} {proto and 'proto ' + proto}")
        return {r["dst"]: r for r in json.loads(out or "[]")}

    def ping(self, src: str, dst: str, count: int = 3) -> bool:
        node = self.nodes[int(src[-1]) - 1]
        proc = self.lab.node_exec(node, "docker", "exec", src, "ping", "-c", str(count),
                                  "-W", "1", self.ips[dst], step="ping", check=False)
        return proc.returncode == 0

    def tx(self, node: str) -> int:
        out = self.sh(node, f"ip -s -j link show {DEVICE} 2>/dev/null || echo []")
        links = json.loads(out)
        return int(links[0]["stats64"]["tx"]["packets"]) if links else -1

    def devices(self) -> list[str]:
        return [n for n in self.nodes if self.sh(n, f"ip link show {DEVICE} 2>/dev/null",
                                                   check=False).strip()]

    def remove_workloads(self) -> None:
        for node in self.nodes:
            self.sh(node, f"ids=$(docker ps -aq --filter label={LABEL}); "
                          "[ -z \"$ids\" ] || docker rm -f $ids >/dev/null; "
                          f"docker network rm {NETWORK} >/dev/null 2>&1; true")

    # ------------------------------------------------------------------ steps

    def subnets(self) -> None:
        heading("1. The nodes: two racks, two subnets")
        racks = {r["index"]: r for r in self.state["racks"]}
        rows = []
        for n in self.state["nodes"]:
            rec = self.records[n["name"]] = self.node_record(n["name"])
            rows.append([n["name"], n["rack"], racks[n["rack"]]["network"], rec.get("ipv4"),
                         rec.get("ipv4_subnet")])
        table(rows, ["NODE", "RACK", "FABRIC NETWORK", "ADDRESS", "SUBNET (node record)"])
        subnets = [r[4] for r in rows]
        self.check(all(subnets) and subnets[0] == subnets[1] != subnets[2],
                   "node 1 and 2 share a subnet, node 3 is on another")
        self.check(all(r[3] and netaddr.IPAddress(r[3]) in netaddr.IPNetwork(r[4])
                       for r in rows if r[4]), "each node's address is in its subnet")

    def setup(self) -> None:
        heading(f"2. The pool {POOL} (no ToR accepts it), the network {NETWORK}, containers")
        self.remove_workloads()  # an earlier run's
        if self.pool() is None:
            code, out = self.ctl("pool", "add", POOL, "--vxlan", "never")
        else:
            # an earlier run's (a removal that stopped half-way leaves it disabled)
            code, out = self.ctl("pool", "set", POOL, "--vxlan", "never", "--disabled", "false")
        pool = self.pool() or {}
        self.check(code == 0 and pool.get("vxlan_mode", "never") == "never"
                   and not pool.get("disabled"), f"the operator: pool {POOL} --vxlan never"
                   + ("" if code == 0 else f": {out}"))
        rows = []
        for i, node in enumerate(self.nodes, 1):
            name = f"vx-{i}"
            self.lab.node_exec(node, "docker", "network", "create", "--driver", "calico",
                               "--ipam-driver", "calico-ipam", "--subnet", POOL, NETWORK,
                               step="network", timeout=120)
            self.lab.node_exec(node, "docker", "run", "-d", "--name", name, "--label",
                               f"{LABEL}=1", "--net", NETWORK, IMAGE, "sleep", "999999999",
                               step="workloads", timeout=120)
            info = json.loads(self.lab.node_exec(node, "docker", "inspect", name,
                                                 step="workloads").stdout)[0]
            self.ips[name] = info["NetworkSettings"]["Networks"][NETWORK].get("IPAddress", "")
            rows.append([name, node, self.ips[name]])
        table(rows, ["CONTAINER", "NODE", "IPv4"])
        self.check(all(netaddr.IPAddress(ip) in netaddr.IPNetwork(POOL)
                       for ip in self.ips.values() if ip) and all(self.ips.values()),
                   f"every container has an address of {POOL}")

    def never(self) -> None:
        heading("3. --vxlan never: the fabric does not carry the pool")
        wait(lambda: not self.devices())  # an earlier run's, gone once the agents see never
        blocks = self.blocks()
        tor = self.state["fabric"]["tors"][0]["name"]
        bird = self.lab.node_exec(tor, "birdc", "show", "route", step="tor").stdout
        tor_routes = [net for net in re.findall(r"^(\d+\.\d+\.\d+\.\d+/\d+)", bird, re.M)
                      if netaddr.IPNetwork(net) in netaddr.IPNetwork(POOL)]
        learned = [b for b in self.routes(self.nodes[1]) if b in blocks.get(self.nodes[0], [])]
        print(f"  {tor}'s BGP table: {len(tor_routes)} route(s) in {POOL} (its filter "
              f"rejects the pool); {self.nodes[1]}'s routes to {self.nodes[0]}'s blocks: "
              f"{learned or 'none'}")
        self.check(not tor_routes and not learned,
                   "BGP carries none of the pool's blocks (the ToR reflects only its pools)")
        for dst in ("vx-2", "vx-3"):
            way = self.sh(self.nodes[0], f"ip -4 route get {self.ips[dst]}").split("\n")[0]
            print(f"  {self.nodes[0]} sends {dst}'s packets: {' '.join(way.split()[:5])} "
                  "(its default route: nothing there routes the pool)")
        self.check(not self.ping("vx-1", "vx-3", 2), "vx-1 -> vx-3 (other rack): no answer")
        self.check(not self.ping("vx-1", "vx-2", 2),
                   "vx-1 -> vx-2 (same rack): no answer either: node 1 and 2 learn each "
                   "other's blocks only through the ToR")

    def cross_subnet(self) -> None:
        heading("4. --vxlan cross-subnet: VXLAN to the other rack, native within the rack")
        self.set_mode("cross-subnet")
        n1, n2, n3 = self.nodes[:3]
        blocks = self.blocks()

        def ready() -> bool:
            self.records = {n: self.node_record(n) for n in self.nodes}
            routes = self.routes(n1, "81")
            want = blocks.get(n2, []) + blocks.get(n3, [])
            return all(self.records[n].get("ipv4_vxlan_tunnel") for n in self.nodes) and \
                all(b in routes for b in want)
        ok, took = wait(ready)
        self.check(ok, f"tunnel addresses and {n1}'s routes " + (
            f"within {took:.1f}s" if ok else f"not within {WAIT:.0f}s"))
        self.show_routes()
        self.check_route(blocks.get(n3, []), n3, encap=True)
        self.check_route(blocks.get(n2, []), n2, encap=False)
        self.check(self.ping("vx-1", "vx-3"), "vx-1 -> vx-3 (other rack) answers")
        self.check(self.ping("vx-1", "vx-2"), "vx-1 -> vx-2 (same rack) answers")
        self.counter("vx-3", grows=True)
        self.counter("vx-2", grows=False)

    def show_routes(self) -> None:
        owners = {b: n for n, bs in self.blocks().items() for b in bs}
        tunnels = {r.get("ipv4_vxlan_tunnel"): n for n, r in self.records.items()}
        rows = [[r["dst"], owners.get(r["dst"], "?"), r.get("gateway"),
                 tunnels.get(r.get("gateway")) and "its tunnel address" or "its address",
                 r.get("dev"), ",".join(r.get("flags", [])) or "-"]
                for r in self.routes(self.nodes[0], "81").values()]
        print(f"  {self.nodes[0]}: ip route (proto 81), tunnel addresses: "
              + ", ".join(f"{n}={r.get('ipv4_vxlan_tunnel')}" for n, r in self.records.items()))
        table(rows, ["BLOCK", "OWNER", "VIA", "", "DEV", "FLAGS"])

    def check_route(self, blocks: list[str], owner: str, encap: bool) -> None:
        routes, rec = self.routes(self.nodes[0], "81"), self.records[owner]
        for block in blocks:
            r = routes.get(block, {})
            if encap:
                ok = r.get("dev") == DEVICE and "onlink" in r.get("flags", []) and \
                    r.get("gateway") == rec.get("ipv4_vxlan_tunnel")
                what = f"via {owner}'s tunnel address dev {DEVICE} onlink"
            else:
                ok = r.get("dev") != DEVICE and r.get("gateway") == rec.get("ipv4")
                what = f"natively via {owner}'s address {rec.get('ipv4')}"
            self.check(bool(r) and ok, f"{self.nodes[0]}: {block} ({owner}'s) {what}")
        self.check(bool(blocks), f"{owner} has a block of {POOL}")

    def counter(self, dst: str, grows: bool, count: int = 20) -> None:
        before = self.tx(self.nodes[0])
        self.ping("vx-1", dst, count=1)  # one, then a quick burst
        self.lab.node_exec(self.nodes[0], "docker", "exec", "vx-1", "ping", "-c", str(count),
                           "-i", "0.05", "-W", "1", self.ips[dst], step="ping", check=False)
        delta = self.tx(self.nodes[0]) - before
        self.check(delta >= count if grows else delta == 0,
                   f"{DEVICE} TX on {self.nodes[0]}: +{delta} packets for {count + 1} pings "
                   f"to {dst}" + (" (encapsulated)" if grows else " (native: not through it)"))

    def always(self) -> None:
        heading("5. --vxlan always, on a live flow (vx-1 -> vx-2, a ping every 10 ms)")
        n1, n2 = self.nodes[:2]
        node2_blocks = self.blocks().get(n2, [])
        def ping_flow() -> tuple[str, float]:
            proc = self.lab.node_exec(n1, "docker", "exec", "vx-1", "ping", "-c",
                                      str(FLOW_COUNT), "-i", str(FLOW_INTERVAL), "-W", "1",
                                      self.ips["vx-2"], step="flow", check=False, timeout=120)
            return proc.stdout, time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            begun = time.monotonic()
            flow = pool.submit(ping_flow)
            time.sleep(2)
            started = time.monotonic()
            self.set_mode("always")

            def moved() -> bool:
                routes = self.routes(n1, "81")
                return bool(node2_blocks) and all(routes.get(b, {}).get("dev") == DEVICE
                                                  for b in node2_blocks)
            ok, _ = wait(moved)
            took = time.monotonic() - started
            text, ended = flow.result()
        seqs = sorted({int(s) for s in re.findall(r"seq=(\d+)", text)})
        sent = re.search(r"(\d+) packets transmitted, (\d+) (?:packets )?received", text)
        transmitted = int(sent.group(1)) if sent else FLOW_COUNT
        gaps = [b - a - 1 for a, b in zip([-1, *seqs], [*seqs, transmitted], strict=True)]
        stall = max(gaps, default=transmitted) * FLOW_INTERVAL * 1000
        print(f"  {transmitted} sent, {len(seqs)} answered, {transmitted - len(seqs)} lost; "
              f"longest gap {max(gaps, default=0)} packets = a stall of about {stall:.0f} ms; "
              f"route moved {took:.1f}s after the pool set returned")
        self.check(bool(seqs) and ok and started + took < ended,
                   f"the switch ({started - begun + took:.1f}s) came during the flow "
                   f"({ended - begun:.1f}s), which went on")
        self.records = {n: self.node_record(n) for n in self.nodes}
        self.show_routes()
        self.check_route(node2_blocks, n2, encap=True)
        self.check(self.ping("vx-1", "vx-2"), "vx-1 -> vx-2 answers through the tunnel")
        self.counter("vx-2", grows=True)

    def cleanup(self) -> None:
        heading("6. Clean up: containers, networks, encapsulation off, the pool")
        self.remove_workloads()
        # the tunnel addresses are the pool's last addresses: its agents release them when
        # no pool encapsulates any more
        self.set_mode("never")
        released, took = wait(lambda: not any(self.node_record(n).get("ipv4_vxlan_tunnel")
                                              for n in self.nodes))
        self.check(bool(released), "every node released its tunnel address"
                   + (f" ({took:.1f}s)" if released else f": not within {WAIT:.0f}s"))
        code, out = self.ctl("pool", "remove", POOL)
        self.check(code == 0 and self.pool() is None, f"the operator: pool remove {POOL}: "
                   + ("gone" if code == 0 else str(out)))
        gone, took = wait(lambda: not self.devices())
        self.check(bool(gone), f"no {DEVICE} left on any node"
                   + (f" ({took:.1f}s)" if gone else f": still on {self.devices()}"))

    def run(self) -> int:
        start = time.monotonic()
        try:
            self.subnets()
            self.setup()
            self.never()
            self.cross_subnet()
            self.always()
        except (LabError, KeyError, ValueError) as exc:
            self.check(False, f"stopped: {exc}")
        finally:
            self.cleanup()
        heading(f"Result ({time.monotonic() - start:.0f}s)")
        if self.failures:
            print(f"  {len(self.failures)} of {len(self.failures) + self.passed} checks FAILED:")
            for failure in self.failures:
                print(f"    - {failure}")
            return 1
        print(f"  all {self.passed} checks passed")
        return 0


def main() -> int:
    try:
        state = read_state()
    except LabError as exc:
        print(f"demo_vxlan: {exc}", file=sys.stderr)
        return 2
    if len(state.get("racks") or []) < 2 or len(state.get("nodes") or []) < 3:
        print("demo_vxlan: needs the racks lab: calicoctl lab up --nodes 3 --ipv6 --racks 2",
              file=sys.stderr)
        return 2
    try:
        return VxlanDemo(state).run()
    except LabError as exc:
        print(f"demo_vxlan: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
