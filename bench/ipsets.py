"""Group matching stays flat: packets classified through a 10-member and a 10,000-member
ipset, beside one rule per address, measured in the same run.

Three network namespaces this script creates and always deletes (``calbs-<pid>-…``)::

    client 10.10.1.2 ── router (10.10.1.1 | 10.10.2.1) ── server 10.10.2.2

The router forwards; conntrack is off for the bench traffic (raw table NOTRACK), so every
packet is judged by the FORWARD rules, not only a flow's first. The scenarios, each the
only rules in the router's FORWARD chain (policy DROP) after one that lets the server's
side of iperf3's control connection back:

``no rules``   FORWARD policy ACCEPT: the cost of forwarding alone;
``set 10``     ``-m set --match-set G src -j ACCEPT``, G a hash:ip set of 10 addresses
               holding the client's, created as the renderer creates a tag's set (its
               hashsize grows with its members);
``set 10,000`` the same rule, G holding 10,000 addresses;
``chain 5,000`` one rule per address, ``-s ADDRESS -j ACCEPT``, 5,000 of them with the
               client's last (what a per-address rendering of a 5,000-member group costs).

iperf3 sends 64-byte UDP datagrams as fast as it can for ``--duration`` seconds; the figure
is the datagrams received per second (the sender's limit caps the cheap scenarios alike).
Scenarios run in rounds, each figure the median of ``--runs``. Targets, printed as ratios,
never asserted: the 10,000-member set within 5% of the 10-member one, and at least 3x the
5,000-rule chain.

Run as root: .venv/bin/python bench/ipsets.py [--duration S] [--runs N]
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from calico_lib.render.policy import IpSet  # noqa: E402

CLIENT, SERVER = "10.10.1.2", "10.10.2.2"
SET = "calibench-g"
SCENARIOS = ("no rules", "set 10", "set 10,000", "chain 5,000")


def sh(argv: list[str], stdin: str | None = None, timeout: float = 120) -> str:
    proc = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:6])} failed: {proc.stderr.strip()[:300]}")
    return proc.stdout


class Lab:
    def __init__(self) -> None:
        tag = f"calbs-{os.getpid()}"
        self.client, self.router, self.server = (f"{tag}-{n}" for n in ("c", "r", "s"))

    def __enter__(self) -> Lab:
        for ns in (self.client, self.router, self.server):
            sh(["ip", "netns", "add", ns])
            sh(["ip", "-n", ns, "link", "set", "lo", "up"])
        for ns, peer, mine, theirs in ((self.client, "c0", "10.10.1.2", "10.10.1.1"),
                                       (self.server, "s0", "10.10.2.2", "10.10.2.1")):
            sh(["ip", "link", "add", peer, "netns", ns, "type", "veth", "peer", "name",
                f"r{peer}", "netns", self.router])
            sh(["ip", "-n", ns, "addr", "add", f"{mine}/24", "dev", peer])
            sh(["ip", "-n", ns, "link", "set", peer, "up"])
            sh(["ip", "-n", ns, "route", "add", "default", "via", theirs])
            sh(["ip", "-n", self.router, "addr", "add", f"{theirs}/24", "dev", f"r{peer}"])
            sh(["ip", "-n", self.router, "link", "set", f"r{peer}", "up"])
        self.exec(self.router, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        self.exec(self.router, "iptables", "-t", "raw", "-A", "PREROUTING", "-j", "NOTRACK")
        return self

    def __exit__(self, *exc: object) -> None:
        for ns in (self.client, self.router, self.server):
            for pid in subprocess.run(["ip", "netns", "pids", ns], capture_output=True,
                                      text=True).stdout.split():
                subprocess.run(["kill", pid], capture_output=True)
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)

    def exec(self, ns: str, *argv: str, stdin: str | None = None) -> str:
        return sh(["ip", "netns", "exec", ns, *argv], stdin)

    def rules(self, scenario: str) -> None:
        """Only this scenario's rules in the router's FORWARD chain."""
        self.exec(self.router, "iptables", "-F", "FORWARD")
        self.exec(self.router, "iptables", "-P", "FORWARD",
                  "ACCEPT" if scenario == "no rules" else "DROP")
        subprocess.run(["ip", "netns", "exec", self.router, "ipset", "destroy", SET],
                       capture_output=True)
        # the server's side of iperf3's control connection (one rule, the same everywhere)
        self.exec(self.router, "iptables", "-A", "FORWARD", "-s", SERVER, "-j", "ACCEPT")
        if scenario.startswith("set"):
            size = 10 if scenario == "set 10" else 10_000
            others = [str(ipaddress.ip_address("10.200.0.0") + i) for i in range(size - 1)]
            members = [*others, CLIENT]
            header = IpSet(SET, "hash:ip", 4, frozenset(members)).header  # as rendered
            self.exec(self.router, "ipset", "restore", stdin="".join(
                [f"create {SET} {header}\n"] + [f"add {SET} {a}\n" for a in members]))
            self.exec(self.router, "iptables", "-A", "FORWARD", "-m", "set", "--match-set",
                      SET, "src", "-j", "ACCEPT")
        elif scenario.startswith("chain"):
            others = [str(ipaddress.ip_address("10.200.0.0") + i) for i in range(4999)]
            self.exec(self.router, "iptables-restore", "--noflush", stdin="\n".join(
                ["*filter"] + [f"-A FORWARD -s {a}/32 -j ACCEPT" for a in [*others, CLIENT]]
                + ["COMMIT", ""]))

    def rate(self, duration: float) -> float:
        """Datagrams received per second, client to server."""
        server = subprocess.Popen(["ip", "netns", "exec", self.server, "iperf3", "-s", "-1",
                                   "-J"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                  text=True)
        try:
            time.sleep(0.3)
            self.exec(self.client, "iperf3", "-c", SERVER, "-u", "-b", "0", "-l", "64",
                      "-t", str(duration), "-J")
            out, _ = server.communicate(timeout=duration + 30)
        finally:
            if server.poll() is None:
                server.kill()
        summary = json.loads(out)["end"]["sum"]
        received = summary["packets"] - summary["lost_packets"]
        return received / summary["seconds"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per run")
    parser.add_argument("--runs", type=int, default=7, help="runs per scenario (median)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench/ipsets.py needs root (network namespaces, iptables, ipset)",
              file=sys.stderr)
        return 2
    figures: dict[str, list[float]] = {s: [] for s in SCENARIOS}
    with Lab() as lab:
        for _ in range(args.runs):
            for scenario in SCENARIOS:
                lab.rules(scenario)
                figures[scenario].append(lab.rate(args.duration))
    rate = {s: statistics.median(v) for s, v in figures.items()}
    print(f"\nUDP 64-byte datagrams forwarded per second, every packet judged "
          f"(median of {args.runs} x {args.duration:g} s)\n")
    print(f"{'scenario':14} {'datagrams/s':>12} {'vs no rules':>11}")
    for scenario in SCENARIOS:
        print(f"{scenario:14} {rate[scenario]:12,.0f} "
              f"{rate[scenario] / rate['no rules']:10.2f}x")
    flat = rate["set 10,000"] / rate["set 10"]
    versus = rate["set 10,000"] / rate["chain 5,000"]
    print("\nTargets")
    print(f"  set of 10,000 vs set of 10: {flat:.3f}x "
          f"({'met' if abs(1 - flat) <= 0.05 else 'missed'}: within 5%)")
    print(f"  set of 10,000 vs a 5,000-rule chain: {versus:.1f}x "
          f"({'met' if versus >= 3 else 'missed'}: at least 3x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
