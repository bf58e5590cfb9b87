"""Names of the chains and sets this project owns (all start with "cali").

Profile, tag and network names are user input (a Docker network's name becomes a profile
and a tag), so the kernel names made from them must be injective: no name a user can choose
may produce another object's kernel name. Each kind of object has its own prefix, and a
user name is used verbatim only when it fits the kernel's limit (28 characters for chains,
31 for sets); otherwise the prefix is followed by "_" and a hash of the whole name. Valid
names never start with "_" (the model requires a letter or digit first), so a verbatim
name can never equal a hashed one, and two hashed names differ unless SHA-256 collides in
its first 95 bits. This is how Felix names profile chains too.
"""

from __future__ import annotations

import base64
import hashlib

CHAIN_MAX = 28
IPSET_MAX = 31
#: marks a hashed name: no valid profile, tag or interface name starts with it
HASHED = "_"

FORWARD = "cali-FORWARD"
INPUT = "cali-INPUT"
POSTROUTING = "cali-POSTROUTING"
WL_TO_HOST = "cali-wl-to-host"
FROM_DISPATCH = "cali-from-wl-dispatch"
TO_DISPATCH = "cali-to-wl-dispatch"
#: anti-spoofing only, for traffic to the host (before its exemptions)
SPOOF_DISPATCH = "cali-wl-sa-dispatch"
#: every dispatch tree's chains start with one of these
DISPATCH_ROOTS = (FROM_DISPATCH, TO_DISPATCH, SPOOF_DISPATCH)


def digest(text: str, length: int) -> str:
    """``length`` characters of the base32 SHA-256 of ``text`` (lowercase, 5 bits each)."""
    raw = base64.b32encode(hashlib.sha256(text.encode()).digest()).decode()
    return raw.lower().rstrip("=")[:length]


def limited(prefix: str, name: str, limit: int) -> str:
    """``prefix + name`` when it fits and cannot pass for a hashed name, else
    ``prefix + "_" + hash(name)`` filling the limit."""
    if len(prefix) + len(name) <= limit and name and not name.startswith(HASHED):
        return prefix + name
    return prefix + HASHED + digest(name, limit - len(prefix) - len(HASHED))


def from_endpoint(interface: str) -> str:
    return limited("cali-from-", interface, CHAIN_MAX)


def to_endpoint(interface: str) -> str:
    return limited("cali-to-", interface, CHAIN_MAX)


def source_check(interface: str, version: int) -> str:
    """The anti-spoofing chain of an endpoint (its MAC and source addresses)."""
    return limited(f"cali-sa{version}-", interface, CHAIN_MAX)


def profile_inbound(profile: str) -> str:
    return limited("cali-pi-", profile, CHAIN_MAX)


def profile_outbound(profile: str) -> str:
    return limited("cali-po-", profile, CHAIN_MAX)


def tag_set(tag: str, version: int) -> str:
    return limited(f"cali{version}-t-", tag, IPSET_MAX)


def net_set(nets: tuple[str, ...], version: int) -> str:
    """A set for a list of CIDRs in one rule, named by its content."""
    return f"cali{version}-n-" + hashlib.sha256(",".join(sorted(nets)).encode()).hexdigest()[:16]


def temp_set(name: str) -> str:
    """Where a set is filled before it is swapped in: its own ``-x-`` namespace, which no
    tag, net list or pool set name can produce (a tag named ``db-tmp`` is ``cali4-t-db-tmp``)."""
    return f"{name[:5]}-x-" + digest(name, IPSET_MAX - 8)


def all_pools_set(version: int) -> str:
    return f"cali{version}-all-pools"


def masq_pools_set(version: int) -> str:
    return f"cali{version}-masq-pools"


def all_hosts_set(version: int) -> str:
    """The BGP addresses of every node and peer: never masqueraded to, and closed to
    workloads' TCP 179."""
    return f"cali{version}-all-hosts"


def vxlan_hosts_set() -> str:
    """The IPv4 addresses of every node: the only sources of VXLAN packets a host takes."""
    return "cali4-vxlan-hosts"


def dispatch_child(root: str, prefix: str) -> str:
    """A chain of a dispatch tree: the interfaces whose names start with "cali" + prefix.
    Interface names never start with "wl-", so no endpoint chain can take this name."""
    return f"{root}-{prefix}"


#: iptables' limit for a LOG target's prefix
LOG_PREFIX_MAX = 29


def log_prefix(profile: str, direction: str, number: int) -> str:
    """The kernel log prefix of a profile's log rule: ``cali:<profile>:<in|out>:<number> ``
    (``number`` as ``calicoctl profile show`` counts, from 1). A profile name too long
    for iptables' 29 characters keeps its start and gets "~" and a short hash of the
    whole name. Profile names hold only letters, digits, "_", "." and "-": nothing a log
    reader could take for another field."""
    tail = f":{direction}:{number} "
    room = LOG_PREFIX_MAX - len("cali:") - len(tail)
    if len(profile) > room:
        profile = profile[:room - 5] + "~" + digest(profile, 4)
    return f"cali:{profile}{tail}"
