"""The dataplane's side effects as handler objects, one per kind (iptables one per IP
version), handed to ``Dataplane`` and down to the appliers (as kube-router hands its
controllers an iptables and an ipset handler per family).

The real handlers run the tools through ``runner.run`` (time-outs, one-line errors, the
iptables-restore and ipset counts of ``metrics``) and program routes over netlink; a test
passes fakes that keep the tables, sets and routes in memory, so planning and apply
decisions are tested without root.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from ..render.routes import RouteSpec
from ..render.tunnel import TunnelSpec
from . import conntrack, runner
from .route_plan import RouteState
from .routes import RouteReport, apply_route_changes, apply_routes, read_routes
from .tunnel import TunnelReport, apply_tunnel

#: ``runner.run``'s signature: (argv, stdin=None, timeout=..., ok_codes=(0,), ...) -> stdout
Run = Callable[..., str]

SAVE = {4: "iptables-save", 6: "ip6tables-save"}
RESTORE = {4: "iptables-restore", 6: "ip6tables-restore"}


class Iptables(Protocol):
    """One IP version's iptables: read a table, write restore input."""

    version: int

    def save(self, table: str, counters: bool = False) -> str:
        """`iptables-save -t TABLE` (``-c``: with each rule's counters)."""
        ...

    def restore(self, text: str) -> None:
        """`iptables-restore --noflush`: all of ``text`` or, on CommandError, none of it."""
        ...


class Ipsets(Protocol):
    """`ipset`, for both IP families (one command serves both)."""

    def save(self) -> str:
        ...

    def restore(self, text: str) -> None:
        """`ipset restore -exist`: line by line; on CommandError the lines before the
        failing one stay applied."""
        ...


class Conntrack(Protocol):
    def flush(self, addresses: Iterable[str]) -> list[str]:
        """Forget the flows of ``addresses``; the addresses whose flows are gone."""
        ...


class Routes(Protocol):
    """This host's protocol-80 routes (and the per-veth settings that go with them)."""

    def read(self, desired: Sequence[RouteSpec]) -> RouteState:
        """What ``apply`` reads before it plans (``route_plan.plan_routes``): the main
        table, the links and the sysctls that ``desired`` needs. Writes nothing (check
        mode plans from it)."""
        ...

    def apply(self, desired: Sequence[RouteSpec]) -> RouteReport:
        """Read the kernel and make its routes ``desired`` (flows are the caller's)."""
        ...

    def apply_changes(self, applied: Sequence[RouteSpec],
                      desired: Sequence[RouteSpec]) -> RouteReport:
        """Write the difference between ``applied`` and ``desired`` without reading."""
        ...


class Tunnel(Protocol):
    """This host's VXLAN device, its neighbour/FDB entries and tunnel routes."""

    def apply(self, spec: TunnelSpec, check_mode: bool = False) -> TunnelReport:
        """Read the kernel and make it hold ``spec`` (check mode: only report)."""
        ...


def _runner(run: Run | None) -> Run:
    # looked up at each call, not bound once: a test or a bench that replaces
    # ``runner.run`` sees every command
    return run if run is not None else runner.run


@dataclass
class IptablesCommands:
    """(ip6)tables-save and (ip6)tables-restore of one IP version."""

    version: int
    run: Run | None = None

    def save(self, table: str, counters: bool = False) -> str:
        return _runner(self.run)([SAVE[self.version], *(["-c"] if counters else []),
                                  "-t", table])

    def restore(self, text: str) -> None:
        _runner(self.run)([RESTORE[self.version], "--noflush", "--wait"], stdin=text,
                          timeout=runner.timeout_for(text))


@dataclass
class IpsetCommands:
    """`ipset save` and `ipset restore -exist`."""

    run: Run | None = None

    def save(self) -> str:
        return _runner(self.run)(["ipset", "save"])

    def restore(self, text: str) -> None:
        _runner(self.run)(["ipset", "restore", "-exist"], stdin=text,
                          timeout=runner.timeout_for(text))


@dataclass
class ConntrackCommands:
    """`conntrack -D` (``dataplane.conntrack``)."""

    run: Run | None = None

    def flush(self, addresses: Iterable[str]) -> list[str]:
        if self.run is None:  # the module's function looked up now: a bench replaces it
            return conntrack.flush(addresses)
        return conntrack.flush(addresses, self.run)


class Netlink:
    """Routes through pyroute2 (``dataplane.routes``)."""

    def read(self, desired: Sequence[RouteSpec]) -> RouteState:
        return read_routes(desired)

    def apply(self, desired: Sequence[RouteSpec]) -> RouteReport:
        return apply_routes(desired, flush_conntrack=False)

    def apply_changes(self, applied: Sequence[RouteSpec],
                      desired: Sequence[RouteSpec]) -> RouteReport:
        return apply_route_changes(applied, desired)


class NetlinkTunnel:
    """The VXLAN device through pyroute2 (``dataplane.tunnel``)."""

    def apply(self, spec: TunnelSpec, check_mode: bool = False) -> TunnelReport:
        return apply_tunnel(spec, check_mode)


@dataclass
class Kernel:
    """Every handler the dataplane reads and writes through."""

    iptables: dict[int, Iptables]  # by IP version
    ipsets: Ipsets
    conntrack: Conntrack
    routes: Routes
    tunnel: Tunnel


def real_kernel(run: Run | None = None) -> Kernel:
    """This host's kernel through the real tools; ``run`` replaces ``runner.run`` (a test's
    spy that records every command)."""
    return Kernel({v: IptablesCommands(v, run) for v in (4, 6)}, IpsetCommands(run),
                  ConntrackCommands(run), Netlink(), NetlinkTunnel())
