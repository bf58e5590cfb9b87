"""The outside world of ``lab up --fabric``: a top-of-rack router (one per rack with
``--racks``) and a host beyond it.

    PREFIX-tor          the ToR: a node-image container running systemd and BIRD 2 (AS
                        65000, configured by the ``tor`` role like a real site's), on the
                        fabric (host address 2) and on the outside network (host address 2),
                        forwarding IPv4 and IPv6; Docker is masked in it (a router runs none).
                        The pools are unreachable in its kernel but for the blocks' routes
                        BGP installs, so that while BIRD is down their packets are dropped
                        there instead of taking its default route (the machine's bridge)
    PREFIX-outside      the outside host: on the outside network only (host address 100),
                        with no default route: the pools and the fabric are reached through
                        the ToR alone, so nothing on that path is NAT'd. It runs a small
                        HTTP server that answers every request with the address it saw and
                        logs it to /var/log/peers.log
    PREFIX-outside-net  the outside network (a Docker bridge): by default 198.18.0.0/15
                        holding the fabric's last 17 bits (172.31.250.0/24 → 198.19.250.0/24)
                        and 2001:db8::/32 holding the fabric's bits 32 to 127
                        (fd7a:ca1:1ab::/64 → 2001:db8:1ab::/64), so labs with other fabrics
                        never share one; CALICO_LAB_OUTSIDE_SUBNET4/6 choose others.

With ``--racks R`` there is a ToR per rack, ``PREFIX-tor-1`` … ``PREFIX-tor-R``, each on its
rack's network (host address 2 of the rack's subnets) and on the outside network (host
address 1 + R), in AS 65000 + R with its rack's nodes (Calico's "AS per rack": it reflects
the rack's routes, and peers with the other ToRs over the outside network, which serves as
the spine). The fabric's own routing between racks (the underlay a real fabric has before
Calico) is static: each ToR reaches the other racks' subnets through their ToRs, each node
the rest of the fabric through its ToR. The outside host reaches each rack's subnets through
its ToR and the pools through the first ToR.

Docker isolates its bridges from each other over IPv4, so those packets between the outside
network and the fabric cross the ToR or nothing. Over IPv6 (which this machine's Docker may
not filter) a node's default route leads to the machine, which could pass a packet on to the
outside network; the outside host still answers only through the ToR (it has no other
route), so no connection gets by it."""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .docker import LABEL, Docker, network_fits
from .errors import LabError
from .nodes import NODE_RUN_FLAGS, Rack, host_address
from .shell import tail

#: the ToR's AS (the nodes' is 64512)
TOR_AS = 65000
OUTSIDE_BASE4 = ipaddress.IPv4Network("198.18.0.0/15")
OUTSIDE_BASE6 = ipaddress.IPv6Network("2001:db8::/32")
#: the ToR's host address on both networks, and the outside host's
TOR_HOST = 2
OUTSIDE_HOST = 100
#: where the outside host's server logs the address of every request it answered
PEERS_LOG = "/var/log/peers.log"
#: the outside host's server port
OUTSIDE_PORT = 80

#: the ToR: a node's flags, forwarding on for both IP versions
TOR_RUN_FLAGS = (*NODE_RUN_FLAGS, "--sysctl", "net.ipv4.ip_forward=1",
                 "--sysctl", "net.ipv6.conf.all.forwarding=1")
OUTSIDE_RUN_FLAGS = ("--cap-add", "NET_ADMIN",
                     "--sysctl", "net.ipv6.conf.all.disable_ipv6=0",
                     "--sysctl", "net.ipv6.conf.default.disable_ipv6=0")

#: the outside host's server (python3 of the node image): every GET is answered with the
#: client's address, which is logged with the time and path
OUTSIDE_SERVER = f'''
import socket, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class Server(ThreadingHTTPServer):
    address_family = socket.AF_INET6
    daemon_threads = True

    def server_bind(self):
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()

class Peer(BaseHTTPRequestHandler):
    def do_GET(self):
        peer = self.client_address[0].removeprefix("::ffff:")
        with open("{PEERS_LOG}", "a") as log:
            log.write(f"{{time.time():.3f}} {{peer}} {{self.path}}\\n")
        body = (peer + "\\n").encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

Server(("::", {OUTSIDE_PORT}), Peer).serve_forever()
'''


def outside_subnets(fabric4: str, fabric6: str) -> tuple[str, str]:
    """The default outside networks of a lab with these fabric subnets (see the module)."""
    net4, net6 = ipaddress.IPv4Network(fabric4), ipaddress.IPv6Network(fabric6)
    if net4.prefixlen < OUTSIDE_BASE4.prefixlen or net6.prefixlen < OUTSIDE_BASE6.prefixlen:
        raise ValueError(f"no default outside network for the fabric {net4} / {net6} (at "
                         "least /15 and /32 needed): set CALICO_LAB_OUTSIDE_SUBNET4 and "
                         "CALICO_LAB_OUTSIDE_SUBNET6")
    low4 = int(net4.network_address) & (OUTSIDE_BASE4.num_addresses - 1)
    low6 = int(net6.network_address) & (OUTSIDE_BASE6.num_addresses - 1)
    out4 = ipaddress.IPv4Network((int(OUTSIDE_BASE4.network_address) + low4, net4.prefixlen))
    out6 = ipaddress.IPv6Network((int(OUTSIDE_BASE6.network_address) + low6, net6.prefixlen))
    return str(out4), str(out6)


@dataclass(frozen=True)
class Tor:
    """One top-of-rack router: its rack (1-based), its addresses on the rack's network
    (``fabric``) and on the outside network, and its AS."""

    name: str
    rack: int
    network: str
    fabric4: str
    fabric6: str | None
    outside4: str
    outside6: str | None
    as_number: int

    def state(self) -> dict[str, Any]:
        return {"name": self.name, "rack": self.rack, "network": self.network,
                "as_number": self.as_number, "ip4": self.fabric4, "ip6": self.fabric6,
                "outside_ip4": self.outside4, "outside_ip6": self.outside6}


@dataclass(frozen=True)
class FabricLayout:
    """Names and addresses of the ToRs (one per rack), the outside host and the outside
    network (IPv6 ones are None in an IPv4-only lab). The ``tor*`` properties are the first
    ToR's (the only one without racks)."""

    network: str
    subnet4: str
    subnet6: str | None
    tors: tuple[Tor, ...]
    outside: str
    outside4: str
    outside6: str | None

    @classmethod
    def make(cls, prefix: str, fabric4: str, fabric6: str, ipv6: bool,
             racks: Sequence[Rack], subnet4: str | None = None, subnet6: str | None = None
             ) -> FabricLayout:
        """The layout for a lab with these racks; ``subnet4``/``subnet6`` override the
        derived outside subnets. ValueError when a subnet is not one or overlaps the
        fabric. One rack: the ToR ``PREFIX-tor`` in AS 65000 (the nodes' eBGP peer); more:
        ``PREFIX-tor-R`` in AS 65000 + R, the AS of its rack's nodes too (Calico's "AS per
        rack")."""
        default4, default6 = outside_subnets(fabric4, fabric6)
        out4 = ipaddress.IPv4Network(subnet4 or default4)
        out6 = ipaddress.IPv6Network(subnet6 or default6)
        for mine, theirs in ((out4, fabric4), (out6, fabric6)):
            if mine.overlaps(ipaddress.ip_network(theirs)):
                raise ValueError(f"the outside network {mine} overlaps the fabric {theirs}")
        single = len(racks) == 1
        tors = tuple(
            Tor(name=f"{prefix}-tor" if single else f"{prefix}-tor-{rack.index}",
                rack=rack.index, network=rack.network,
                fabric4=rack.router4, fabric6=rack.router6 if ipv6 else None,
                outside4=host_address(out4, TOR_HOST + rack.index - 1),
                outside6=host_address(out6, TOR_HOST + rack.index - 1) if ipv6 else None,
                as_number=TOR_AS if single else TOR_AS + rack.index)
            for rack in racks)
        return cls(network=f"{prefix}-outside-net", subnet4=str(out4),
                   subnet6=str(out6) if ipv6 else None, tors=tors,
                   outside=f"{prefix}-outside", outside4=host_address(out4, OUTSIDE_HOST),
                   outside6=host_address(out6, OUTSIDE_HOST) if ipv6 else None)

    @property
    def racked(self) -> bool:
        """Whether the lab has racks (a ToR per rack, an AS per rack, no mesh)."""
        return len(self.tors) > 1

    @property
    def tor(self) -> str:
        return self.tors[0].name

    @property
    def tor_fabric4(self) -> str:
        return self.tors[0].fabric4

    @property
    def tor_fabric6(self) -> str | None:
        return self.tors[0].fabric6

    @property
    def tor_outside4(self) -> str:
        return self.tors[0].outside4

    @property
    def tor_outside6(self) -> str | None:
        return self.tors[0].outside6

    @property
    def as_number(self) -> int:
        return self.tors[0].as_number

    @property
    def subnets(self) -> list[str]:
        """The outside network's subnets (what the ToRs advertise to the nodes)."""
        return [self.subnet4] + ([self.subnet6] if self.subnet6 else [])

    def state(self) -> dict[str, Any]:
        """As lab.json records it (``tor``: the first ToR, ``tors``: every one)."""
        return {"network": self.network, "subnet4": self.subnet4, "subnet6": self.subnet6,
                "as_number": self.as_number, "tor": self.tors[0].state(),
                "tors": [t.state() for t in self.tors],
                "outside": {"name": self.outside, "ip4": self.outside4,
                            "ip6": self.outside6}}


def tor_command(pools: Sequence[str], underlay: Sequence[tuple[str, str]] = ()
                ) -> list[str]:
    """A ToR's command: the pools unreachable (below the blocks' routes BGP installs), the
    other racks' subnets through their ToRs (``underlay``: (subnet, via) pairs, the fabric's
    own routing), Docker masked (the image's dockerd would set iptables' FORWARD policy to
    DROP, and a router has no use for it), then systemd."""
    lines = [f"ip{' -6' if ':' in cidr else ''} route replace unreachable {cidr}"
             for cidr in pools]
    for cidr, via in underlay:
        ip = "ip -6" if ":" in cidr else "ip"
        lines.append(f"for i in $(seq 50); do {ip} route replace {cidr} via {via} && break; "
                     "sleep 0.1; done")
    lines += ["for unit in docker.service docker.socket containerd.service; do "
              "ln -sf /dev/null /etc/systemd/system/$unit; done",
              "exec /lib/systemd/systemd"]
    return ["sh", "-c", "\n".join(lines)]


def outside_command(routes: Sequence[tuple[str, str]]) -> list[str]:
    """The outside host's command: no default routes, ``routes`` ((network, via) pairs: the
    pools and the fabric through the ToRs), then the server."""
    lines = ["ip route del default 2>/dev/null", "ip -6 route del default 2>/dev/null"]
    for cidr, via in routes:
        ip = "ip -6" if ":" in cidr else "ip"
        # an IPv6 address may still be settling: a few tries
        lines.append(f"for i in $(seq 50); do {ip} route replace {cidr} via {via} && break; "
                     "sleep 0.1; done")
    lines.append('exec python3 -u -c "$1"')
    return ["sh", "-c", "\n".join(lines), "outside", OUTSIDE_SERVER]


def _spec(*parts: Sequence[str]) -> str:
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:12]


class Outside:
    """Makes, checks and removes the ToRs, the outside host and the outside network."""

    def __init__(self, docker: Docker, prefix: str, layout: FabricLayout,
                 fabric: Sequence[str], pools: Sequence[str], racks: Sequence[Rack]) -> None:
        self.docker = docker
        self.shell = docker.shell
        self.prefix = prefix
        self.layout = layout
        first = layout.tors[0]
        # the outside host's way: the pools through the first ToR (every ToR knows every
        # block), each rack's subnets through its own ToR
        routes = [(cidr, self._via(first, cidr)) for cidr in pools]
        if layout.racked:
            for tor, rack in zip(layout.tors, racks, strict=True):
                routes += [(cidr, self._via(tor, cidr)) for cidr in rack.subnets(True)]
        else:
            routes += [(cidr, self._via(first, cidr)) for cidr in fabric]
        #: the outside host's command (part of its spec)
        self.outside_command = outside_command([(c, v) for c, v in routes if v])
        #: each ToR's command (part of its spec): the other racks through their ToRs
        self.tor_commands = {
            tor.name: tor_command(pools, [
                (cidr, via) for other, rack in zip(layout.tors, racks, strict=True) if other != tor
                for cidr in rack.subnets(True) if (via := self._via(other, cidr))])
            for tor in layout.tors}

    @staticmethod
    def _via(tor: Tor, cidr: str) -> str | None:
        """The ToR's outside address of the CIDR's IP version (None: no IPv6 here)."""
        return tor.outside6 if ":" in cidr else tor.outside4

    @property
    def tor_command(self) -> list[str]:
        """The first ToR's command."""
        return self.tor_commands[self.layout.tor]

    @property
    def names(self) -> tuple[str, ...]:
        return (*(t.name for t in self.layout.tors), self.layout.outside)

    # -------------------------------------------------------------------- what exists

    def containers(self) -> list[dict[str, Any]]:
        """The lab's ToRs (of any rack count) and outside host, inspected (those that
        exist)."""
        found = []
        for role in ("tor", "outside"):
            found += self.docker.run("ps", "-a", "--filter", f"label={LABEL}={role}",
                                     "--filter", f"label={LABEL}.prefix={self.prefix}",
                                     "--format", "{{.Names}}", step="leftovers").stdout.split()
        pattern = re.escape(self.prefix) + r"-(tor(-\d+)?|outside)"
        mine = sorted(n for n in found if re.fullmatch(pattern, n))
        if not mine:
            return []
        return json.loads(self.docker.run("inspect", *mine, step="leftovers").stdout)

    def network_info(self) -> dict[str, Any] | None:
        return self.docker.network_info(self.layout.network, step="outside")

    # -------------------------------------------------------------------- leftovers

    def clear_leftovers(self, image: str, fabric_ok: bool, wanted: bool) -> set[str]:
        """Remove the ToR and the outside host unless they fit (``wanted``: the lab has
        them; else they all go, with the outside network); the names kept."""
        net = self.network_info()
        net_ok = wanted and net is not None and network_fits(net, self.layout.subnets,
                                                             "outside-net")
        keep: set[str] = set()
        for info in self.containers():
            name = info["Name"].lstrip("/")
            why = "the lab runs without --fabric" if not wanted \
                else self._unfit(info, image, fabric_ok, net_ok)
            if why:
                self.shell.progress(f"removing {name}: {why}")
                self.docker.remove_container(name, step="leftovers")
            else:
                keep.add(name)
        if not wanted and net is not None:
            self.remove_network()
        if wanted:
            for name in self.names:
                if name not in keep and self.docker.run(
                        "inspect", name, check=False, step="leftovers").returncode == 0:
                    raise LabError("leftovers", f"a container named {name} exists and was "
                                   "not made by the lab; remove or rename it")
        return keep

    def _unfit(self, info: dict[str, Any], image: str, fabric_ok: bool, net_ok: bool
               ) -> str | None:
        name = info["Name"].lstrip("/")
        tor = next((t for t in self.layout.tors if t.name == name), None)
        if tor is None and name != self.layout.outside:
            return "not a ToR of this lab's racks"
        if not net_ok:
            return "the outside network is being made anew"
        if tor is not None and not fabric_ok:
            return "the fabric network is being recreated"
        if not info["State"].get("Running"):
            return f"not running ({info['State'].get('Status')})"
        if info["Config"].get("Image") != image:
            return f"made from {info['Config'].get('Image')}, not {image}"
        spec = self.tor_spec(tor) if tor is not None else self.outside_spec()
        if (info["Config"].get("Labels") or {}).get(f"{LABEL}.spec") != spec:
            return "made with other container flags or command"
        networks = info["NetworkSettings"]["Networks"]
        if tor is not None:
            want = {self.layout.network: (tor.outside4, tor.outside6),
                    tor.network: (tor.fabric4, tor.fabric6)}
        else:
            want = {self.layout.network: (self.layout.outside4, self.layout.outside6)}
        for network, (ip4, ip6) in want.items():
            net = networks.get(network)
            if net is None:
                return f"not on {network}"
            if net.get("IPAddress") != ip4 or (net.get("GlobalIPv6Address") or None) != ip6:
                return (f"addresses {net.get('IPAddress')}, "
                        f"{net.get('GlobalIPv6Address') or 'none'} on {network} instead of "
                        f"{ip4}, {ip6 or 'none'}")
        if tor is not None:
            state = self.docker.exec(name, "systemctl", "is-system-running", check=False,
                                     step="leftovers", timeout=20).stdout.strip()
            if state not in ("running", "degraded", "starting"):
                return f"systemd is {state or 'not answering'}"
        return None

    # -------------------------------------------------------------------- making them

    def tor_spec(self, tor: Tor) -> str:
        """A hash of a ToR's flags and command: a ToR made otherwise is replaced."""
        return _spec(TOR_RUN_FLAGS, self.tor_commands[tor.name])

    def outside_spec(self) -> str:
        """A hash of the outside host's flags and command (its routes)."""
        return _spec(OUTSIDE_RUN_FLAGS, self.outside_command)

    def ensure_network(self) -> None:
        layout = self.layout
        self.docker.ensure_network(layout.network, layout.subnets, kind="outside-net",
                                   prefix=self.prefix, step="outside")

    def start_tor(self, tor: Tor, image: str) -> None:
        args = ["run", "-d", "--name", tor.name, "--hostname", tor.name,
                "--label", f"{LABEL}=tor", "--label", f"{LABEL}.prefix={self.prefix}",
                "--label", f"{LABEL}.spec={self.tor_spec(tor)}", *TOR_RUN_FLAGS,
                "--network", tor.network, "--ip", tor.fabric4]
        if tor.fabric6:
            args += ["--ip6", tor.fabric6]
        self.docker.run(*args, image, *self.tor_commands[tor.name], step="outside")
        connect = ["network", "connect", "--ip", tor.outside4]
        if tor.outside6:
            connect += ["--ip6", tor.outside6]
        self.docker.run(*connect, self.layout.network, tor.name, step="outside")
        self.shell.progress(f"{tor.name}: started (AS {tor.as_number}; {tor.network} "
                            f"{tor.fabric4}{', ' + tor.fabric6 if tor.fabric6 else ''}; "
                            f"outside {tor.outside4}"
                            f"{', ' + tor.outside6 if tor.outside6 else ''})")

    def start_outside(self, image: str) -> None:
        layout = self.layout
        args = ["run", "-d", "--name", layout.outside, "--hostname", layout.outside,
                "--label", f"{LABEL}=outside", "--label", f"{LABEL}.prefix={self.prefix}",
                "--label", f"{LABEL}.spec={self.outside_spec()}",
                *OUTSIDE_RUN_FLAGS, "--network", layout.network, "--ip", layout.outside4]
        if layout.outside6:
            args += ["--ip6", layout.outside6]
        self.docker.run(*args, image, *self.outside_command, step="outside")
        self.shell.progress(f"{layout.outside}: started ({layout.outside4}"
                            f"{', ' + layout.outside6 if layout.outside6 else ''}; "
                            f"routes through {layout.tor})")

    def wait_serving(self, timeout: float = 30.0) -> None:
        """Until the outside host's server answers on itself."""
        probe = (f"import urllib.request; print(urllib.request.urlopen("
                 f"'http://127.0.0.1:{OUTSIDE_PORT}/lab-up', timeout=2).read().decode())")
        deadline = time.monotonic() + timeout
        while True:
            proc = self.docker.exec(self.layout.outside, "python3", "-c", probe, check=False,
                                    step="outside", timeout=20)
            if proc.returncode == 0 and proc.stdout.strip() == "127.0.0.1":
                self.shell.progress(f"{self.layout.outside}: its server answers on port "
                                    f"{OUTSIDE_PORT}")
                return
            if time.monotonic() > deadline:
                logs = self.docker.run("logs", "--tail", "20", self.layout.outside,
                                       check=False, step="outside")
                raise LabError("outside", f"{self.layout.outside}'s server does not answer: "
                               + tail(proc.stderr or proc.stdout) + "\n"
                               + tail(logs.stdout + logs.stderr))
            time.sleep(0.5)

    # -------------------------------------------------------------------- down

    def remove(self) -> None:
        """The ToR and the outside host (with their volumes), then the outside network."""
        containers = self.containers()
        for info in containers:
            name = info["Name"].lstrip("/")
            self.docker.remove_container(name, step="remove")
            self.shell.progress(f"removed {name}")
        net = self.network_info()
        if net is None:
            return
        if net.get("Labels", {}).get(LABEL) != "outside-net":
            self.shell.progress(f"left {self.layout.network} alone: the lab did not make it")
            return
        self.remove_network()
        self.shell.progress(f"removed {self.layout.network}")

    def remove_network(self) -> None:
        self.docker.remove_network(self.layout.network, step="outside")
