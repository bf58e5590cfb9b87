"""Packets and bytes per rule of a profile on this host (``calicoctl profile show
--counters``).

The kernel counts every rule, and every rule the agent writes carries a ``cali:<hash>``
comment of its spec. The profile's chains, and the chains of the local endpoints that use
it, are rendered again from the datastore and their hashes compared with the kernel's:
where they are the same, rule N's counters are those of the lines it rendered to (its
allow, deny or log lines; not the RETURN after an allow, which counts the same packets
again), and an endpoint's drops at the end of its chain are those of the chain's last
rule. A chain the kernel holds otherwise (the agent has not caught up, or someone edited
it) is named in the notes instead of being misread.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .dataplane.iptables import Counted, read_counters, rule_hash
from .datastore import Datastore
from .errors import NotFoundError
from .model import Rule, show
from .render import names
from .render.policy import RETURN_IF_MARKED, profile_chains, render_policy
from .snapshot import Snapshot, load_snapshot

VERSIONS = (4, 6)


@dataclass
class Count:
    """Packets and bytes by IP version."""

    packets: dict[int, int] = field(default_factory=lambda: dict.fromkeys(VERSIONS, 0))
    bytes: dict[int, int] = field(default_factory=lambda: dict.fromkeys(VERSIONS, 0))

    def add(self, version: int, packets: int, size: int) -> None:
        self.packets[version] += packets
        self.bytes[version] += size

    def to_dict(self) -> dict[str, Any]:
        return {"packets": {f"ipv{v}": n for v, n in self.packets.items()},
                "bytes": {f"ipv{v}": n for v, n in self.bytes.items()}}


@dataclass
class RuleCount:
    direction: str  # inbound or outbound
    number: int     # from 1, as `calicoctl profile show` numbers it
    rule: Rule
    count: Count = field(default_factory=Count)

    def to_dict(self) -> dict[str, Any]:
        return {"direction": self.direction, "number": self.number,
                "rule": self.rule.to_dict(), **self.count.to_dict()}


@dataclass
class EndpointDrops:
    """What an endpoint's chain dropped at its end: no profile of it allowed the packet."""

    endpoint: str
    interface: str
    direction: str
    count: Count = field(default_factory=Count)

    def to_dict(self) -> dict[str, Any]:
        return {"endpoint": self.endpoint, "interface": self.interface,
                "direction": self.direction, **self.count.to_dict()}


@dataclass
class ProfileCounters:
    profile: str
    host: str
    rules: list[RuleCount]
    drops: list[EndpointDrops]
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"profile": self.profile, "host": self.host,
                "rules": [r.to_dict() for r in self.rules],
                "dropped_at_end": [d.to_dict() for d in self.drops], "notes": self.notes}


def count(snapshot: Snapshot, name: str,
          kernel: dict[int, dict[str, list[Counted]]]) -> ProfileCounters:
    """The counters of profile ``name`` on ``snapshot``'s host, from the kernel's
    counted chains of each IP version (``read_counters``)."""
    profile = snapshot.profiles.get(name)
    if profile is None:
        raise NotFoundError(f"profile {show(name)} does not exist")
    rules = [RuleCount(direction, number, rule)
             for direction, listed in (("inbound", profile.inbound_rules),
                                       ("outbound", profile.outbound_rules))
             for number, rule in enumerate(listed, 1)]
    by_place = {(r.direction, r.number - 1): r for r in rules}
    users = [e for e in snapshot.local_endpoints if e.state == "active" and name in e.profiles]
    drops = [EndpointDrops(e.id, e.interface, direction)
             for e in users for direction in ("inbound", "outbound")]
    out = ProfileCounters(name, snapshot.hostname, rules, drops)
    if not users:
        out.notes.append(f"no active endpoint on {snapshot.hostname} uses it: its rules are "
                         "not in this host's kernel")
        return out
    policy = render_policy(snapshot)
    for version in VERSIONS:
        chains = kernel.get(version, {})
        rendered = profile_chains(profile, version)
        for chain, specs in rendered.chains.items():
            direction = "inbound" if chain == names.profile_inbound(name) else "outbound"
            counted = _matching(chains, chain, specs, version, out.notes)
            for spec, origin, (_, packets, size) in zip(
                    specs, rendered.origins[chain], counted or [], strict=False):
                if spec != RETURN_IF_MARKED:
                    by_place[(direction, origin)].count.add(version, packets, size)
        table = policy.table(version, "filter").chains
        for drop in drops:
            chain = (names.to_endpoint if drop.direction == "inbound"
                     else names.from_endpoint)(drop.interface)
            if chain not in table:
                continue  # no address of this version: the dispatch drops its packets
            counted = _matching(chains, chain, table[chain], version, out.notes)
            if counted:
                drop.count.add(version, counted[-1][1], counted[-1][2])
    return out


def _matching(chains: dict[str, list[Counted]], chain: str, specs: list[str],
              version: int, notes: list[str]) -> list[Counted] | None:
    """The kernel's counted rules of ``chain`` when they are exactly ``specs``."""
    counted = chains.get(chain)
    if counted is not None and [c[0] for c in counted] == [rule_hash(s) for s in specs]:
        return counted
    notes.append(f"IPv{version} {chain}: " + ("not in the kernel" if counted is None else
                 "the kernel's rules differ from the datastore's (the agent has not "
                 "applied them yet?)") + ": not counted")
    return None


def profile_counters(store: Datastore, hostname: str, name: str,
                     read: Callable[[int], dict[str, list[Counted]]] | None = None
                     ) -> ProfileCounters:
    """Profile ``name``'s rule counters in this host's kernel (``read(version)``: the
    counted chains of one IP version, from `iptables-save -c` unless told)."""
    if read is None:
        from .dataplane.kernel import IptablesCommands

        def read(version: int) -> dict[str, list[Counted]]:
            return read_counters(IptablesCommands(version))
    snapshot = load_snapshot(store, hostname)
    return count(snapshot, name, {v: read(v) for v in VERSIONS})
