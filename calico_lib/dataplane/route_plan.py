"""What the route applier would write, as a pure function of (desired, observed).

``dataplane.routes`` reads the kernel into a ``RouteState`` (the main table's routes, the
links the desired routes name, the values of the sysctls it keeps), hands it with the
desired routes to ``plan_routes`` and executes the ``RoutePlan`` it gets back. Check mode
reads the same state and reports the same plan without executing it, so a prediction and
the real run cannot disagree about what differs. No I/O here: tests feed it states.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from ..errors import CalicoError
from ..render.routes import RTPROT_CALICO, RouteSpec
from .veth import INTERFACE_SYSCTLS

MAIN_TABLE = 254
RT_SCOPE_UNIVERSE = 0
RT_SCOPE_LINK = 253
RTN_UNICAST = 1
RTN_BLACKHOLE = 6
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
    """What one route apply did (or, in check mode, would do); ``missing_interfaces`` is
    not a failure."""

    #: destinations whose route was created or corrected
    added: list[str] = field(default_factory=list)
    #: destinations of stale protocol-80 routes that were deleted
    removed: list[str] = field(default_factory=list)
    #: interfaces named by desired routes that do not exist (yet): their routes wait
    missing_interfaces: list[str] = field(default_factory=list)
    #: addresses whose conntrack entries were deleted (after their route was removed)
    conntrack_flushed: list[str] = field(default_factory=list)
    #: interfaces that were down and were set up
    links_up: list[str] = field(default_factory=list)
    #: the sysctls written, as ``net.ipv4.ip_forward=1`` (dotted names, like sysctl(8))
    sysctls: list[str] = field(default_factory=list)
    #: one line per write, like the ip(8) or sysctl(8) command that would make it
    details: list[str] = field(default_factory=list)

    @property
    def sysctl_writes(self) -> int:
        return len(self.sysctls)

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
                "sysctl_writes": self.sysctl_writes, "sysctls": list(self.sysctls),
                "conntrack_flushed": list(self.conntrack_flushed),
                "links_up": list(self.links_up), "changed": self.changed}


class KernelRoute(NamedTuple):
    """One route of the main table as the kernel dumped it (what planning and deleting it
    need)."""

    family: int
    dst: str
    table: int = MAIN_TABLE
    proto: int = RTPROT_CALICO
    type: int = RTN_UNICAST
    tos: int = 0
    scope: int = RT_SCOPE_LINK
    oif: int | None = None
    gateway: str | None = None
    priority: int | None = None
    multipath: bool = False

    def describe(self, names: Mapping[int, str] | None = None) -> str:
        """The route as ip(8) shows it (roughly)."""
        words = ["blackhole" if self.type == RTN_BLACKHOLE else "", self.dst]
        if self.gateway:
            words.append(f"via {self.gateway}")
        if self.oif is not None:
            words.append(f"dev {(names or {}).get(self.oif, f'if{self.oif}')}")
        words.append(f"proto {self.proto}")
        if self.priority:
            words.append(f"metric {self.priority}")
        return " ".join(w for w in words if w)


@dataclass(frozen=True)
class LinkState:
    index: int
    #: None: not read (every desired route through it is in place, so it is up: a link
    #: set down loses its routes)
    up: bool | None = None


@dataclass
class RouteState:
    """What the route applier reads before it writes (``dataplane.routes.read_state``)."""

    #: the main table's routes (IPv4 and IPv6), by destination
    routes: dict[str, list[KernelRoute]] = field(default_factory=dict)
    #: the interfaces desired routes name that exist
    links: dict[str, LinkState] = field(default_factory=dict)
    #: the value of each sysctl in ``sysctls_to_read`` (None: no such file)
    sysctls: dict[str, str | None] = field(default_factory=dict)
    #: every interface's name by its index (to name the routes to delete)
    names: dict[int, str] = field(default_factory=dict)


@dataclass
class RoutePlan:
    """The writes that make the kernel hold the desired routes, in the order they are
    made."""

    #: (name, value, the value now)
    sysctls: list[tuple[str, str, str]] = field(default_factory=list)
    #: (interface, index) of links to set up
    links_up: list[tuple[str, int]] = field(default_factory=list)
    #: (dst, interface or None for a blackhole, its index), each a `route replace`
    replace: list[tuple[str, str | None, int | None]] = field(default_factory=list)
    #: routes to desired destinations that must go (another metric, a second path)
    delete_others: list[KernelRoute] = field(default_factory=list)
    #: stale protocol-80 routes to destinations no longer desired
    delete_stale: list[KernelRoute] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    #: interface names by index (for the details)
    names: dict[int, str] = field(default_factory=dict)

    def report(self) -> RouteReport:
        """The report of executing this plan with nothing racing it."""
        added = {dst for dst, _, _ in self.replace} | {r.dst for r in self.delete_others}
        return RouteReport(
            added=sorted(added), removed=sorted({r.dst for r in self.delete_stale}),
            missing_interfaces=sorted(self.missing),
            links_up=[name for name, _ in self.links_up],
            sysctls=[sysctl_entry(name, value) for name, value, _ in self.sysctls],
            details=self.details())

    def details(self) -> list[str]:
        out = [sysctl_line(name, value, was) for name, value, was in self.sysctls]
        out += [f"ip link set {name} up" for name, _ in self.links_up]
        out += [replace_line(dst, ifname) for dst, ifname, _ in self.replace]
        out += [f"ip route del {r.describe(self.names)}"
                for r in (*self.delete_others, *self.delete_stale)]
        return out


def replace_line(dst: str, ifname: str | None) -> str:
    """The `ip route replace` of a desired route."""
    if ifname is None:
        return f"ip route replace blackhole {dst} proto {RTPROT_CALICO}"
    return f"ip route replace {dst} dev {ifname} scope link proto {RTPROT_CALICO}"


def sysctl_line(name: str, value: str, was: str | None = None) -> str:
    """The `sysctl -w` of a sysctl write (and what it replaces, when known)."""
    line = f"sysctl -w {sysctl_entry(name, value)}"
    return line if was is None else f"{line}  # was {was}"


def sysctl_entry(name: str, value: str) -> str:
    """``net/ipv4/ip_forward`` and ``1`` as sysctl(8) writes them: net.ipv4.ip_forward=1
    (an interface name's dots, as in a VLAN's, become slashes)."""
    return name.replace(".", "\0").replace("/", ".").replace("\0", "/") + "=" + value


def family_of(dst: str) -> int:
    return socket.AF_INET6 if ":" in dst else socket.AF_INET


def normalise(dst: str) -> str:
    """The kernel's spelling of a CIDR, so desired and dumped routes compare equal."""
    try:
        return str(ipaddress.ip_network(dst.strip(), strict=False))
    except ValueError:
        raise RouteError(f"route dst {dst!r} is not a CIDR; use e.g. 10.65.0.1/32") from None


def wanted_routes(desired: Iterable[RouteSpec]) -> dict[str, RouteSpec]:
    """The desired routes by their kernel spelling (bad input fails before any read)."""
    return {normalise(spec.dst): spec for spec in desired}


def is_ours(route: KernelRoute, oif: int | None) -> bool:
    """The route the applier would install: ``dst dev IF scope link proto 80`` (or, with
    ``oif`` None, ``blackhole dst proto 80``), default metric."""
    default = (route.priority or 0) == DEFAULT_PRIORITY[route.family]
    if oif is None:
        return route.proto == RTPROT_CALICO and route.type == RTN_BLACKHOLE and default
    return (route.proto == RTPROT_CALICO and route.type == RTN_UNICAST and route.oif == oif
            and not route.gateway and not route.multipath and default
            # IPv6 routes have no scope (always reported as universe)
            and (route.family == socket.AF_INET6 or route.scope == RT_SCOPE_LINK))


def _by_interface(wanted: Mapping[str, RouteSpec]) -> dict[str, list[str]]:
    by_interface: dict[str, list[str]] = {}
    for dst, spec in wanted.items():
        if spec.interface is not None:
            by_interface.setdefault(spec.interface, []).append(dst)
    return by_interface


def links_to_read(wanted: Mapping[str, RouteSpec], present: Mapping[str, int],
                  routes: Mapping[str, Sequence[KernelRoute]]) -> list[str]:
    """The existing interfaces whose state (up or down) must be read: those with a desired
    route not in place. (Reading every link costs seconds on a host of a thousand
    containers; a link with all its routes in place is up.)"""
    return [name for name, dsts in sorted(_by_interface(wanted).items())
            if name in present and not all(
                any(is_ours(r, present[name]) for r in routes.get(dst, ())) for dst in dsts)]


def sysctls_to_read(wanted: Mapping[str, RouteSpec], links: Iterable[str]
                    ) -> list[tuple[str, str]]:
    """(name, value) of every sysctl the applier keeps: the host-wide ones, then each
    existing interface's (``links``) that a desired route names."""
    named = set(_by_interface(wanted))
    return [*GLOBAL_SYSCTLS, *((template.format(name), value)
                               for name in sorted(set(links) & named)
                               for template, value in INTERFACE_SYSCTLS)]


def plan_routes(desired: Iterable[RouteSpec], state: RouteState) -> RoutePlan:
    """What makes the main table's protocol-80 routes exactly ``desired`` and the sysctls
    hold their values, given what the kernel holds (``state``).

    Interfaces that do not exist are reported as missing, not planned for: the container
    may still be starting, and the next apply adds its routes. A sysctl that does not
    exist (IPv6 disabled, say) is skipped.
    """
    wanted = wanted_routes(desired)
    plan = RoutePlan(names={**state.names,
                            **{link.index: name for name, link in state.links.items()}})
    by_interface = _by_interface(wanted)
    plan.missing = sorted(set(by_interface) - set(state.links))
    for name, value in sysctls_to_read(wanted, state.links):
        current = state.sysctls.get(name)
        if current is not None and current != value:
            plan.sysctls.append((name, value, current))
    plan.links_up = [(name, state.links[name].index) for name in sorted(by_interface)
                     if name in state.links and state.links[name].up is False]
    for dst in sorted(wanted):
        ifname = wanted[dst].interface
        if ifname is not None and ifname not in state.links:
            continue
        oif = state.links[ifname].index if ifname is not None else None
        current = state.routes.get(dst, [])
        if any(is_ours(r, oif) for r in current):
            others = [r for r in current if not is_ours(r, oif)]
        else:
            # `replace` takes over the route to dst with the default metric, whatever it
            # points at; routes to dst with another metric stay, and must go
            plan.replace.append((dst, ifname, oif))
            others = [r for r in current
                      if (r.priority or 0) != DEFAULT_PRIORITY[family_of(dst)]]
        if oif is None:  # a block: only our own other routes to it go
            others = [r for r in others if r.proto == RTPROT_CALICO]
        plan.delete_others += others  # a second path to our container's address
    plan.delete_stale = [r for dst, found in sorted(state.routes.items()) if dst not in wanted
                         for r in found if r.proto == RTPROT_CALICO]
    return plan
