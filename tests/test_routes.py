"""Routes and veth settings: the pure renderer, and the applier against real kernels.

The applier runs inside a throw-away "host" network namespace (as a subprocess under
``ip netns exec``), with a "container" namespace behind a ``cali…`` veth and an "uplink"
namespace that gives the host a default route (proxy ARP answers for 169.254.1.1 only when
the host has a route to it). Needs root and iproute2; conntrack is used when installed.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from calico_lib.model import Endpoint
from calico_lib.render.routes import RTPROT_CALICO, RouteSpec, desired_routes
from calico_lib.snapshot import Snapshot

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("ip") is None,
                                reason="needs root and iproute2 (network namespaces)")

CALI = "cali0123456789a"  # cali + 11 hex chars
HOST_MAC = "ee:ee:ee:ee:ee:ee"
HOST_LL = "fe80::ecee:eeff:feee:eeee"
CONTAINER_V4 = "10.65.0.5"
CONTAINER_V6 = "fd00:65::5"
HOST_V4 = "198.18.0.1"
UPLINK_V4 = "198.18.0.2"
HOST_V6 = "2001:2::1"
DESIRED = [RouteSpec(f"{CONTAINER_V4}/32", CALI), RouteSpec(f"{CONTAINER_V6}/128", CALI)]


# --------------------------------------------------------------------------- the renderer

def _endpoint(id_: str, host: str, ifname: str, v4: list[str], v6: list[str],
              state: str = "active") -> Endpoint:
    return Endpoint(id=id_, host=host, interface=ifname, ipv4_nets=v4, ipv6_nets=v6,
                    state=state)


def test_desired_routes_are_local_active_endpoint_addresses_sorted() -> None:
    snap = Snapshot(hostname="h1", endpoints=(
        _endpoint("b", "h1", "calibbbbbbbbbbb", ["10.65.0.9", "10.65.0.2"], ["fd00::9"]),
        _endpoint("a", "h1", "caliaaaaaaaaaaa", ["10.65.0.3"], []),
        _endpoint("c", "h1", "caliccccccccccc", ["10.65.0.4"], [], state="inactive"),
        _endpoint("d", "h2", "calidddddddddddd"[:15], ["10.65.1.1"], ["fd00::1"]),
    ))
    assert desired_routes(snap) == [
        RouteSpec("10.65.0.2/32", "calibbbbbbbbbbb"),
        RouteSpec("10.65.0.3/32", "caliaaaaaaaaaaa"),
        RouteSpec("10.65.0.9/32", "calibbbbbbbbbbb"),
        RouteSpec("fd00::9/128", "calibbbbbbbbbbb"),
    ]
    assert desired_routes(Snapshot(hostname="h3", endpoints=snap.endpoints)) == []
    assert RTPROT_CALICO == 80


# --------------------------------------------------------------------------- namespaces

_counter = itertools.count()


def _sh(*argv: str, check: bool = True, timeout: float = 15) -> subprocess.CompletedProcess:
    proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} -> {proc.returncode}: {proc.stderr.strip()}")
    return proc


@dataclass
class Lab:
    host: str
    container: str
    uplink: str

    def ip(self, ns: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return _sh("ip", "-n", ns, *args, check=check)

    def exec(self, ns: str, *argv: str, check: bool = True,
             timeout: float = 15) -> subprocess.CompletedProcess:
        return _sh("ip", "netns", "exec", ns, *argv, check=check, timeout=timeout)

    def sysctl(self, name: str) -> str:
        return self.exec(self.host, "cat", f"/proc/sys/{name}").stdout.strip()

    def routes(self, *family: str) -> list[dict]:
        """Protocol-80 routes of the host namespace's main table."""
        out = self.ip(self.host, "-j", *family, "route", "show", "proto", str(RTPROT_CALICO))
        return json.loads(out.stdout or "[]")

    def apply(self, desired: list[RouteSpec], flush_conntrack: bool = True) -> dict:
        """Run ``apply_routes`` inside the host namespace; the report plus recorded writes."""
        payload = json.dumps({"desired": [[r.dst, r.interface] for r in desired],
                              "flush": flush_conntrack})
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        proc = subprocess.run(["ip", "netns", "exec", self.host, sys.executable, "-c", _APPLY,
                               payload], capture_output=True, text=True, env=env, timeout=30)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)


# Runs in the host namespace: records every netlink request that is not a read and every
# command the runner starts, so tests can prove "no writes" rather than infer it.
_APPLY = r"""
import json, sys
from calico_lib.dataplane import routes, runner
from calico_lib.render.routes import RouteSpec

netlink_writes = []
commands = []

class RecordingIPRoute(routes.IPRoute):
    def route(self, command, *args, **kwargs):
        if command not in ("dump", "get", "show"):
            netlink_writes.append(["route", command, str(kwargs.get("dst"))])
        return super().route(command, *args, **kwargs)

    def link(self, command, *args, **kwargs):
        if command not in ("dump", "get", "show"):
            netlink_writes.append(["link", command, kwargs.get("index")])
        return super().link(command, *args, **kwargs)

real_run = runner.run

def recording_run(argv, *args, **kwargs):
    commands.append(list(argv))
    return real_run(argv, *args, **kwargs)

routes.IPRoute = RecordingIPRoute
runner.run = recording_run
args = json.loads(sys.argv[1])
report = routes.apply_routes([RouteSpec(d, i) for d, i in args["desired"]],
                             flush_conntrack=args["flush"])
out = report.to_dict()
out.update(summary=report.summary(), netlink_writes=netlink_writes, commands=commands)
print(json.dumps(out))
"""


@pytest.fixture
def lab() -> Iterator[Lab]:
    """Host, container and uplink namespaces, wired up; always deleted afterwards.

    The host end of the container's veth is left down with the fixed MAC Calico uses, so
    the applier has to set it up (and its link-local becomes fe80::ecee:eeff:feee:eeee).
    """
    prefix = f"calt-r-{os.getpid()}-{next(_counter)}"
    lab = Lab(host=f"{prefix}-h", container=f"{prefix}-c", uplink=f"{prefix}-u")
    created: list[str] = []
    try:
        for ns in (lab.host, lab.container, lab.uplink):
            _sh("ip", "netns", "add", ns)
            created.append(ns)
            lab.ip(ns, "link", "set", "lo", "up")
        h, c, u = lab.host, lab.container, lab.uplink
        # uplink: the host's own address and its default route
        lab.ip(h, "link", "add", "up0", "type", "veth", "peer", "name", "up1", "netns", u)
        lab.ip(h, "addr", "add", f"{HOST_V4}/24", "dev", "up0")
        lab.ip(h, "addr", "add", f"{HOST_V6}/64", "dev", "up0", "nodad")
        lab.ip(h, "link", "set", "up0", "up")
        lab.ip(u, "addr", "add", f"{UPLINK_V4}/24", "dev", "up1")
        lab.ip(u, "link", "set", "up1", "up")
        lab.ip(h, "route", "add", "default", "via", UPLINK_V4, "dev", "up0")
        # the container's veth: host end down, container end eth0
        lab.ip(h, "link", "add", CALI, "address", HOST_MAC, "type", "veth",
               "peer", "name", "eth0", "netns", c)
        # no DAD on the host end's link-local, so IPv6 works as soon as the link is up
        lab.exec(h, "sh", "-c", f"echo 0 > /proc/sys/net/ipv6/conf/{CALI}/accept_dad")
        lab.ip(c, "link", "set", "eth0", "up")
        lab.ip(c, "addr", "add", f"{CONTAINER_V4}/32", "dev", "eth0")
        lab.ip(c, "addr", "add", f"{CONTAINER_V6}/128", "dev", "eth0", "nodad")
        lab.ip(c, "route", "add", "169.254.1.1", "dev", "eth0", "scope", "link")
        lab.ip(c, "route", "add", "default", "via", "169.254.1.1", "dev", "eth0")
        lab.ip(c, "-6", "route", "add", "default", "via", HOST_LL, "dev", "eth0")
        yield lab
    finally:
        for ns in reversed(created):
            _sh("ip", "netns", "del", ns, check=False)


def _ping(lab: Lab, address: str) -> subprocess.CompletedProcess:
    # -w: keep trying (one probe a second) until the first reply or 5 s have passed
    return lab.exec(lab.container, "ping", "-n", "-c", "1", "-w", "5", address, check=False,
                    timeout=10)


def _dsts(routes: list[dict]) -> dict[str, str]:
    return {r["dst"]: r.get("dev", r.get("type", "")) for r in routes}


# --------------------------------------------------------------------------- the applier

def test_apply_installs_routes_and_settings_then_changes_nothing(lab: Lab) -> None:
    first = lab.apply(DESIRED)
    assert first["changed"] is True
    assert first["added"] == [f"{CONTAINER_V4}/32", f"{CONTAINER_V6}/128"]
    assert first["removed"] == [] and first["missing_interfaces"] == []
    assert first["links_up"] == [CALI]
    # ip_forward, ipv6 forwarding and the three per-veth settings all differ in a new netns
    assert first["sysctl_writes"] == 5
    assert _dsts(lab.routes()) == {CONTAINER_V4: CALI}
    [v4] = lab.routes()
    assert v4["scope"] == "link" and v4["protocol"] == str(RTPROT_CALICO)
    assert _dsts(lab.routes("-6")) == {CONTAINER_V6: CALI}
    assert lab.sysctl("net/ipv4/ip_forward") == "1"
    assert lab.sysctl("net/ipv6/conf/all/forwarding") == "1"
    assert lab.sysctl(f"net/ipv4/conf/{CALI}/proxy_arp") == "1"
    assert lab.sysctl(f"net/ipv4/neigh/{CALI}/proxy_delay") == "0"
    assert lab.sysctl(f"net/ipv6/conf/{CALI}/accept_ra") == "0"
    assert "UP" in json.loads(lab.ip(lab.host, "-j", "link", "show", CALI).stdout)[0]["flags"]

    second = lab.apply(DESIRED)
    assert second["changed"] is False, second
    assert second["sysctl_writes"] == 0
    assert second["netlink_writes"] == [] and second["commands"] == []
    assert second["added"] == second["removed"] == second["links_up"] == []
    assert second["summary"].startswith("no change")


def test_container_reaches_host_through_proxy_arp_and_link_local(lab: Lab) -> None:
    lab.apply(DESIRED)
    v4 = _ping(lab, HOST_V4)
    assert v4.returncode == 0, v4.stdout + v4.stderr
    v6 = _ping(lab, HOST_V6)
    assert v6.returncode == 0, v6.stdout + v6.stderr
    # the gateway was answered by the host veth's MAC (proxy ARP), not by anything else
    neigh = json.loads(lab.ip(lab.container, "-j", "neigh", "show", "169.254.1.1").stdout)
    assert neigh and neigh[0]["lladdr"] == HOST_MAC


def test_removed_endpoint_loses_routes_and_conntrack_entries(lab: Lab) -> None:
    lab.apply(DESIRED)
    have_conntrack = shutil.which("conntrack") is not None
    if have_conntrack:  # a tracked flow from the old container, and one to it
        lab.exec(lab.host, "conntrack", "-I", "-s", CONTAINER_V4, "-d", HOST_V4, "-p", "icmp",
                 "-t", "60", "--icmp-type", "8", "--icmp-code", "0", "--icmp-id", "77")
        lab.exec(lab.host, "conntrack", "-I", "-s", HOST_V6, "-d", CONTAINER_V6, "-p",
                 "icmpv6", "-t", "60", "--icmpv6-type", "128", "--icmpv6-code", "0",
                 "--icmpv6-id", "78")

    report = lab.apply([])
    assert report["changed"] is True
    assert report["removed"] == [f"{CONTAINER_V4}/32", f"{CONTAINER_V6}/128"]
    assert lab.routes() == [] and lab.routes("-6") == []
    if have_conntrack:
        assert report["conntrack_flushed"] == [CONTAINER_V4, CONTAINER_V6]
        assert ["conntrack", "-D", "-s", CONTAINER_V4] in report["commands"]
        assert ["conntrack", "-D", "-d", CONTAINER_V4] in report["commands"]
        assert ["conntrack", "-D", "-f", "ipv6", "-s", CONTAINER_V6] in report["commands"]
        assert ["conntrack", "-D", "-f", "ipv6", "-d", CONTAINER_V6] in report["commands"]
        for family in ("ipv4", "ipv6"):
            left = lab.exec(lab.host, "conntrack", "-L", "-f", family).stdout
            assert "10.65.0.5" not in left and "fd00:65::5" not in left, left

    again = lab.apply([])
    assert again["changed"] is False and again["netlink_writes"] == []
    assert again["commands"] == []


def test_no_conntrack_flush_when_not_asked(lab: Lab) -> None:
    lab.apply(DESIRED)
    report = lab.apply([], flush_conntrack=False)
    assert len(report["removed"]) == 2
    assert report["conntrack_flushed"] == [] and report["commands"] == []


def test_stale_protocol_80_routes_are_cleaned_up_and_others_kept(lab: Lab) -> None:
    h = lab.host
    # an endpoint whose veth is gone: the kernel drops its routes with the link
    lab.ip(h, "link", "add", "calideadbeef000", "type", "veth", "peer", "name", "dead1")
    lab.ip(h, "link", "set", "calideadbeef000", "up")
    lab.ip(h, "route", "add", "10.65.0.77/32", "dev", "calideadbeef000", "proto", "80")
    lab.ip(h, "link", "del", "calideadbeef000")
    # left behind on interfaces that still exist, or with no interface at all
    lab.ip(h, "route", "add", "10.65.0.9/32", "dev", "up0", "proto", "80", "scope", "link")
    lab.ip(h, "-6", "route", "add", "fd00:65::9/128", "dev", "up0", "proto", "80")
    lab.ip(h, "route", "add", "blackhole", "10.65.1.0/26", "proto", "80")
    lab.ip(h, "-6", "route", "add", "blackhole", "fd00:66::/122", "proto", "80")
    # not ours: never touched
    lab.ip(h, "route", "add", "10.99.0.0/24", "dev", "up0", "proto", "static")
    lab.ip(h, "route", "add", "10.65.0.10/32", "dev", "up0", "proto", "81")

    report = lab.apply(DESIRED)
    assert report["removed"] == ["10.65.0.9/32", "10.65.1.0/26", "fd00:65::9/128",
                                 "fd00:66::/122"]
    assert _dsts(lab.routes()) == {CONTAINER_V4: CALI}
    assert _dsts(lab.routes("-6")) == {CONTAINER_V6: CALI}
    others = {r["dst"] for r in json.loads(lab.ip(h, "-j", "route", "show").stdout)}
    assert {"default", "10.99.0.0/24", "10.65.0.10"} <= others
    if shutil.which("conntrack"):  # only whole addresses are flushed
        assert report["conntrack_flushed"] == ["10.65.0.9", "fd00:65::9"]

    assert lab.apply(DESIRED)["changed"] is False


def test_route_to_same_destination_elsewhere_is_replaced(lab: Lab) -> None:
    h = lab.host
    lab.ip(h, "route", "add", f"{CONTAINER_V4}/32", "dev", "up0", "proto", "static")
    lab.ip(h, "-6", "route", "add", f"{CONTAINER_V6}/128", "dev", "up0", "proto", "static")
    lab.ip(h, "-6", "route", "add", f"{CONTAINER_V6}/128", "dev", "up0", "metric", "100")
    # ours already, but through the wrong interface
    lab.ip(h, "route", "add", "10.65.0.6/32", "dev", "up0", "proto", "80", "scope", "link")
    desired = [*DESIRED, RouteSpec("10.65.0.6/32", CALI)]

    report = lab.apply(desired)
    assert report["added"] == ["10.65.0.5/32", "10.65.0.6/32", f"{CONTAINER_V6}/128"]
    assert report["removed"] == []
    v4 = json.loads(lab.ip(h, "-j", "route", "show", "table", "main").stdout)
    assert sorted((r["dst"], r.get("dev"), r.get("protocol")) for r in v4
                  if r["dst"].startswith("10.65.")) == [
        (CONTAINER_V4, CALI, "80"), ("10.65.0.6", CALI, "80")]
    v6 = json.loads(lab.ip(h, "-6", "-j", "route", "show", CONTAINER_V6).stdout)
    assert [(r.get("dev"), r.get("protocol")) for r in v6] == [(CALI, "80")]
    assert _ping(lab, HOST_V4).returncode == 0

    assert lab.apply(desired)["changed"] is False


def test_missing_interface_is_reported_not_raised(lab: Lab) -> None:
    desired = [*DESIRED, RouteSpec("10.65.0.50/32", "cali99999999999"),
               RouteSpec("fd00:65::50/128", "cali99999999999")]
    report = lab.apply(desired)
    assert report["missing_interfaces"] == ["cali99999999999"]
    assert report["added"] == [f"{CONTAINER_V4}/32", f"{CONTAINER_V6}/128"]
    assert _dsts(lab.routes()) == {CONTAINER_V4: CALI}
    assert "missing interface(s): cali99999999999" in report["summary"]

    again = lab.apply(desired)
    assert again["changed"] is False and again["netlink_writes"] == []
    assert again["missing_interfaces"] == ["cali99999999999"]

    # the container appears: the next reconcile adds its routes
    lab.ip(lab.host, "link", "add", "cali99999999999", "type", "veth", "peer", "name", "x1")
    later = lab.apply(desired)
    assert later["missing_interfaces"] == []
    assert later["added"] == ["10.65.0.50/32", "fd00:65::50/128"]
    assert later["links_up"] == ["cali99999999999"]


def test_routes_come_back_after_the_link_went_down(lab: Lab) -> None:
    lab.apply(DESIRED)
    lab.ip(lab.host, "link", "set", CALI, "down")  # the kernel drops routes of a down link
    assert lab.routes() == []
    start = time.monotonic()
    report = lab.apply(DESIRED)
    assert report["links_up"] == [CALI] and len(report["added"]) == 2
    assert report["sysctl_writes"] == 0
    assert _ping(lab, HOST_V4).returncode == 0
    assert time.monotonic() - start < 10
