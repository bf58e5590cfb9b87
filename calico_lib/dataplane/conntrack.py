"""Forget tracked flows (conntrack), so the firewall judges their next packet afresh.

A flow's first packet is judged by policy; later packets are accepted as ESTABLISHED. So
when an address leaves a host (a new container may get it) or the policy in front of an
address changes, its flows are deleted: a flow still allowed is picked up again at its next
packet (the kernel's nf_conntrack_tcp_loose, on by default, takes TCP mid-stream) and
passes; one a new rule denies is dropped from then on.
"""

from __future__ import annotations

import ipaddress
import shutil
from collections.abc import Callable, Iterable

from . import runner

#: this many addresses are flushed directly; more, and the table is listed once
#: first so that only the addresses it holds cost a `conntrack -D` each (a full apply on a
#: host of 1,000 containers would otherwise run 4,000 commands)
DIRECT = 1


def flush(addresses: Iterable[str], run: Callable[..., str] | None = None) -> list[str]:
    """Delete every flow from or to each address; returns the addresses whose flows are
    gone (all of them; none when conntrack is not installed). conntrack exits 1 when
    nothing matched, the common case. ``run``: ``runner.run`` unless told."""
    if shutil.which("conntrack") is None:
        return []
    run = run or runner.run
    wanted = sorted(set(addresses))
    try:
        tracked = None if len(wanted) <= DIRECT else _tracked(wanted, run)
        for address in wanted:
            ip = ipaddress.ip_address(address)
            if tracked is not None and str(ip) not in tracked:
                continue
            family = ["-f", "ipv6"] if ip.version == 6 else []
            for direction in ("-s", "-d"):
                run(["conntrack", "-D", *family, direction, address], ok_codes=(0, 1))
    except runner.CommandError as exc:
        if exc.returncode == 127:  # vanished meanwhile: nothing to flush
            return []
        raise
    return wanted


def _tracked(addresses: list[str], run: Callable[..., str]) -> set[str]:
    """The addresses that appear in the conntrack table (of the families asked about)."""
    found: set[str] = set()
    for version, family in ((4, []), (6, ["-f", "ipv6"])):
        if not any(ipaddress.ip_address(a).version == version for a in addresses):
            continue
        table = run(["conntrack", "-L", *family], ok_codes=(0, 1))
        for word in table.split():
            if word.startswith(("src=", "dst=")):
                try:
                    found.add(str(ipaddress.ip_address(word[4:])))
                except ValueError:
                    continue
    return found
