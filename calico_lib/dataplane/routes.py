"""Make the kernel's routes, veth settings and sysctls match the desired host routes.

This is the only code that touches links and routes. It works as a diff: it reads the links
and the main routing table once, then writes only what differs, so a reconcile that changes
nothing makes no writes at all (no netlink set calls, no sysctl writes) and reports
``changed == False``.

Every route we install carries protocol ``RTPROT_CALICO`` (80): that is how routes left
behind by endpoints that went away (while the agent was down, say) are found and removed,
and how BIRD picks the routes to advertise.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from ..errors import CalicoError
from ..render.routes import RTPROT_CALICO, RouteSpec
from . import conntrack
from .veth import INTERFACE_SYSCTLS

PROC_SYS = Path("/proc/sys")
MAIN_TABLE = 254
RT_SCOPE_LINK = 253
RTN_UNICAST = 1
RTN_BLACKHOLE = 6
IFF_UP = 0x1
#: the metric the kernel gives a route added without one (IPv6 turns 0 into 1024)
DEFAULT_PRIORITY = {socket.AF_INET: 0, socket.AF_INET6: 1024}

#: host-wide settings a router of container traffic needs
GLOBAL_SYSCTLS: tuple[tuple[str, str], ...] = (
    ("net/ipv4/ip_forward", "1"),
    ("net/ipv6/conf/all/forwarding", "1"),
)


class RouteError(CalicoError):
    """A netlink request failed for another reason than a vanished interface."""


@dataclass
class RouteReport:
    """What one ``apply_routes`` call did; ``missing_interfaces`` is not a failure."""

    #: destinations whose route was created or corrected
    added: list[str] = field(default_factory=list)
    #: destinations of stale protocol-80 routes that were deleted
    removed: list[str] = field(default_factory=list)
    #: interfaces named by desired routes that do not exist (yet): their routes wait
    missing_interfaces: list[str] = field(default_factory=list)
    sysctl_writes: int = 0
    #: addresses whose conntrack entries were deleted (after their route was removed)
    conntrack_flushed: list[str] = field(default_factory=list)
    #: interfaces that were down and were set up
    links_up: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.added or self.removed or self.sysctl_writes or self.conntrack_flushed
                    or self.links_up)

    def summary(self) -> str:
        """One line for logs and Ansible's ``msg``."""
        parts = [f"routes +{len(self.added)} -{len(self.removed)}"]
        if self.links_up:
            parts.append(f"{len(self.links_up)} link(s) set up")
        if self.sysctl_writes:
            parts.append(f"{self.sysctl_writes} sysctl write(s)")
        if self.conntrack_flushed:
            parts.append(f"conntrack flushed for {len(self.conntrack_flushed)} address(es)")
        if self.missing_interfaces:
            parts.append("missing interface(s): " + ", ".join(self.missing_interfaces))
        return ("changed: " if self.changed else "no change: ") + "; ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {"added": list(self.added), "removed": list(self.removed),
                "missing_interfaces": list(self.missing_interfaces),
                "sysctl_writes": self.sysctl_writes,
                "conntrack_flushed": list(self.conntrack_flushed),
                "links_up": list(self.links_up), "changed": self.changed}


# --------------------------------------------------------------------------- sysctls

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


# --------------------------------------------------------------------------- routes

def _family(dst: str) -> int:
    return socket.AF_INET6 if ":" in dst else socket.AF_INET


def _normalise(dst: str) -> str:
    """The kernel's spelling of a CIDR, so desired and dumped routes compare equal."""
    try:
        return str(ipaddress.ip_network(dst.strip(), strict=False))
    except ValueError:
        raise RouteError(f"route dst {dst!r} is not a CIDR; use e.g. 10.65.0.1/32") from None


def _route_dst(msg: Any) -> str:
    family = msg["family"]
    dst = msg.get("dst") or ("0.0.0.0" if family == socket.AF_INET else "::")
    return f"{dst}/{msg['dst_len']}"


def _route_table(msg: Any) -> int:
    # RTA_TABLE carries tables above 255; the header field then says 252 (compat)
    return msg.get_attr("RTA_TABLE") or msg["table"]


def _main_routes(ipr: IPRoute) -> dict[str, list[Any]]:
    """Every route of the main table (IPv4 and IPv6), grouped by destination."""
    by_dst: dict[str, list[Any]] = {}
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
                by_dst.setdefault(_route_dst(msg), []).append(msg)
    return by_dst


def _is_ours(msg: Any, oif: int | None) -> bool:
    """The route we would install: ``dst dev IF scope link proto 80`` (or, with ``oif``
    None, ``blackhole dst proto 80``), default metric."""
    family = msg["family"]
    if oif is None:
        return (msg["proto"] == RTPROT_CALICO and msg["type"] == RTN_BLACKHOLE
                and (msg.get("priority") or 0) == DEFAULT_PRIORITY[family])
    return (msg["proto"] == RTPROT_CALICO
            and msg["type"] == RTN_UNICAST
            and msg.get("oif") == oif
            and not msg.get("gateway")
            and not msg.get("multipath")
            and (msg.get("priority") or 0) == DEFAULT_PRIORITY[family]
            # IPv6 routes have no scope (always reported as universe)
            and (family == socket.AF_INET6 or msg["scope"] == RT_SCOPE_LINK))


def _delete_route(ipr: IPRoute, msg: Any) -> bool:
    """Delete exactly the dumped route ``msg``; False if it was gone already."""
    spec: dict[str, Any] = {
        "family": msg["family"], "dst": _route_dst(msg), "table": _route_table(msg),
        "proto": msg["proto"], "type": msg["type"], "tos": msg["tos"],
        # IPv4 matches the scope too, and pyroute2 would send "universe" (0) otherwise,
        # which a scope-link route does not match (ESRCH)
        "scope": msg["scope"],
    }
    for attr in ("oif", "gateway", "priority"):
        if msg.get(attr) is not None:
            spec[attr] = msg.get(attr)
    try:
        ipr.route("del", **spec)
    except NetlinkError as exc:
        if exc.code == errno.ESRCH:  # removed under us (its link went away, say)
            return False
        raise RouteError(f"deleting route {spec['dst']} failed: {exc}") from None
    return True


# --------------------------------------------------------------------------- apply

def apply_routes(desired: Sequence[RouteSpec], flush_conntrack: bool = True) -> RouteReport:
    """Make the main table's protocol-80 routes exactly ``desired``; write only differences.

    Interfaces that do not exist are reported, not raised: the container may still be
    starting, and the next reconcile adds its routes.
    """
    # bad input fails before anything is written
    wanted: dict[str, RouteSpec] = {_normalise(spec.dst): spec for spec in desired}
    report = RouteReport()
    for name, value in GLOBAL_SYSCTLS:
        report.sysctl_writes += _set_sysctl(name, value)

    with IPRoute() as ipr:
        # names and indexes only: decoding every link's attributes costs seconds on a host
        # of a thousand containers
        present = {name: number for number, name in socket.if_nameindex()}
        existing = _main_routes(ipr)
        by_interface: dict[str, list[str]] = {}
        for dst, spec in wanted.items():
            if spec.interface is not None:
                by_interface.setdefault(spec.interface, []).append(dst)
        missing: set[str] = set()
        index: dict[str, int] = {}
        for ifname in sorted(by_interface):
            number = present.get(ifname)
            if number is None:
                missing.add(ifname)
                continue
            # a link with all its routes in place is up (a link set down loses its
            # routes); any other is looked at, and set up if it is down
            if all(any(_is_ours(msg, number) for msg in existing.get(dst, []))
                   for dst in by_interface[ifname]):
                for template, value in INTERFACE_SYSCTLS:
                    report.sysctl_writes += _set_sysctl(template.format(ifname), value)
            elif _link_ready(ipr, ifname, report) is None:
                missing.add(ifname)
                continue
            index[ifname] = number

        for dst in sorted(wanted):
            ifname = wanted[dst].interface
            if ifname is not None and ifname not in index:
                continue
            oif = index[ifname] if ifname is not None else None
            current = existing.get(dst, [])
            if any(_is_ours(msg, oif) for msg in current):
                others = [msg for msg in current if not _is_ours(msg, oif)]
            else:
                where: dict[str, Any] = ({"type": "blackhole"} if oif is None
                                         else {"oif": oif, "scope": RT_SCOPE_LINK})
                try:
                    # replaces the route to dst with the same metric, whatever it points at
                    ipr.route("replace", dst=dst, proto=RTPROT_CALICO, table=MAIN_TABLE,
                              **where)
                except NetlinkError as exc:
                    if exc.code != errno.ENODEV:  # the container went away just now
                        raise RouteError(f"adding route {dst} dev {ifname} failed: "
                                         f"{exc}") from None
                    missing.add(ifname)
                    continue
                report.added.append(dst)
                family = _family(dst)
                # what replace left behind: routes to dst with another metric
                others = [msg for msg in current
                          if (msg.get("priority") or 0) != DEFAULT_PRIORITY[family]]
            if oif is None:  # a block: only our own other routes to it go
                others = [msg for msg in others if msg["proto"] == RTPROT_CALICO]
            for msg in others:  # a second path to our container's address: not allowed
                if _delete_route(ipr, msg) and dst not in report.added:
                    report.added.append(dst)

        stale = [msg for dst, msgs in sorted(existing.items()) if dst not in wanted
                 for msg in msgs if msg["proto"] == RTPROT_CALICO]
        for msg in stale:
            dst = _route_dst(msg)
            if _delete_route(ipr, msg) and dst not in report.removed:
                report.removed.append(dst)

    report.missing_interfaces = sorted(missing)
    if flush_conntrack and report.removed:
        # a new container given the address must not inherit the old one's flows (and the
        # firewall's "established" accept); conntrack matches addresses only, not blocks
        report.conntrack_flushed += conntrack.flush(host_route_addresses(report.removed))
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
            dst = _normalise(spec.dst)
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
        for spec in sorted(before - after):
            dst = _normalise(spec.dst)
            family = _family(dst)
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
        report.sysctl_writes += _set_sysctl(template.format(ifname), value)
    if not link["flags"] & IFF_UP:
        try:
            ipr.link("set", index=link["index"], state="up")
        except NetlinkError as exc:
            if exc.code != errno.ENODEV:
                raise RouteError(f"setting {ifname} up failed: {exc}") from None
            report.missing_interfaces.append(ifname)
            return None
        report.links_up.append(ifname)
    return int(link["index"])
