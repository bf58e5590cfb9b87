"""VXLAN per pool, for real in network namespaces: a cloud fabric that drops container
addresses, and pools whose ``vxlan_mode`` is never, cross-subnet and always.

The lab (``tests.netns``): host-a and host-b on segment 1 (198.18.1.0/24), host-c on segment
2 (198.18.2.0/24), registered with their subnets; the outside namespace routes between the
segments, runs no BGP, knows every host's block (as a cloud's route table might) and, as
clouds do, drops every forwarded packet whose source is not a host address. No BIRD runs:
VXLAN routes come from the datastore alone. Each host runs a long-lived calico-agent on one
SQLite datastore, so a mode change converges with nothing restarted.

Needs root, iproute2 (vxlan links), iptables, ipset and ping.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import calico_lib
from calico_lib import Endpoint, IPPool, Node
from calico_lib.render.tunnel import DEVICE, PORT, vtep_mac
from tests.netns import REPO_ROOT, Container, Host, Lab, Proc

pytestmark = pytest.mark.netns

POOL = "10.66.0.0/16"
#: one address per host (assigning it claims the host's block)
ADDRESS = {"host-a": "10.66.1.10", "host-b": "10.66.2.10", "host-c": "10.66.3.10"}
BLOCK = {"host-a": "10.66.1.0/26", "host-b": "10.66.2.0/26", "host-c": "10.66.3.0/26"}
HOSTS = "198.18.0.0/16"
TIMEOUT = 15.0


def wait_for(what: str, check: Callable[[], object], timeout: float = TIMEOUT,
             diagnostics: Callable[[], str] = lambda: "") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}\n"
                                 f"{diagnostics()}")
        time.sleep(0.1)


class Cloud:
    """Three hosts behind a source-checking router, each with a live agent."""

    def __init__(self, lab: Lab, tmp: Path) -> None:
        self.lab = lab
        self.url = "sqlite:///" + str((tmp / "calico.db").resolve())
        self.client = calico_lib.connect(self.url)
        self.client.add_pool(IPPool(POOL, block_size=26))
        self.client.add_profile("web")
        self.client.add_profile("db")
        self.hosts: dict[str, Host] = {}
        for name, segment in (("host-a", 1), ("host-b", 1), ("host-c", 2)):
            host = self.hosts[name] = lab.host(name, segment)
            self.client.add_node(Node(name, host.ipv4, ipv4_subnet=host.subnet4))
        out = lab.outside
        assert out is not None
        for name, host in self.hosts.items():  # the cloud knows the blocks...
            lab.ip(out, "route", "add", BLOCK[name], "via", host.ipv4)
        # ...and routes nothing whose source is not a host's address (frames bridged
        # within a segment pass FORWARD too where br_netfilter is loaded: left alone)
        for bridge in ("br1", "br2"):
            lab.exec(out, "iptables", "-A", "FORWARD", "-i", bridge, "-o", bridge,
                     "-j", "ACCEPT")
        lab.exec(out, "iptables", "-A", "FORWARD", "!", "-s", HOSTS, "-j", "DROP")
        self.agents: list[Proc] = []

    def workload(self, host: str, name: str, address: str, profile: str = "web"
                 ) -> Container:
        ctr = self.lab.container(self.hosts[host], name, ipv4=[address])
        self.client.add_endpoint(Endpoint(id=ctr.id, host=host, interface=ctr.interface,
                                          mac=ctr.mac, ipv4_nets=[address],
                                          profiles=[profile]), assign_addresses=True)
        return ctr

    def start_agents(self) -> None:
        work = self.lab.workdir
        for name, host in self.hosts.items():
            argv = ["env", f"PYTHONPATH={REPO_ROOT}", sys.executable, "-m",
                    "calico_lib.agent", "--datastore", self.url, "--hostname", name,
                    "--lock-file", f"{work}/{host.ns}.lock",
                    "--bird-config", f"{work}/{host.ns}-bird.conf",
                    "--bird-socket", f"{work}/{host.ns}-bird.ctl",
                    "--resync-interval", "5", "--debounce", "0.05"]
            self.agents.append(self.lab.spawn(host.ns, argv, f"agent {name}"))

    def calicoctl(self, *args: str) -> str:
        proc = subprocess.run([sys.executable, "-m", "calico_lib.cli", "--datastore",
                               self.url, *args], capture_output=True, text=True, timeout=30,
                              env=dict(os.environ, PYTHONPATH=REPO_ROOT))
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    def route(self, host: str, prefix: str) -> dict:
        found = json.loads(self.lab.ip(self.hosts[host].ns, "-j", "route", "show", prefix)
                           or "[]")
        return found[0] if found else {}

    def tx(self, host: str) -> int:
        """Packets sent through the host's VXLAN device."""
        link = json.loads(self.lab.ip(self.hosts[host].ns, "-j", "-s", "link", "show",
                                      DEVICE))[0]
        return int(link["stats64"]["tx"]["packets"])

    def tunnel(self, host: str) -> str | None:
        return self.client.get_node(host).ipv4_vxlan_tunnel

    def diagnostics(self) -> str:
        out = []
        for name, host in self.hosts.items():
            out += [f"----- {name}", self.lab.routes(host.ns).rstrip(),
                    self.lab.ip(host.ns, "-d", "link", "show", DEVICE, check=False),
                    self.lab.exec(host.ns, "bridge", "fdb", "show", "dev", DEVICE,
                                  check=False).stdout,
                    self.lab.ip(host.ns, "neigh", "show", "dev", DEVICE, check=False)]
        return "\n".join(out)

    def close(self) -> None:
        for agent in self.agents:
            agent.popen.terminate()
            agent.stop()
        self.client.close()


@pytest.fixture
def cloud(lab: Lab, tmp_path: Path) -> Iterator[Cloud]:
    made = Cloud(lab, tmp_path)
    try:
        yield made
    finally:
        made.close()


def vxlan_packet(vni: int, dst_mac: str, src: str, dst: str) -> bytes:
    """A VXLAN datagram's payload: an ICMP echo request from ``src`` to ``dst`` in an
    Ethernet frame to ``dst_mac``."""
    icmp = bytearray(struct.pack("!BBHHH", 8, 0, 0, 0x4242, 1) + b"forged")
    icmp[2:4] = struct.pack("!H", _checksum(bytes(icmp)))
    ip = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(icmp), 1, 0, 64, 1, 0,
                               socket.inet_aton(src), socket.inet_aton(dst)))
    ip[10:12] = struct.pack("!H", _checksum(bytes(ip)))
    ether = bytes.fromhex(dst_mac.replace(":", "")) + bytes.fromhex("020000000001") + \
        b"\x08\x00"
    return struct.pack("!II", 0x08000000, vni << 8) + ether + bytes(ip) + bytes(icmp)


def _checksum(data: bytes) -> int:
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    return ~(total + (total >> 16)) & 0xFFFF


SEND_UDP = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.sendto(bytes.fromhex(sys.argv[3]), (sys.argv[1], int(sys.argv[2])))
"""


def send_udp(lab: Lab, ns: str, address: str, port: int, payload: bytes) -> None:
    lab.exec(ns, sys.executable, "-c", SEND_UDP, address, str(port), payload.hex())


def input_drops(lab: Lab, ns: str) -> int:
    """Packets the cali-INPUT rules dropping VXLAN have counted."""
    total = 0
    for line in lab.iptables_save(ns, table="filter", counters=True).splitlines():
        if line.startswith("[") and "-A cali-INPUT" in line and f"--dport {PORT}" in line:
            total += int(line[1:].split(":")[0])
    return total


def test_modes_on_a_cloud_fabric(cloud: Cloud) -> None:
    lab = cloud.lab
    ctr_a = cloud.workload("host-a", "ctr-a", ADDRESS["host-a"])
    ctr_b = cloud.workload("host-b", "ctr-b", ADDRESS["host-b"])
    ctr_c = cloud.workload("host-c", "ctr-c", ADDRESS["host-c"])
    cloud.start_agents()
    a = cloud.hosts["host-a"]
    wait_for("host-a's container route", lambda: cloud.route("host-a", ADDRESS["host-a"]))

    # ---- never (the default): the cloud drops container addresses, nobody tunnels
    assert "never" in cloud.calicoctl("pool", "list")
    assert not lab.ip(a.ns, "link", "show", DEVICE, check=False)
    assert not lab.ping(ctr_a.ns, ADDRESS["host-c"], count=2, wait=0.5)
    assert cloud.tunnel("host-a") is None

    # ---- cross-subnet: host-c through the tunnel, host-b (same subnet) natively
    cloud.calicoctl("pool", "set", POOL, "--vxlan", "cross-subnet")
    wait_for("every host's tunnel address", lambda: all(cloud.tunnel(h) for h in cloud.hosts))
    for name in cloud.hosts:
        assert cloud.tunnel(name) in calico_lib.IPPool(BLOCK[name]).network  # its own block
    wait_for("host-a's routes to host-b's and host-c's blocks", lambda: cloud.route(
        "host-a", BLOCK["host-c"]).get("dev") == DEVICE and cloud.route(
        "host-a", BLOCK["host-b"]).get("gateway") == cloud.hosts["host-b"].ipv4,
        diagnostics=cloud.diagnostics)
    to_c = cloud.route("host-a", BLOCK["host-c"])
    assert to_c["gateway"] == cloud.tunnel("host-c") and "onlink" in to_c["flags"], to_c
    assert cloud.route("host-a", BLOCK["host-b"]).get("dev") == "eth0"
    fdb = lab.exec(a.ns, "bridge", "fdb", "show", "dev", DEVICE).stdout
    assert f"{vtep_mac('host-c')} dst {cloud.hosts['host-c'].ipv4} self permanent" in fdb
    assert vtep_mac("host-b") not in fdb  # same subnet: no tunnel to it
    link = json.loads(lab.ip(a.ns, "-d", "-j", "link", "show", DEVICE))[0]
    assert link["mtu"] == 1450 and link["linkinfo"]["info_data"]["id"] == 4096
    wait_for("ctr-a to reach ctr-c through the tunnel",
             lambda: lab.ping(ctr_a.ns, ADDRESS["host-c"], count=1, wait=0.5),
             diagnostics=cloud.diagnostics)
    sent = cloud.tx("host-a")
    assert lab.ping(ctr_a.ns, ADDRESS["host-b"], count=3, wait=1)
    assert cloud.tx("host-a") == sent, "same subnet must not be encapsulated"
    assert lab.ping(ctr_a.ns, ADDRESS["host-c"], count=3, wait=1)
    assert cloud.tx("host-a") >= sent + 3
    # TCP both ways, each side seeing the other's own address (no NAT)
    assert lab.tcp_peer(ctr_a.ns, ctr_c.ns, ADDRESS["host-c"], 8080) == ADDRESS["host-a"]
    assert lab.tcp_peer(ctr_c.ns, ctr_a.ns, ADDRESS["host-a"], 8080) == ADDRESS["host-c"]

    # ---- policy applies across the tunnel: a container in another profile is refused
    ctr_db = cloud.workload("host-c", "ctr-db", "10.66.3.11", profile="db")
    wait_for("ctr-db's route", lambda: cloud.route("host-c", "10.66.3.11"))
    wait_for("ctr-db's rules", lambda: "cali-pi-db" in lab.iptables_save(
        cloud.hosts["host-c"].ns, table="filter"))
    assert not lab.ping(ctr_db.ns, ADDRESS["host-a"], count=2, wait=0.5)
    assert lab.ping(ctr_c.ns, ADDRESS["host-a"], count=1, wait=1)

    # ---- VXLAN from a workload is dropped; the same datagram from a host is delivered
    sink = lab.echo_sink(ctr_a.ns)
    try:
        forged = vxlan_packet(4096, vtep_mac("host-a"), ADDRESS["host-c"], ADDRESS["host-a"])
        before = input_drops(lab, a.ns)
        send_udp(lab, ctr_b.ns, a.ipv4, PORT, forged)       # across the wire
        send_udp(lab, ctr_a.ns, a.ipv4, PORT, forged)       # to its own host
        wait_for("host-a's cali-INPUT to drop both", lambda: input_drops(lab, a.ns)
                 >= before + 2)
        time.sleep(0.3)
        send_udp(lab, cloud.hosts["host-b"].ns, a.ipv4, PORT, forged)  # a known host
        time.sleep(0.5)
    finally:
        seen = sink.stop()
    assert seen == [ADDRESS["host-c"]], seen  # only the host's datagram got through

    # ---- always: host-b too through the tunnel; the switch measured on a live flow
    ping = subprocess.Popen(["ip", "netns", "exec", ctr_a.ns, "ping", "-n", "-i", "0.01",
                             "-w", "30", ADDRESS["host-b"]], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    monitor = subprocess.Popen(["ip", "netns", "exec", a.ns, "ip", "-o", "monitor", "route"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        time.sleep(1)
        sent = cloud.tx("host-a")
        cloud.calicoctl("pool", "set", POOL, "--vxlan", "always")
        wait_for("host-a's route to host-b through the tunnel", lambda: cloud.route(
            "host-a", BLOCK["host-b"]).get("dev") == DEVICE, diagnostics=cloud.diagnostics)
        time.sleep(1)
    finally:
        ping.send_signal(2)
        out, _ = ping.communicate(timeout=10)
        monitor.terminate()
        events, _ = monitor.communicate(timeout=10)
    # the block's route was replaced in place, never deleted first (no moment without one)
    assert not [e for e in events.splitlines()
                if e.startswith("Deleted") and BLOCK["host-b"] in e], events
    assert any(BLOCK["host-b"] in e and DEVICE in e for e in events.splitlines()), events
    assert cloud.tx("host-a") > sent + 50, "host-b's traffic now goes through the tunnel"
    stats = next(line for line in out.splitlines() if "packets transmitted" in line)
    sent_n, got_n = (int(stats.split()[i]) for i in (0, 3))
    print(f"\nswitching cross-subnet -> always on a live ping every 10 ms: {sent_n - got_n}"
          f" of {sent_n} lost, a stall of about {(sent_n - got_n) * 10} ms")
    assert got_n > 0

    # ---- never again: the device goes, the tunnel address is released
    cloud.calicoctl("pool", "set", POOL, "--vxlan", "never")
    wait_for("every device and tunnel address to go", lambda: not any(
        lab.ip(h.ns, "link", "show", DEVICE, check=False) for h in cloud.hosts.values())
        and not any(cloud.tunnel(h) for h in cloud.hosts), diagnostics=cloud.diagnostics)
    assert not cloud.route("host-a", BLOCK["host-c"]).get("protocol") == "81"
    assert not lab.ping(ctr_a.ns, ADDRESS["host-c"], count=2, wait=0.5)
    held = cloud.client.ipam.handle_addresses("vxlan-tunnel.host-a")
    assert held == [], held
