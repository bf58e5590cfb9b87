"""iptables-nft with dispatch trees against native nftables with verdict maps: the cost of
one container added to a host that already has many, measured in the same run.

Both hold the same policy, built in a network namespace this script creates and always
deletes: ``--profiles`` profile chains of 50 rules (a TCP port each) and, per container,
one chain of 8 rules (anti-spoofing-like source matches, then a jump to its profile's chain
and a drop), dispatched by interface name:

``iptables``  as this project renders it: a tree of chains keyed by the first two
              characters after ``cali`` (16 + 256 nodes), each interface ``-g`` to its chain;
              one ``iptables-restore --noflush`` writes a new container's chain and its leaf.
``nftables``  one ``iifname vmap`` whose elements goto each container's chain (the map is
              a hash: one lookup whatever the number); one ``nft -f`` transaction adds a
              new container's chain and its map element.

For each size it times the whole policy loaded from empty, then (median of ``--repeats``)
one container added and removed again. Times are printed, never asserted; the ratio
between sizes is what shows whether a backend's change cost grows with the host.

Run as root (needs nft, Debian's nftables): .venv/bin/python bench/dispatch.py
             [--sizes 1000,10000] [--profiles 100] [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import time

RULES_PER_PROFILE = 50


def sh(argv: list[str], stdin: str | None = None, timeout: float = 1800) -> str:
    proc = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:6])} failed: {proc.stderr.strip()[:300]}")
    return proc.stdout


def interfaces(count: int, seed: int = 5) -> list[str]:
    rng = random.Random(seed)
    names: set[str] = set()
    while len(names) < count:
        names.add(f"cali{rng.getrandbits(44):011x}")
    return sorted(names)


def address(i: int) -> str:
    return f"10.{64 + i // 65536}.{i // 256 % 256}.{i % 256}"


# ------------------------------------------------------------------------------- iptables


def ipt_endpoint(i: int, interface: str, profiles: int) -> list[str]:
    chain = f"cali-fw-{interface}"
    rules = [f"-A {chain} -s {address(i)}/32 -m mac ! --mac-source 02:00:00:00:00:01 -j DROP"]
    rules += [f"-A {chain} -s 10.250.{k}.{i % 256}/32 -j DROP" for k in range(6)]
    rules += [f"-A {chain} -j cali-po-p{i % profiles}", f"-A {chain} -j DROP"]
    return [f":{chain} - [0:0]", *rules]


def ipt_leaf(names: list[str], prefix: str) -> list[str]:
    leaf = f"cali-fd-{prefix}"
    return [f":{leaf} - [0:0]", *[f"-A {leaf} -i {n} -g cali-fw-{n}" for n in names],
            f"-A {leaf} -j DROP"]


def ipt_full(names: list[str], profiles: int) -> str:
    lines = ["*filter", ":cali-fd - [0:0]"]
    for p in range(profiles):
        lines.append(f":cali-po-p{p} - [0:0]")
        lines += [f"-A cali-po-p{p} -p tcp -m tcp --dport {1000 + r} -j ACCEPT"
                  for r in range(RULES_PER_PROFILE)]
    for i, name in enumerate(names):
        lines += ipt_endpoint(i, name, profiles)
    leaves: dict[str, list[str]] = {}
    for name in names:
        leaves.setdefault(name[4:6], []).append(name)
    firsts: dict[str, list[str]] = {}
    for prefix in sorted(leaves):
        lines += ipt_leaf(leaves[prefix], prefix)
        firsts.setdefault(prefix[0], []).append(prefix)
    for first, prefixes in sorted(firsts.items()):
        lines.append(f":cali-fd-{first} - [0:0]")
        lines += [f"-A cali-fd-{first} -i cali{p}+ -g cali-fd-{p}" for p in prefixes]
        lines += [f"-A cali-fd-{first} -j DROP", f"-A cali-fd -i cali{first}+ -g cali-fd-{first}"]
    lines += ["-A cali-fd -j DROP", "-A FORWARD -i cali+ -j cali-fd", "COMMIT"]
    return "\n".join(lines) + "\n"


def ipt_change(names: list[str], new: str, index: int, profiles: int, add: bool) -> str:
    prefix = new[4:6]
    members = sorted(n for n in [*names, new] if n[4:6] == prefix) if add else sorted(
        n for n in names if n[4:6] == prefix)
    lines = ["*filter"]
    if add:
        lines += ipt_endpoint(index, new, profiles)
    lines += ipt_leaf(members, prefix)  # declaring a chain flushes it
    if not add:  # flushed (declared), then deleted, as the project's applier does
        lines += [f":cali-fw-{new} - [0:0]", f"-X cali-fw-{new}"]
    lines.append("COMMIT")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------- nftables


def nft_endpoint(i: int, interface: str, profiles: int) -> list[str]:
    chain = f"fw-{interface}"
    rules = [f"ip saddr {address(i)} ether saddr != 02:00:00:00:00:01 drop"]
    rules += [f"ip saddr 10.250.{k}.{i % 256} drop" for k in range(6)]
    rules += [f"jump po-p{i % profiles}", "drop"]
    return [f"add chain inet calico {chain}"] + [f"add rule inet calico {chain} {r}"
                                                  for r in rules]


def nft_full(names: list[str], profiles: int) -> str:
    lines = ["add table inet calico",
             "add chain inet calico forward { type filter hook forward priority 0; }",
             "add map inet calico from_wl { type ifname : verdict; }"]
    for p in range(profiles):
        lines.append(f"add chain inet calico po-p{p}")
        lines += [f"add rule inet calico po-p{p} tcp dport {1000 + r} accept"
                  for r in range(RULES_PER_PROFILE)]
    for i, name in enumerate(names):
        lines += nft_endpoint(i, name, profiles)
    for start in range(0, len(names), 500):
        chunk = names[start:start + 500]
        lines.append("add element inet calico from_wl { " + ", ".join(
            f'"{n}" : goto fw-{n}' for n in chunk) + " }")
    lines += ['add rule inet calico forward iifname "cali*" iifname vmap @from_wl',
              'add rule inet calico forward iifname "cali*" drop']
    return "\n".join(lines) + "\n"


def nft_change(new: str, index: int, profiles: int, add: bool) -> str:
    if add:
        lines = nft_endpoint(index, new, profiles)
        lines.append(f'add element inet calico from_wl {{ "{new}" : goto fw-{new} }}')
    else:
        lines = [f'delete element inet calico from_wl {{ "{new}" }}',
                 f"delete chain inet calico fw-{new}"]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------- run


def timed(argv: list[str], text: str) -> float:
    start = time.perf_counter()
    sh(argv, text)
    return time.perf_counter() - start


def measure(ns: str, size: int, profiles: int, repeats: int) -> dict[str, tuple[float, ...]]:
    names = interfaces(size + 1)
    new, names = names[size // 2], names[:size // 2] + names[size // 2 + 1:]
    out = {}
    for backend in ("iptables", "nftables"):
        sh(["ip", "netns", "add", ns])
        try:
            run = ["ip", "netns", "exec", ns]
            if backend == "iptables":
                full = timed([*run, "iptables-restore"], ipt_full(names, profiles))
                add = [ipt_change(names, new, size, profiles, True),
                       ipt_change(names, new, size, profiles, False)]
                command = [*run, "iptables-restore", "--noflush"]
            else:
                full = timed([*run, "nft", "-f", "-"], nft_full(names, profiles))
                add = [nft_change(new, size, profiles, True),
                       nft_change(new, size, profiles, False)]
                command = [*run, "nft", "-f", "-"]
            adds, removes = [], []
            for _ in range(repeats):
                adds.append(timed(command, add[0]))
                removes.append(timed(command, add[1]))
            out[backend] = (full, statistics.median(adds), statistics.median(removes))
        finally:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        print(f"  {size:,} containers, {backend}: done", file=sys.stderr, flush=True)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000", help="containers per host")
    parser.add_argument("--profiles", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    if os.geteuid() != 0 or not shutil.which("nft"):
        print("bench/dispatch.py needs root and nft (apt-get install nftables)",
              file=sys.stderr)
        return 2
    sizes = [int(s) for s in args.sizes.split(",")]
    ns = f"calbd-{os.getpid()}"
    results = {size: measure(ns, size, args.profiles, args.repeats) for size in sizes}
    print(f"\nOne container added / removed, {args.profiles} profiles of "
          f"{RULES_PER_PROFILE} rules, 9 rules per container\n")
    print(f"{'containers':>10} {'backend':>9} {'full load':>10} {'add one':>9} "
          f"{'remove one':>10} {'add vs smallest':>15}")
    base = {b: results[sizes[0]][b][1] for b in ("iptables", "nftables")}
    for size in sizes:
        for backend in ("iptables", "nftables"):
            full, add, remove = results[size][backend]
            print(f"{size:>10,} {backend:>9} {full:9.2f}s {add * 1000:7.1f}ms "
                  f"{remove * 1000:8.1f}ms {add / base[backend]:14.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
