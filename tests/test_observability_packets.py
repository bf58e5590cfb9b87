"""Rule counters and the log action on real packets, in network namespaces (issue 14).

``calicoctl profile show NAME --counters`` in the host's namespace must count the probes
each rule let through, and the drops at the end of an endpoint's chain; a ``log`` rule
must put its prefix (profile, direction, rule number) in the kernel log with the packet's
source, and let the packet go on to the next rule.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator

import netaddr
import pytest

import calico_lib
from calico_lib import Endpoint, IPPool, Node, Profile, Rule
from tests.netns import Lab

LOG_ALL_NETNS = "/proc/sys/net/netfilter/nf_log_all_netns"

pytestmark = pytest.mark.netns


@pytest.fixture
def log_all_netns() -> Iterator[None]:
    """The kernel logs LOG targets of every namespace while the test runs (it logs only
    the first namespace's by default); the setting is put back afterwards."""
    if not os.path.exists(LOG_ALL_NETNS):
        pytest.fail(f"{LOG_ALL_NETNS} is missing: the kernel has no netfilter logging",
                    pytrace=False)
    with open(LOG_ALL_NETNS) as handle:
        before = handle.read().strip()
    with open(LOG_ALL_NETNS, "w") as handle:
        handle.write("1")
    try:
        yield
    finally:
        with open(LOG_ALL_NETNS, "w") as handle:
            handle.write(before)


class KernelLog:
    """The kernel log's lines from now on."""

    def __init__(self) -> None:
        self.fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
        os.lseek(self.fd, 0, os.SEEK_END)

    def lines(self) -> list[str]:
        out = []
        while True:
            try:
                record = os.read(self.fd, 8192)
            except BlockingIOError:
                return out
            except OSError:  # a record overwritten before we read it: go on
                continue
            out.append(record.decode(errors="replace").split(";", 1)[-1].strip())

    def close(self) -> None:
        os.close(self.fd)


def counters(lab: Lab, host, url: str, profile: str) -> dict:
    proc = lab.exec(host.ns, sys.executable, "-m", "calico_lib.cli", "--datastore", url,
                    "profile", "show", profile, "--counters", "--hostname", host.name,
                    "-o", "json")
    return json.loads(proc.stdout)


def packets(found: dict, direction: str, number: int) -> int:
    rule = next(r for r in found["rules"]
                if r["direction"] == direction and r["number"] == number)
    return rule["packets"]["ipv4"] + rule["packets"]["ipv6"]


def test_counters_and_log_follow_real_packets(lab: Lab, tmp_path, log_all_netns) -> None:
    url = "sqlite:///" + str(tmp_path / "calico.db")
    host = lab.host("host1")
    web = lab.container(host, "web", ipv4=["10.65.1.1"], ipv6=["fd00:65::1:1"])
    db = lab.container(host, "db", ipv4=["10.65.1.2"], ipv6=["fd00:65::1:2"])
    with calico_lib.connect(url) as client:
        client.add_pool(IPPool("10.65.0.0/16"))
        client.add_pool(IPPool("fd00:65::/64"))
        client.add_node(Node(host.name, ipv4=host.ipv4))
        client.add_profile("web")
        client.add_profile(Profile(name="db", tags=["db"], inbound_rules=[
            Rule(action="log", protocol="tcp", dst_ports=[5432]),
            Rule(action="allow", protocol="tcp", src_tag="web", dst_ports=[5432]),
            Rule(action="allow", protocol="icmp"),
        ], outbound_rules=[Rule(action="allow")]))
        for ctr, profile in ((web, "web"), (db, "db")):
            client.add_endpoint(Endpoint(id=ctr.id, host=host.name, interface=ctr.interface,
                                         mac=ctr.mac, ipv4_nets=ctr.ipv4,
                                         ipv6_nets=ctr.ipv6, profiles=[profile]))
    lab.agent(host, url)
    start = counters(lab, host, url, "db")
    assert start["notes"] == [], start["notes"]
    assert packets(start, "inbound", 2) == 0

    log = KernelLog()
    try:
        assert lab.tcp_ok(web.ns, db.ns, db.ipv4[0], 5432)     # logged, then allowed
        assert lab.tcp_ok(web.ns, db.ns, db.ipv6[0], 5432)
        assert lab.ping(web.ns, db.ipv4[0], count=1)             # rule 3 (IPv4 only)
        assert not lab.tcp_ok(web.ns, db.ns, db.ipv4[0], 22, timeout=0.5)  # no rule: dropped
        deadline = time.monotonic() + 5
        logged: list[str] = []
        while time.monotonic() < deadline and len(logged) < 2:
            logged += [line for line in log.lines() if "cali:db:in:1 " in line]
            time.sleep(0.1)
    finally:
        log.close()

    after = counters(lab, host, url, "db")
    assert packets(after, "inbound", 1) >= 2   # the log rule saw both SYNs
    assert packets(after, "inbound", 2) >= 2   # and the allow rule took them
    rule2 = next(r for r in after["rules"] if r["number"] == 2 and r["direction"] == "inbound")
    assert rule2["packets"]["ipv4"] >= 1 and rule2["packets"]["ipv6"] >= 1
    assert rule2["bytes"]["ipv4"] >= 60
    assert packets(after, "inbound", 3) >= 1
    inbound_drops = next(d for d in after["dropped_at_end"] if d["direction"] == "inbound")
    assert inbound_drops["packets"]["ipv4"] >= 1   # the port-22 SYN
    # the log line names the rule and carries the packet's source
    assert any(f"SRC={web.ipv4[0]}" in line and "DPT=5432" in line for line in logged), logged
    verbose = netaddr.IPAddress(web.ipv6[0]).format(netaddr.ipv6_verbose)  # as the kernel
    assert any(f"SRC={verbose}" in line for line in logged), logged
