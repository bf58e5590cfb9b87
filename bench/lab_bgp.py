"""BGP across a running lab: the time for every node's BIRD to be back in step after all of
them restart at once, with the sessions and BIRD memory per node.

Run it on a lab made by ``calicoctl lab up --nodes N`` (the node-to-node mesh) or
``calicoctl lab up --nodes N --route-reflectors R`` (no mesh; the first R nodes reflect);
the figures of both, side by side, show what the reflectors save. It starts one container
per node on the lab's ``frontend`` network (so every node has a block to advertise),
waits for the lab to settle, counts each node's BGP sessions and BIRD-learned routes, then
restarts ``bird.service`` on every node at once and times, from that moment, until every
session on every node is Established and every node holds as many BIRD routes as before.
It removes its containers afterwards. Times are printed, never asserted.

Run as root: .venv/bin/python bench/lab_bgp.py [--timeout S]
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from calico_lib.lab import WORKLOAD_IMAGE, read_state  # noqa: E402

SOCKET = "/run/bird/bird.ctl"
NAME = "calico-bench-bgp"


def docker(host: str, *argv: str, check: bool = True) -> str:
    proc = subprocess.run(["docker", "-H", host, *argv], capture_output=True, text=True,
                          timeout=120)
    if check and proc.returncode != 0:
        raise SystemExit(f"docker {' '.join(argv[:4])}: {proc.stderr.strip()[:300]}")
    return proc.stdout


class Node:
    def __init__(self, host: str, name: str) -> None:
        self.host, self.name = host, name

    def exec(self, *argv: str, check: bool = True) -> str:
        return docker(self.host, "exec", self.name, *argv, check=check)

    def sessions(self) -> tuple[int, int]:
        """(BGP sessions, of which Established)."""
        out = self.exec("birdc", "-s", SOCKET, "show", "protocols", check=False)
        bgp = [line for line in out.splitlines() if " BGP " in line]
        return len(bgp), sum("Established" in line for line in bgp)

    def routes(self) -> int:
        return sum(len(self.exec("ip", family, "route", "show", "proto", "bird")
                       .splitlines()) for family in ("-4", "-6"))

    def memory_kb(self) -> float:
        out = self.exec("birdc", "-s", SOCKET, "show", "memory", check=False)
        match = re.search(r"Total:\s+([\d.]+)\s*(\w+)", out)
        if not match:
            return float("nan")
        value, unit = float(match.group(1)), match.group(2).lower()
        return value * {"b": 1 / 1024, "kb": 1, "mb": 1024, "gb": 1024 * 1024}.get(unit, 1)


def wait(what: str, probe, timeout: float) -> float:  # noqa: ANN001
    start = time.monotonic()
    while not probe():
        if time.monotonic() - start > timeout:
            raise SystemExit(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.2)
    return time.monotonic() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args()
    state = read_state()
    host = state["docker_host"]
    nodes = [Node(host, n["name"]) for n in state["nodes"]]
    reflectors = state.get("route_reflectors", 0)
    pool = ThreadPoolExecutor(max_workers=len(nodes))
    try:
        list(pool.map(lambda n: n.exec("docker", "run", "-d", "--name", NAME, "--net",
                                       "frontend", WORKLOAD_IMAGE, "sleep", "3600"), nodes))
        # settled: every node has a session count that stops changing, all Established
        expected: dict[str, int] = {}

        def settled() -> bool:
            counts = list(pool.map(lambda n: n.sessions(), nodes))
            if all(total and total == up for total, up in counts):
                expected.update({n.name: c[0] for n, c in zip(nodes, counts, strict=True)})
                return True
            return False
        wait("the lab's BGP sessions", settled, args.timeout)
        time.sleep(3)  # the routes of the new containers' blocks
        routes = dict(zip([n.name for n in nodes], pool.map(lambda n: n.routes(), nodes),
                          strict=True))
        start = time.monotonic()
        list(pool.map(lambda n: n.exec("systemctl", "restart", "bird.service"), nodes))
        restarted = time.monotonic() - start

        def established() -> bool:
            counts = list(pool.map(lambda n: n.sessions(), nodes))
            return all(up == expected[n.name] for n, (_, up) in zip(nodes, counts,
                                                                     strict=True))

        def routed() -> bool:
            return all(count >= routes[n.name] for n, count in
                       zip(nodes, pool.map(lambda n: n.routes(), nodes), strict=True))
        up = wait("every session Established", established, args.timeout) + restarted
        all_routes = max(up, wait("every route back", routed, args.timeout) + restarted)
        memory = list(pool.map(lambda n: n.memory_kb(), nodes))
    finally:
        list(pool.map(lambda n: n.exec("docker", "rm", "-f", NAME, check=False), nodes))
        pool.shutdown()
    sessions = list(expected.values())
    mode = (f"{reflectors} route reflectors, no mesh" if reflectors
            else "node-to-node mesh")
    print(f"\n{len(nodes)} nodes, {mode} (IPv4{' + IPv6' if state.get('ipv6') else ''})")
    print(f"  BGP sessions per node: min {min(sessions)}, median "
          f"{statistics.median(sessions):g}, max {max(sessions)} (all nodes: "
          f"{sum(sessions)})")
    print(f"  BIRD routes per node before the restart: median "
          f"{statistics.median(routes.values()):g}")
    print(f"  after restarting every BIRD at once: all Established in {up:.1f}s, every "
          f"route back in {all_routes:.1f}s")
    print(f"  BIRD memory per node (birdc show memory, Total): median "
          f"{statistics.median(memory):.0f} kB, max {max(memory):.0f} kB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
