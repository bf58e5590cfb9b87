"""Names of the chains and sets this project owns (all start with "cali").

The kernel limits iptables chain names to 28 characters and ipset names to 31; longer
names are cut and given a hash suffix, so they stay unique and deterministic.
"""

from __future__ import annotations

import hashlib

CHAIN_MAX = 28
IPSET_MAX = 31

FORWARD = "cali-FORWARD"
INPUT = "cali-INPUT"
POSTROUTING = "cali-POSTROUTING"
WL_TO_HOST = "cali-wl-to-host"
FROM_DISPATCH = "cali-from-wl-dispatch"
TO_DISPATCH = "cali-to-wl-dispatch"


def shorten(name: str, limit: int) -> str:
    if len(name) <= limit:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{name[:limit - 9]}-{digest}"


def chain(prefix: str, name: str) -> str:
    return shorten(f"{prefix}{name}", CHAIN_MAX)


def from_endpoint(interface: str) -> str:
    return chain("cali-from-", interface)


def to_endpoint(interface: str) -> str:
    return chain("cali-to-", interface)


def source_check(interface: str, version: int) -> str:
    """The anti-spoofing chain of an endpoint with several addresses."""
    return chain(f"cali-sa{version}-", interface)


def profile_inbound(profile: str) -> str:
    return chain("cali-pi-", profile)


def profile_outbound(profile: str) -> str:
    return chain("cali-po-", profile)


def tag_set(tag: str, version: int) -> str:
    return shorten(f"cali{version}-t-{tag}", IPSET_MAX)


def net_set(nets: tuple[str, ...], version: int) -> str:
    """A set for a list of CIDRs in one rule, named by its content."""
    digest = hashlib.sha256(",".join(sorted(nets)).encode()).hexdigest()[:16]
    return f"cali{version}-n-{digest}"


def all_pools_set(version: int) -> str:
    return f"cali{version}-all-pools"


def masq_pools_set(version: int) -> str:
    return f"cali{version}-masq-pools"
