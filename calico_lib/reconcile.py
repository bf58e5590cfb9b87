"""The one reconcile function: datastore snapshot -> render -> apply -> report.

The agent, the Docker plugin (at Join) and the Ansible dataplane module all call
``reconcile``; a host-wide lock lets only one of them write at a time.
"""

from __future__ import annotations

import fcntl
import os
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from functools import partial

from . import __version__, metrics
from .dataplane import ipsets, iptables
from .dataplane.bird import DEFAULT_SOCKET, BirdReport, apply_bird
from .dataplane.kernel import Kernel, real_kernel
from .dataplane.route_plan import plan_routes
from .dataplane.routes import RouteReport, host_route_addresses
from .dataplane.runner import CommandError
from .dataplane.tunnel import TunnelError, TunnelReport
from .datastore import Datastore
from .errors import CalicoError
from .records import DecodeCache, Reporter, Unreadable
from .render import names
from .render.bird import render_bird
from .render.policy import IpSet, PolicyRenderer
from .render.routes import RouteRenderer, RouteSpec
from .render.tunnel import TunnelSpec, render_tunnel
from .snapshot import Snapshot, load_snapshot

DEFAULT_LOCK_FILE = "/run/calico/dataplane.lock"
LOCK_TIMEOUT = 60.0


class LockTimeout(CalicoError):
    pass


@contextmanager
def host_lock(path: str = DEFAULT_LOCK_FILE, timeout: float = LOCK_TIMEOUT) -> Iterator[None]:
    """Serialise dataplane writers on this host (an flock, released if the holder dies)."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "a") as handle:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise LockTimeout(f"another writer held {path} for {timeout:.0f}s") from None
                time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@dataclass
class Report:
    revision: int
    sets: ipsets.SetPlan
    tables: list[iptables.TablePlan] = field(default_factory=list)
    routes: RouteReport | None = None
    bird: BirdReport | None = None
    tunnel: TunnelReport | None = None
    seconds: float = 0.0
    check_mode: bool = False
    #: False when the kernel was not read because the render had not changed
    verified: bool = True
    #: records left out of the snapshot because they could not be read
    unreadable: tuple[Unreadable, ...] = ()
    #: addresses whose tracked flows were deleted because the policy in front of them (or
    #: their groups) changed
    conntrack_flushed: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.sets.before or self.sets.after
                    or any(t.text for t in self.tables)
                    or (self.routes is not None and self.routes.changed)
                    or (self.tunnel is not None and self.tunnel.changed)
                    or (self.bird is not None and self.bird.changed))

    def summary(self) -> str:
        """One line: what changed and how long it took."""
        took = f"{self.seconds * 1000:.1f} ms"
        skipped = (f"; {len(self.unreadable)} unreadable record(s) skipped"
                   if self.unreadable else "")
        if not self.changed:
            how = "" if self.verified else ", render unchanged"
            return f"revision {self.revision}: no change{how}{skipped} ({took})"
        parts = []
        s = self.sets
        if s.created or s.updated or s.destroyed:
            parts.append(f"ipsets +{len(s.created)} ~{len(s.updated)} -{len(s.destroyed)}")
        for t in self.tables:
            if t.text:
                parts.append(f"ip{'6' if t.version == 6 else ''}tables {t.table}: "
                             f"{len(t.written)} chains written, {len(t.removed)} removed"
                             + (f", {t.hooks_fixed} hooks fixed" if t.hooks_fixed else ""))
        if self.routes is not None and self.routes.changed:
            parts.append(self.routes.summary().removeprefix("changed: "))
        if self.tunnel is not None and self.tunnel.changed:
            parts.append(self.tunnel.summary())
        if self.conntrack_flushed:
            parts.append(f"flows of {len(self.conntrack_flushed)} address(es) judged again")
        if self.bird is not None and self.bird.changed:
            parts.append(self.bird.summary())
        verb = "would change" if self.check_mode else "changed"
        return (f"revision {self.revision}: {verb} " + "; ".join(parts) + skipped
                + f" ({took})")


class Dataplane:
    """Applies snapshots to this host's kernel and remembers what it last applied.

    ``apply(snapshot, verify=True)`` reads iptables, ipsets and routes and repairs any
    difference. ``verify=False`` trusts the memory of the last apply instead of reading
    the kernel: an unchanged snapshot costs nothing, and a changed one renders only the
    profiles and endpoints that changed (``PolicyRenderer``) and writes only the chains,
    sets and routes that differ, so its cost follows the change, not the host's size.
    ``reconcile`` only lets a caller trust its memory when no other writer touched the
    dataplane since, or when the other writer applied the very snapshot it holds.

    ``kernel``: the handlers it reads and writes through (this host's tools and netlink
    unless told; tests pass an in-memory fake).
    """

    def __init__(self, bird_config: str | None = None,
                 bird_socket: str = DEFAULT_SOCKET, kernel: Kernel | None = None) -> None:
        self.bird_config = bird_config
        self.bird_socket = bird_socket
        self.kernel = kernel if kernel is not None else real_kernel()
        #: logs each unreadable record once for the life of this dataplane
        self.records = Reporter()
        #: the stamp this dataplane wrote after its last apply (see ``reconcile``)
        self.stamp: str | None = None
        self.renderer = PolicyRenderer()
        self.routes = RouteRenderer()
        #: the datastore records this dataplane read last (see ``load_snapshot``)
        self.decoded = DecodeCache()
        self._input: Snapshot | None = None
        #: the snapshot BIRD's config was last written for: the plugin, whose state the
        #: agent adopts, writes no BIRD config, so adopting says nothing about BIRD
        self._bird_input: Snapshot | None = None
        self._tables: dict[tuple[int, str], iptables.KernelTable] = {}
        self._sets: dict[str, IpSet] | None = None
        self._routes: set[RouteSpec] = set()
        #: the VXLAN state last applied (None: read the kernel next time)
        self._tunnel: TunnelSpec | None = None

    def forget(self) -> None:
        self._input, self._tables, self._sets, self._routes = None, {}, None, set()
        self._tunnel = None

    def adopt(self, snapshot: Snapshot) -> None:
        """Take the kernel to hold ``snapshot``'s render: another writer just applied it
        (``reconcile`` checks its stamp), so this one need not read the kernel."""
        policy = self.renderer.render(snapshot)
        self._input = replace(snapshot, revision=0)
        self._tables = {(t.version, t.name): iptables.as_kernel(t) for t in policy.tables}
        self._sets = dict(policy.ipsets)
        self._routes = self.routes.render(snapshot)
        self._tunnel = render_tunnel(snapshot)
        for table in policy.tables:  # this process's gauges too say what is programmed
            metrics.programmed(table)
        metrics.active(snapshot)

    def apply(self, snapshot: Snapshot, check_mode: bool = False,
              verify: bool = True) -> Report:
        """Make the kernel match ``snapshot`` (in check mode, only say what would change).

        A part that fails (an ip6tables restore the kernel refuses, say) does not stop the
        others: everything that can be applied is, then ``DataplaneError`` names what
        failed (and the next apply reads the kernel afresh).
        """
        start = time.perf_counter()
        self.records.report(snapshot.unreadable)
        trust = not verify and not check_mode and self._sets is not None
        if trust and replace(snapshot, revision=0) == self._input:
            report = Report(snapshot.revision, ipsets.SetPlan(), verified=False,
                            unreadable=snapshot.unreadable)
            self._apply_bird(snapshot, report, check_mode)
            report.seconds = time.perf_counter() - start
            metrics.APPLY_TIME.observe(report.seconds)
            return report
        if not trust and not check_mode:
            metrics.RESYNCS_STARTED.inc()
        routes = self.routes.render(snapshot)
        policy = self.renderer.render(snapshot)
        known_sets, known_routes, known_tunnel = self._sets, self._routes, self._tunnel
        known_tables = self._tables if trust else {}
        if not check_mode:
            self.forget()  # until this apply has fully succeeded
        if trust and known_sets is not None:
            set_plan = ipsets.plan_changes(policy.ipsets, known_sets)
        else:
            set_plan = ipsets.plan_sets(policy.ipsets, ipsets.read_sets(self.kernel.ipsets))
        report = Report(snapshot.revision, set_plan, check_mode=check_mode, verified=not trust,
                        unreadable=snapshot.unreadable)
        failures: list[str] = []
        sets_ok = check_mode or _attempt(
            failures, "ipsets", partial(ipsets.apply_before, self.kernel.ipsets, set_plan))
        tables = {}
        for table in policy.tables:
            key = (table.version, table.name)
            handler = self.kernel.iptables[table.version]
            known = known_tables.get(key)
            kernel = known if known is not None else iptables.read_table(handler, table.name)
            plan = iptables.plan_table(table, kernel)
            report.tables.append(plan)
            what = f"ip{'6' if table.version == 6 else ''}tables {table.name}"
            if check_mode:
                continue
            if not sets_ok:  # its rules may name sets that were not made
                failures.append(f"{what}: not applied (the ipsets failed)")
            elif _attempt(failures, what, partial(iptables.apply_plan, handler, plan)):
                tables[key] = iptables.as_kernel(table)
                if plan.text is not None or not trust:  # else its gauges still hold
                    metrics.programmed(table)
        if not check_mode:
            if not failures:  # stale sets may still be named by rules that failed to go
                _attempt(failures, "ipsets",
                         partial(ipsets.apply_after, self.kernel.ipsets, set_plan))
            report.routes = (self.kernel.routes.apply_changes(known_routes, routes) if trust
                             else self.kernel.routes.apply(routes))
        else:  # what the apply would write: the same read and plan, not executed
            report.routes = plan_routes(routes, self.kernel.routes.read(routes)).report()
        tunnel = render_tunnel(snapshot)
        if not (trust and tunnel == known_tunnel):
            try:
                report.tunnel = self.kernel.tunnel.apply(tunnel, check_mode)
            except TunnelError as exc:
                failures.append(str(exc))
        if not check_mode:
            # Open connections the new policy may no longer allow are judged again, and an
            # address that left this host takes no flows with it to the next container
            # that gets it: one flush for all of them.
            report.conntrack_flushed = self.kernel.conntrack.flush(
                _policy_changed(snapshot, report.tables) | set_plan.left
                | host_route_addresses(report.routes.removed))
        self._apply_bird(snapshot, report, check_mode)
        report.seconds = time.perf_counter() - start
        if not check_mode:
            metrics.APPLY_TIME.observe(report.seconds)
            metrics.active(snapshot)
        if failures:
            raise DataplaneError("; ".join(failures) + " (everything else was applied: "
                                 + report.summary() + ")")
        if not check_mode:
            missing = set(report.routes.missing_interfaces) if report.routes else set()
            self._input, self._tables = replace(snapshot, revision=0), tables
            self._sets = dict(policy.ipsets)
            self._tunnel = tunnel
            # a route whose interface does not exist yet is tried again next time
            self._routes = {r for r in routes if r.interface not in missing} if missing \
                else routes
            if missing:
                self._input = None
        return report


    def _apply_bird(self, snapshot: Snapshot, report: Report, check_mode: bool) -> None:
        """BIRD's config for ``snapshot``, unless this dataplane wrote it for the same one."""
        if self.bird_config is None:
            return
        key = replace(snapshot, revision=0)
        if key == self._bird_input and not check_mode and not report.verified:
            return  # trusted and unchanged: the file is what this dataplane wrote
        report.bird = apply_bird(render_bird(snapshot), self.bird_config, self.bird_socket,
                                 check_mode)
        if not check_mode:
            self._bird_input = key


def _policy_changed(snapshot: Snapshot, tables: list[iptables.TablePlan]) -> set[str]:
    """The addresses of the local endpoints whose rules were rewritten: their own chains,
    or a chain of one of their profiles. Chains that did not exist before (a new
    endpoint's, a profile's first use here) judged no flow yet: they are not counted."""
    written = {chain for plan in tables for chain in plan.written} - {
        chain for plan in tables for chain in plan.created}
    # a dispatch node sends packets on to an endpoint's chains but judges none itself
    written = {c for c in written if not c.startswith(names.DISPATCH_ROOTS)}
    out: set[str] = set()
    if not written:
        return out
    for ep in snapshot.local_endpoints:
        chains = {names.from_endpoint(ep.interface), names.to_endpoint(ep.interface)}
        chains |= {c for p in ep.profiles
                   for c in (names.profile_inbound(p), names.profile_outbound(p))}
        if chains & written:
            out.update(ep.addresses)
    return out


class DataplaneError(CalicoError):
    """Part of an apply failed; the message names each failed part."""


def _attempt(failures: list[str], what: str, fn: Callable[[], None]) -> bool:
    """``fn()``; a failing command is added to ``failures`` (named) instead of raised."""
    try:
        fn()
    except CommandError as exc:
        failures.append(f"{what}: {exc}")
        return False
    return True


def apply_snapshot(snapshot: Snapshot, check_mode: bool = False,
                   bird_config: str | None = None, bird_socket: str = DEFAULT_SOCKET,
                   kernel: Kernel | None = None) -> Report:
    """Make the kernel match ``snapshot``, reading it first (no memory of earlier runs)."""
    return Dataplane(bird_config, bird_socket, kernel).apply(snapshot, check_mode=check_mode)


def reconcile(store: Datastore, hostname: str, lock_file: str = DEFAULT_LOCK_FILE,
              check_mode: bool = False, bird_config: str | None = None,
              bird_socket: str = DEFAULT_SOCKET, dataplane: Dataplane | None = None,
              verify: bool = True) -> Report:
    """Read the datastore once and bring this host's dataplane in line with it.

    Long-running callers (the agent, the plugin) pass their ``dataplane`` and
    ``verify=False`` when a datastore change, not a resync, triggered the call. Its memory
    is trusted while the stamp file beside the lock still holds the stamp it wrote after
    its last apply. A stamp names the datastore revision its writer applied: when another
    writer (the plugin, after the agent) reads that same revision, the kernel holds
    exactly what it would render, and it adopts that instead of reading the kernel. Any
    other stamp makes it read the kernel again.
    """
    dataplane = dataplane or Dataplane(bird_config, bird_socket)
    stamp_file = lock_file + ".stamp"
    with host_lock(lock_file):
        snapshot = load_snapshot(store, hostname, dataplane.decoded)
        stamp = _read_stamp(stamp_file)
        trusted = not verify and not check_mode and stamp is not None and (
            stamp == dataplane.stamp or _revision_of(stamp) == snapshot.revision)
        if trusted and stamp != dataplane.stamp:
            dataplane.adopt(snapshot)
        try:
            report = dataplane.apply(snapshot, check_mode=check_mode, verify=not trusted)
        except Exception:
            if not check_mode:  # the kernel may be anything now: nobody may trust it
                dataplane.stamp = None
                _write_stamp(stamp_file, f"failed {uuid.uuid4().hex}")
            raise
        if not check_mode:
            if report.changed or not trusted:
                dataplane.stamp = f"{STAMP_FORMAT} {snapshot.revision} {uuid.uuid4().hex}"
                _write_stamp(stamp_file, dataplane.stamp)
            else:  # nothing written: the stamp on file still describes the kernel
                dataplane.stamp = stamp
        return report


#: names the renderer's output format in stamps: writers of another release (during an
#: upgrade) never adopt each other's state
STAMP_FORMAT = f"v{__version__}"


def _revision_of(stamp: str) -> int | None:
    words = stamp.split()
    if len(words) == 3 and words[0] == STAMP_FORMAT and words[1].isdigit():
        return int(words[1])
    return None


def _read_stamp(path: str) -> str | None:
    try:
        with open(path, encoding="ascii") as handle:
            return handle.read().strip()
    except OSError:
        return None


def _write_stamp(path: str, stamp: str) -> None:
    with open(path, "w", encoding="ascii") as handle:
        handle.write(stamp)
