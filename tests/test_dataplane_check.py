"""The dataplane module's check mode predicts routes, links and sysctls, in a real network
namespace on an SQLite datastore: for each way the kernel can differ from what the datastore
renders (a host-wide sysctl, a container interface's sysctl, a missing, stale or misdirected
route, a missing blackhole, a link set down, a missing VXLAN tunnel route), check mode says
changed and names the write, and leaves the kernel as it was; the real run then changes it,
exactly as predicted; check mode afterwards says no change. Nothing differing: no change.

Runs ``plugins/modules/dataplane.py``'s ``main()`` in this process (the thread inside the
namespace), catching ``exit_json`` / ``fail_json``. The pure planner
(``route_plan.plan_routes``) and check mode against the in-memory kernel
(tests/fake_kernel.py) are tested first, without root.
"""

from __future__ import annotations

import json
import socket
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import calico_lib
from ansible_collections.calico.docker.plugins.modules import dataplane
from ansible_collections.calico.docker.tests.unit.plugins.modules.helpers import (  # noqa: F401
    module_exits,
    no_ambient_settings,
    ok,
)
from calico_lib import Endpoint, IPPool, Node, Profile
from calico_lib.dataplane.route_plan import (
    RTN_BLACKHOLE,
    KernelRoute,
    LinkState,
    RouteState,
    plan_routes,
)
from calico_lib.dataplane.runner import run
from calico_lib.reconcile import Dataplane
from calico_lib.render.routes import RouteSpec
from calico_lib.render.tunnel import DEVICE, RTPROT_TUNNEL
from calico_lib.snapshot import Snapshot
from tests import netns
from tests.fake_kernel import FakeKernel

HOST = "host-1"
POOL = "10.66.0.0/16"
ADDRESS = "10.66.0.1"
BLOCK = "10.66.0.0/26"  # the block ADDRESS's assignment makes affine to HOST
#: in the block, held by nobody
STALE = "10.66.0.9/32"
#: the other host of the tunnel scenario, and its block
OTHER, OTHER_BLOCK = "host-2", "10.66.1.0/26"
#: every sysctl the route applier keeps, by /proc/sys path (the interface's: {})
SYSCTLS = ("net/ipv4/ip_forward", "net/ipv6/conf/all/forwarding",
           "net/ipv4/conf/{}/proxy_arp", "net/ipv4/neigh/{}/proxy_delay",
           "net/ipv6/conf/{}/accept_ra")


# ------------------------------------------------------------------------ pure: the planner

CALI = "cali0000000000a"
V4 = socket.AF_INET


def _state(**changes: Any) -> RouteState:
    """A kernel holding exactly what [ADDRESS via CALI, blackhole BLOCK] needs."""
    fields: dict[str, Any] = {
        "routes": {f"{ADDRESS}/32": [KernelRoute(V4, f"{ADDRESS}/32", oif=7)],
                   BLOCK: [KernelRoute(V4, BLOCK, type=RTN_BLACKHOLE, scope=0)]},
        "links": {CALI: LinkState(7)},
        "sysctls": {"net/ipv4/ip_forward": "1", "net/ipv6/conf/all/forwarding": "1",
                    f"net/ipv4/conf/{CALI}/proxy_arp": "1",
                    f"net/ipv4/neigh/{CALI}/proxy_delay": "0",
                    f"net/ipv6/conf/{CALI}/accept_ra": "0"},
        "names": {7: CALI, 2: "eth0"}}
    fields.update(changes)
    return RouteState(**fields)


DESIRED = [RouteSpec(f"{ADDRESS}/32", CALI), RouteSpec(BLOCK)]


def test_plan_of_a_kernel_in_step_is_empty() -> None:
    report = plan_routes(DESIRED, _state()).report()
    assert not report.changed and report.details == []


def test_plan_names_each_write() -> None:
    state = _state()
    state.sysctls["net/ipv4/ip_forward"] = "0"
    state.sysctls[f"net/ipv6/conf/{CALI}/accept_ra"] = None  # IPv6 off: not written
    state.links[CALI] = LinkState(7, up=False)
    del state.routes[BLOCK]
    state.routes[f"{ADDRESS}/32"].append(KernelRoute(V4, f"{ADDRESS}/32", proto=3, oif=2,
                                                     scope=0, priority=50))
    state.routes[STALE] = [KernelRoute(V4, STALE, oif=7)]
    state.routes["10.9.0.0/24"] = [KernelRoute(V4, "10.9.0.0/24", proto=3, oif=2)]
    plan = plan_routes([*DESIRED, RouteSpec("10.66.0.2/32", "cali0000000000b")], state)
    report = plan.report()
    assert report.sysctls == ["net.ipv4.ip_forward=1"]
    assert report.links_up == [CALI]
    assert report.added == [BLOCK, f"{ADDRESS}/32"]  # the second path goes
    assert report.removed == [STALE]  # a route of another protocol is not ours
    assert report.missing_interfaces == ["cali0000000000b"]
    assert report.details == [
        "sysctl -w net.ipv4.ip_forward=1  # was 0", f"ip link set {CALI} up",
        f"ip route replace blackhole {BLOCK} proto 80",
        f"ip route del {ADDRESS}/32 dev eth0 proto 3 metric 50",
        f"ip route del {STALE} dev {CALI} proto 80"]


def test_route_through_another_interface_is_replaced() -> None:
    state = _state()
    state.routes[f"{ADDRESS}/32"] = [KernelRoute(V4, f"{ADDRESS}/32", oif=2)]
    plan = plan_routes(DESIRED, state)
    assert plan.replace == [(f"{ADDRESS}/32", CALI, 7)] and plan.delete_others == []


def fake_snapshot() -> Snapshot:
    return Snapshot(hostname="h", revision=1, pools=(IPPool(POOL),), blocks=(BLOCK,),
                    profiles={"web": Profile.with_default_rules("web")},
                    endpoints=(Endpoint("e1", "h", CALI, ipv4_nets=[ADDRESS],
                                        profiles=["web"]),))


def test_check_mode_predicts_routes_and_sysctls_on_the_fake_kernel() -> None:
    """The fake reads and plans like the real handler: check mode predicts, writes
    nothing, and the real apply reports the prediction."""
    kernel = FakeKernel()
    kernel.routes.sysctls.update({"net/ipv4/ip_forward": "1",
                                  f"net/ipv4/conf/{CALI}/proxy_arp": "1"})
    Dataplane(kernel=kernel).apply(fake_snapshot())
    kernel.routes.sysctls["net/ipv4/ip_forward"] = "0"
    del kernel.routes.routes[f"{ADDRESS}/32"]
    kernel.routes.routes[STALE] = RouteSpec(STALE, CALI)
    before = (dict(kernel.routes.routes), dict(kernel.routes.sysctls))
    kernel.calls.clear()
    check = Dataplane(kernel=kernel).apply(fake_snapshot(), check_mode=True)
    assert kernel.writes() == [] and "routes: dump" in kernel.calls
    assert (dict(kernel.routes.routes), dict(kernel.routes.sysctls)) == before
    assert check.changed and check.routes is not None
    assert check.routes.sysctls == ["net.ipv4.ip_forward=1"]
    assert check.routes.added == [f"{ADDRESS}/32"] and check.routes.removed == [STALE]
    real = Dataplane(kernel=kernel).apply(fake_snapshot())
    assert real.routes is not None and real.routes.to_dict() == check.routes.to_dict()
    assert kernel.routes.sysctls["net/ipv4/ip_forward"] == "1"
    assert not Dataplane(kernel=kernel).apply(fake_snapshot(), check_mode=True).changed


# ------------------------------------------------------------------------ the module


def module(args: dict[str, Any], check: bool) -> dict[str, Any]:
    """The dataplane module's result (it must succeed), with diff mode on."""
    return ok(dataplane, args, check=check)


# ------------------------------------------------------------------------ the kernel


def sysctl(name: str) -> str:
    """/proc/sys/``name`` of the namespace this thread is in."""
    return Path("/proc/sys", name).read_text().strip()


def set_sysctl(name: str, value: str) -> None:
    Path("/proc/sys", name).write_text(value + "\n")


def ip(*args: str) -> str:
    return run(["ip", *args])


def routes() -> set[str]:
    """The main table's routes (both families) as ip shows them, one line each; IPv6
    link-local and multicast ones left out (the kernel's own, coming back with their link
    a moment later)."""
    lines = set()
    for family in ("-4", "-6"):
        lines |= {line.strip() for line in
                  ip(family, "route", "show", "table", "main").splitlines()
                  if line.strip() and not line.startswith(("fe80:", "multicast"))}
    return lines


def ours(lines: set[str] | frozenset[str]) -> set[str]:
    """The routes of ``lines`` with protocol 80 (containers, blocks) or the tunnel's."""
    return {line for line in lines
            if f"proto {RTPROT_TUNNEL}" in line or " proto 80" in line}


def links() -> dict[str, bool]:
    """Each link's name and whether it is up (administratively)."""
    return {link["ifname"]: "UP" in link["flags"] for link in json.loads(ip("-j", "link"))}


@dataclass(frozen=True)
class KernelState:
    routes: frozenset[str]
    sysctls: tuple[tuple[str, str], ...]
    links: tuple[tuple[str, bool], ...]
    rules: str


def kernel_state(cali: str) -> KernelState:
    names = [s.format(cali) for s in SYSCTLS]
    rules = run(["iptables-save"]) + run(["ip6tables-save"]) + run(["ipset", "save"])
    return KernelState(frozenset(routes()), tuple((n, sysctl(n)) for n in names),
                       tuple(sorted(links().items())),
                       "\n".join(line for line in rules.splitlines()
                                 if "cali" in line and not line.startswith("#")))


def cidr(line: str) -> str:
    """The destination of a route as ip shows it, as a CIDR (ip leaves out /32)."""
    dst = line.split()[1] if line.startswith(("blackhole", "unreachable")) else line.split()[0]
    return dst if "/" in dst else f"{dst}/{128 if ':' in dst else 32}"


def dotted(name: str) -> str:
    return name.replace("/", ".")


# ------------------------------------------------------------------------ the host


@dataclass
class Bed:
    ns: str
    cali: str
    args: dict[str, Any]


@pytest.fixture
def bed(tmp_path: Path) -> Iterator[Bed]:
    """A namespace this thread runs in, with one container interface (a cali veth, both
    ends here and up) and an uplink holding this host's address; a datastore with a pool,
    a profile and one endpoint on the veth (its address assigned: its block is affine
    here); the dataplane applied once."""
    netns.require()
    url = "sqlite:///" + str((tmp_path / "calico.db").resolve())
    cali = "cali" + uuid.uuid4().hex[:11]
    with netns.namespace("calt-dc") as ns, netns.inside(ns):
        ip("link", "set", "lo", "up")
        ip("link", "add", cali, "type", "veth", "peer", "name", "peer0")
        ip("link", "set", "peer0", "up")
        ip("link", "set", cali, "up")
        ip("link", "add", "uplink0", "type", "veth", "peer", "name", "uplink1")
        ip("addr", "add", "192.0.2.1/24", "dev", "uplink0")
        ip("link", "set", "uplink1", "up")
        ip("link", "set", "uplink0", "up")
        with calico_lib.connect(url) as c:
            c.add_pool(IPPool(POOL))
            c.add_profile(Profile.with_default_rules("web"))
            c.add_node(Node(HOST, "192.0.2.1", ipv4_subnet="192.0.2.0/24"))
            c.add_endpoint(Endpoint("e1", HOST, cali, ipv4_nets=[ADDRESS], profiles=["web"]),
                           assign_addresses=True)
        args = {"hostname": HOST, "lock_file": str(tmp_path / "dp.lock"), "datastore": url}
        first = module(args, check=False)
        assert first["changed"] is True
        assert module(args, check=True)["changed"] is False
        yield Bed(ns, cali, args)


def encapsulate(bed: Bed) -> None:
    """The pool encapsulates (VXLAN always) and another host holds a block of it: a
    tunnel route to that block, applied once."""
    with calico_lib.connect(bed.args["datastore"]) as c:
        c.update_pool(POOL, vxlan_mode="always")
        c.add_node(Node(OTHER, "192.0.2.2", ipv4_subnet="192.0.2.0/24",
                        ipv4_vxlan_tunnel="10.66.1.1"))
        c.add_endpoint(Endpoint("e2", OTHER, "cali00000000e2", ipv4_nets=["10.66.1.5"],
                                profiles=["web"]), assign_addresses=True)
    assert module(bed.args, check=False)["changed"] is True
    assert any(line.startswith(f"{OTHER_BLOCK} via 10.66.1.1 dev {DEVICE}")
               for line in ours(routes())), routes()


# ------------------------------------------------------------------------ the scenarios


@dataclass
class Scenario:
    name: str
    #: makes the kernel differ (the bed as argument)
    perturb: Callable[[Bed], None]
    #: what check mode must predict in ``routes`` (the bed as argument): key -> value
    expect: Callable[[Bed], dict[str, Any]]
    #: text the diff must hold (the bed as argument)
    named: Callable[[Bed], str]
    setup: Callable[[Bed], None] = lambda bed: None
    #: what check mode must predict in ``tunnel``
    tunnel: dict[str, Any] | None = None


def _del(*args: str) -> Callable[[Bed], None]:
    return lambda bed: ip("route", "del", *(a.format(cali=bed.cali) for a in args))


SCENARIOS = [
    Scenario("ip_forward off", lambda bed: set_sysctl("net/ipv4/ip_forward", "0"),
             lambda bed: {"sysctls": ["net.ipv4.ip_forward=1"], "added": [], "removed": []},
             lambda bed: "net.ipv4.ip_forward=1"),
    Scenario("ipv6 forwarding off",
             lambda bed: set_sysctl("net/ipv6/conf/all/forwarding", "0"),
             lambda bed: {"sysctls": ["net.ipv6.conf.all.forwarding=1"]},
             lambda bed: "net.ipv6.conf.all.forwarding=1"),
    Scenario("proxy arp off on the container interface",
             lambda bed: set_sysctl(f"net/ipv4/conf/{bed.cali}/proxy_arp", "0"),
             lambda bed: {"sysctls": [f"net.ipv4.conf.{bed.cali}.proxy_arp=1"],
                          "added": []},
             lambda bed: f"net.ipv4.conf.{bed.cali}.proxy_arp=1"),
    Scenario("proxy delay on the container interface",
             lambda bed: set_sysctl(f"net/ipv4/neigh/{bed.cali}/proxy_delay", "80"),
             lambda bed: {"sysctls": [f"net.ipv4.neigh.{bed.cali}.proxy_delay=0"]},
             lambda bed: f"net.ipv4.neigh.{bed.cali}.proxy_delay=0"),
    Scenario("container route missing", _del(f"{ADDRESS}/32", "dev", "{cali}"),
             lambda bed: {"added": [f"{ADDRESS}/32"], "removed": [], "sysctls": []},
             lambda bed: f"ip route replace {ADDRESS}/32 dev {bed.cali}"),
    Scenario("stale container route",
             lambda bed: ip("route", "add", STALE, "dev", bed.cali, "proto", "80"),
             lambda bed: {"added": [], "removed": [STALE]},
             lambda bed: f"ip route del {STALE} dev {bed.cali} proto 80"),
    Scenario("container route through another interface",
             lambda bed: ip("route", "replace", f"{ADDRESS}/32", "dev", "uplink0", "proto",
                            "80"),
             lambda bed: {"added": [f"{ADDRESS}/32"], "removed": []},
             lambda bed: f"ip route replace {ADDRESS}/32 dev {bed.cali}"),
    Scenario("second path to the container",
             lambda bed: ip("route", "add", f"{ADDRESS}/32", "dev", "uplink0", "metric",
                            "50"),
             lambda bed: {"added": [f"{ADDRESS}/32"], "removed": []},
             lambda bed: f"ip route del {ADDRESS}/32 dev uplink0"),
    Scenario("block blackhole missing", _del("blackhole", BLOCK),
             lambda bed: {"added": [BLOCK], "removed": []},
             lambda bed: f"ip route replace blackhole {BLOCK}"),
    Scenario("container interface down",
             lambda bed: ip("link", "set", bed.cali, "down"),
             lambda bed: {"links_up": [bed.cali], "added": [f"{ADDRESS}/32"]},
             lambda bed: f"ip link set {bed.cali} up"),
    Scenario("tunnel route missing", _del(OTHER_BLOCK, "proto", str(RTPROT_TUNNEL)),
             lambda bed: {"added": [], "removed": [], "sysctls": []},
             lambda bed: f"tunnel route + {OTHER_BLOCK}", setup=encapsulate,
             tunnel={"added": [OTHER_BLOCK], "removed": [], "device": ""}),
]

#: what check mode and the real run report alike (conntrack flushes are the real run's)
PREDICTED = ("added", "removed", "missing_interfaces", "sysctl_writes", "sysctls",
             "links_up", "changed")


@pytest.mark.netns
@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_check_mode_predicts_what_the_real_run_changes(bed: Bed, scenario: Scenario) -> None:
    scenario.setup(bed)
    before = kernel_state(bed.cali)
    scenario.perturb(bed)
    differing = kernel_state(bed.cali)
    assert differing != before  # the scenario did make the kernel differ

    check = module(bed.args, check=True)
    assert check["changed"] is True, check
    for key, value in scenario.expect(bed).items():
        assert check["routes"][key] == value, (key, check["routes"])
    if scenario.tunnel is not None:
        for key, value in scenario.tunnel.items():
            assert check["tunnel"][key] == value, (key, check["tunnel"])
    prepared = check["diff"]["prepared"]
    assert scenario.named(bed) in prepared, prepared
    assert "would be applied" in prepared and "would change" in check["summary"]
    assert check["tables"] == [] and check["ipsets"] == {
        "created": [], "updated": [], "destroyed": []}
    assert kernel_state(bed.cali) == differing  # check mode wrote nothing

    real = module(bed.args, check=False)
    assert real["changed"] is True, real
    assert {k: real["routes"][k] for k in PREDICTED} == \
        {k: check["routes"][k] for k in PREDICTED}
    assert real["tunnel"] == check["tunnel"]
    assert real["diff"]["prepared"] == prepared.replace("would be applied", "applied")
    after = kernel_state(bed.cali)
    # the kernel is back where the dataplane had put it, and what changed is what check
    # mode named
    assert after == before
    changed_sysctls = sorted(f"{dotted(n)}={v}" for (n, v), (_, old)
                             in zip(after.sysctls, differing.sysctls, strict=True)
                             if v != old)
    assert changed_sysctls == sorted(check["routes"]["sysctls"])
    changed_routes = {cidr(line) for line in after.routes ^ differing.routes}
    predicted = {*check["routes"]["added"], *check["routes"]["removed"],
                 *check["tunnel"]["added"], *check["tunnel"]["removed"]}
    # a misdirected or second route changes a line of the same destination
    assert changed_routes <= predicted | {f"{ADDRESS}/32"} and \
        predicted <= changed_routes | {f"{ADDRESS}/32"}
    assert [name for name, up in after.links if up and not dict(differing.links)[name]] \
        == check["routes"]["links_up"]

    again = module(bed.args, check=True)
    assert again["changed"] is False, again
    assert again["diff"]["prepared"] == ""
    assert again["routes"]["changed"] is False and again["routes"]["sysctls"] == []


@pytest.mark.netns
def test_nothing_differs_check_mode_says_no_change(bed: Bed) -> None:
    before = kernel_state(bed.cali)
    assert {cidr(line) for line in ours(before.routes)} == {f"{ADDRESS}/32", BLOCK}
    assert dict(before.sysctls)["net/ipv4/ip_forward"] == "1"
    out = module(bed.args, check=True)
    assert out["changed"] is False
    assert out["diff"]["prepared"] == ""
    assert out["routes"] == {"added": [], "removed": [], "missing_interfaces": [],
                             "sysctl_writes": 0, "sysctls": [], "conntrack_flushed": [],
                             "links_up": [], "changed": False}
    assert out["tunnel"]["changed"] is False
    assert "no change" in out["summary"]
    assert kernel_state(bed.cali) == before


@pytest.mark.netns
def test_first_run_predicted_in_full(tmp_path: Path) -> None:
    """A host the dataplane never ran on: check mode names the forwarding sysctls, the
    interface's settings, its route and its block's blackhole; the real run does just
    that."""
    netns.require()
    url = "sqlite:///" + str((tmp_path / "calico.db").resolve())
    cali = "cali" + uuid.uuid4().hex[:11]
    with netns.namespace("calt-dc") as ns, netns.inside(ns):
        assert ns
        ip("link", "add", cali, "type", "veth", "peer", "name", "peer0")
        ip("link", "set", "peer0", "up")
        with calico_lib.connect(url) as c:
            c.add_pool(IPPool(POOL))
            c.add_profile(Profile.with_default_rules("web"))
            c.add_endpoint(Endpoint("e1", HOST, cali, ipv4_nets=[ADDRESS], profiles=["web"]),
                           assign_addresses=True)
        args = {"hostname": HOST, "lock_file": str(tmp_path / "dp.lock"), "datastore": url}
        before = kernel_state(cali)
        check = module(args, check=True)
        assert kernel_state(cali) == before
        assert check["changed"] is True
        predicted = check["routes"]
        assert predicted["added"] == [BLOCK, f"{ADDRESS}/32"]
        assert predicted["links_up"] == [cali]
        # what differs here: a new namespace's defaults depend on the kernel
        wanted = ("1", "1", "1", "0", "0")
        differing = [f"{dotted(name)}={value}" for (name, now), value
                     in zip(before.sysctls, wanted, strict=True) if now != value]
        assert f"net.ipv4.conf.{cali}.proxy_arp=1" in differing
        assert predicted["sysctls"] == differing
        for line in (*differing, f"ip link set {cali} up",
                     f"ip route replace {ADDRESS}/32 dev {cali}",
                     f"ip route replace blackhole {BLOCK}"):
            assert line in check["diff"]["prepared"]
        real = module(args, check=False)
        assert {k: real["routes"][k] for k in PREDICTED} == \
            {k: predicted[k] for k in PREDICTED}
        assert module(args, check=True)["changed"] is False


@pytest.mark.netns
def test_result_keys_are_documented(bed: Bed) -> None:
    """The keys check mode now fills (routes, tunnel) are those RETURN documents."""
    import yaml

    doc = yaml.safe_load(dataplane.RETURN)
    out = module(bed.args, check=True)
    for key in ("routes", "tunnel"):
        assert out[key] is not None
        assert set(out[key]) == set(doc[key]["contains"]), key
