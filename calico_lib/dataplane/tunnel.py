"""Make this host's VXLAN device, its neighbour and FDB entries and its tunnel routes
match a ``TunnelSpec`` (``render.tunnel``), over netlink.

Like the route applier it reads once and writes only what differs: an unchanged spec
costs a few dumps and no writes. The device is created first and removed last; routes of
protocol ``RTPROT_TUNNEL`` that the spec does not name are deleted (left by an earlier
mode, a host that went away, or an agent that stopped while a pool still encapsulated).
"""

from __future__ import annotations

import errno
import socket
from dataclasses import dataclass, field
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from ..errors import CalicoError
from ..render.tunnel import DEVICE, OVERHEAD, PORT, RTPROT_TUNNEL, VNI, TunnelRoute, TunnelSpec

MAIN_TABLE = 254
RTNH_F_ONLINK = 4
NUD_PERMANENT = 0x80
NTF_SELF = 0x02
IFF_UP = 0x1
#: the MTU assumed when the uplink cannot be found (Ethernet's)
DEFAULT_UPLINK_MTU = 1500


class TunnelError(CalicoError):
    """A netlink request for the VXLAN device or its routes failed."""


@dataclass
class TunnelReport:
    device: str = ""  # "created", "replaced", "removed" or "" (unchanged)
    mtu: int | None = None
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    neighbours: int = 0  # entries written or deleted (neighbours and FDB)

    @property
    def changed(self) -> bool:
        return bool(self.device or self.added or self.removed or self.neighbours)

    def summary(self) -> str:
        parts = [f"vxlan device {self.device}"] if self.device else []
        if self.added or self.removed:
            parts.append(f"tunnel routes +{len(self.added)} -{len(self.removed)}")
        if self.neighbours:
            parts.append(f"{self.neighbours} neighbour/fdb write(s)")
        return ", ".join(parts)


def uplink_mtu(ipr: IPRoute, address: str) -> int:
    """The MTU of the link that holds ``address`` (the VXLAN packets' source)."""
    for msg in ipr.get_addr(family=socket.AF_INET):
        if msg.get("IFA_ADDRESS") == address:
            links = ipr.get_links(msg["index"])
            if links:
                return int(links[0].get("IFLA_MTU") or DEFAULT_UPLINK_MTU)
    return DEFAULT_UPLINK_MTU


def veth_mtu(address: str | None) -> int:
    """The MTU a container's veth gets when its traffic may be encapsulated: the MTU of
    the uplink holding this host's ``address``, minus the VXLAN overhead."""
    if address is None:
        return DEFAULT_UPLINK_MTU - OVERHEAD
    with IPRoute() as ipr:
        return uplink_mtu(ipr, address) - OVERHEAD


def apply_tunnel(spec: TunnelSpec, check_mode: bool = False) -> TunnelReport:
    """Make the kernel match ``spec`` (in check mode, only say what would change)."""
    report = TunnelReport()
    try:
        with IPRoute() as ipr:
            _apply(ipr, spec, report, check_mode)
    except NetlinkError as exc:
        raise TunnelError(f"vxlan: {exc.args[-1] if exc.args else exc} "
                          f"(netlink error {exc.code})") from None
    return report


def _apply(ipr: IPRoute, spec: TunnelSpec, report: TunnelReport, check_mode: bool) -> None:
    found = ipr.link_lookup(ifname=DEVICE)
    index = found[0] if found else None
    if not spec.device:
        _sync_routes(ipr, set(), None, report, check_mode)
        if index is not None:
            report.device = "removed"
            if not check_mode:
                ipr.link("del", index=index)
        return
    mtu = uplink_mtu(ipr, spec.local) - OVERHEAD if spec.local else DEFAULT_UPLINK_MTU
    if index is not None and not _matches(ipr.get_links(index)[0], spec):
        report.device = "replaced"
        if not check_mode:
            ipr.link("del", index=index)
        index = None
    if index is None:
        report.device = report.device or "created"
        report.mtu = mtu
        if check_mode:  # nothing of it exists: every entry and route would be written
            report.neighbours = len(spec.neighbours) + len(spec.fdb)
            report.added = sorted(r.dst for r in spec.routes)
            return
        ipr.link("add", ifname=DEVICE, kind="vxlan", vxlan_id=VNI, vxlan_port=PORT,
                 vxlan_local=spec.local, vxlan_learning=0, address=spec.mac, mtu=mtu)
        index = ipr.link_lookup(ifname=DEVICE)[0]
    link = ipr.get_links(index)[0]
    if link.get("IFLA_MTU") != mtu:
        report.device, report.mtu = report.device or "changed", mtu
        if not check_mode:
            ipr.link("set", index=index, mtu=mtu)
    if not link["flags"] & IFF_UP:
        report.device = report.device or "changed"
        if not check_mode:
            ipr.link("set", index=index, state="up")
    _sync_address(ipr, index, spec.address, report, check_mode)
    _sync_neighbours(ipr, index, spec, report, check_mode)
    _sync_routes(ipr, set(spec.routes), index, report, check_mode)


def _matches(link: Any, spec: TunnelSpec) -> bool:
    info = link.get("IFLA_LINKINFO")
    if info is None or info.get("IFLA_INFO_KIND") != "vxlan":
        return False
    data = info.get("IFLA_INFO_DATA")
    return (data.get("IFLA_VXLAN_ID") == VNI and data.get("IFLA_VXLAN_PORT") == PORT
            and data.get("IFLA_VXLAN_LOCAL") == spec.local
            and not data.get("IFLA_VXLAN_LEARNING")
            and link.get("IFLA_ADDRESS") == spec.mac)


def _sync_address(ipr: IPRoute, index: int, address: str | None, report: TunnelReport,
                  check_mode: bool) -> None:
    have = {(m.get("IFA_ADDRESS"), m["prefixlen"])
            for m in ipr.get_addr(index=index, family=socket.AF_INET)}
    want = {(address, 32)} if address else set()
    for addr, prefix in have - want:
        report.neighbours += 1
        if not check_mode:
            ipr.addr("del", index=index, address=addr, prefixlen=prefix)
    for addr, prefix in want - have:
        report.neighbours += 1
        if not check_mode:
            ipr.addr("add", index=index, address=addr, prefixlen=prefix)


def _sync_neighbours(ipr: IPRoute, index: int, spec: TunnelSpec, report: TunnelReport,
                     check_mode: bool) -> None:
    have = {(n.get("NDA_DST"), n.get("NDA_LLADDR"))
            for n in ipr.get_neighbours(ifindex=index, family=socket.AF_INET)
            if n["state"] & NUD_PERMANENT}
    for dst, mac in have - spec.neighbours:
        report.neighbours += 1
        if not check_mode:
            _ignore_gone(ipr.neigh, "del", ifindex=index, dst=dst, lladdr=mac)
    for dst, mac in spec.neighbours - have:
        report.neighbours += 1
        if not check_mode:
            ipr.neigh("replace", ifindex=index, dst=dst, lladdr=mac, state=NUD_PERMANENT)
    fdb = {(n.get("NDA_LLADDR"), n.get("NDA_DST")) for n in ipr.fdb("dump", ifindex=index)
           if n["state"] & NUD_PERMANENT and n.get("NDA_DST")}
    for mac, dst in fdb - spec.fdb:
        report.neighbours += 1
        if not check_mode:
            _ignore_gone(ipr.fdb, "del", ifindex=index, lladdr=mac, dst=dst, flags=NTF_SELF)
    for mac, dst in spec.fdb - fdb:
        report.neighbours += 1
        if not check_mode:
            # append, not replace: a MAC may need several destinations only while a host's
            # address changes, and the stale one is deleted above
            ipr.fdb("append", ifindex=index, lladdr=mac, dst=dst, state=NUD_PERMANENT,
                    flags=NTF_SELF)


def _sync_routes(ipr: IPRoute, want: set[TunnelRoute], index: int | None,
                 report: TunnelReport, check_mode: bool) -> None:
    have: dict[TunnelRoute, dict[str, Any]] = {}
    for msg in ipr.get_routes(family=socket.AF_INET, table=MAIN_TABLE, proto=RTPROT_TUNNEL):
        if msg.get("RTA_TABLE", MAIN_TABLE) != MAIN_TABLE:
            continue
        dst = f"{msg.get('RTA_DST')}/{msg['dst_len']}"
        encap = index is not None and msg.get("RTA_OIF") == index
        gateway = msg.get("RTA_GATEWAY") or ""
        have[TunnelRoute(dst, gateway, encap)] = {
            "dst": dst, "priority": msg.get("RTA_PRIORITY") or 0, "proto": RTPROT_TUNNEL}
    rewritten = {r.dst for r in want - set(have)}
    for route in sorted(set(have) - want):
        if route.dst in rewritten and have[route]["priority"] == 0:
            continue  # replaced in place below: the block is never without a route
        report.removed.append(route.dst)
        if not check_mode:
            _ignore_gone(ipr.route, "del", table=MAIN_TABLE, **have[route])
    for route in sorted(want - set(have)):
        report.added.append(route.dst)
        if check_mode:
            continue
        extra: dict[str, Any] = {"oif": index, "flags": RTNH_F_ONLINK} if route.encap else {}
        try:
            ipr.route("replace", dst=route.dst, gateway=route.gateway, table=MAIN_TABLE,
                      proto=RTPROT_TUNNEL, priority=0, **extra)
        except NetlinkError as exc:
            if exc.code != errno.ENETUNREACH:
                raise
            # a native next hop that is on no connected network (the host moved): the
            # route waits for the next apply; BGP's route, if any, still serves
            report.added.remove(route.dst)


def _ignore_gone(call: Any, *args: Any, **kwargs: Any) -> None:
    try:
        call(*args, **kwargs)
    except NetlinkError as exc:
        if exc.code not in (errno.ENOENT, errno.ESRCH, errno.ENODEV):
            raise
