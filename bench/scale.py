"""The cost of one endpoint added or removed as a host grows, measured in one run.

For 10, 1,000 and 10,000 local endpoints (100 profiles, 5,000 rules, IPv4 and IPv6), and
1,000 endpoints with 1,000 profiles, inside a network namespace this script creates and
always deletes (the machine's own iptables, ipsets and routes are never touched), it times:

  1. a full apply from an empty host (``Dataplane.apply``, reading the kernel first);
  2. one endpoint added, then removed again, as the agent and the plugin apply a datastore
     change (``Dataplane.apply(verify=False)``: from memory of the last apply), median of a
     few; the number of kernel reads those applies made (iptables-save, ipset save; route
     and link dumps do not happen on this path) is printed too and must be 0;
  3. the periodic verified resync with nothing to repair (``Dataplane.apply(verify=True)``:
     reads iptables, ipsets and routes);
  4. the agent's datastore read at that size (``load_snapshot`` of a SQLite store holding
     the same endpoints, with the agent's cache of decoded records), which a change
     costs besides the dataplane.

Each local endpoint gets a veth of its name, so its routes are real. It prints
the figures side by side and the targets as ratios: add/remove within 2x across the sizes
(against the 10-endpoint host), the verified resync within 10% of a full apply. Times are
reported, never asserted.

Run as root: .venv/bin/python bench/scale.py [--quick] [--repeats N]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import signal
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))
sys.path.insert(0, str(BENCH))

import policy as policy_bench  # noqa: E402

from calico_lib import keys  # noqa: E402
from calico_lib.dataplane import runner  # noqa: E402
from calico_lib.dataplane.kernel import real_kernel  # noqa: E402
from calico_lib.datastore.base import Put  # noqa: E402
from calico_lib.datastore.sqlite import SqliteDatastore  # noqa: E402
from calico_lib.reconcile import Dataplane  # noqa: E402
from calico_lib.records import DecodeCache  # noqa: E402
from calico_lib.snapshot import Snapshot, load_snapshot  # noqa: E402

#: (local endpoints, profiles)
FULL_SIZES = ((10, 100), (1000, 100), (10000, 100), (1000, 1000))
QUICK_SIZES = ((10, 100), (300, 100), (1000, 100), (300, 1000))
RULES = 5000
SEED = 13


@dataclasses.dataclass
class Row:
    endpoints: int
    profiles: int
    rules: int = 0
    full: float = 0.0
    add: float = 0.0
    remove: float = 0.0
    verified_noop: float = 0.0
    load: float = 0.0
    kernel_reads: int = 0


def reset_host() -> None:
    """Nothing of ours left: chains, sets, veths (and their routes)."""
    policy_bench.reset_namespace()
    links = policy_bench.sh(["ip", "-o", "link", "show", "type", "veth"]).splitlines()
    names = [line.split(":")[1].strip().split("@")[0] for line in links]
    names = [n for n in names if n.startswith("cali")]  # their peers go with them
    if names:
        policy_bench.sh(["ip", "-batch", "-"], "".join(f"link del {n}\n" for n in names))


def add_interfaces(snapshot: Snapshot) -> None:
    # this kernel has no dummy links: a veth pair each (the peer named after it)
    policy_bench.sh(["ip", "-batch", "-"], "".join(
        f"link add {ep.interface} type veth peer name p{ep.interface[4:]}\n"
        for ep in snapshot.local_endpoints))


class ReadCounter:
    """A ``runner.run`` for the dataplane's kernel that counts the reads it makes
    (``iptables-save``, ``ip6tables-save``, ``ipset save``)."""

    def __init__(self) -> None:
        self.reads = 0

    def __call__(self, argv: Sequence[str], *args: Any, **kwargs: Any) -> str:
        if argv[0].endswith("-save") or list(argv[:2]) == ["ipset", "save"]:
            self.reads += 1
        return runner.run(argv, *args, **kwargs)


def store_of(snapshot: Snapshot) -> SqliteDatastore:
    store = SqliteDatastore.in_memory()
    ops = [Put(keys.profile(p.name), json.dumps(p.to_dict()))
           for p in snapshot.profiles.values()]
    ops += [Put(keys.endpoint(e.host, e.id), json.dumps(e.to_dict()))
            for e in snapshot.endpoints]
    ops += [Put(keys.pool(p.cidr), json.dumps(p.to_dict())) for p in snapshot.pools]
    store.txn([], ops)
    return store


def timed(func: Callable[[], Any]) -> float:
    start = time.perf_counter()
    func()
    return time.perf_counter() - start


def measure(endpoints: int, profiles: int, repeats: int, reads: ReadCounter) -> Row:
    row = Row(endpoints, profiles)
    reset_host()
    snapshot = policy_bench.build_snapshot(endpoints, profiles, RULES, True, SEED)
    bigger = policy_bench.with_one_more_endpoint(snapshot, SEED)
    add_interfaces(bigger)
    row.rules = policy_bench.rule_count(Dataplane().renderer.render(snapshot))
    dataplane = Dataplane(kernel=real_kernel(reads))
    row.full = timed(lambda: dataplane.apply(snapshot))
    before = reads.reads
    adds, removes = [], []
    for _ in range(repeats):
        adds.append(timed(lambda: dataplane.apply(bigger, verify=False)))
        removes.append(timed(lambda: dataplane.apply(snapshot, verify=False)))
    row.kernel_reads = reads.reads - before
    row.add, row.remove = statistics.median(adds), statistics.median(removes)
    report = dataplane.apply(snapshot)
    row.verified_noop = report.seconds
    if report.changed:
        raise SystemExit(f"the verified resync found something to repair: {report.summary()}")
    store = store_of(snapshot)
    cache = DecodeCache()  # as the agent reads: unchanged records are not decoded again
    load_snapshot(store, snapshot.hostname, cache)
    row.load = statistics.median(timed(lambda: load_snapshot(store, snapshot.hostname, cache))
                                 for _ in range(3))
    print(f"  {endpoints} endpoints, {profiles} profiles: done", file=sys.stderr, flush=True)
    return row


def ms(seconds: float) -> str:
    return f"{seconds * 1000:,.1f} ms"


def print_results(rows: list[Row]) -> None:
    base = rows[0]
    print("\nOne endpoint added / removed as the host grows "
          f"({RULES:,} rules over the profiles, IPv4 and IPv6)\n")
    print(f"{'endpoints':>9} {'profiles':>8} {'rules':>9} {'full apply':>11} "
          f"{'add one':>9} {'x10-host':>8} {'remove one':>10} {'x10-host':>8} "
          f"{'kernel reads':>12} {'verified no-op':>14} {'of full':>7} {'datastore read':>14}")
    for r in rows:
        print(f"{r.endpoints:>9,} {r.profiles:>8,} {r.rules:>9,} {ms(r.full):>11} "
              f"{ms(r.add):>9} {r.add / base.add:>7.2f}x {ms(r.remove):>10} "
              f"{r.remove / base.remove:>7.2f}x {r.kernel_reads:>12} "
              f"{ms(r.verified_noop):>14} {r.verified_noop / r.full:>6.0%} {ms(r.load):>14}")
    worst = max(max(r.add / base.add, r.remove / base.remove) for r in rows)
    resync = next((r for r in rows if r.endpoints == 1000 and r.profiles == base.profiles),
                  rows[-1])
    print("\nTargets")
    print(f"  add/remove one endpoint within 2x across sizes: worst {worst:.2f}x "
          f"({'met' if worst <= 2 else 'missed'})")
    print(f"  no kernel read on the change path: {sum(r.kernel_reads for r in rows)} reads "
          f"({'met' if not any(r.kernel_reads for r in rows) else 'missed'})")
    share = resync.verified_noop / resync.full
    print(f"  verified resync at {resync.endpoints:,} endpoints within 10% of a full apply: "
          f"{share:.0%} ({'met' if share <= 0.10 else 'missed by ' + f'{share / 0.10:.1f}x'})")
    print("  (the datastore read is the agent's whole-snapshot read; see docs/dataplane.md)")


def run_inside(args: argparse.Namespace) -> int:
    reads = ReadCounter()
    rows = []
    try:
        for endpoints, profiles in (QUICK_SIZES if args.quick else FULL_SIZES):
            rows.append(measure(endpoints, profiles, args.repeats, reads))
    finally:
        reset_host()
    print_results(rows)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes (for a try)")
    parser.add_argument("--repeats", type=int, default=5, help="add/remove pairs per size")
    parser.add_argument("--inside", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not args.inside:
        return policy_bench.run_in_namespace(sys.argv[1:], __file__)
    if not policy_bench.in_namespace(args.inside):
        print(f"not in network namespace {args.inside!r}: refusing to touch this one",
              file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, policy_bench._exit_on_sigterm)
    return run_inside(args)


if __name__ == "__main__":
    sys.exit(main())
