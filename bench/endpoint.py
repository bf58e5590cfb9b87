"""Docker plugin endpoint latency next to the kernel's own floor, measured in the same run.

Inside a network namespace this script creates (and always deletes) it runs the real
calico-docker-plugin (``python -m calico_lib.plugin.server`` under ``ip netns exec``, real
dataplane hooks: veth + reconcile) on a fresh SQLite datastore and drives it over its unix
sockets with the bodies Docker 20.10 sends; a stand-in Docker API answers the one question
the plugin asks Docker (a network's name). The breakdown shows CreateEndpoint and Join
apart, and the plugin's own create_veth() timed alone in the namespace. Join answers once
the veth and the routes exist; the rules are programmed in the background (from
CreateEndpoint on), so it also shows when they were in place relative to Join's answer
(measured apart, polling iptables-save). It times:

  1. CreateEndpoint + Join, one endpoint at a time (median, p95), beside the floor: a bare
     pyroute2 veth pair created and set up plus one /32 route through it, over one netlink
     socket in the same namespace (the minimum kernel work per endpoint). The address is
     requested first (RequestAddress, timed apart) as Docker does;
  2. 50 endpoints (RequestAddress + CreateEndpoint + Join each) one after the other, then 50
     at once from 50 threads: total time and time per endpoint.

Every phase starts from an empty host (the previous phase's endpoints are removed with
Leave + DeleteEndpoint + ReleaseAddress, untimed). It prints the figures side by side and the
targets as ratios: within 3x of the floor; no collapse under concurrency (50 at once take
no longer per endpoint than 50 in a row). Times are reported, never asserted.

Run as root: .venv/bin/python bench/endpoint.py [--count N] [--concurrent N]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import socketserver
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import calico_lib  # noqa: E402
from tests.dockerlab import post, python_env  # noqa: E402

POOL4 = "10.65.0.0/16"
NETWORK_NAME = "bench"

# The floor, run inside the namespace: veth pair + link up + one /32 route per endpoint
# over one netlink socket; prints the per-endpoint seconds as JSON (after one warm-up).
FLOOR = r"""
import json, sys, time
from pyroute2 import IPRoute
count = int(sys.argv[1])
times = []
with IPRoute() as ipr:
    for i in range(count + 1):
        host, peer = f"flr{i:05d}", f"flp{i:05d}"
        start = time.perf_counter()
        ipr.link("add", ifname=host, kind="veth", peer={"ifname": peer})
        index = ipr.link_lookup(ifname=host)[0]
        ipr.link("set", index=index, state="up")
        ipr.route("add", dst=f"10.201.{i // 250}.{i % 250 + 1}/32", oif=index, scope=253)
        times.append(time.perf_counter() - start)
    for i in range(count + 1):
        ipr.link("del", index=ipr.link_lookup(ifname=f"flr{i:05d}")[0])
print(json.dumps(times[1:]))
"""


# The plugin's own veth step alone (calico_lib.dataplane.veth.create_veth, as Join calls it),
# in the namespace, the same way: seconds per endpoint as JSON, after one warm-up.
VETH = r"""
import json, sys, time
from calico_lib.dataplane.veth import create_veth, delete_veth
count = int(sys.argv[1])
times = []
for i in range(count + 1):
    start = time.perf_counter()
    create_veth(f"cbv{i:05d}", f"cbp{i:05d}", "02:00:00:00:00:01")
    times.append(time.perf_counter() - start)
for i in range(count + 1):
    delete_veth(f"cbv{i:05d}")
print(json.dumps(times[1:]))
"""


def run(argv: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, check=True, capture_output=True, text=True, **kw)


# ---------------------------------------------------------------------- the Docker stand-in


class _DockerAPI(BaseHTTPRequestHandler):
    """GET /networks/<id> -> {"Id": id, "Name": "bench"}: all the plugin asks Docker."""

    def do_GET(self) -> None:  # noqa: N802 - the name http.server calls
        network_id = self.path.rsplit("/", 1)[-1]
        data = json.dumps({"Id": network_id, "Name": NETWORK_NAME}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


class _UnixHTTP(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


# ---------------------------------------------------------------------- the plugin


class Bench:
    def __init__(self, workdir: str, ns: str, datastore_url: str) -> None:
        self.workdir, self.ns, self.url = workdir, ns, datastore_url
        self.sockets = os.path.join(workdir, "plugins")
        self.plugin: subprocess.Popen[bytes] | None = None
        self.network_id = secrets.token_hex(32)
        self.live: list[tuple[str, str]] = []  # (endpoint id, address)
        self.lock = threading.Lock()
        #: seconds from Join's answer to the endpoint's rules being in place, when measured
        self.programmed: list[float] | None = None

    def start(self, docker_socket: str) -> None:
        log = open(os.path.join(self.workdir, "plugin.log"), "wb")
        self.plugin = subprocess.Popen(
            ["ip", "netns", "exec", self.ns, sys.executable, "-m", "calico_lib.plugin.server",
             "--socket-dir", self.sockets, "--datastore", self.url, "--hostname", "benchhost",
             "--docker-socket", docker_socket,
             "--lock-file", os.path.join(self.workdir, "dataplane.lock")],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=python_env())
        log.close()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.plugin.poll() is not None:
                raise SystemExit(f"the plugin exited:\n{self.log()}")
            try:
                if all(post(os.path.join(self.sockets, name), "/Plugin.Activate")[0] == 200
                       for name in ("calico.sock", "calico-ipam.sock")):
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise SystemExit(f"the plugin did not answer:\n{self.log()}")

    def stop(self) -> None:
        if self.plugin is not None and self.plugin.poll() is None:
            self.plugin.send_signal(signal.SIGTERM)
            try:
                self.plugin.wait(10)
            except subprocess.TimeoutExpired:
                self.plugin.kill()
                self.plugin.wait(10)

    def log(self) -> str:
        return Path(self.workdir, "plugin.log").read_text(errors="replace")[-3000:]

    def call(self, sock: str, method: str, body: Any) -> Any:
        status, answer = post(os.path.join(self.sockets, sock), method, body)
        if status != 200:
            raise SystemExit(f"{method} failed: {answer}\n{self.log()}")
        return answer

    def net(self, method: str, body: Any) -> Any:
        return self.call("calico.sock", f"/NetworkDriver.{method}", body)

    def ipam(self, method: str, body: Any) -> Any:
        return self.call("calico-ipam.sock", f"/IpamDriver.{method}", body)

    def create_network(self) -> None:
        self.ipam("RequestPool", {"AddressSpace": "CalicoLocalAddressSpace", "Pool": "",
                                  "SubPool": "", "Options": {}, "V6": False})
        self.net("CreateNetwork", {
            "NetworkID": self.network_id,
            "Options": {"com.docker.network.enable_ipv6": False,
                        "com.docker.network.generic": {}},
            "IPv4Data": [{"AddressSpace": "CalicoLocalAddressSpace", "Gateway": "0.0.0.0/0",
                          "Pool": "0.0.0.0/0"}], "IPv6Data": []})

    def endpoint(self) -> tuple[float, float, float]:
        """One container's worth: RequestAddress, CreateEndpoint, Join. Returns the seconds
        each took."""
        endpoint_id = secrets.token_hex(32)
        options = {"com.docker.network.endpoint.exposedports": [],
                   "com.docker.network.portmap": []}
        start = time.perf_counter()
        address = self.ipam("RequestAddress", {"PoolID": "calico-v4", "Address": "",
                                               "Options": None})["Address"]
        asked = time.perf_counter()
        self.net("CreateEndpoint", {
            "NetworkID": self.network_id, "EndpointID": endpoint_id,
            "Interface": {"Address": address, "AddressIPv6": "", "MacAddress": ""},
            "Options": options})
        created = time.perf_counter()
        self.net("Join", {"NetworkID": self.network_id, "EndpointID": endpoint_id,
                          "SandboxKey": f"/var/run/docker/netns/{endpoint_id[:12]}",
                          "Options": options})
        end = time.perf_counter()
        with self.lock:
            self.live.append((endpoint_id, address))
        if self.programmed is not None:  # when do its rules let its traffic through?
            self.programmed.append(self.wait_programmed(f"cali{endpoint_id[:11]}") - end)
        return asked - start, created - asked, end - created

    def wait_programmed(self, interface: str) -> float:
        """The moment the dispatch tree sends ``interface`` to its own chains (until then
        its traffic is dropped), polled with iptables-save."""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            save = run(["ip", "netns", "exec", self.ns, "iptables-save", "-t", "filter"]).stdout
            if any(f"-i {interface} " in line and line.endswith(f"-g cali-from-{interface}")
                   for line in save.splitlines()):
                return time.perf_counter()
            time.sleep(0.002)
        raise SystemExit(f"{interface}'s rules were not in place after 30 s:\n{self.log()}")

    def remove_all(self) -> None:
        """docker rm of every endpoint made so far (untimed)."""
        with self.lock:
            live, self.live = self.live, []
        for endpoint_id, address in live:
            ids = {"NetworkID": self.network_id, "EndpointID": endpoint_id}
            self.net("RevokeExternalConnectivity", ids)
            self.net("Leave", ids)
            self.net("DeleteEndpoint", ids)
            self.ipam("ReleaseAddress", {"PoolID": "calico-v4",
                                         "Address": address.split("/")[0]})


# ---------------------------------------------------------------------- figures


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:9.2f}"


def make_namespace(ns: str) -> None:
    run(["ip", "netns", "add", ns])
    for argv in (["link", "set", "lo", "up"],
                 ["link", "add", "up0", "type", "veth", "peer", "name", "up1"],
                 ["addr", "add", "198.18.0.2/24", "dev", "up0"],
                 ["link", "set", "up0", "up"], ["link", "set", "up1", "up"],
                 ["route", "add", "default", "via", "198.18.0.254", "dev", "up0"]):
        run(["ip", "-n", ns, *argv])


def measure(args: argparse.Namespace, workdir: str, ns: str, url: str) -> dict[str, Any]:
    with calico_lib.connect(url) as client:
        client.add_pool(calico_lib.IPPool(POOL4))
    docker_socket = os.path.join(workdir, "docker.sock")
    docker = _UnixHTTP(docker_socket, _DockerAPI)
    threading.Thread(target=docker.serve_forever, daemon=True).start()
    bench = Bench(workdir, ns, url)
    try:
        bench.start(docker_socket)
        bench.create_network()
        for _ in range(3):  # warm-up: block claim, profile, chains, first reconcile
            bench.endpoint()
        bench.remove_all()

        floor, veth = (json.loads(run(["ip", "netns", "exec", ns, sys.executable, "-c",
                                       script, str(args.count)], env=python_env()).stdout)
                       for script in (FLOOR, VETH))
        request, create, join = [], [], []
        for _ in range(args.count):
            asked, created, joined = bench.endpoint()
            request.append(asked)
            create.append(created)
            join.append(joined)
        bench.remove_all()
        bench.programmed = []  # apart: its polling must not slow the timed calls
        for _ in range(min(args.count, 20)):
            bench.endpoint()
        programmed, bench.programmed = bench.programmed, None
        bench.remove_all()

        n = args.concurrent
        start = time.perf_counter()
        for _ in range(n):
            bench.endpoint()
        sequential = time.perf_counter() - start
        bench.remove_all()

        start = time.perf_counter()
        with ThreadPoolExecutor(max_workers=n) as pool:
            concurrent = list(pool.map(lambda _: bench.endpoint(), range(n)))
        parallel = time.perf_counter() - start
        bench.remove_all()
        with calico_lib.connect(url) as client:
            problems = client.ipam.check()
            left = sum(u["allocated"] for u in client.ipam.usage())
    finally:
        bench.stop()
        docker.shutdown()
        docker.server_close()
    return {"floor": floor, "veth": veth, "request": request, "create": create, "join": join,
            "programmed": programmed,
            "both": [c + j for c, j in zip(create, join, strict=True)],
            "sequential": sequential, "parallel": parallel,
            "concurrent_both": [c + j for _, c, j in concurrent],
            "problems": problems, "left": left}


def report(r: dict[str, Any], args: argparse.Namespace, backend: str) -> None:
    def row(label: str, values: list[float], note: str = "") -> None:
        print(f"{label:40} {ms(statistics.median(values))} {ms(p95(values))}{note}")

    floor, both = r["floor"], r["both"]
    print(f"endpoint latency over the socket, {args.count} endpoints one at a time "
          f"({backend} datastore)")
    print(f"{'':40} {'median ms':>9} {'p95 ms':>9}")
    row("floor: veth pair + up + /32 route", floor)
    row("plugin: CreateEndpoint + Join", both)
    row("  CreateEndpoint", r["create"])
    row("  Join", r["join"])
    row("    of which the plugin's create_veth()", r["veth"], "   (timed apart, same ns)")
    row("  RequestAddress (before, not counted)", r["request"])
    ratio_median = statistics.median(both) / statistics.median(floor)
    ratio_p95 = p95(both) / p95(floor)
    print(f"{'ratio CreateEndpoint+Join / floor':40} {ratio_median:9.1f} {ratio_p95:9.1f}"
          f"   (target: median within 3x of the floor, p95 within 5x)")
    row("rules in place, after Join's answer", [max(0.0, t) for t in r["programmed"]],
        "   (0: before it; until then the dispatch drops its traffic)")
    n = args.concurrent
    print()
    print(f"{n} endpoints, RequestAddress + CreateEndpoint + Join each")
    print(f"{'':40} {'total s':>9} {'ms/ep':>9}")
    print(f"{'one after the other':40} {r['sequential']:9.2f} {ms(r['sequential'] / n)}")
    print(f"{f'all at once ({n} threads)':40} {r['parallel']:9.2f} {ms(r['parallel'] / n)}")
    print(f"{'ratio all at once / one after the other':40} "
          f"{r['parallel'] / r['sequential']:9.2f}"
          f"   (target: no collapse under concurrency, <= 1)")
    row("CreateEndpoint + Join latency at once", r["concurrent_both"],
        "   (median, p95: queueing included)")
    state = "consistent" if not r["problems"] else f"{len(r['problems'])} problem(s)"
    print(f"afterwards: IPAM {state}, {r['left']} address(es) still allocated")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=50,
                        help="endpoints timed one at a time (default 50)")
    parser.add_argument("--concurrent", type=int, default=50,
                        help="endpoints in the sequential/concurrent comparison (default 50)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench/endpoint.py needs root (network namespaces, veths, iptables)",
              file=sys.stderr)
        return 2
    ns = "calbench-" + uuid.uuid4().hex[:6]
    workdir = tempfile.mkdtemp(prefix=f"{ns}-")
    try:
        make_namespace(ns)
        results = measure(args, workdir, ns, f"sqlite:///{workdir}/bench.db")
        report(results, args, "sqlite")
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
