"""Issue 20: every module's check mode predicts exactly what its real run does.

Each scenario sets up a datastore, copies it twice, runs the task in check mode on one copy
and for real on the other, and compares: ``failed``, the message when failed, ``changed``,
the ``diff`` (``diff.prepared`` is check mode's own: the dataplane preview) and the stored
object the module returns. Check mode must also leave its copy as it was.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import calico_lib
from ansible_collections.calico.docker.plugins.modules import (
    bgp_config,
    bgp_peer,
    calico_info,
    ip_pool,
    node,
    profile,
)
from ansible_collections.calico.docker.tests.unit.plugins.modules.helpers import call, client
from calico_lib import keys

CIDR = "10.65.0.0/16"
TOR = "10.0.0.254"


@dataclass
class Scenario:
    name: str
    module: Any
    args: dict[str, Any]
    setup: Callable[[calico_lib.Client], None] = lambda c: None
    #: what the real run must do (so a scenario cannot silently test something else)
    fails: bool = False
    changed: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


def pool(c: calico_lib.Client) -> None:
    c.add_pool(calico_lib.IPPool(CIDR))


def pool_in_use(c: calico_lib.Client) -> None:
    pool(c)
    c.ipam.auto_assign("host-1", "handle-1", num_ipv4=1)


def nodes(c: calico_lib.Client) -> None:
    c.put_node(calico_lib.Node("host-1", ipv4="10.0.0.1", ipv4_subnet="10.0.0.0/24"))
    c.put_node(calico_lib.Node("host-2", ipv4="10.0.0.2", ipv6="fd00::2"))


def peers(c: calico_lib.Client) -> None:
    nodes(c)
    c.put_bgp_peer(calico_lib.BGPPeer(TOR, 65000, password="s3cret"))
    c.put_bgp_peer(calico_lib.BGPPeer("10.0.1.254", 65001, "host-1", password="s3cret"))
    c.put_bgp_peer(calico_lib.BGPPeer("fd00::fe", 65001, "host-1"))
    c.put_bgp_peer(calico_lib.BGPPeer("10.0.2.254", 65002, "host-2"))


def workloads(c: calico_lib.Client) -> None:
    """host-1 with a container, a pending address and a block claim."""
    peers(c)
    pool(c)
    address = c.ipam.auto_assign("host-1", "ep-1", num_ipv4=1).ipv4[0]
    c.add_endpoint(calico_lib.Endpoint("ep-1", "host-1", "caliep1", ipv4_nets=[address]))
    c.ipam.auto_assign("host-1", c.ipam.new_pending_handle(), num_ipv4=1)


def workloads_of_a_removed_record(c: calico_lib.Client) -> None:
    workloads(c)
    c.store.delete(calico_lib.keys.node("host-1"))


IP_POOL = [
    Scenario("create", ip_pool, {"cidr": CIDR, "nat_outgoing": True}, changed=True),
    Scenario("create ipv6", ip_pool, {"cidr": "fd00:65::/48", "block_size": 120},
             changed=True),
    Scenario("change", ip_pool, {"cidr": CIDR, "disabled": True, "vxlan_mode": "always"},
             pool, changed=True),
    Scenario("no-op", ip_pool, {"cidr": "10.65.1.0/16"}, pool),
    Scenario("absent", ip_pool, {"cidr": CIDR, "state": "absent"}, pool, changed=True),
    Scenario("absent of a pool with empty blocks", ip_pool, {"cidr": CIDR, "state": "absent"},
             lambda c: (pool_in_use(c), c.ipam.release_handle("handle-1")),
             changed=True),
    Scenario("absent of missing", ip_pool, {"cidr": CIDR, "state": "absent"}),
    Scenario("absent while addresses are assigned", ip_pool,
             {"cidr": CIDR, "state": "absent"}, pool_in_use, fails=True),
    Scenario("block size change", ip_pool, {"cidr": CIDR, "block_size": 24}, pool, fails=True),
    Scenario("overlap", ip_pool, {"cidr": "10.65.4.0/24"}, pool, fails=True),
    Scenario("vxlan on ipv6", ip_pool, {"cidr": "fd00:65::/48", "vxlan_mode": "always"},
             fails=True),
]

BGP_PEER = [
    Scenario("create global", bgp_peer, {"address": TOR, "as_number": 65000}, changed=True),
    Scenario("create a node's", bgp_peer,
             {"address": "10.0.3.254", "as_number": 65003, "node": "host-2",
              "accept_nets": ["198.51.100.0/24"]}, nodes, changed=True),
    Scenario("change", bgp_peer,
             {"address": TOR, "as_number": 65000, "password": "0ther"}, peers, changed=True),
    Scenario("change a node's", bgp_peer,
             {"address": "fd00::fe", "as_number": 65009, "node": "host-1"}, peers,
             changed=True),
    Scenario("no-op", bgp_peer, {"address": "10.0.2.254", "as_number": 65002,
                                 "node": "host-2"}, peers),
    Scenario("absent", bgp_peer, {"address": "10.0.1.254", "node": "host-1",
                                  "state": "absent"}, peers, changed=True),
    Scenario("absent of missing", bgp_peer, {"address": "10.9.9.9", "state": "absent"},
             peers),
    Scenario("node not registered", bgp_peer,
             {"address": TOR, "as_number": 65000, "node": "host-9"}, nodes, fails=True),
    Scenario("a CIDR", bgp_peer, {"address": "10.0.0.0/24", "as_number": 65000}, fails=True),
    Scenario("a CIDR, absent", bgp_peer, {"address": f"{TOR}/24", "state": "absent"}, peers,
             fails=True),
    Scenario("multicast", bgp_peer, {"address": "224.0.0.5", "as_number": 65000},
             fails=True),
]

NODE = [
    Scenario("create", node, {"name": "host-3", "ipv4": "10.0.0.3/24", "ipv6": "fd00::3",
                              "ipv6_subnet": "fd00::/64"}, nodes, changed=True),
    Scenario("change", node, {"name": "host-1", "ipv4": "10.0.0.1", "as_number": 64513},
             peers, changed=True),
    Scenario("no-op", node, {"name": "host-1", "ipv4": "10.0.0.1",
                             "ipv4_subnet": "10.0.0.0/24"}, nodes),
    Scenario("absent with its peers", node, {"name": "host-1", "state": "absent"}, peers,
             changed=True),
    Scenario("absent without peers", node, {"name": "host-2", "state": "absent"}, nodes,
             changed=True),
    Scenario("absent of a host with containers", node, {"name": "host-1", "state": "absent"},
             workloads, changed=True),
    Scenario("absent of what a removed record left", node,
             {"name": "host-1", "state": "absent"}, workloads_of_a_removed_record,
             changed=True),
    Scenario("absent of missing", node, {"name": "host-9", "state": "absent"}, peers),
    Scenario("another node's address", node, {"name": "host-3", "ipv4": "10.0.0.1"}, nodes,
             fails=True),
    *[Scenario(f"not unicast: {args}", node, {"name": "host-3", **args}, nodes, fails=True)
      for args in ({"ipv4": "0.0.0.0"}, {"ipv4": "224.0.0.5"}, {"ipv4": "255.255.255.255"},
                   {"ipv4": "10.0.0.255/24"}, {"ipv4": "10.0.0.0", "ipv4_subnet": "10.0.0.0/24"},
                   {"ipv6": "::"}, {"ipv6": "ff02::1"}, {"ipv6": "fd00::/64"})],
]


def web(c: calico_lib.Client) -> None:
    c.put_profile(calico_lib.Profile("web", inbound_rules=[
        calico_lib.Rule(protocol="tcp", dst_ports=[80])]))


def web_with_members(c: calico_lib.Client) -> None:
    web(c)
    nodes(c)
    c.add_endpoint(calico_lib.Endpoint("e1", "host-1", "cali0000000e1",
                                       ipv4_nets=["10.65.0.1"], profiles=["web"]))


def mesh_off(c: calico_lib.Client) -> None:
    c.set_bgp_config(as_number=64513, node_to_node_mesh=False)


WEB_RULE = {"protocol": "tcp", "dst_ports": [80]}

PROFILE = [
    Scenario("create", profile, {"name": "web", "inbound_rules": [WEB_RULE]}, changed=True),
    Scenario("create with tags and labels", profile,
             {"name": "db", "tags": ["backend"], "labels": {"tier": "db"}}, changed=True),
    Scenario("change the rules", profile,
             {"name": "web", "inbound_rules": [{"protocol": "tcp", "dst_ports": [443]}]},
             web, changed=True),
    Scenario("change a profile with members", profile,
             {"name": "web", "inbound_rules": [WEB_RULE, {"protocol": "icmp"}]},
             web_with_members, changed=True),
    Scenario("no-op", profile, {"name": "web", "inbound_rules": [WEB_RULE]}, web),
    Scenario("mark it a Docker network's", profile,
             {"name": "web", "inbound_rules": [WEB_RULE], "docker_network": True}, web,
             changed=True),
    Scenario("absent", profile, {"name": "web", "state": "absent"}, web, changed=True),
    Scenario("absent of missing", profile, {"name": "web", "state": "absent"}),
    Scenario("a bad name", profile, {"name": "web;drop"}, fails=True),
    Scenario("a bad port", profile,
             {"name": "web", "inbound_rules": [{"protocol": "tcp", "dst_ports": [70000]}]},
             web, fails=True),
    Scenario("ports without a protocol", profile,
             {"name": "web", "inbound_rules": [{"dst_ports": [80]}]}, fails=True),
]

BGP_CONFIG = [
    Scenario("first settings", bgp_config, {"as_number": 64513}, changed=True),
    Scenario("mesh off", bgp_config, {"node_to_node_mesh": False}, nodes, changed=True),
    Scenario("mesh back on", bgp_config, {"node_to_node_mesh": True}, mesh_off,
             changed=True),
    Scenario("no-op", bgp_config, {"as_number": 64513, "node_to_node_mesh": False}, mesh_off),
    Scenario("a bad AS number", bgp_config, {"as_number": 0}, fails=True),
]

CALICO_INFO = [
    Scenario("read everything", calico_info, {}, web_with_members),
    Scenario("one host", calico_info, {"hostname": "host-1"}, web_with_members),
    Scenario("explain a flow", calico_info,
             {"hostname": "host-1", "explain": [{"from": "10.65.0.9", "to": "10.65.0.1",
                                                 "protocol": "tcp", "port": 80}]},
             web_with_members),
    Scenario("a bad host name", calico_info, {"hostname": "host 1"}, fails=True),
]

KEYS = {ip_pool: "pool", bgp_peer: "peer", node: "node", profile: "profile",
        bgp_config: "bgp_config", calico_info: None}


def records(url: str) -> list[tuple[str, str]]:
    with client(url) as c:
        return [(kv.key, kv.value) for kv in c.store.list(keys.ROOT)]


def copy(source: Path, target: Path) -> str:
    """A consistent copy of the SQLite store (its WAL included)."""
    with sqlite3.connect(source) as src, sqlite3.connect(target) as dst:
        src.backup(dst)
    src.close()
    dst.close()
    return f"sqlite:///{target}"


def outcome(out: dict[str, Any], key: str | None) -> dict[str, Any]:
    """What check mode must predict: failed, msg, changed, diff (but ``prepared``), the
    object; of a module that only reads (``key`` None), everything it returns."""
    if out.get("failed"):
        return {"failed": True, "msg": out["msg"]}
    if key is None:
        return out
    diff = {k: v for k, v in out["diff"].items() if k != "prepared"}
    return {"failed": False, "changed": out["changed"], "diff": diff, key: out[key]}


@pytest.mark.parametrize("scenario", [
    pytest.param(s, id=f"{s.module.__name__.rsplit('.', 1)[1]}: {s.name}")
    for s in IP_POOL + BGP_PEER + NODE + PROFILE + BGP_CONFIG + CALICO_INFO])
def test_check_mode_predicts_the_real_run(tmp_path: Path, scenario: Scenario) -> None:
    base = tmp_path / "base.db"
    with client(f"sqlite:///{base}") as c:
        scenario.setup(c)
    check_url = copy(base, tmp_path / "check.db")
    real_url = copy(base, tmp_path / "real.db")
    stored = records(check_url)
    assert records(real_url) == stored

    key = KEYS[scenario.module]
    preview = call(scenario.module, dict(scenario.args, datastore=check_url), check=True)
    real = call(scenario.module, dict(scenario.args, datastore=real_url))

    # the scenario is what it says
    assert bool(real.get("failed")) is scenario.fails, real
    if not scenario.fails:
        assert real["changed"] is scenario.changed, real
    # check mode predicts it, and writes nothing
    assert outcome(preview, key) == outcome(real, key)
    assert records(check_url) == stored
    if scenario.fails or not scenario.changed:
        assert records(real_url) == stored
    else:
        assert records(real_url) != stored
