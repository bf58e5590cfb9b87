"""Apply rendered tables with one `iptables-restore --noflush` per table, touching only
`cali` chains and the hook rules that jump to them.

Every rule we write carries a comment `cali:<hash of its spec>`. Reading `iptables-save`
back gives each of our chains as a list of hashes, so comparing desired and actual state
needs no parsing of iptables' own formatting; a chain whose hashes differ (a rule deleted
or edited by hand) is rewritten whole. A no-op reconcile writes nothing.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..render.policy import Table
from .runner import CommandError

if TYPE_CHECKING:
    from .kernel import Iptables

COMMENT_RE = re.compile(r'--comment "?cali:([A-Za-z0-9_-]+)"?')
JUMP_RE = re.compile(r"-[jg] (cali-\S+)")


def rule_hash(spec: str) -> str:
    return hashlib.sha256(spec.encode()).hexdigest()[:16]


def hook_spec(target: str) -> str:
    return f"-j {target}"


@dataclass(frozen=True)
class Hook:
    """A rule in a builtin chain that jumps to one of our chains."""

    position: int  # 1-based, in the iptables-save it was read from
    target: str
    digest: str | None  # its cali:<hash> comment, None for a rule we did not write
    #: the rule as iptables-save printed it, after "-A CHAIN ": what `-D CHAIN <spec>` removes
    spec: str


@dataclass
class KernelTable:
    """Our part of one table as the kernel has it."""

    #: every cali chain: the hash of each rule (None for a rule we did not write)
    chains: dict[str, list[str | None]] = field(default_factory=dict)
    #: builtin chain -> the rules in it that jump to a cali chain, in order
    hooks: dict[str, list[Hook]] = field(default_factory=dict)
    #: every cali chain's rules as this process applied them (memory, not a kernel read:
    #: ``chains`` is then left empty and chains compare by their rules, without hashing)
    specs: dict[str, list[str]] | None = None


def parse_save(text: str) -> KernelTable:
    kernel = KernelTable()
    positions: dict[str, int] = {}
    for line in text.splitlines():
        if line.startswith(":"):
            name = line[1:].split()[0]
            if name.startswith("cali"):
                kernel.chains[name] = []
        elif line.startswith("-A "):
            chain = line.split()[1]
            positions[chain] = positions.get(chain, 0) + 1
            match = COMMENT_RE.search(line)
            digest = match.group(1) if match else None
            if chain in kernel.chains:
                kernel.chains[chain].append(digest)
            elif not chain.startswith("cali"):
                jump = JUMP_RE.search(line)
                if jump:
                    kernel.hooks.setdefault(chain, []).append(
                        Hook(positions[chain], jump.group(1), digest, line.split(None, 2)[2]))
    return kernel


def as_kernel(table: Table) -> KernelTable:
    """What the kernel holds once ``table`` has been applied."""
    return KernelTable(
        specs=dict(table.chains),
        hooks={builtin: [Hook(1, target, rule_hash(hook_spec(target)),
                              _with_comment(hook_spec(target)))]
               for builtin, target in table.hooks})


def read_table(iptables: Iptables, table: str) -> KernelTable:
    return parse_save(iptables.save(table))


COUNTED_RE = re.compile(r"\[(\d+):(\d+)\] -A (cali\S*) ")

#: one rule's counters: (its cali:<hash> comment or None, packets, bytes)
Counted = tuple[str | None, int, int]


def parse_counters(text: str) -> dict[str, list[Counted]]:
    """Every cali chain's rules, in order, with their counters, from `iptables-save -c`."""
    chains: dict[str, list[Counted]] = {}
    for line in text.splitlines():
        if line.startswith(":cali"):
            chains.setdefault(line[1:].split()[0], [])
            continue
        match = COUNTED_RE.match(line)
        if match:
            comment = COMMENT_RE.search(line)
            chains.setdefault(match.group(3), []).append(
                (comment.group(1) if comment else None, int(match.group(1)),
                 int(match.group(2))))
    return chains


def read_counters(iptables: Iptables) -> dict[str, list[Counted]]:
    """The filter table's cali chains with each rule's packet and byte counters."""
    return parse_counters(iptables.save("filter", counters=True))


@dataclass
class TablePlan:
    version: int
    table: str
    written: list[str]
    removed: list[str]
    hooks_fixed: int
    text: str | None  # the restore input, None when nothing is to be done
    #: the written chains that did not exist before
    created: list[str] = field(default_factory=list)


def plan_table(desired: Table, kernel: KernelTable) -> TablePlan:
    """What must change so the kernel's cali chains and hooks match ``desired``."""
    known: dict[str, Any]
    if kernel.specs is not None:  # what we applied: unchanged chains are the same lists
        known = kernel.specs
        written = [c for c, specs in desired.chains.items()
                   if known.get(c) is not specs and known.get(c) != specs]
    else:
        known = kernel.chains
        written = [c for c, specs in desired.chains.items()
                   if known.get(c) != [rule_hash(s) for s in specs]]
    removed = sorted(c for c in known if c not in desired.chains)
    created = [c for c in written if c not in known]
    hook_lines = []
    fixed = 0
    for builtin, target in desired.hooks:
        jumps = [h for h in kernel.hooks.get(builtin, []) if h.target == target]
        digest = rule_hash(hook_spec(target))
        if [(h.position, h.digest) for h in jumps] == [(1, digest)]:
            continue
        fixed += 1
        # Drop every earlier jump of ours to this target, then put one first. A rule is
        # deleted by its content, never by a position read earlier: another program may
        # have inserted rules since, and a position would then name one of its rules.
        hook_lines += [f"-D {builtin} {h.spec}" for h in jumps]
        hook_lines.append(f"-I {builtin} 1 {_with_comment(hook_spec(target))}")
    if not written and not removed and not hook_lines:
        return TablePlan(desired.version, desired.name, [], [], 0, None)
    lines = [f"*{desired.name}"]
    lines += [f":{c} - [0:0]" for c in written + removed]  # declaring flushes or creates
    for chain in written:
        lines += [f"-A {chain} {_with_comment(spec)}" for spec in desired.chains[chain]]
    lines += hook_lines
    lines += [f"-X {c}" for c in removed]
    lines.append("COMMIT")
    return TablePlan(desired.version, desired.name, written, removed, fixed,
                     "\n".join(lines) + "\n", created)


def _with_comment(spec: str) -> str:
    return f'-m comment --comment "cali:{rule_hash(spec)}" {spec}'


def apply_plan(iptables: Iptables, plan: TablePlan) -> None:
    """One atomic restore; on failure the kernel keeps its previous rules."""
    if plan.text is None:
        return
    try:
        iptables.restore(plan.text)
    except CommandError as exc:
        raise CommandError(exc.argv, exc.returncode,
                           _explain(exc.output, plan.text)) from None


def _explain(output: str, text: str) -> str:
    """Add the offending input line to iptables-restore's "line N" error."""
    first = next((line.strip() for line in output.splitlines() if line.strip()), "")
    match = re.search(r"line:? (\d+)", output)
    if match:
        lines = text.splitlines()
        number = int(match.group(1))
        if 0 < number <= len(lines):
            return f"{first} [line {number}: {lines[number - 1]}]"
    return first
