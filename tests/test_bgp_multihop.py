"""Hosts on different subnets, natively: BGP multihop with real BIRD 2 in network namespaces.

The lab (``tests.netns``): host-a and host-b on segment 1 (198.18.1.0/24, 2001:db8:ff:1::/64),
host-c and host-d (another AS) on segment 2 (198.18.2.0/24, 2001:db8:ff:2::/64), each
segment a bridge in the outside namespace, which routes between them and runs no BGP. One
SQLite datastore; every host runs ``calico_lib.agent --once`` and its own BIRD on the
config it wrote, as in tests/test_bgp.py (whose ``Fabric`` this reuses).

Nodes registered without their subnets (records made before subnets existed) render as
before: the sessions across the router with a peer in the same AS come up (BIRD's default
for iBGP is multihop) but what they bring cannot be resolved, so nothing is routed to the
router; with a peer in another AS they never come up. Given their subnets (``calicoctl node
set --ip ADDR/PREFIX``, live), every session comes up and each block is routed via the
router.

Needs root, iproute2, iptables, ipset, ping and bird2.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import calico_lib
from calico_lib import IPPool
from tests import netns
from tests.netns import REPO_ROOT, Host, Lab
from tests.test_bgp import ESTABLISHED_TIMEOUT, POOL4, POOL6, ROUTE_TIMEOUT, Fabric, wait_for

pytestmark = pytest.mark.netns

OTHER_AS = 64600
#: an address for each host (assigning it claims its block for the host), and the blocks
ADDRESSES = {f"host-{x}": (f"10.65.{n}.10", f"fd00:65::{n}:10") for n, x in enumerate("abcd", 1)}
BLOCKS = {f"host-{x}": (f"10.65.{n}.0/26", f"fd00:65::{n}:0/122")
          for n, x in enumerate("abcd", 1)}


@pytest.fixture
def fabric(lab: Lab, tmp_path: Path) -> Iterator[Fabric]:
    netns.require("bird", "birdc")
    url = "sqlite:///" + str((tmp_path / "calico.db").resolve())
    with calico_lib.connect(url) as client:
        client.add_pool(IPPool(POOL4, block_size=26))
        client.add_pool(IPPool(POOL6, block_size=122))
        yield Fabric(lab, client, url)


def calicoctl(fabric: Fabric, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=REPO_ROOT)
    return subprocess.run([sys.executable, "-m", "calico_lib.cli", "--datastore", fabric.url,
                           *args], capture_output=True, text=True, timeout=30, env=env)


def sessions_by_peer(fabric: Fabric, host: Host) -> dict[str, dict]:
    return {s["peer"]: s for s in fabric.sessions(host)}


def up(fabric: Fabric, host: Host, *peers: Host) -> bool:
    found = sessions_by_peer(fabric, host)
    return all(found.get(address, {}).get("info", "").startswith("Established")
               for peer in peers for address in (peer.ipv4, peer.ipv6))


def test_mesh_across_a_router_comes_up_with_the_subnets(fabric: Fabric) -> None:
    a = fabric.host("host-a", segment=1)
    b = fabric.host("host-b", segment=1)
    c = fabric.host("host-c", segment=2)
    d = fabric.host("host-d", as_number=OTHER_AS, segment=2)
    hosts = (a, b, c, d)
    for host in hosts:
        for address in ADDRESSES[host.name]:
            fabric.client.ipam.assign_ip(address, f"claim-{host.name}", host.name)
    for host in hosts:
        fabric.agent(host)
        fabric.start(host)

    # ---- old records (no subnets): today's config, and what it gets across the router
    conf_a = fabric.conf(a).read_text()
    assert "multihop" not in conf_a and "learn;" not in conf_a
    wait_for("host-a's sessions with host-b (same subnet) and host-c (same AS)",
             lambda: up(fabric, a, b, c), ESTABLISHED_TIMEOUT, lambda: fabric.diagnostics(a))
    fabric.wait_route(a, BLOCKS["host-b"][0], b.ipv4)
    fabric.wait_route(a, BLOCKS["host-b"][1], b.ipv6)
    time.sleep(2)  # as long again as host-c took: host-d had every chance to come up
    found = sessions_by_peer(fabric, a)
    for address in (d.ipv4, d.ipv6):  # eBGP is direct by default: it waits for a neighbour
        assert not found[address]["info"].startswith("Established"), found[address]
        assert found[address]["multihop"] is False
    assert fabric.status(a).returncode == 1
    for block in BLOCKS["host-c"]:  # host-c's routes came, but nothing resolves them
        route = fabric.route(a, block)
        assert route is None or route.get("type") == "unreachable", (block, route)
    assert "unreachable" in fabric.birdc(fabric.sock(a), "show", "route", BLOCKS["host-c"][0])

    # ---- the subnets, given live the way a Calico user gives them: ADDR/PREFIX
    for host in hosts:
        prefix4, prefix6 = host.subnet4.split("/")[1], host.subnet6.split("/")[1]
        done = calicoctl(fabric, "node", "set", host.name, "--ip", f"{host.ipv4}/{prefix4}",
                         "--ip6", f"{host.ipv6}/{prefix6}")
        assert done.returncode == 0, done.stderr
    shown = calicoctl(fabric, "node", "show", "host-a", "-o", "json")
    assert '"ipv4_subnet": "198.18.1.0/24"' in shown.stdout, shown.stdout
    assert '"ipv6_subnet": "2001:db8:ff:1::/64"' in shown.stdout, shown.stdout
    for host in hosts:
        fabric.agent(host)  # rewrites BIRD's config and reloads it (birdc configure)
    conf_a = fabric.conf(a).read_text()
    assert conf_a.count("  multihop;") == 4  # host-c and host-d, IPv4 and IPv6
    assert conf_a.count("  learn;") == 2

    fabric.wait_established(*hosts)
    for host in hosts:
        table = fabric.status(host)
        assert table.returncode == 0, table.stdout + table.stderr
        rows = sessions_by_peer(fabric, host)
        others = [h for h in hosts if h is not host]
        assert set(rows) == {x for h in others for x in (h.ipv4, h.ipv6)}
        for other in others:
            across = other.subnet4 != host.subnet4
            for address in (other.ipv4, other.ipv6):
                assert rows[address]["type"] == "mesh"
                assert rows[address]["multihop"] is across, (host.name, rows[address])
                assert address in table.stdout
    # each host learns the others' blocks: across the router via the router (the next hop,
    # the peer, resolved through the kernel's default route), on its own subnet via the peer
    for host in hosts:
        for other in hosts:
            if other is host:
                continue
            across = other.subnet4 != host.subnet4
            fabric.wait_route(host, BLOCKS[other.name][0],
                              host.gateway4 if across else other.ipv4)
            fabric.wait_route(host, BLOCKS[other.name][1],
                              host.gateway6 if across else other.ipv6)
    # BIRD learned the kernel's routes for that, and passes none of them on: the router's
    # default route is in host-a's BIRD, not in what host-b (same subnet) learned from it
    assert "0.0.0.0/0" in fabric.birdc(fabric.sock(a), "show", "route", "protocol", "kernel4")
    from_a = fabric.birdc(fabric.sock(b), "show", "route", "protocol", "Mesh_198_18_1_2")
    assert "0.0.0.0/0" not in from_a and BLOCKS["host-a"][0] in from_a, from_a

    # BIRD follows the kernel's routes: host-a reaches segment 2 by a route of its own, its
    # default route goes; the blocks there stay routed (through that route), and become
    # unreachable when host-a has no way to their host at all
    block_c = BLOCKS["host-c"][0]
    fabric.lab.ip(a.ns, "route", "add", c.subnet4, "via", a.gateway4)
    fabric.lab.ip(a.ns, "route", "del", "default")
    wait_for(f"host-a's BIRD to resolve {c.ipv4} through {c.subnet4}", lambda: c.subnet4 in
             fabric.birdc(fabric.sock(a), "show", "route", "for", c.ipv4),
             ROUTE_TIMEOUT, lambda: fabric.diagnostics(a))
    fabric.wait_route(a, block_c, a.gateway4)
    fabric.lab.ip(a.ns, "route", "del", c.subnet4)
    wait_for(f"{block_c} unreachable on host-a", lambda: (fabric.route(a, block_c) or {}).get(
        "type") == "unreachable", ROUTE_TIMEOUT, lambda: fabric.diagnostics(a))
