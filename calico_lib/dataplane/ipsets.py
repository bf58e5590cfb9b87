"""Apply rendered ipsets through `ipset restore`, touching only sets named cali*.

New and changed sets are written before the iptables rules that use them; stale sets are
destroyed after. A set whose members change wholesale is filled under a temporary name and
swapped in, so rules never see it half-filled; so is a set whose maxelem is smaller than its
new members need (a set in use by a rule cannot be destroyed, but `ipset swap` exchanges
two sets of the same type and family whatever their maxelem).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import netaddr

from ..errors import CalicoError
from ..render.names import temp_set
from ..render.policy import MAXELEM_MIN, IpSet

if TYPE_CHECKING:
    from .kernel import Ipsets


@dataclass(frozen=True)
class KernelSet:
    name: str
    kind: str
    family: str
    members: frozenset[str]
    maxelem: int = MAXELEM_MIN


def _norm(member: str) -> str:
    return str(netaddr.IPNetwork(member))


def parse_save(text: str) -> dict[str, KernelSet]:
    headers: dict[str, tuple[str, str, int]] = {}
    members: dict[str, set[str]] = {}
    for line in text.splitlines():
        words = line.split()
        if len(words) < 3 or not words[1].startswith("cali"):
            continue
        if words[0] == "create":
            family = _option(words, "family") or "inet"
            maxelem = int(_option(words, "maxelem") or MAXELEM_MIN)
            headers[words[1]] = (words[2], family, maxelem)
            members.setdefault(words[1], set())
        elif words[0] == "add":
            members.setdefault(words[1], set()).add(_norm(words[2]))
    return {name: KernelSet(name, kind, family, frozenset(members.get(name, ())), maxelem)
            for name, (kind, family, maxelem) in headers.items()}


def _option(words: list[str], option: str) -> str | None:
    """The value after ``option`` in a `create` line of `ipset save`."""
    if option in words[3:-1]:
        return words[words.index(option, 3) + 1]
    return None


def as_kernel(sets: dict[str, IpSet]) -> dict[str, KernelSet]:
    """What the kernel holds once ``sets`` have been applied. A kept set's maxelem may be
    larger than the one recorded here (never smaller), so planning from this memory may
    rebuild a set needlessly but never lets one fill up."""
    return {name: KernelSet(name, s.kind, s.family, frozenset(_norm(m) for m in s.members),
                            s.maxelem)
            for name, s in sets.items()}


def read_sets(ipsets: Ipsets) -> dict[str, KernelSet]:
    return parse_save(ipsets.save())


class SetTypeError(CalicoError):
    """A set of ours has another type in the kernel (tampering, or an older version)."""


@dataclass
class SetPlan:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    destroyed: list[str] = field(default_factory=list)
    #: `ipset restore` input run before the iptables rules, and after them
    before: str | None = None
    after: str | None = None
    #: addresses that leave a set of group members (their open connections may no
    #: longer be allowed)
    left: set[str] = field(default_factory=set)


def plan_sets(desired: dict[str, IpSet], kernel: dict[str, KernelSet],
              stale: set[str] | None = None) -> SetPlan:
    """What makes the kernel's cali sets ``desired``; every other set in ``kernel`` is
    destroyed, or only those in ``stale`` when it is given."""
    plan = SetPlan()
    before: list[str] = []
    cleared: set[str] = set()  # leftover sets the `before` text already destroys
    for name, want in desired.items():
        members = {_norm(m): m for m in want.members}
        have = kernel.get(name)
        if have is None:
            plan.created.append(name)
            before.append(f"create {name} {want.header}")
            before += [f"add {name} {m}" for m in sorted(members.values())]
            continue
        if (have.kind, have.family) != (want.kind, want.family):
            raise SetTypeError(f"ipset {name} is {have.kind}/{have.family} in the kernel; "
                               f"{want.kind}/{want.family} wanted: destroy it by hand")
        added = sorted(members[m] for m in set(members) - have.members)
        gone = sorted(have.members - set(members))
        if want.kind == "hash:ip":
            plan.left.update(m.split("/")[0] for m in gone)
        # Grown past half its room: rebuilt with a larger maxelem before it can fill up.
        small = have.maxelem < want.maxelem
        if not added and not gone and not small:
            continue
        plan.updated.append(name)
        if small or len(added) + len(gone) > max(len(members), 8):  # fill aside, swap
            temp = temp_set(name)
            if temp in kernel:  # left by a failed apply: its members or maxelem are stale
                before.append(f"destroy {temp}")
                cleared.add(temp)
            before += [f"create {temp} {want.header}"]
            before += [f"add {temp} {m}" for m in sorted(members.values())]
            before += [f"swap {temp} {name}", f"destroy {temp}"]
        else:
            before += [f"del {name} {m}" for m in gone]
            before += [f"add {name} {m}" for m in added]
    plan.before = "\n".join(before) + "\n" if before else None
    plan.destroyed = sorted(set(kernel) - set(desired) if stale is None else stale)
    for name in plan.destroyed:
        if kernel[name].kind == "hash:ip":
            plan.left.update(m.split("/")[0] for m in kernel[name].members)
    plan.after = "".join(f"destroy {n}\n" for n in plan.destroyed if n not in cleared) or None
    return plan


def plan_changes(desired: dict[str, IpSet], applied: dict[str, IpSet]) -> SetPlan:
    """``plan_sets`` against what this process applied last, without reading the kernel:
    a set equal to the one applied (its members compared as a whole) is not looked at."""
    changed = {name: s for name, s in desired.items() if applied.get(name) != s}
    before = {name: applied[name] for name in applied
              if name in changed or name not in desired}
    return plan_sets(changed, as_kernel(before), stale=set(before) - set(desired))


def apply_before(ipsets: Ipsets, plan: SetPlan) -> None:
    if plan.before:
        ipsets.restore(plan.before)


def apply_after(ipsets: Ipsets, plan: SetPlan) -> None:
    if plan.after:
        ipsets.restore(plan.after)
