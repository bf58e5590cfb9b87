"""What a proposed change would do to every host's dataplane, before anything is written.

``plan(store, change)`` reads the datastore once per host, renders each host's snapshot as
it is and as it would be with ``change`` applied, with the agent's own renderers, and
compares the two: iptables/ip6tables rule lines added and removed (chain by chain), ipset
members added and removed, routes, and BIRD's configuration. No kernel is read and nothing
is written: the datastore holds every host's endpoints, so the preview covers the whole
cluster from wherever it runs, and since it is the renderer's own output it cannot drift
from what the agents will write.

This is the library half of issue 16 (policy preview); the Ansible check-mode sections, the
``--dry-run`` flags and the preview-equals-reality packet test build on it.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field, replace
from typing import Any

from . import keys
from .datastore import Datastore
from .model import AgentConfig, IPPool, Profile
from .render.bird import render_bird
from .render.policy import Policy, render_policy
from .render.routes import RouteRenderer, RouteSpec
from .snapshot import Snapshot, load_snapshot, with_network_profiles


@dataclass
class Change:
    """A proposed change: profiles and pools by name/CIDR (None: removed), the agent's
    settings. Anything left out stays as the datastore has it."""

    profiles: dict[str, Profile | None] = field(default_factory=dict)
    pools: dict[str, IPPool | None] = field(default_factory=dict)
    config: AgentConfig | None = None


def with_change(snapshot: Snapshot, change: Change) -> Snapshot:
    """``snapshot`` as it would read once ``change`` is written."""
    profiles = dict(snapshot.profiles)
    for name, profile in change.profiles.items():
        if profile is None:
            profiles.pop(name, None)
        else:
            profiles[name] = profile
    pools = {p.cidr: p for p in snapshot.pools}
    for cidr, pool in change.pools.items():
        if pool is None:
            pools.pop(cidr, None)
        else:
            pools[cidr] = pool
    return replace(
        snapshot,
        # a Docker network's profile without a record is its default one, as the agent reads
        profiles=with_network_profiles(profiles, snapshot.endpoints),
        pools=tuple(pools[c] for c in sorted(pools)),
        config=change.config if change.config is not None else snapshot.config)


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
            out.append(f"ipset {name}: " + " ".join([f"+{m}" for m in added]
                                                    + [f"-{m}" for m in removed]))
        out += [f"route + {r.dst} {_route_target(r)}" for r in self.routes_added]
        out += [f"route - {r.dst} {_route_target(r)}" for r in self.routes_removed]
        if self.bird:
            out.append("bird.conf:")
            out += ["  " + line for line in self.bird.splitlines()]
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"host": self.host, "changed": self.changed,
                "rules_added": self.rules_added, "rules_removed": self.rules_removed,
                "iptables": [{"ip_version": t.version, "table": t.table,
                              "added": [f"-A {c} {s}" for c, s in t.added],
                              "removed": [f"-A {c} {s}" for c, s in t.removed]}
                             for t in self.tables if t.added or t.removed],
                "ipsets": {n: {"added": a, "removed": r} for n, (a, r) in self.sets.items()},
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
        """One line: "3 hosts: +2 rules, -0; 1 host unaffected"."""
        changed = [h for h in self.hosts if h.changed]
        same = len(self.hosts) - len(changed)
        added = sum(h.rules_added for h in changed)
        removed = sum(h.rules_removed for h in changed)
        head = (f"{len(changed)} host{'s' * (len(changed) != 1)}: +{added} rules, -{removed}"
                if changed else "no host changes")
        return head + (f"; {same} host{'s' * (same != 1)} unaffected" if same else "")

    def to_dict(self) -> dict[str, Any]:
        return {"summary": self.summary(),
                "hosts": {h.host: h.to_dict() for h in self.hosts if h.changed}}


def _table_diffs(before: Policy, after: Policy) -> list[TableDiff]:
    """Per table, the rule lines that differ, chain by chain (a rule that moves within its
    chain shows as removed and added: its place decides what it does)."""
    out = []
    for table in after.tables:
        old = before.table(table.version, table.name).chains
        diff = TableDiff(table.version, table.name)
        for chain in sorted(set(old) | set(table.chains)):
            was, now = old.get(chain, []), table.chains.get(chain, [])
            if was == now:
                continue
            matcher = difflib.SequenceMatcher(a=was, b=now, autojunk=False)
            for tag, i1, i2, j1, j2 in matcher.get_opcodes():
                if tag != "equal":
                    diff.removed += [(chain, spec) for spec in was[i1:i2]]
                    diff.added += [(chain, spec) for spec in now[j1:j2]]
        out.append(diff)
    return out


def host_plan(before: Snapshot, after: Snapshot) -> HostPlan:
    """What ``after`` would change on ``before``'s host, from the renders alone."""
    policy_before, policy_after = render_policy(before), render_policy(after)
    sets: dict[str, tuple[list[str], list[str]]] = {}
    for name in sorted(set(policy_before.ipsets) | set(policy_after.ipsets)):
        was = policy_before.ipsets.get(name)
        now = policy_after.ipsets.get(name)
        old = was.members if was is not None else frozenset()
        new = now.members if now is not None else frozenset()
        if old != new or (was is None) != (now is None):
            sets[name] = (sorted(new - old), sorted(old - new))
    routes_before = RouteRenderer().render(before)
    routes_after = RouteRenderer().render(after)
    bird_before, bird_after = render_bird(before) or "", render_bird(after) or ""
    bird = "\n".join(difflib.unified_diff(bird_before.splitlines(), bird_after.splitlines(),
                                          "bird.conf", "bird.conf (after)", lineterm="", n=1))
    return HostPlan(before.hostname, _table_diffs(policy_before, policy_after), sets,
                    sorted(routes_after - routes_before, key=_route_key),
                    sorted(routes_before - routes_after, key=_route_key), bird)


def _route_key(route: RouteSpec) -> tuple[str, str]:
    return route.dst, route.interface or ""


def hosts(store: Datastore) -> list[str]:
    """Every host the datastore knows: its nodes and the hosts of its endpoints."""
    names = {keys.last(kv.key) for kv in store.list(keys.NODES)}
    names |= {kv.key[len(keys.ENDPOINTS):].split("/")[0]
              for kv in store.list(keys.ENDPOINTS)}
    return sorted(n for n in names if n)


def plan(store: Datastore, change: Change) -> Plan:
    """Each host's dataplane change if ``change`` were written now."""
    out = []
    for host in hosts(store):
        snapshot = load_snapshot(store, host)
        out.append(host_plan(snapshot, with_change(snapshot, change)))
    return Plan(out)
