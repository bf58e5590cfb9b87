"""Apply rendered ipsets through `ipset restore`, touching only sets named cali*.

New and changed sets are written before the iptables rules that use them; stale sets are
destroyed after. A set whose members change wholesale is filled under a temporary name and
swapped in, so rules never see it half-filled.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import netaddr

from ..render.names import IPSET_MAX, shorten
from ..render.policy import IpSet
from .runner import run


@dataclass(frozen=True)
class KernelSet:
    name: str
    kind: str
    family: str
    members: frozenset[str]


def _norm(member: str) -> str:
    return str(netaddr.IPNetwork(member))


def parse_save(text: str) -> dict[str, KernelSet]:
    headers: dict[str, tuple[str, str]] = {}
    members: dict[str, set[str]] = {}
    for line in text.splitlines():
        words = line.split()
        if len(words) < 3 or not words[1].startswith("cali"):
            continue
        if words[0] == "create":
            family = words[words.index("family") + 1] if "family" in words else "inet"
            headers[words[1]] = (words[2], family)
            members.setdefault(words[1], set())
        elif words[0] == "add":
            members.setdefault(words[1], set()).add(_norm(words[2]))
    return {name: KernelSet(name, kind, family, frozenset(members.get(name, ())))
            for name, (kind, family) in headers.items()}


def as_kernel(sets: dict[str, IpSet]) -> dict[str, KernelSet]:
    """What the kernel holds once ``sets`` have been applied."""
    return {name: KernelSet(name, s.kind, s.family, frozenset(_norm(m) for m in s.members))
            for name, s in sets.items()}


def read_sets() -> dict[str, KernelSet]:
    return parse_save(run(["ipset", "save"]))


@dataclass
class SetPlan:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    destroyed: list[str] = field(default_factory=list)
    #: `ipset restore` input run before the iptables rules, and after them
    before: str | None = None
    after: str | None = None


def plan_sets(desired: dict[str, IpSet], kernel: dict[str, KernelSet]) -> SetPlan:
    plan = SetPlan()
    before: list[str] = []
    for name, want in desired.items():
        members = {_norm(m): m for m in want.members}
        have = kernel.get(name)
        header = f"{want.kind} family {want.family}"
        if have is None:
            plan.created.append(name)
            before.append(f"create {name} {header}")
            before += [f"add {name} {m}" for m in sorted(members.values())]
            continue
        if (have.kind, have.family) != (want.kind, want.family):
            raise ValueError(f"ipset {name} is {have.kind}/{have.family} in the kernel; "
                             f"{want.kind}/{want.family} wanted")
        added = sorted(members[m] for m in set(members) - have.members)
        gone = sorted(have.members - set(members))
        if not added and not gone:
            continue
        plan.updated.append(name)
        if len(added) + len(gone) > max(len(members), 8):  # wholesale: fill aside, swap
            temp = shorten(f"{name}-tmp", IPSET_MAX)
            before += [f"create {temp} {header}"]
            before += [f"add {temp} {m}" for m in sorted(members.values())]
            before += [f"swap {temp} {name}", f"destroy {temp}"]
        else:
            before += [f"del {name} {m}" for m in gone]
            before += [f"add {name} {m}" for m in added]
    plan.before = "\n".join(before) + "\n" if before else None
    plan.destroyed = sorted(set(kernel) - set(desired))
    plan.after = "".join(f"destroy {n}\n" for n in plan.destroyed) or None
    return plan


def apply_before(plan: SetPlan) -> None:
    if plan.before:
        run(["ipset", "restore", "-exist"], stdin=plan.before)


def apply_after(plan: SetPlan) -> None:
    if plan.after:
        run(["ipset", "restore", "-exist"], stdin=plan.after)
