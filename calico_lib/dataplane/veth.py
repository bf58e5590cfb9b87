"""Veth pairs for containers (pyroute2): the host end stays, the peer moves into the
container's namespace (Docker moves and renames it after Join).

The one home of what makes a host-side veth: its name, its MAC, the gateways it answers
for, and its sysctls (set here at creation, and kept by the route applier).
"""

from __future__ import annotations

import errno
import hashlib
import ipaddress
import os
import socket

import netaddr
from pyroute2 import IPRoute, NetNS
from pyroute2.netlink.exceptions import NetlinkError

from ..errors import CalicoError

#: IFA_F_NODAD: the address is usable at once
IFA_F_NODAD = 0x02

#: every host-side veth has this MAC: the container's gateway (169.254.1.1) answers with it
HOST_MAC = "ee:ee:ee:ee:ee:ee"
#: the containers' IPv4 gateway: every host-side veth answers for it (proxy ARP)
GATEWAY_V4 = "169.254.1.1"
#: the containers' IPv6 gateway: the link-local address of a host-side veth (its MAC, EUI-64)
GATEWAY_V6 = str(netaddr.EUI(HOST_MAC).ipv6_link_local())

#: per host-side veth, kept by the route applier: answer ARP for the gateway 169.254.1.1
#: (proxy ARP) at once rather than after the default random delay of up to 0.8 s, and
#: never take a default route from RAs a container might send
INTERFACE_SYSCTLS: tuple[tuple[str, str], ...] = (
    ("net/ipv4/conf/{}/proxy_arp", "1"),
    ("net/ipv4/neigh/{}/proxy_delay", "0"),
    ("net/ipv6/conf/{}/accept_ra", "0"),
)
#: per host-side veth, at creation: its link-local address is the IPv6 gateway (see
#: ``_no_dad``)
CREATE_SYSCTLS: tuple[tuple[str, str], ...] = (
    ("net/ipv6/conf/{}/disable_ipv6", "0"),
    ("net/ipv6/conf/{}/accept_dad", "0"),
)


def host_veth(endpoint_id: str) -> str:
    """The host-side veth of an endpoint: ``cali`` + the first 11 characters of its id."""
    return "cali" + endpoint_id[:11]


def peer_veth(endpoint_id: str) -> str:
    """The container end's name until Docker moves and renames it."""
    return "tmp" + endpoint_id[:11]


def container_mac(endpoint_id: str) -> str:
    """A stable, locally administered MAC for the container end (anti-spoofing checks it)."""
    digest = hashlib.sha256(endpoint_id.encode()).digest()
    return ":".join(f"{b:02x}" for b in (0x02, *digest[:5]))


class VethError(CalicoError):
    pass


def create_veth(host: str, peer: str, peer_mac: str | None = None,
                mtu: int | None = None) -> bool:
    """Create ``host``<->``peer`` unless ``host`` exists; host end up. True if created.
    ``mtu``: both ends' (the kernel's default otherwise)."""
    with IPRoute() as ipr:
        if ipr.link_lookup(ifname=host):
            return False
        if ipr.link_lookup(ifname=peer):  # a leftover of an interrupted Join
            ipr.link("del", index=ipr.link_lookup(ifname=peer)[0])
        try:
            sizes = {} if mtu is None else {"mtu": mtu}
            ipr.link("add", ifname=host, kind="veth", peer={"ifname": peer, **sizes}, **sizes)
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
    for template, value in CREATE_SYSCTLS:
        try:
            with open("/proc/sys/" + template.format(interface), "w") as handle:
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


def add_address(interface: str, address: str) -> bool:
    """Give ``interface`` the link-local IPv6 ``address`` (a /128, no duplicate address
    detection: usable at once); True if added, False if it was there already."""
    with IPRoute() as ipr:
        found = ipr.link_lookup(ifname=interface)
        if not found:
            raise VethError(f"adding {address} to {interface}: no such interface")
        try:
            ipr.addr("add", index=found[0], address=address, prefixlen=128,
                     flags=IFA_F_NODAD)
        except NetlinkError as exc:
            if exc.code == errno.EEXIST:
                return False
            raise VethError(f"adding {address} to {interface} failed: {exc}") from None
    return True


def gateway_prefixes(sandbox: str, gateway: str) -> set[int] | None:
    """The prefix lengths of the connected routes to ``gateway`` that a container's network
    namespace (``sandbox``: a path to it, e.g. Docker's SandboxKey) already has, one per
    interface joined to a Calico network; None when ``sandbox`` is not a namespace."""
    if not sandbox.startswith("/"):
        return None
    return _gateway_routes(sandbox, ipaddress.ip_address(gateway))


def _gateway_routes(path: str, target: ipaddress.IPv4Address | ipaddress.IPv6Address
                    ) -> set[int] | None:
    family = socket.AF_INET if target.version == 4 else socket.AF_INET6
    found: set[int] = set()
    try:  # a namespace is a file of nsfs: anything else (Docker's placeholder) costs no fork
        if os.stat(path).st_dev != os.stat("/proc/self/ns/net").st_dev:
            return None
        # flags=0: never create a namespace (pyroute2's default would, at a missing path)
        with NetNS(path, flags=0) as ns:
            for msg in ns.route("dump", family=family):
                dst = msg.get("dst") or ("0.0.0.0" if target.version == 4 else "::")
                net = ipaddress.ip_network(f"{dst}/{msg['dst_len']}", strict=False)
                if target in net and msg["dst_len"] and not msg.get("gateway"):
                    found.add(msg["dst_len"])
    except (OSError, NetlinkError, ValueError):
        return None
    return found


def unjoined_veths(prefix: str = "cali") -> list[str]:
    """Host-side veths whose peer is still in this namespace: no container ever got them
    (a Join that failed after making the pair). A joined veth's peer is in the container's
    namespace, which the kernel names by its id (IFLA_LINK_NETNSID)."""
    found = []
    with IPRoute() as ipr:
        for link in ipr.get_links():
            name = link.get_attr("IFLA_IFNAME") or ""
            info = link.get_attr("IFLA_LINKINFO")
            kind = info.get_attr("IFLA_INFO_KIND") if info is not None else None
            if name.startswith(prefix) and kind == "veth" \
                    and link.get_attr("IFLA_LINK_NETNSID") is None:
                found.append(name)
    return sorted(found)
