"""Make the kernel's routes, veth settings and sysctls match the desired host routes.

This is the only code that touches links and routes. It works as a diff: it reads the links
and the main routing table once (``read_state``), plans with the pure
``route_plan.plan_routes`` and writes only what differs, so a reconcile that changes nothing
makes no writes at all (no netlink set calls, no sysctl writes) and reports
``changed == False``. Check mode reads the same state and reports the same plan, unexecuted.

Every route we install carries protocol ``RTPROT_CALICO`` (80): that is how routes left
behind by endpoints that went away (while the agent was down, say) are found and removed,
and how BIRD picks the routes to advertise.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from ..render.routes import RTPROT_CALICO, RouteSpec
from . import conntrack
from .route_plan import (
    DEFAULT_PRIORITY,
    GLOBAL_SYSCTLS,
    MAIN_TABLE,
    RT_SCOPE_LINK,
    RTN_BLACKHOLE,
    KernelRoute,
    LinkState,
    RouteError,
    RoutePlan,
    RouteReport,
    RouteState,
    family_of,
    links_to_read,
    normalise,
    plan_routes,
    replace_line,
    sysctl_entry,
    sysctl_line,
    sysctls_to_read,
    wanted_routes,
)
from .veth import INTERFACE_SYSCTLS

__all__ = ["GLOBAL_SYSCTLS", "DEFAULT_PRIORITY", "RTN_BLACKHOLE", "RouteError",
           "RouteReport", "apply_route_changes", "apply_routes", "host_route_addresses",
           "read_routes"]

PROC_SYS = Path("/proc/sys")
IFF_UP = 0x1


# --------------------------------------------------------------------------- sysctls

def _read_sysctl(name: str) -> str | None:
    """/proc/sys/``name``, or None when it does not exist (IPv6 disabled, an interface
    that vanished mid-run)."""
    try:
        return (PROC_SYS / name).read_text().strip()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise RouteError(f"reading sysctl {name} failed: {exc.strerror or exc}") from None


def _set_sysctl(name: str, value: str) -> bool:
    """Write ``value`` to /proc/sys/``name`` only if it differs; a missing file is skipped.

    Missing files are normal: IPv6 may be disabled, or an interface may vanish mid-run.
    Returns whether a write happened.
    """
    path = PROC_SYS / name
    try:
        current = path.read_text().strip()
        if current == value:
            return False
        path.write_text(value + "\n")
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise RouteError(f"sysctl {name}={value} failed: {exc.strerror or exc}") from None
    return True


def _wrote_sysctl(report: RouteReport, name: str, value: str, was: str | None = None
                  ) -> None:
    if _set_sysctl(name, value):
        report.sysctls.append(sysctl_entry(name, value))
        report.details.append(sysctl_line(name, value, was))


# --------------------------------------------------------------------------- routes

def _route_dst(msg: Any) -> str:
    family = msg["family"]
    dst = msg.get("dst") or ("0.0.0.0" if family == socket.AF_INET else "::")
    return f"{dst}/{msg['dst_len']}"


def _route_table(msg: Any) -> int:
    # RTA_TABLE carries tables above 255; the header field then says 252 (compat)
    return msg.get_attr("RTA_TABLE") or msg["table"]


def _kernel_route(msg: Any) -> KernelRoute:
    return KernelRoute(
        family=msg["family"], dst=_route_dst(msg), table=_route_table(msg),
        proto=msg["proto"], type=msg["type"], tos=msg["tos"], scope=msg["scope"],
        oif=msg.get("oif"), gateway=msg.get("gateway"), priority=msg.get("priority"),
        multipath=bool(msg.get("multipath")))


def _main_routes(ipr: IPRoute) -> dict[str, list[KernelRoute]]:
    """Every route of the main table (IPv4 and IPv6), grouped by destination."""
    by_dst: dict[str, list[KernelRoute]] = {}
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            dump: Iterable[Any] = ipr.route("dump", family=family)
        except NetlinkError as exc:  # IPv6 compiled out or disabled
            if family == socket.AF_INET6 and exc.code in (errno.EAFNOSUPPORT,
                                                          errno.EOPNOTSUPP):
                continue
            raise RouteError(f"listing routes failed: {exc}") from None
        for msg in dump:
            if _route_table(msg) == MAIN_TABLE:
                by_dst.setdefault(_route_dst(msg), []).append(_kernel_route(msg))
    return by_dst


def _delete_route(ipr: IPRoute, route: KernelRoute) -> bool:
    """Delete exactly the dumped ``route``; False if it was gone already."""
    spec: dict[str, Any] = {
        "family": route.family, "dst": route.dst, "table": route.table,
        "proto": route.proto, "type": route.type, "tos": route.tos,
        # IPv4 matches the scope too, and pyroute2 would send "universe" (0) otherwise,
        # which a scope-link route does not match (ESRCH)
        "scope": route.scope,
    }
    for attr in ("oif", "gateway", "priority"):
        if getattr(route, attr) is not None:
            spec[attr] = getattr(route, attr)
    try:
        ipr.route("del", **spec)
    except NetlinkError as exc:
        if exc.code == errno.ESRCH:  # removed under us (its link went away, say)
            return False
        raise RouteError(f"deleting route {spec['dst']} failed: {exc}") from None
    return True


# --------------------------------------------------------------------------- read

def read_state(ipr: IPRoute, desired: Sequence[RouteSpec]) -> RouteState:
    """What the route applier reads before it plans: the main table, the desired routes'
    interfaces (the state of those whose routes are not all in place) and the sysctls it
    keeps. Reads only."""
    wanted = wanted_routes(desired)  # bad input fails before anything is read
    # names and indexes only: decoding every link's attributes costs seconds on a host
    # of a thousand containers
    present = {name: number for number, name in socket.if_nameindex()}
    routes = _main_routes(ipr)
    named = {spec.interface for spec in wanted.values() if spec.interface is not None}
    links = {name: LinkState(present[name]) for name in named if name in present}
    for name in links_to_read(wanted, present, routes):
        try:
            link = ipr.link("get", ifname=name)[0]
        except NetlinkError as exc:
            if exc.code != errno.ENODEV:
                raise RouteError(f"reading link {name} failed: {exc}") from None
            del links[name]  # gone since it was listed
            continue
        links[name] = LinkState(int(link["index"]), bool(link["flags"] & IFF_UP))
    sysctls = {name: _read_sysctl(name) for name, _ in sysctls_to_read(wanted, links)}
    return RouteState(routes, links, sysctls, {i: name for name, i in present.items()})


def read_routes(desired: Sequence[RouteSpec]) -> RouteState:
    """``read_state`` through a netlink socket of its own."""
    with IPRoute() as ipr:
        return read_state(ipr, desired)


# --------------------------------------------------------------------------- apply

def apply_routes(desired: Sequence[RouteSpec], flush_conntrack: bool = True) -> RouteReport:
    """Make the main table's protocol-80 routes exactly ``desired``; write only differences.

    Reads the kernel (``read_state``), plans (``route_plan.plan_routes``, which check mode
    reports without executing) and executes the plan. Interfaces that do not exist are
    reported, not raised: the container may still be starting, and the next reconcile
    adds its routes.
    """
    with IPRoute() as ipr:
        plan = plan_routes(desired, read_state(ipr, desired))
        report = execute_plan(ipr, plan)
    if flush_conntrack and report.removed:
        # a new container given the address must not inherit the old one's flows (and the
        # firewall's "established" accept); conntrack matches addresses only, not blocks
        report.conntrack_flushed += conntrack.flush(host_route_addresses(report.removed))
    return report


def execute_plan(ipr: IPRoute, plan: RoutePlan) -> RouteReport:
    """Make the writes of ``plan``; the report says what was written (a link or route that
    vanished meanwhile is reported missing, or not counted)."""
    report = RouteReport()
    missing = set(plan.missing)
    for name, value, was in plan.sysctls:
        _wrote_sysctl(report, name, value, was)
    for ifname, index in plan.links_up:
        try:
            ipr.link("set", index=index, state="up")
        except NetlinkError as exc:
            if exc.code != errno.ENODEV:
                raise RouteError(f"setting {ifname} up failed: {exc}") from None
            missing.add(ifname)
            continue
        report.links_up.append(ifname)
        report.details.append(f"ip link set {ifname} up")
    failed: set[str] = set()
    for dst, ifname, oif in plan.replace:
        if ifname is not None and ifname in missing:
            failed.add(dst)
            continue
        where: dict[str, Any] = ({"type": "blackhole"} if oif is None
                                 else {"oif": oif, "scope": RT_SCOPE_LINK})
        try:
            # replaces the route to dst with the same metric, whatever it points at
            ipr.route("replace", dst=dst, proto=RTPROT_CALICO, table=MAIN_TABLE, **where)
        except NetlinkError as exc:
            if exc.code != errno.ENODEV:  # the container went away just now
                raise RouteError(f"adding route {dst} dev {ifname} failed: {exc}") from None
            missing.add(ifname or "")
            failed.add(dst)
            continue
        report.added.append(dst)
        report.details.append(replace_line(dst, ifname))
    for route in plan.delete_others:  # a second path to our container's address
        if route.dst in failed:
            continue
        if _delete_route(ipr, route):
            if route.dst not in report.added:
                report.added.append(route.dst)
            report.details.append(f"ip route del {route.describe(plan.names)}")
    for route in plan.delete_stale:
        if _delete_route(ipr, route):
            if route.dst not in report.removed:
                report.removed.append(route.dst)
            report.details.append(f"ip route del {route.describe(plan.names)}")
    report.added.sort()
    report.missing_interfaces = sorted(missing)
    return report


def host_route_addresses(dsts: Iterable[str]) -> set[str]:
    """The addresses of the host routes (/32, /128) among ``dsts``; blocks are left out."""
    nets = [ipaddress.ip_network(dst) for dst in dsts]
    return {str(n.network_address) for n in nets if n.prefixlen == n.max_prefixlen}


def apply_route_changes(applied: Sequence[RouteSpec], desired: Sequence[RouteSpec]
                        ) -> RouteReport:
    """``apply_routes`` for the difference between the routes this process applied last and
    ``desired``, without listing the kernel's links or routes: the cost of a change does
    not grow with the number of containers. New routes are added (``replace``: whatever
    pointed there before is taken over), gone ones deleted; an interface that does not
    exist yet is reported as missing (the route is tried again next time). The flows of
    removed addresses are the caller's to flush (``host_route_addresses``)."""
    report = RouteReport()
    before, after = set(applied), set(desired)
    with IPRoute() as ipr:
        interfaces: dict[str, int | None] = {}
        for spec in sorted(after - before):
            dst = normalise(spec.dst)
            if spec.interface is None:
                where: dict[str, Any] = {"type": "blackhole"}
            else:
                if spec.interface not in interfaces:
                    interfaces[spec.interface] = _link_ready(ipr, spec.interface, report)
                oif = interfaces[spec.interface]
                if oif is None:
                    continue
                where = {"oif": oif, "scope": RT_SCOPE_LINK}
            try:
                ipr.route("replace", dst=dst, proto=RTPROT_CALICO, table=MAIN_TABLE, **where)
            except NetlinkError as exc:
                if exc.code != errno.ENODEV:
                    raise RouteError(f"adding route {dst} dev {spec.interface} failed: "
                                     f"{exc}") from None
                report.missing_interfaces.append(spec.interface or "")
                continue
            report.added.append(dst)
            report.details.append(replace_line(dst, spec.interface))
        for spec in sorted(before - after):
            dst = normalise(spec.dst)
            family = family_of(dst)
            try:
                ipr.route("del", family=family, dst=dst, proto=RTPROT_CALICO,
                          table=MAIN_TABLE,
                          **({"type": "blackhole"} if spec.interface is None
                             else {"scope": RT_SCOPE_LINK} if family == socket.AF_INET
                             else {}))
            except NetlinkError as exc:
                if exc.code not in (errno.ESRCH, errno.ENODEV):  # gone with its veth
                    raise RouteError(f"deleting route {dst} failed: {exc}") from None
            report.removed.append(dst)
            report.details.append(f"ip route del {dst} proto {RTPROT_CALICO}")
    report.missing_interfaces = sorted(set(report.missing_interfaces))
    return report


def _link_ready(ipr: IPRoute, ifname: str, report: RouteReport) -> int | None:
    """The index of ``ifname``, with its sysctls set and the link up; None (and reported
    missing) when it does not exist."""
    try:
        link = ipr.link("get", ifname=ifname)[0]
    except NetlinkError as exc:
        if exc.code != errno.ENODEV:
            raise RouteError(f"reading link {ifname} failed: {exc}") from None
        report.missing_interfaces.append(ifname)
        return None
    for template, value in INTERFACE_SYSCTLS:
        _wrote_sysctl(report, template.format(ifname), value)
    if not link["flags"] & IFF_UP:
        try:
            ipr.link("set", index=link["index"], state="up")
        except NetlinkError as exc:
            if exc.code != errno.ENODEV:
                raise RouteError(f"setting {ifname} up failed: {exc}") from None
            report.missing_interfaces.append(ifname)
            return None
        report.links_up.append(ifname)
        report.details.append(f"ip link set {ifname} up")
    return int(link["index"])
