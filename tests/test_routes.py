"""Routes and veth settings: the pure renderer, and the applier against real kernels.

The applier runs inside a throw-away host network namespace (``ip netns exec`` a Python
snippet), built with tests/netns.py: an uplink to an "outside" namespace gives the host its
default route (proxy ARP answers for 169.254.1.1 only when the host has a route to it), and a
container namespace sits behind a ``cali…`` veth. Needs root; conntrack is used when installed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass

import pytest

from calico_lib.model import Endpoint
from calico_lib.render.routes import RTPROT_CALICO, RouteSpec, desired_routes
from calico_lib.snapshot import Snapshot
from tests.netns import HOST_VETH_MAC, REPO_ROOT, Container, Host, Lab

CONTAINER_V4 = "10.65.0.5"
CONTAINER_V6 = "fd00:65::5"


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
        _endpoint("d", "h2", "caliddddddddddd", ["10.65.1.1"], ["fd00::1"]),
    ))
    assert desired_routes(snap) == [
        RouteSpec("10.65.0.2/32", "calibbbbbbbbbbb"),
        RouteSpec("10.65.0.3/32", "caliaaaaaaaaaaa"),
        RouteSpec("10.65.0.9/32", "calibbbbbbbbbbb"),
        RouteSpec("fd00::9/128", "calibbbbbbbbbbb"),
    ]
    assert desired_routes(Snapshot(hostname="h3", endpoints=snap.endpoints)) == []
    assert RTPROT_CALICO == 80


def test_local_blocks_are_blackholed_below_container_routes() -> None:
    snap = Snapshot(hostname="h1", blocks=("10.65.0.0/26", "fd00::/122"), endpoints=(
        _endpoint("a", "h1", "caliaaaaaaaaaaa", ["10.65.0.3"], ["fd00::3"]),))
    assert desired_routes(snap) == [
        RouteSpec("10.65.0.0/26"), RouteSpec("10.65.0.3/32", "caliaaaaaaaaaaa"),
        RouteSpec("fd00::/122"), RouteSpec("fd00::3/128", "caliaaaaaaaaaaa")]
    assert RouteSpec("10.65.0.0/26").blackhole


# --------------------------------------------------------------------------- namespaces

# Runs in the host namespace: records every netlink request that is not a read and every
# command the runner starts, so tests can prove "no writes" rather than infer it.
_APPLY = r"""
import json, sys
from calico_lib.dataplane import routes, runner
from calico_lib.render.routes import RouteSpec

netlink_writes = []
commands = []

class RecordingIPRoute(routes.IPRoute):
    # pyroute2 0.9's IPRoute has no route()/link() of its own: __getattr__ hands out
    # synchronous wrappers of AsyncIPRoute's methods
    def route(self, command, *args, **kwargs):
        if command not in ("dump", "get", "show"):
            netlink_writes.append(["route", command, str(kwargs.get("dst"))])
        return super().__getattr__("route")(command, *args, **kwargs)

    def link(self, command, *args, **kwargs):
        if command not in ("dump", "get", "show"):
            netlink_writes.append(["link", command, kwargs.get("index")])
        return super().__getattr__("link")(command, *args, **kwargs)

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


@dataclass
class Bed:
    """One host namespace (uplink, default routes) and one container behind a cali veth."""

    lab: Lab
    host: Host
    container: Container

    @property
    def h(self) -> str:
        return self.host.ns

    @property
    def cali(self) -> str:
        return self.container.interface

    @property
    def desired(self) -> list[RouteSpec]:
        return [RouteSpec(f"{CONTAINER_V4}/32", self.cali),
                RouteSpec(f"{CONTAINER_V6}/128", self.cali)]

    def ip(self, *args: str) -> str:
        return self.lab.ip(self.h, *args)

    def sysctl(self, name: str) -> str:
        return self.lab.sysctl(self.h, name)

    def routes(self, *family: str) -> list[dict]:
        """Protocol-80 routes of the host namespace's main table."""
        return json.loads(self.ip("-j", *family, "route", "show", "proto",
                                  str(RTPROT_CALICO)) or "[]")

    def ping(self, address: str, count: int = 3, wait: float = 2) -> bool:
        """From the container; a few tries as the first probe may wait for the neighbour."""
        return self.lab.ping(self.container.ns, address, count=count, wait=wait)

    def apply(self, desired: list[RouteSpec], flush_conntrack: bool = True) -> dict:
        """Run ``apply_routes`` inside the host namespace; the report plus recorded writes."""
        payload = json.dumps({"desired": [[r.dst, r.interface] for r in desired],
                              "flush": flush_conntrack})
        env = {**os.environ, "PYTHONPATH": REPO_ROOT}
        proc = subprocess.run(["ip", "netns", "exec", self.h, sys.executable, "-c", _APPLY,
                               payload], capture_output=True, text=True, env=env, timeout=30)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)


@pytest.fixture
def bed(lab: Lab) -> Bed:
    """Namespaces from the shared lab (tests/conftest.py), deleted afterwards whatever
    happens.

    The host end of the container's veth is set down again (with Calico's fixed MAC, so its
    link-local is fe80::ecee:eeff:feee:eeee once up): the applier has to set it up.
    """
    host = lab.host("h")
    container = lab.container(host, "c", ipv4=[CONTAINER_V4], ipv6=[CONTAINER_V6])
    lab.ip(host.ns, "link", "set", container.interface, "down")
    return Bed(lab, host, container)


def _dsts(routes: list[dict]) -> dict[str, str]:
    """dst -> its device, or "blackhole" (which IPv6 also shows on dev lo)."""
    return {r["dst"]: r["type"] if r.get("type") == "blackhole" else r.get("dev", "")
            for r in routes}


# --------------------------------------------------------------------------- the applier

@pytest.mark.netns
def test_unused_address_of_a_local_block_is_dropped_not_routed_on(bed: Bed) -> None:
    """The ARCHITECTURE decision: a local block is blackholed below its /32 routes, so a
    packet to an address nobody holds stops here instead of following the default route
    (out of the uplink, where a top-of-rack router would send it straight back)."""
    block4, block6 = "10.65.0.0/26", "fd00:65::/122"
    unused = "10.65.0.6"  # in the block, held by no container; the outside answers for it
    bed.lab.ip(bed.lab.outside, "addr", "add", f"{unused}/32", "dev", "br0")

    def reaches_outside() -> bool:
        sink = bed.lab.echo_sink(bed.lab.outside)
        bed.lab.ping(bed.container.ns, unused, count=1, wait=1)
        return CONTAINER_V4 in sink.stop()

    bed.apply(bed.desired)
    assert reaches_outside()  # without the blackhole: out of the default route
    report = bed.apply([*bed.desired, RouteSpec(block4), RouteSpec(block6)])
    assert set(report["added"]) >= {block4, block6}
    assert _dsts(bed.routes())[block4] == "blackhole"
    assert _dsts(bed.routes("-6"))[block6] == "blackhole"
    assert not reaches_outside()
    assert bed.lab.ping(bed.h, CONTAINER_V4)  # the container is still reached by its /32
    assert bed.apply([*bed.desired, RouteSpec(block4), RouteSpec(block6)])["changed"] is False
    # the block's affinity goes: so does its blackhole
    assert set(bed.apply(bed.desired)["removed"]) == {block4, block6}
    assert reaches_outside()

@pytest.mark.netns
def test_apply_installs_routes_and_settings_then_changes_nothing(bed: Bed) -> None:
    first = bed.apply(bed.desired)
    assert first["changed"] is True
    assert first["added"] == [f"{CONTAINER_V4}/32", f"{CONTAINER_V6}/128"]
    assert first["removed"] == [] and first["missing_interfaces"] == []
    assert first["links_up"] == [bed.cali]
    # the three per-veth settings differ in a new netns; ip_forward and IPv6 forwarding
    # too, unless the machine's own settings were inherited (IPv4 copies init_net's when
    # net.core.devconf_inherit_init_net is 0, e.g. once a dockerd turned forwarding on)
    assert 3 <= first["sysctl_writes"] <= 5
    assert _dsts(bed.routes()) == {CONTAINER_V4: bed.cali}
    assert _dsts(bed.routes("-6")) == {CONTAINER_V6: bed.cali}
    # (`ip route show proto 80` leaves the protocol out of its output: ask for the dst)
    [v4] = json.loads(bed.ip("-j", "route", "show", CONTAINER_V4))
    assert v4["scope"] == "link" and v4["protocol"] == str(RTPROT_CALICO)
    assert bed.sysctl("net/ipv4/ip_forward") == "1"
    assert bed.sysctl("net/ipv6/conf/all/forwarding") == "1"
    assert bed.sysctl(f"net/ipv4/conf/{bed.cali}/proxy_arp") == "1"
    assert bed.sysctl(f"net/ipv4/neigh/{bed.cali}/proxy_delay") == "0"
    assert bed.sysctl(f"net/ipv6/conf/{bed.cali}/accept_ra") == "0"
    assert "UP" in json.loads(bed.ip("-j", "link", "show", bed.cali))[0]["flags"]

    second = bed.apply(bed.desired)
    assert second["changed"] is False, second
    assert second["sysctl_writes"] == 0
    assert second["netlink_writes"] == [] and second["commands"] == []
    assert second["added"] == second["removed"] == second["links_up"] == []
    assert second["summary"].startswith("no change")


@pytest.mark.netns
def test_container_reaches_host_through_proxy_arp_and_link_local(bed: Bed) -> None:
    assert not bed.ping(bed.host.ipv4, count=1, wait=0.5)  # nothing answers for the gateway yet
    # that failed ARP leaves an INCOMPLETE entry that drops packets for ~3 s: start afresh
    bed.lab.ip(bed.container.ns, "neigh", "flush", "dev", "eth0")
    bed.apply(bed.desired)
    assert bed.ping(bed.host.ipv4)
    assert bed.ping(bed.host.ipv6)
    # the gateway was answered by the host veth's MAC (proxy ARP), not by anything else
    neigh = json.loads(bed.lab.ip(bed.container.ns, "-j", "neigh", "show", "169.254.1.1"))
    assert neigh and neigh[0]["lladdr"] == HOST_VETH_MAC


@pytest.mark.netns
def test_removed_endpoint_loses_routes_and_conntrack_entries(bed: Bed) -> None:
    bed.apply(bed.desired)
    have_conntrack = shutil.which("conntrack") is not None
    if have_conntrack:  # a tracked flow from the old container, and one to it
        bed.lab.exec(bed.h, "conntrack", "-I", "-s", CONTAINER_V4, "-d", bed.host.ipv4,
                     "-p", "icmp", "-t", "60", "--icmp-type", "8", "--icmp-code", "0",
                     "--icmp-id", "77")
        bed.lab.exec(bed.h, "conntrack", "-I", "-s", bed.host.ipv6, "-d", CONTAINER_V6,
                     "-p", "icmpv6", "-t", "60", "--icmpv6-type", "128", "--icmpv6-code", "0",
                     "--icmpv6-id", "78")

    report = bed.apply([])
    assert report["changed"] is True
    assert report["removed"] == [f"{CONTAINER_V4}/32", f"{CONTAINER_V6}/128"]
    assert bed.routes() == [] and bed.routes("-6") == []
    if have_conntrack:
        assert report["conntrack_flushed"] == [CONTAINER_V4, CONTAINER_V6]
        assert ["conntrack", "-D", "-s", CONTAINER_V4] in report["commands"]
        assert ["conntrack", "-D", "-d", CONTAINER_V4] in report["commands"]
        assert ["conntrack", "-D", "-f", "ipv6", "-s", CONTAINER_V6] in report["commands"]
        assert ["conntrack", "-D", "-f", "ipv6", "-d", CONTAINER_V6] in report["commands"]
        for family in ("ipv4", "ipv6"):
            left = bed.lab.exec(bed.h, "conntrack", "-L", "-f", family).stdout
            assert CONTAINER_V4 not in left and CONTAINER_V6 not in left, left

    again = bed.apply([])
    assert again["changed"] is False and again["netlink_writes"] == []
    assert again["commands"] == []


@pytest.mark.netns
def test_no_conntrack_flush_when_not_asked(bed: Bed) -> None:
    bed.apply(bed.desired)
    report = bed.apply([], flush_conntrack=False)
    assert len(report["removed"]) == 2
    assert report["conntrack_flushed"] == [] and report["commands"] == []


@pytest.mark.netns
def test_stale_protocol_80_routes_are_cleaned_up_and_others_kept(bed: Bed) -> None:
    up = bed.host.uplink
    # an endpoint whose veth is gone: the kernel drops its routes together with the link
    bed.ip("link", "add", "calideadbeef000", "type", "veth", "peer", "name", "dead1")
    bed.ip("link", "set", "calideadbeef000", "up")
    bed.ip("route", "add", "10.65.0.77/32", "dev", "calideadbeef000", "proto", "80")
    bed.ip("link", "del", "calideadbeef000")
    # left behind on interfaces that still exist, or with no interface at all
    bed.ip("route", "add", "10.65.0.9/32", "dev", up, "proto", "80", "scope", "link")
    bed.ip("-6", "route", "add", "fd00:65::9/128", "dev", up, "proto", "80")
    bed.ip("route", "add", "blackhole", "10.65.1.0/26", "proto", "80")
    bed.ip("-6", "route", "add", "blackhole", "fd00:66::/122", "proto", "80")
    # not ours: never touched
    bed.ip("route", "add", "10.99.0.0/24", "dev", up, "proto", "static")
    bed.ip("route", "add", "10.65.0.10/32", "dev", up, "proto", "81")

    report = bed.apply(bed.desired)
    assert report["removed"] == ["10.65.0.9/32", "10.65.1.0/26", "fd00:65::9/128",
                                 "fd00:66::/122"]
    assert _dsts(bed.routes()) == {CONTAINER_V4: bed.cali}
    assert _dsts(bed.routes("-6")) == {CONTAINER_V6: bed.cali}
    others = {r["dst"] for r in json.loads(bed.ip("-j", "route", "show"))}
    assert {"default", "10.99.0.0/24", "10.65.0.10"} <= others
    if shutil.which("conntrack"):  # only whole addresses are flushed
        assert report["conntrack_flushed"] == ["10.65.0.9", "fd00:65::9"]

    assert bed.apply(bed.desired)["changed"] is False


@pytest.mark.netns
def test_route_to_same_destination_elsewhere_is_replaced(bed: Bed) -> None:
    up = bed.host.uplink
    bed.ip("route", "add", f"{CONTAINER_V4}/32", "dev", up, "proto", "static")
    bed.ip("-6", "route", "add", f"{CONTAINER_V6}/128", "dev", up, "proto", "static")
    bed.ip("-6", "route", "add", f"{CONTAINER_V6}/128", "dev", up, "metric", "100")
    # ours already, but through the wrong interface
    bed.ip("route", "add", "10.65.0.6/32", "dev", up, "proto", "80", "scope", "link")
    desired = [*bed.desired, RouteSpec("10.65.0.6/32", bed.cali)]

    report = bed.apply(desired)
    assert report["added"] == ["10.65.0.5/32", "10.65.0.6/32", f"{CONTAINER_V6}/128"]
    assert report["removed"] == []
    v4 = json.loads(bed.ip("-j", "route", "show", "table", "main"))
    assert sorted((r["dst"], r.get("dev"), r.get("protocol")) for r in v4
                  if r["dst"].startswith("10.65.")) == [
        (CONTAINER_V4, bed.cali, "80"), ("10.65.0.6", bed.cali, "80")]
    v6 = json.loads(bed.ip("-6", "-j", "route", "show", CONTAINER_V6))
    assert [(r.get("dev"), r.get("protocol")) for r in v6] == [(bed.cali, "80")]
    assert bed.ping(bed.host.ipv4)

    assert bed.apply(desired)["changed"] is False


@pytest.mark.netns
def test_missing_interface_is_reported_not_raised(bed: Bed) -> None:
    desired = [*bed.desired, RouteSpec("10.65.0.50/32", "cali99999999999"),
               RouteSpec("fd00:65::50/128", "cali99999999999")]
    report = bed.apply(desired)
    assert report["missing_interfaces"] == ["cali99999999999"]
    assert report["added"] == [f"{CONTAINER_V4}/32", f"{CONTAINER_V6}/128"]
    assert _dsts(bed.routes()) == {CONTAINER_V4: bed.cali}
    assert "missing interface(s): cali99999999999" in report["summary"]

    again = bed.apply(desired)
    assert again["changed"] is False and again["netlink_writes"] == []
    assert again["missing_interfaces"] == ["cali99999999999"]

    # the container appears: the next reconcile adds its routes
    bed.ip("link", "add", "cali99999999999", "type", "veth", "peer", "name", "x1")
    later = bed.apply(desired)
    assert later["missing_interfaces"] == []
    assert later["added"] == ["10.65.0.50/32", "fd00:65::50/128"]
    assert later["links_up"] == ["cali99999999999"]


@pytest.mark.netns
def test_routes_come_back_after_the_link_went_down(bed: Bed) -> None:
    bed.apply(bed.desired)
    bed.ip("link", "set", bed.cali, "down")  # the kernel drops the routes of a down link
    assert bed.routes() == [] and bed.routes("-6") == []
    report = bed.apply(bed.desired)
    assert report["links_up"] == [bed.cali] and len(report["added"]) == 2
    assert report["sysctl_writes"] == 0
    assert bed.ping(bed.host.ipv4)


def test_a_block_holding_a_hosts_address_is_never_blackholed() -> None:
    """Failsafe: a pool drawn over the hosts' own network by mistake must not cut a host
    off from the other hosts (their etcd, their BGP sessions, SSH)."""
    from calico_lib.model import BGPPeer, Node

    snap = Snapshot(hostname="h1", blocks=("192.0.2.0/26", "192.0.2.64/26", "10.65.0.0/26"),
                    nodes={"h1": Node("h1", ipv4="192.0.2.11"),
                           "h2": Node("h2", ipv4="192.0.2.12")},
                    peers=(BGPPeer("192.0.2.70", 65000),))
    assert desired_routes(snap) == [RouteSpec("10.65.0.0/26")]
