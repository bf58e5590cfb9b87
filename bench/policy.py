"""Policy dataplane: one full apply next to per-rule iptables calls and Ansible, in one run.

A synthetic snapshot (default: 1,000 local endpoints, 100 profiles, 5,000 rules; no
datastore) is rendered and applied inside a network namespace this script creates and
always deletes, so the machine's own iptables, ipsets and routes are never touched. It
times, in the same run:

  1. ``render_policy`` alone, and a full render + apply from empty (``apply_snapshot``),
     with a breakdown of where ``apply_snapshot`` spends its time;
  2. the per-rule baseline: the IPv4 filter table as a first apply writes it (``plan_table``
     against an empty kernel: the agent's own restore input) applied with one
     ``iptables -N`` per chain and one ``iptables -A`` (or ``-I``, a hook) per rule (ipsets
     are created first, untimed); past a time budget the rest is extrapolated from the calls
     made, and the output says so. One ``iptables-restore`` of the same text is shown too;
  3. an ``ansible.builtin.iptables`` loop over a few of those rules (when ansible-playbook
     is installed; it is never installed here), extrapolated to the whole table;
  4. one endpoint added incrementally (``apply_snapshot`` of a snapshot with one more);
  5. a no-op reconcile two ways: verified (``apply_snapshot`` again: reads the kernel, as the
     agent's periodic resync does) and as the agent reconciles on a datastore change that
     leaves this host's render unchanged (``Dataplane.apply(verify=False)``: no kernel reads).

It prints seconds side by side and the targets as ratios (full apply at least 30x faster
than per-rule calls; a no-op under 5% of a full apply). Times are reported, never asserted.

Run as root: .venv/bin/python bench/policy.py [--quick] [--endpoints N] [--profiles N]
             [--rules N] [--ipv6] [--per-rule-budget SECONDS] [--ansible-rules N]
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import json
import os
import random
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from calico_lib.dataplane import ipsets, iptables  # noqa: E402
from calico_lib.dataplane.kernel import Kernel, real_kernel  # noqa: E402
from calico_lib.model import Endpoint, IPPool, Profile, Rule  # noqa: E402
from calico_lib.reconcile import Dataplane, Report, apply_snapshot  # noqa: E402
from calico_lib.render.policy import Policy, PolicyRenderer, render_policy  # noqa: E402
from calico_lib.snapshot import Snapshot  # noqa: E402

HOSTNAME = "bench-host"
V4_POOL = ipaddress.ip_network("10.96.0.0/16")
V6_POOL = ipaddress.ip_network("fd00:96::/64")
FULL = {"endpoints": 1000, "profiles": 100, "rules": 5000, "ansible_rules": 50}
QUICK_DIVISOR = 10
TCP_PORTS = [22, 80, 443, 3306, 5432, 6379, 8000, 8080, 8443, 9090, 9200, 11211, 27017]
UDP_PORTS = [53, 123, 161, 514, 1194, 4789, 5353]
NOOP_REPEATS = 3
RENDER_REPEATS = 3
SUBPROCESS_TIMEOUT = 600.0


# --------------------------------------------------------------------------- the snapshot

def _rule(rng: random.Random, own: str, others: list[str]) -> Rule:
    """One rule of the mix: tcp (1-3 ports), udp, tags of other profiles, nets, denies."""
    other = rng.choice(others) if others else own
    kind = rng.choices(["tcp", "udp", "tag", "net", "deny", "icmp"],
                       weights=[35, 15, 20, 15, 10, 5])[0]
    if kind == "tcp":
        ports = rng.sample(TCP_PORTS, rng.randint(1, 3))
        return Rule(protocol="tcp", dst_ports=ports,
                    src_tag=other if rng.random() < 0.3 else None)
    if kind == "udp":
        return Rule(protocol="udp", dst_ports=[rng.choice(UDP_PORTS)])
    if kind == "tag":
        return Rule(src_tag=other, protocol=rng.choice([None, "tcp"]))
    nets = [f"172.{rng.randint(16, 31)}.{rng.randint(0, 255)}.0/24"
            for _ in range(rng.choice([1, 1, 2]))]  # two nets make a hash:net set
    if kind == "net":
        return Rule(src_net=nets)
    if kind == "deny":
        if rng.random() < 0.5:
            return Rule(action="deny", protocol="tcp", dst_ports=[rng.choice(TCP_PORTS)])
        return Rule(action="deny", src_net=nets[:1])
    return Rule(protocol="icmp", icmp_type=8)


def _endpoint(index: int, rng: random.Random, profiles: list[str], ipv6: bool,
              used_interfaces: set[str]) -> Endpoint:
    while True:
        interface = f"cali{rng.getrandbits(44):011x}"
        if interface not in used_interfaces:
            used_interfaces.add(interface)
            break
    chosen = [profiles[index % len(profiles)]]
    if rng.random() < 0.1 and len(profiles) > 1:
        chosen.append(rng.choice([p for p in profiles if p != chosen[0]]))
    mac = "02:" + ":".join(f"{rng.randrange(256):02x}" for _ in range(5))
    return Endpoint(
        id=f"ep-{index:06d}", host=HOSTNAME, interface=interface, mac=mac,
        ipv4_nets=[str(V4_POOL.network_address + 1 + index)],
        ipv6_nets=[str(V6_POOL.network_address + 1 + index)] if ipv6 else [],
        profiles=chosen)


def build_snapshot(endpoints: int, profiles: int, rules: int, ipv6: bool,
                   seed: int) -> Snapshot:
    """A deterministic snapshot of one host's endpoints, profiles and rules."""
    rng = random.Random(seed)
    names = [f"prof-{i:03d}" for i in range(profiles)]
    inbound: dict[str, list[Rule]] = {n: [] for n in names}
    outbound: dict[str, list[Rule]] = {n: [] for n in names}
    for _ in range(rules):
        own = rng.choice(names)
        direction = inbound if rng.random() < 0.7 else outbound
        direction[own].append(_rule(rng, own, [n for n in names if n != own]))
    pools = [IPPool(str(V4_POOL), nat_outgoing=True)]
    if ipv6:
        pools.append(IPPool(str(V6_POOL)))
    used: set[str] = set()
    return Snapshot(
        hostname=HOSTNAME,
        revision=1,
        pools=tuple(pools),
        profiles={n: Profile(name=n, tags=[n], inbound_rules=inbound[n],
                             outbound_rules=outbound[n]) for n in names},
        endpoints=tuple(_endpoint(i, rng, names, ipv6, used) for i in range(endpoints)),
    )


def with_one_more_endpoint(snapshot: Snapshot, seed: int) -> Snapshot:
    rng = random.Random(seed + 1)
    used = {e.interface for e in snapshot.endpoints}
    names = sorted(snapshot.profiles)
    new = _endpoint(len(snapshot.endpoints), rng, names, bool(snapshot.endpoints[0].ipv6_nets),
                    used)
    return dataclasses.replace(snapshot, revision=snapshot.revision + 1,
                               endpoints=snapshot.endpoints + (new,))


def rule_count(policy: Policy) -> int:
    """Every rule the policy writes: chain rules plus the hook jumps, all tables."""
    return sum(len(specs) for t in policy.tables for specs in t.chains.values()) + sum(
        len(t.hooks) for t in policy.tables)


# --------------------------------------------------------------------------- phase clock

#: (label, owner, function) of the pure phases: reconcile looks these up as attributes at
#: call time, so wrapping the attribute times every call. The kernel's phases are timed
#: by wrapping the handlers the apply is given (``timed_kernel``).
PHASES: list[tuple[str, Any, str]] = [
    ("render", PolicyRenderer, "render"),
    ("ipset plan", ipsets, "plan_sets"),
    ("plan", iptables, "plan_table"),
]
#: handler method -> label
HANDLER_PHASES = {("ipsets", "save"): "ipset save", ("ipsets", "restore"): "ipset restore",
                  ("iptables", "save"): "iptables-save",
                  ("iptables", "restore"): "iptables-restore",
                  ("routes", "apply"): "routes", ("routes", "apply_changes"): "routes",
                  ("conntrack", "flush"): "conntrack"}
PHASE_LABELS = list(dict.fromkeys([label for label, _, _ in PHASES]
                                  + list(HANDLER_PHASES.values())))


def _timed(totals: dict[str, float], label: str, func: Callable[..., Any]
           ) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return func(*args, **kwargs)
        finally:
            totals[label] += time.perf_counter() - start
    return wrapper


class _Timed:
    """A handler whose methods named in HANDLER_PHASES add their seconds to ``totals``."""

    def __init__(self, kind: str, inner: Any, totals: dict[str, float]) -> None:
        self.version = getattr(inner, "version", None)
        for (owner, method), label in HANDLER_PHASES.items():
            if owner == kind:
                setattr(self, method, _timed(totals, label, getattr(inner, method)))


def timed_kernel(totals: dict[str, float]) -> Kernel:
    """This host's kernel with each handler call timed into ``totals``."""
    kernel = real_kernel()
    # replace() keeps every other handler (the tunnel, any added later) as it is
    return dataclasses.replace(
        kernel, iptables={v: _Timed("iptables", h, totals) for v, h in kernel.iptables.items()},
        ipsets=_Timed("ipsets", kernel.ipsets, totals),
        conntrack=_Timed("conntrack", kernel.conntrack, totals),
        routes=_Timed("routes", kernel.routes, totals))


@contextmanager
def phase_clock() -> Iterator[tuple[dict[str, float], Kernel]]:
    """Seconds per phase of the applies made inside the block through the kernel it
    gives."""
    totals = dict.fromkeys(PHASE_LABELS, 0.0)
    originals = [(owner, name, getattr(owner, name)) for _, owner, name in PHASES]
    for (label, owner, name), (_, _, func) in zip(PHASES, originals, strict=True):
        setattr(owner, name, _timed(totals, label, func))
    try:
        yield totals, timed_kernel(totals)
    finally:
        for owner, name, func in originals:
            setattr(owner, name, func)


# --------------------------------------------------------------------------- shell helpers

def sh(argv: list[str], stdin: str | None = None) -> str:
    proc = subprocess.run(argv, input=stdin, capture_output=True, text=True,
                          timeout=SUBPROCESS_TIMEOUT, check=False)
    if proc.returncode != 0:
        first = (proc.stderr or proc.stdout).strip().splitlines()[:1]
        raise RuntimeError(f"{shlex.join(argv[:4])} failed (exit {proc.returncode})"
                           + (f": {first[0]}" if first else ""))
    return proc.stdout


def flush_filter_v4() -> None:
    """Empty the namespace's IPv4 filter table (its sets stay)."""
    sh(["iptables", "-w", "-t", "filter", "-F"])
    sh(["iptables", "-w", "-t", "filter", "-X"])


def reset_namespace() -> None:
    """Back to an empty namespace: no rules, no user chains, no sets."""
    for command in ("iptables", "ip6tables"):
        for table in ("filter", "nat"):
            sh([command, "-w", "-t", table, "-F"])
            sh([command, "-w", "-t", table, "-X"])
    sh(["ipset", "destroy"])


def parse_restore_text(text: str) -> tuple[list[str], list[list[str]]]:
    """The chains declared and the `-A` and `-I` rules (as argv: a hook is inserted first)
    of one iptables-restore table."""
    chains = [line[1:].split()[0] for line in text.splitlines() if line.startswith(":")]
    rules = [shlex.split(line) for line in text.splitlines()
             if line.startswith(("-A ", "-I "))]
    return chains, rules


def first_apply_texts(policy: Policy) -> tuple[str, str]:
    """What a first apply writes: the ipset restore input, and the IPv4 filter table's
    iptables-restore input (the agent's planners against an empty kernel)."""
    sets = ipsets.plan_sets(policy.ipsets, {}).before or ""
    table = iptables.plan_table(policy.table(4, "filter"), iptables.KernelTable())
    return sets, table.text or ""


# --------------------------------------------------------------------------- measurements

@dataclass
class Apply:
    seconds: float
    phases: dict[str, float]
    report: Report


def timed_apply(snapshot: Snapshot) -> Apply:
    with phase_clock() as (phases, kernel):
        start = time.perf_counter()
        report = apply_snapshot(snapshot, kernel=kernel)
        seconds = time.perf_counter() - start
    return Apply(seconds, dict(phases), report)


@dataclass
class PerRule:
    chains: int
    rules: int
    chain_seconds: float
    rule_seconds: float  # for the `timed_rules` rules actually run
    timed_rules: int
    first_ms: float  # mean per call over the first and the last tenth of the calls run
    last_ms: float

    @property
    def extrapolated(self) -> bool:
        return self.timed_rules < self.rules

    @property
    def total(self) -> float:
        """Seconds for every chain and rule; rules not run count at the mean rate of those
        run (a call tends to get slower as the table grows, so this errs low)."""
        return self.chain_seconds + self.rule_seconds * self.rules / self.timed_rules


def per_rule_calls(text: str, budget: float) -> PerRule:
    """One `iptables -N` per chain, then one `iptables -A` per rule until the budget is used."""
    chains, rules = parse_restore_text(text)
    start = time.perf_counter()
    for chain in chains:
        sh(["iptables", "-w", "-t", "filter", "-N", chain])
    chain_seconds = time.perf_counter() - start
    calls: list[float] = []
    start = time.perf_counter()
    for argv in rules:
        before = time.perf_counter()
        sh(["iptables", "-w", "-t", "filter", *argv])
        calls.append(time.perf_counter() - before)
        if time.perf_counter() - start > budget:
            break
    rule_seconds = time.perf_counter() - start
    tenth = max(1, len(calls) // 10)
    return PerRule(len(chains), len(rules), chain_seconds, rule_seconds, len(calls),
                   1000 * statistics.fmean(calls[:tenth]),
                   1000 * statistics.fmean(calls[-tenth:]))


#: ansible.builtin.iptables options the translated rules use
ANSIBLE_OPTIONS = ("protocol", "source", "destination", "in_interface", "out_interface",
                   "match_set", "match_set_flags", "destination_ports", "icmp_type",
                   "jump", "goto", "comment")


def ansible_params(argv: list[str]) -> tuple[dict[str, str], bool] | None:
    """Module options for one `-A CHAIN ...` rule, and whether a target was stood in for.

    The module cannot express the MARK target nor the mark match: an allow rule's
    `-j MARK --set-xmark` becomes `-j ACCEPT`, and `-m mark --mark M -j RETURN` becomes
    `-j RETURN` (same number of calls per rule, which is what is measured). Returns None
    for a rule it cannot translate at all.
    """
    params = {"chain": argv[1]}
    stand_in = False
    bang = ""
    simple = {"-p": "protocol", "-s": "source", "-d": "destination", "-i": "in_interface",
              "-o": "out_interface", "--icmp-type": "icmp_type", "-g": "goto"}
    i = 2
    while i < len(argv):
        token = argv[i]
        if token == "!":
            bang, i = "!", i + 1
            continue
        if token in simple:
            params[simple[token]] = bang + argv[i + 1]
            i += 2
        elif token == "-m":
            i += 2  # each option below implies its module
        elif token == "--comment":
            params["comment"] = argv[i + 1]
            i += 2
        elif token == "--match-set":
            params["match_set"] = bang + argv[i + 1]
            params["match_set_flags"] = argv[i + 2]
            i += 3
        elif token == "--dports" and not bang:
            params["destination_ports"] = argv[i + 1]  # a list option takes "a,b"
            i += 2
        elif token == "--mark" and not bang:
            stand_in, i = True, i + 2
        elif token == "-j":
            target = argv[i + 1]
            if target == "MARK":
                params["jump"], stand_in = "ACCEPT", True
                break  # the rest is MARK's own options
            params["jump"] = target
            i += 2
        else:
            return None
        bang = ""
    return params, stand_in


@dataclass
class AnsibleRun:
    rules: int
    one_rule_seconds: float
    seconds: float
    stand_ins: int
    written: int

    @property
    def per_rule(self) -> float:
        return (self.seconds - self.one_rule_seconds) / max(1, self.rules - 1)

    @property
    def startup(self) -> float:
        return max(0.0, self.one_rule_seconds - self.per_rule)

    def extrapolate(self, rules: int) -> float:
        return self.startup + self.per_rule * rules


def find_ansible_playbook() -> str | None:
    beside = Path(sys.executable).parent / "ansible-playbook"
    if beside.exists():
        return str(beside)
    return shutil.which("ansible-playbook")


def ansible_loop(playbook_bin: str, text: str, count: int) -> AnsibleRun:
    """An ansible.builtin.iptables loop over the first ``count`` profile rules.

    Runs ansible-playbook against localhost with ansible_connection=local, in this
    namespace. It runs twice (one rule, then ``count``) on emptied chains, so that the
    playbook's start-up cost is separated from the cost of each rule.
    """
    _, rules = parse_restore_text(text)
    chosen: list[dict[str, str]] = []
    stand_ins = 0
    for argv in rules:
        if not argv[1].startswith(("cali-pi-", "cali-po-")):
            continue
        translated = ansible_params(argv)
        if translated is not None:
            # a comment of its own, as apply_snapshot gives every rule: without it, two
            # stood-in rules alike in one chain would pass the module's -C check as present
            chosen.append(translated[0] | {"comment": f"calib:{len(chosen)}"})
            stand_ins += translated[1]
        if len(chosen) == count:
            break
    chains = sorted({p["chain"] for p in chosen})
    options = {"table": "filter", "chain": "{{ item.chain }}"}
    options |= {o: f"{{{{ item.{o} | default(omit) }}}}" for o in ANSIBLE_OPTIONS}
    playbook = [{"hosts": "all", "gather_facts": False, "tasks": [
        {"name": "one rule per loop item", "ansible.builtin.iptables": options,
         "loop": "{{ calib_rules }}"}]}]
    with tempfile.TemporaryDirectory(prefix="calib-ansible-") as tmp:
        work = Path(tmp)
        (work / "playbook.yml").write_text(json.dumps(playbook, indent=1))  # JSON is YAML
        inventory = {"all": {"hosts": {"localhost": {
            "ansible_connection": "local",
            "ansible_python_interpreter": "{{ ansible_playbook_python }}"}}}}
        (work / "inventory.yml").write_text(json.dumps(inventory))
        env = dict(os.environ, ANSIBLE_LOCAL_TEMP=str(work / "local"),
                   ANSIBLE_REMOTE_TEMP=str(work / "remote"), ANSIBLE_NOCOLOR="1",
                   ANSIBLE_RETRY_FILES_ENABLED="0", ANSIBLE_LOCALHOST_WARNING="0")

        def run(items: list[dict[str, str]]) -> float:
            flush_filter_v4()  # untimed: empty chains, so every item appends
            for chain in chains:
                sh(["iptables", "-w", "-t", "filter", "-N", chain])
            (work / "vars.json").write_text(json.dumps({"calib_rules": items}))
            argv = [playbook_bin, "-i", str(work / "inventory.yml"), str(work / "playbook.yml"),
                    "-e", f"@{work / 'vars.json'}"]
            start = time.perf_counter()
            proc = subprocess.run(argv, cwd=work, env=env, capture_output=True, text=True,
                                  timeout=SUBPROCESS_TIMEOUT, check=False)
            seconds = time.perf_counter() - start
            recap = [line for line in proc.stdout.splitlines() if line.startswith("localhost ")]
            if proc.returncode != 0 or not recap:
                failed = [line for line in proc.stdout.splitlines() if "FAILED" in line]
                raise RuntimeError("ansible-playbook failed: " + (
                    failed[0] if failed else (proc.stderr or proc.stdout).strip()[:300]))
            return seconds

        one = run(chosen[:1])
        seconds = run(chosen)
    written = len(parse_restore_text(sh(["iptables-save", "-t", "filter"]))[1])
    return AnsibleRun(len(chosen), one, seconds, stand_ins, written)


# --------------------------------------------------------------------------- the run

@dataclass
class Sizes:
    endpoints: int
    profiles: int
    rules: int
    ipv6: bool
    ansible_rules: int
    per_rule_budget: float
    seed: int


@dataclass
class Row:
    label: str
    seconds: float | None
    rules: int | None = None
    note: str = ""


@dataclass
class Results:
    rows: list[Row] = field(default_factory=list)
    applies: dict[str, Apply] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def run_inside(sizes: Sizes) -> int:
    """Every measurement; runs in the benchmark's own network namespace."""
    snapshot = build_snapshot(sizes.endpoints, sizes.profiles, sizes.rules, sizes.ipv6,
                              sizes.seed)
    bigger = with_one_more_endpoint(snapshot, sizes.seed)
    out = Results()

    renders = []
    for _ in range(RENDER_REPEATS):
        start = time.perf_counter()
        policy = render_policy(snapshot)
        renders.append(time.perf_counter() - start)
    sets_text, v4_text = first_apply_texts(policy)
    v4_chains, v4_rules = parse_restore_text(v4_text)
    print(f"snapshot: {sizes.endpoints} endpoints, {sizes.profiles} profiles, "
          f"{sizes.rules} rules{' (IPv4 and IPv6 addresses)' if sizes.ipv6 else ''}; "
          f"rendered: {len(policy.ipsets)} ipsets, {rule_count(policy)} rules in all tables, "
          f"{len(v4_rules)} rules in {len(v4_chains)} chains in the IPv4 filter table",
          flush=True)

    full = out.applies["full apply"] = timed_apply(snapshot)
    noops = [timed_apply(snapshot) for _ in range(NOOP_REPEATS)]
    noop = out.applies["no-op"] = sorted(noops, key=lambda a: a.seconds)[NOOP_REPEATS // 2]
    # The agent's way: a long-lived Dataplane that remembers what it applied; a datastore
    # change that leaves this host's render unchanged costs a render and a route check.
    dataplane = Dataplane()
    dataplane.apply(snapshot)
    quick_times = []
    for _ in range(NOOP_REPEATS):
        start = time.perf_counter()
        quick_report = dataplane.apply(snapshot, verify=False)
        quick_times.append(time.perf_counter() - start)
    quick = statistics.median(quick_times)
    incremental = out.applies["+1 endpoint"] = timed_apply(bigger)

    out.rows.append(Row(f"render only (render_policy, median of {RENDER_REPEATS})",
                        statistics.median(renders)))
    out.rows.append(Row("full render + apply (apply_snapshot from empty)", full.seconds,
                        rule_count(policy), "IPv4+IPv6, filter+nat, ipsets, routes"))

    # The baselines start from an emptied namespace with the sets already there.
    reset_namespace()
    sh(["ipset", "restore"], sets_text)
    start = time.perf_counter()
    sh(["iptables-restore", "--noflush", "--wait"], v4_text)
    out.rows.append(Row("one iptables-restore of the IPv4 filter text",
                        time.perf_counter() - start, len(v4_rules), "reference"))
    flush_filter_v4()
    print(f"per-rule baseline: {len(v4_chains)} iptables -N, {len(v4_rules)} iptables -A "
          f"(budget {sizes.per_rule_budget:.0f} s) ...", flush=True)
    per_rule = per_rule_calls(v4_text, sizes.per_rule_budget)
    note = (f"extrapolated from {per_rule.timed_rules} rules" if per_rule.extrapolated
            else "all rules run")
    out.rows.append(Row(f"per-rule: iptables -N x{per_rule.chains} + -A x{per_rule.rules}",
                        per_rule.total, per_rule.rules, note))
    out.notes.append(f"per-rule: -N {per_rule.chain_seconds:.2f} s for {per_rule.chains} "
                     f"chains; -A {1000 * per_rule.rule_seconds / per_rule.timed_rules:.2f} "
                     f"ms a call (first tenth {per_rule.first_ms:.2f} ms, last tenth "
                     f"{per_rule.last_ms:.2f} ms); IPv4 filter only, each rule with the "
                     f"cali: comment apply_snapshot gives it")

    ansible: AnsibleRun | None = None
    playbook_bin = find_ansible_playbook()
    if playbook_bin is None:
        out.rows.append(Row("ansible: not installed, skipped", None))
    else:
        print(f"ansible.builtin.iptables loop over {sizes.ansible_rules} rules ...", flush=True)
        try:
            ansible = ansible_loop(playbook_bin, v4_text, sizes.ansible_rules)
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            out.rows.append(Row(f"ansible: {str(exc).splitlines()[0][:120]}; skipped", None))
    if ansible is not None:
        out.rows.append(Row(f"ansible.builtin.iptables loop ({ansible.rules} rules)",
                            ansible.seconds, ansible.rules,
                            f"{ansible.per_rule:.3f} s/rule + {ansible.startup:.2f} s start"))
        out.rows.append(Row(f"  ansible extrapolated to {len(v4_rules)} rules",
                            ansible.extrapolate(len(v4_rules)), len(v4_rules),
                            f"extrapolated from {ansible.rules} rules; chains not counted"))
        if ansible.written != ansible.rules:
            out.notes.append(f"ansible: {ansible.written} rules found after the loop, "
                             f"{ansible.rules} expected")
        if ansible.stand_ins:
            out.notes.append(f"ansible: {ansible.stand_ins} of {ansible.rules} rules had their "
                             "MARK target or mark match stood in for by ACCEPT/RETURN (the "
                             "module cannot express them)")

    what = incremental.report.summary().split(": ", 1)[-1].rsplit(" (", 1)[0]
    out.rows.append(Row("+1 endpoint (apply_snapshot, incremental)", incremental.seconds,
                        None, what))
    out.rows.append(Row(f"no-op, verified (reads the kernel: resync; median of "
                        f"{NOOP_REPEATS})", noop.seconds, None,
                        f"changed={noop.report.changed}"))
    out.rows.append(Row(f"no-op, agent on a datastore change (median of {NOOP_REPEATS})",
                        quick, None, f"changed={quick_report.changed}, "
                        f"kernel read={quick_report.verified}"))
    if any(a.report.changed for a in noops):
        out.notes.append("NOTE: a no-op reconcile reported changes: "
                         + next(a.report.summary() for a in noops if a.report.changed))

    print_results(out, full.seconds, per_rule, ansible, quick, noop.seconds)
    return 0


def _seconds(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value:.3f}" if value < 100 else f"{value:.0f}"


def _ratio(value: float) -> str:
    return f"{value:.2f}" if value < 10 else f"{value:.1f}" if value < 100 else f"{value:.0f}"


def print_results(out: Results, full: float, per_rule: PerRule, ansible: AnsibleRun | None,
                  noop: float, verified_noop: float) -> None:
    print()
    print(f"{'measurement':58} {'seconds':>9} {'rules':>7} {'ms/rule':>8} {'/ full':>8}  note")
    for row in out.rows:
        per = (f"{1000 * row.seconds / row.rules:8.3f}" if row.seconds and row.rules
               else f"{'':8}")
        ratio = f"{_ratio(row.seconds / full):>7}x" if row.seconds is not None else f"{'':8}"
        rules = f"{row.rules:7d}" if row.rules else f"{'':7}"
        print(f"{row.label:58} {_seconds(row.seconds):>9} {rules} {per} {ratio}  {row.note}")

    print()
    print("where apply_snapshot spends its time (seconds):")
    print(f"{'':14}" + "".join(f"{label:>17}" for label in PHASE_LABELS))
    for name, applied in out.applies.items():
        print(f"{name:14}" + "".join(f"{applied.phases[label]:17.3f}"
                                     for label in PHASE_LABELS))
    for note in out.notes:
        print(note)

    print()
    how = (f", extrapolated from {per_rule.timed_rules} rules" if per_rule.extrapolated
           else "")
    print(f"full apply vs per-rule: {per_rule.total / full:.1f}x (target >= 30x){how}")
    if ansible is not None:
        print(f"full apply vs ansible.builtin.iptables: "
              f"{ansible.extrapolate(per_rule.rules) / full:.0f}x "
              f"(extrapolated from {ansible.rules} rules)")
    print(f"no-op / full apply: {100 * noop / full:.1f}% (target < 5%; the agent on a "
          f"datastore change); a verified no-op (periodic resync, reads the kernel): "
          f"{100 * verified_noop / full:.1f}%")


# --------------------------------------------------------------------------- entry point

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    doc = __doc__ or ""
    parser = argparse.ArgumentParser(
        description=doc.split("\n\n")[0],
        epilog="Needs root (it creates a network namespace calib-<pid> and deletes it).")
    parser.add_argument("--quick", action="store_true",
                        help=f"{QUICK_DIVISOR}x smaller default sizes, for a smoke run")
    parser.add_argument("--endpoints", type=int, help=f"default {FULL['endpoints']}")
    parser.add_argument("--profiles", type=int, help=f"default {FULL['profiles']}")
    parser.add_argument("--rules", type=int, help=f"default {FULL['rules']}")
    parser.add_argument("--ipv6", action="store_true",
                        help="give every endpoint an IPv6 address as well")
    parser.add_argument("--ansible-rules", type=int,
                        help=f"rules in the Ansible loop (default {FULL['ansible_rules']})")
    parser.add_argument("--per-rule-budget", type=float, default=60.0, metavar="SECONDS",
                        help="time the per-rule calls up to this long, then extrapolate "
                             "(default 60)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--inside", metavar="NAMESPACE", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def sizes_from(args: argparse.Namespace) -> Sizes:
    def pick(name: str) -> int:
        given = getattr(args, name)
        if given is not None:
            return int(given)
        return max(1, FULL[name] // QUICK_DIVISOR) if args.quick else FULL[name]

    sizes = Sizes(pick("endpoints"), pick("profiles"), pick("rules"), args.ipv6,
                  pick("ansible_rules"), args.per_rule_budget, args.seed)
    if not 1 <= sizes.endpoints < V4_POOL.num_addresses - 2:
        raise SystemExit(f"--endpoints: use 1-{V4_POOL.num_addresses - 3}")
    if sizes.profiles < 1 or sizes.rules < 0 or sizes.ansible_rules < 2:
        raise SystemExit("--profiles must be >= 1, --rules >= 0, --ansible-rules >= 2")
    return sizes


def run_in_namespace(argv: list[str], script: str | None = None) -> int:
    """Re-run this script (or ``script``) with --inside in a new network namespace; always
    delete it."""
    namespace = f"calib-{os.getpid()}"
    try:
        sh(["ip", "netns", "add", namespace])
    except (RuntimeError, FileNotFoundError) as exc:
        print(f"cannot create network namespace {namespace} (run as root): {exc}",
              file=sys.stderr)
        return 1
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH")) if p))
    child: subprocess.Popen[bytes] | None = None
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        child = subprocess.Popen(["ip", "netns", "exec", namespace, sys.executable,
                                  str(Path(script or __file__).resolve()), "--inside", namespace,
                                  *argv],
                                 env=env)
        return child.wait()
    except KeyboardInterrupt:  # the child got the same SIGINT: give it time to clean up
        try:
            if child is not None:
                child.wait(timeout=10)
        except (subprocess.TimeoutExpired, KeyboardInterrupt):
            pass
        return 130
    finally:
        if child is not None and child.poll() is None:
            child.terminate()
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        subprocess.run(["ip", "netns", "del", namespace], check=False)
        signal.signal(signal.SIGTERM, previous)


def _exit_on_sigterm(signum: int, frame: object) -> None:
    """SIGTERM unwinds like Ctrl-C does, so cleanup (finally blocks) still runs."""
    sys.exit(128 + signum)


def in_namespace(namespace: str) -> bool:
    """True when this process runs in the named network namespace (see `ip netns`)."""
    try:
        named = os.stat(Path("/run/netns") / namespace)
        own = os.stat("/proc/self/ns/net")
    except OSError:
        return False
    return (named.st_dev, named.st_ino) == (own.st_dev, own.st_ino)


def main() -> int:
    args = parse_args()
    sizes = sizes_from(args)
    if not args.inside:
        return run_in_namespace(sys.argv[1:])
    if not in_namespace(args.inside):
        print(f"not in network namespace {args.inside!r}: refusing to touch this one",
              file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        return run_inside(sizes)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
