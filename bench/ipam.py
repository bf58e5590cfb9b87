"""IPAM throughput next to the datastore's own floor, measured in the same run.

For each backend (SQLite file, real etcd started here) it times:
  * a bare transaction: one guarded Put of a block-sized value (the floor);
  * fast-path assignments: one IPv4 address for a new handle from the host's affine block.
It prints rates side by side and the ratio "cost of one assignment in bare transactions"
(target: at most 2), with the datastore round trips counted per assignment.

Run: .venv/bin/python bench/ipam.py [--rounds N]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import calico_lib  # noqa: E402
from calico_lib.datastore import Compare, Put  # noqa: E402
from calico_lib.ipam import Block  # noqa: E402
from calico_lib.txn import dumps  # noqa: E402
from tests.etcd_server import EtcdServer  # noqa: E402

PER_ROUND = 60  # stays inside one /26 block: every assignment takes the fast path


def bare_txn_rate(client: calico_lib.Client, count: int) -> float:
    value = dumps(Block.new("10.99.0.0/26", "bench").dump())
    revision = 0
    start = time.perf_counter()
    for _ in range(count):
        revision = client.store.txn([Compare("/bench/floor", revision)],
                                    [Put("/bench/floor", value)]) or 0
    return count / (time.perf_counter() - start)


def assign_rate(client: calico_lib.Client, rounds: int) -> tuple[float, float, float]:
    client.add_pool(calico_lib.IPPool("10.98.0.0/16"))
    client.ipam.auto_assign("bench-host", "warm-up", num_ipv4=1)  # claims the block
    elapsed, done, txns, reads = 0.0, 0, 0, 0
    for r in range(rounds):
        client.store.txns = client.store.reads = 0
        start = time.perf_counter()
        for i in range(PER_ROUND):
            client.ipam.auto_assign("bench-host", f"r{r}-{i}", num_ipv4=1)
        elapsed += time.perf_counter() - start
        done += PER_ROUND
        txns += client.store.txns
        reads += client.store.reads
        for i in range(PER_ROUND):  # untimed: make room for the next round
            client.ipam.release_handle(f"r{r}-{i}")
    return done / elapsed, txns / done, reads / done


def measure(name: str, url: str, rounds: int) -> dict[str, float | str]:
    with calico_lib.connect(url) as client:
        floor = bare_txn_rate(client, rounds * PER_ROUND)
        rate, txns, reads = assign_rate(client, rounds)
    return {"backend": name, "txn/s": floor, "assign/s": rate, "ratio": floor / rate,
            "txns/assign": txns, "reads/assign": reads}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        results.append(measure("sqlite", f"sqlite:///{tmp}/bench.db", args.rounds))
    with EtcdServer() as etcd:
        results.append(measure("etcd", etcd.url, args.rounds))
    print(f"{'backend':8} {'bare txn/s':>11} {'assign/s':>9} {'cost (txns)':>12} "
          f"{'txns/assign':>12} {'reads/assign':>13}")
    for r in results:
        print(f"{r['backend']:8} {r['txn/s']:11.0f} {r['assign/s']:9.0f} {r['ratio']:12.2f} "
              f"{r['txns/assign']:12.2f} {r['reads/assign']:13.2f}")
    print("cost = bare transaction rate / assignment rate (target: fast path <= 2)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
