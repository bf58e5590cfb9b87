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
from collections.abc import Iterable

from . import runner


def flush(addresses: Iterable[str]) -> list[str]:
    """Delete every flow from or to each address; returns the addresses flushed (none
    when conntrack is not installed). conntrack exits 1 when nothing matched, the common
    case."""
    if shutil.which("conntrack") is None:
        return []
    done = []
    for address in sorted(set(addresses)):
        family = ["-f", "ipv6"] if ipaddress.ip_address(address).version == 6 else []
        try:
            for direction in ("-s", "-d"):
                runner.run(["conntrack", "-D", *family, direction, address], ok_codes=(0, 1))
        except runner.CommandError as exc:
            if exc.returncode == 127:  # vanished meanwhile: nothing to flush
                return done
            raise
        done.append(address)
    return done
