"""What a proposed change would do to every host's dataplane, before anything is written.

A ``Draft`` copies the datastore's records in one read; the change is made on the copy with
the real ``Client`` (``draft.client``: the same validation and transactions as a real
write, so what fails here fails there). ``draft.plan()`` then renders every host's snapshot
from the copy as it was and as it is now, with the agent's own renderers, and compares the
two: iptables/ip6tables rule lines added and removed (chain by chain), ipset members added
and removed, routes, and BIRD's configuration (passwords masked). No kernel is read and
nothing is written: the datastore holds every host's endpoints, so the preview covers the
whole cluster from wherever it runs, and since it is the renderers' own output it cannot
drift from what the agents will write.

    draft = Draft(store)
    draft.client.add_rule("backend", "inbound", Rule(protocol="tcp", dst_ports=[80]))
    print("\n".join(draft.plan().lines()))
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from . import keys
from .client import Client
from .datastore import Datastore
from .datastore.draft import DraftDatastore
from .records import DecodeCache
from .render.bird import render_bird
from .render.policy import Policy, render_policy
from .render.routes import RouteRenderer, RouteSpec
from .snapshot import Snapshot, load_snapshot

#: what a BGP password looks like in a preview
MASK = "********"


class Draft:
    """A change made on a copy of ``store``: ``client`` writes to the copy only."""

    def __init__(self, store: Datastore) -> None:
        self.before = DraftDatastore.of(store, keys.ROOT)
        self.store = DraftDatastore(self.before.list(keys.ROOT), self.before.revision(),
                                    store.url)
        self.client = Client(self.store)

    @property
    def writes(self) -> dict[str, str | None]:
        """The keys the change put (their values) or deleted (None)."""
        return dict(self.store.writes)

    def plan(self) -> Plan:
        """Each host's dataplane change if the draft were written now."""
        return plan(self.before, self.store)


@dataclass
class TableDiff:
    version: int
    table: str
    #: (chain, rule spec) lines only in the change's render, and only in today's
    added: list[tuple[str, str]] = field(default_factory=list)
    removed: list[tuple[str, str]] = field(default_factory=list)

    def lines(self) -> list[str]:
        return ([f"+ -A {c} {s}" for c, s in self.added]
                + [f"- -A {c} {s}" for c, s in self.removed])


@dataclass
class HostPlan:
    host: str
    tables: list[TableDiff]
    #: set name -> (members added, members removed); a set made or dropped whole too
    sets: dict[str, tuple[list[str], list[str]]]
    routes_added: list[RouteSpec]
    routes_removed: list[RouteSpec]
    bird: str  # a unified diff of BIRD's config, "" when it is the same
    #: the sets among ``sets`` made or removed whole
    sets_made: list[str] = field(default_factory=list)
    sets_removed: list[str] = field(default_factory=list)

    @property
    def rules_added(self) -> int:
        return sum(len(t.added) for t in self.tables)

    @property
    def rules_removed(self) -> int:
        return sum(len(t.removed) for t in self.tables)

    @property
    def changed(self) -> bool:
        return bool(self.rules_added or self.rules_removed or self.sets or self.routes_added
                    or self.routes_removed or self.bird)

    def lines(self) -> list[str]:
        out = []
        for table in self.tables:
            if table.added or table.removed:
                out.append(f"ip{'6' if table.version == 6 else ''}tables {table.table}:")
                out += ["  " + line for line in table.lines()]
        for name, (added, removed) in sorted(self.sets.items()):
            change = self._set_change(name)
            whole = f" ({change})" if change != "members" else ""
            members = " ".join([f"+{m}" for m in added] + [f"-{m}" for m in removed])
            out.append(f"ipset {name}{whole}: {members or '(no members)'}")
        out += [f"route + {r.dst} {_route_target(r)}" for r in self.routes_added]
        out += [f"route - {r.dst} {_route_target(r)}" for r in self.routes_removed]
        if self.bird:
            out.append("bird.conf:")
            out += ["  " + line for line in self.bird.splitlines()]
        return out

    def _set_change(self, name: str) -> str:
        """"made" or "removed" for a set made or removed whole, else "members"."""
        return ("made" if name in self.sets_made else
                "removed" if name in self.sets_removed else "members")

    def to_dict(self) -> dict[str, Any]:
        return {"host": self.host, "changed": self.changed,
                "rules_added": self.rules_added, "rules_removed": self.rules_removed,
                "iptables": [{"ip_version": t.version, "table": t.table,
                              "added": [f"-A {c} {s}" for c, s in t.added],
                              "removed": [f"-A {c} {s}" for c, s in t.removed]}
                             for t in self.tables if t.added or t.removed],
                "ipsets": {n: {"added": a, "removed": r, "set": self._set_change(n)}
                           for n, (a, r) in self.sets.items()},
                "routes_added": [_route_dict(r) for r in self.routes_added],
                "routes_removed": [_route_dict(r) for r in self.routes_removed],
                "bird": self.bird}


def _route_target(route: RouteSpec) -> str:
    return "blackhole" if route.blackhole else f"dev {route.interface}"


def _route_dict(route: RouteSpec) -> dict[str, Any]:
    return {"destination": route.dst, "target": _route_target(route)}


@dataclass
class Plan:
    hosts: list[HostPlan]

    def summary(self) -> str:
        """One line: "3 hosts: +2 rules, -0; 1 host unaffected", with what else changes
        (ipset members, routes, BIRD's configuration) where it does."""
        changed = [h for h in self.hosts if h.changed]
        same = len(self.hosts) - len(changed)
        if not changed:
            return "no host changes" + (f"; {same} {_hosts(same)} unaffected" if same else "")
        parts = [f"{len(changed)} {_hosts(len(changed))}: "
                 f"+{sum(h.rules_added for h in changed)} rules, "
                 f"-{sum(h.rules_removed for h in changed)}"]
        members = [sum(len(m[i]) for h in changed for m in h.sets.values()) for i in (0, 1)]
        if any(members):
            parts.append(f"ipset members +{members[0]}, -{members[1]}")
        routes = [sum(len(h.routes_added) for h in changed),
                  sum(len(h.routes_removed) for h in changed)]
        if any(routes):
            parts.append(f"routes +{routes[0]}, -{routes[1]}")
        bird = sum(1 for h in changed if h.bird)
        if bird:
            parts.append(f"BIRD configuration on {bird} {_hosts(bird)}")
        return "; ".join(parts) + (f"; {same} {_hosts(same)} unaffected" if same else "")

    def lines(self) -> list[str]:
        """The summary, then each changed host's lines under its name."""
        out = [self.summary()]
        for host in self.hosts:
            if host.changed:
                out.append(f"{host.host}:")
                out += ["  " + line for line in host.lines()]
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"summary": self.summary(),
                "hosts": {h.host: h.to_dict() for h in self.hosts if h.changed}}


def _hosts(count: int) -> str:
    return "host" if count == 1 else "hosts"


def _table_diffs(before: Policy, after: Policy) -> list[TableDiff]:
    """Per table, the rule lines that differ, chain by chain (a rule that moves within its
    chain shows as removed and added: its place decides what it does)."""
    out = []
    for table in after.tables:
        old = before.table(table.version, table.name).chains
        diff = TableDiff(table.version, table.name)
        for chain in sorted(set(old) | set(table.chains)):
            was, now = old.get(chain, []), table.chains.get(chain, [])
            added, removed = chain_changes(was, now)
            diff.added += [(chain, spec) for spec in added]
            diff.removed += [(chain, spec) for spec in removed]
        out.append(diff)
    return out


T = TypeVar("T", bound=Hashable)


def chain_changes(was: Sequence[T], now: Sequence[T]) -> tuple[list[T], list[T]]:
    """A chain's rules that come (in ``now`` only) and go (in ``was`` only), in order; a rule
    that moves shows as gone and come, since its place decides what it does. Rules may be
    the renderer's specs or a kernel's ``cali:<hash>`` comments: comparing a preview with
    what a kernel did uses the same comparison."""
    added: list[T] = []
    removed: list[T] = []
    if list(was) != list(now):
        matcher = difflib.SequenceMatcher(a=was, b=now, autojunk=False)
        for tag, i1, i2, j1, j2 in matcher.get_opcodes():
            if tag != "equal":
                removed += was[i1:i2]
                added += now[j1:j2]
    return added, removed


def host_plan(before: Snapshot, after: Snapshot) -> HostPlan:
    """What ``after`` would change on ``before``'s host, from the renders alone."""
    policy_before, policy_after = render_policy(before), render_policy(after)
    sets: dict[str, tuple[list[str], list[str]]] = {}
    made, removed = [], []
    for name in sorted(set(policy_before.ipsets) | set(policy_after.ipsets)):
        was = policy_before.ipsets.get(name)
        now = policy_after.ipsets.get(name)
        old = was.members if was is not None else frozenset()
        new = now.members if now is not None else frozenset()
        if old != new or (was is None) != (now is None):
            sets[name] = (sorted(new - old), sorted(old - new))
        if was is None and now is not None:
            made.append(name)
        elif now is None and was is not None:
            removed.append(name)
    routes_before = RouteRenderer().render(before)
    routes_after = RouteRenderer().render(after)
    bird_before, bird_after = render_bird(before) or "", render_bird(after) or ""
    old, new = _masked(bird_before, bird_before), _masked(bird_after, bird_before)
    bird = "\n".join(difflib.unified_diff(old, new, "bird.conf", "bird.conf (after)",
                                          lineterm="", n=1))
    return HostPlan(before.hostname, _table_diffs(policy_before, policy_after), sets,
                    sorted(routes_after - routes_before, key=_route_key),
                    sorted(routes_before - routes_after, key=_route_key), bird, made, removed)


PASSWORD = re.compile(r'^(\s*password ")(.*)(";)$')


def _masked(config: str, before: str) -> list[str]:
    """``config``'s lines with every BGP password masked; one ``before`` did not have is
    marked changed (the diff must not print a password, nor hide that one changed)."""
    known = {m.group(2) for m in map(PASSWORD.match, before.splitlines()) if m}
    out = []
    for line in config.splitlines():
        found = PASSWORD.match(line)
        if found:
            mark = "" if found.group(2) in known else " (changed)"
            line = f"{found.group(1)}{MASK}{found.group(3)}{mark}"
        out.append(line)
    return out


def _route_key(route: RouteSpec) -> tuple[str, str]:
    return route.dst, route.interface or ""


def hosts(store: Datastore) -> list[str]:
    """Every host the datastore knows: its nodes and the hosts of its endpoints."""
    names = {keys.last(kv.key) for kv in store.list(keys.NODES)}
    names |= {kv.key[len(keys.ENDPOINTS):].split("/")[0]
              for kv in store.list(keys.ENDPOINTS)}
    return sorted(n for n in names if n)


def plan(before: Datastore, after: Datastore) -> Plan:
    """Each host's dataplane change from the records of ``before`` to those of ``after``
    (every host either knows)."""
    # one cache per side: a record is decoded once, not once per host
    was, now = DecodeCache(), DecodeCache()
    out = []
    for host in sorted(set(hosts(before)) | set(hosts(after))):
        out.append(host_plan(load_snapshot(before, host, was),
                             load_snapshot(after, host, now)))
    return Plan(out)
