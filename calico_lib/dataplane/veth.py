"""Veth pairs for containers (pyroute2): the host end stays, the peer moves into the
container's namespace (Docker moves and renames it after Join)."""

from __future__ import annotations

import errno
import ipaddress
import socket

from pyroute2 import IPRoute, NetNS
from pyroute2.netlink.exceptions import NetlinkError

from ..errors import CalicoError

#: every host-side veth has this MAC: the container's gateway (169.254.1.1) answers with it
HOST_MAC = "ee:ee:ee:ee:ee:ee"


class VethError(CalicoError):
    pass


def create_veth(host: str, peer: str, peer_mac: str | None = None) -> bool:
    """Create ``host``<->``peer`` unless ``host`` exists; host end up. True if created."""
    with IPRoute() as ipr:
        if ipr.link_lookup(ifname=host):
            return False
        if ipr.link_lookup(ifname=peer):  # a leftover of an interrupted Join
            ipr.link("del", index=ipr.link_lookup(ifname=peer)[0])
        try:
            ipr.link("add", ifname=host, kind="veth", peer={"ifname": peer})
            index = ipr.link_lookup(ifname=host)[0]
            ipr.link("set", index=index, address=HOST_MAC)
            _no_dad(host)
            if peer_mac:
                ipr.link("set", index=ipr.link_lookup(ifname=peer)[0], address=peer_mac)
            ipr.link("set", index=index, state="up")
        except NetlinkError as exc:
            raise VethError(f"creating veth {host}/{peer} failed: {exc}") from None
    return True


def _no_dad(interface: str) -> None:
    """The host end's link-local address is the container's IPv6 gateway: IPv6 must be on
    for it (hosts may default new interfaces to disable_ipv6=1), and without duplicate
    address detection it is usable at once, not a second later (every host end has the
    same link-local address, each on its own link)."""
    for name, value in (("disable_ipv6", "0"), ("accept_dad", "0")):
        try:
            with open(f"/proc/sys/net/ipv6/conf/{interface}/{name}", "w") as handle:
                handle.write(value)
        except OSError:
            pass  # IPv6 not available on this host


def delete_veth(host: str) -> bool:
    """Delete the pair through its host end; False when it was already gone."""
    with IPRoute() as ipr:
        found = ipr.link_lookup(ifname=host)
        if not found:
            return False
        try:
            ipr.link("del", index=found[0])
        except NetlinkError as exc:
            if exc.code == errno.ENODEV:
                return False
            raise VethError(f"deleting veth {host} failed: {exc}") from None
    return True


def gateway_prefixes(sandbox: str, gateway: str) -> set[int]:
    """The prefix lengths of the connected routes to ``gateway`` that a container's network
    namespace (``sandbox``: Docker's SandboxKey path) already has, one per interface joined
    to a Calico network. An empty set when the namespace is gone or unreadable."""
    target = ipaddress.ip_address(gateway)
    found: set[int] = set()
    try:
        with NetNS(sandbox) as ns:
            for msg in ns.route("dump", family=socket.AF_INET):
                dst = msg.get("dst") or "0.0.0.0"
                net = ipaddress.ip_network(f"{dst}/{msg['dst_len']}", strict=False)
                if msg["dst_len"] >= 24 and target in net and not msg.get("gateway"):
                    found.add(msg["dst_len"])
    except (OSError, NetlinkError, ValueError):
        return set()
    return found
