"""End-to-end tests of calicoctl, run as a subprocess against real datastores.

``test_main_flow`` drives every command shape of ARCHITECTURE.md once on SQLite and once on
etcd (``datastore_url``). The detailed tests of each command group, and the bad-input table
(input refused before the datastore is consulted does not depend on the backend), run on
SQLite only, which keeps the file fast.

``Ctl`` alternates where ``--datastore URL`` goes (after the command, before it), so both
positions are exercised throughout. Checked everywhere: exit codes (0 ok, 1 a failed check or
operation, 2 bad input), errors as exactly one ``calicoctl: ...`` line on stderr naming the
field, the ``-o json`` shapes, and that a refused command leaves the store as it was.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import netaddr
import pytest

import calico_lib
from calico_lib import Endpoint, open_datastore

pytestmark = pytest.mark.slow  # calicoctl runs as a process ~200 times

ROOT = Path(__file__).resolve().parents[1]

#: calicoctl runs ~200 times here: let its bytecode be cached (outside the repo) even when
#: PYTHONDONTWRITEBYTECODE is set, instead of compiling calico_lib on every run
PYCACHE = Path(tempfile.gettempdir()) / f"calico-test-pycache-{os.getuid()}"

POOL4 = "10.65.0.0/16"
POOL6 = "fd00:65::/64"


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)

    @property
    def lines(self) -> list[str]:
        return self.out.splitlines()


def _env(**extra: str) -> dict[str, str]:
    drop = {"CALICO_DATASTORE", "PYTHONDONTWRITEBYTECODE"}
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["PYTHONPYCACHEPREFIX"] = str(PYCACHE)
    env.update(extra)
    return env


def run_calicoctl(*args: str, env: dict[str, str] | None = None) -> Result:
    proc = subprocess.run([sys.executable, "-m", "calico_lib.cli", *args], cwd=ROOT,
                          env=env or _env(), capture_output=True, text=True, timeout=60)
    return Result(proc.returncode, proc.stdout, proc.stderr)


def assert_error(result: Result, code: int, *words: str) -> str:
    """``result`` failed with ``code`` and one ``calicoctl:`` line mentioning ``words``."""
    assert result.code == code, result
    assert result.out == "", result
    lines = result.err.splitlines()
    assert len(lines) == 1 and result.err.endswith("\n"), result.err
    assert lines[0].startswith("calicoctl: "), result.err
    for word in words:
        assert word in lines[0], f"{word!r} not in {lines[0]!r}"
    return lines[0]


def store_state(url: str) -> tuple[dict[str, str], int]:
    """Every key under /calico/ with its value, and the store's revision."""
    with open_datastore(url) as store:
        return {kv.key: kv.value for kv in store.list("/calico/")}, store.revision()


class Ctl:
    """calicoctl bound to one datastore URL."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.calls = 0

    def run(self, *args: str) -> Result:
        self.calls += 1
        if self.calls % 2:  # --datastore after the command ...
            return run_calicoctl(*args, "--datastore", self.url)
        return run_calicoctl("--datastore", self.url, *args)  # ... and before it

    def ok(self, *args: str) -> Result:
        result = self.run(*args)
        assert result.code == 0, result
        assert result.err == "", result
        return result

    def json(self, *args: str) -> Any:
        return self.ok(*args, "-o", "json").json()

    def fails(self, code: int, args: tuple[str, ...], *words: str,
              same_revision: bool = True) -> str:
        """The command is refused with one error line, and the store is left as it was."""
        keys, revision = store_state(self.url)
        line = assert_error(self.run(*args), code, *words)
        after_keys, after_revision = store_state(self.url)
        assert after_keys == keys
        if same_revision:
            assert after_revision == revision
        return line


@pytest.fixture
def ctl(tmp_path: Path) -> Ctl:
    """calicoctl on a fresh SQLite store (the detailed tests)."""
    return Ctl(f"sqlite:///{tmp_path}/calico.db")


def inside(address: str, cidr: str) -> bool:
    return netaddr.IPAddress(address) in netaddr.IPNetwork(cidr)


# --------------------------------------------------------------------------- main flow


def test_main_flow(datastore_url: str) -> None:
    """Every command shape scripts rely on, on both backends."""
    ctl = Ctl(datastore_url)
    ctl.ok("pool", "add", POOL4, "--nat-outgoing")
    ctl.ok("pool", "add", POOL6, "--block-size", "120")
    ctl.fails(2, ("pool", "add", "10.65.8.0/24"), "cidr", "overlaps", POOL4)
    assert ctl.json("pool", "list") == [
        {"cidr": POOL4, "block_size": 26, "nat_outgoing": True, "disabled": False},
        {"cidr": POOL6, "block_size": 120, "nat_outgoing": False, "disabled": False},
    ]

    ctl.ok("profile", "add", "web")
    ctl.ok("profile", "rule", "add", "web", "inbound", "allow", "--protocol", "tcp",
           "--dst-ports", "80", "--src-net", "192.0.2.0/24", "--position", "1")
    ctl.fails(2, ("profile", "rule", "add", "nope", "inbound", "allow"), "profile nope")
    assert ctl.json("profile", "show", "web") == {
        "name": "web", "tags": ["web"], "labels": {},
        "inbound_rules": [{"action": "allow", "protocol": "tcp", "src_net": ["192.0.2.0/24"],
                           "dst_ports": [80]},
                          {"action": "allow", "src_tag": "web"}],
        "outbound_rules": [{"action": "allow"}]}

    ctl.ok("node", "add", "node-1", "--ip", "192.0.2.11", "--ip6", "2001:db8::11",
           "--as", "65001")
    ctl.fails(2, ("node", "add", "node-1", "--ip", "192.0.2.12"), "node node-1",
              "already exists")
    ctl.ok("bgp", "peer", "add", "192.0.2.1", "--as", "65000")
    ctl.ok("bgp", "peer", "add", "192.0.2.2", "--as", "65002", "--node", "node-1")
    assert sorted(ctl.json("bgp", "peer", "list"), key=lambda p: p["address"]) == [
        {"address": "192.0.2.1", "as_number": 65000, "node": None},
        {"address": "192.0.2.2", "as_number": 65002, "node": "node-1"}]
    ctl.ok("bgp", "config", "set", "--as", "65100", "--mesh", "off")
    assert ctl.json("bgp", "config", "show") == {"as_number": 65100, "node_to_node_mesh": False}

    lines = ctl.ok("ipam", "assign", "--host", "h1", "--handle", "e1", "--ipv4", "2",
                   "--ipv6", "1").lines
    assert len(lines) == 3 and len(set(lines)) == 3
    assert all(inside(a, POOL4) for a in lines[:2]) and inside(lines[2], POOL6)
    got = ctl.json("ipam", "assign", "--host", "h1", "--handle", "e2", "--ipv4", "1",
                   "--ipv6", "1")
    assert set(got) == {"ipv4", "ipv6"} and len(got["ipv4"]) == len(got["ipv6"]) == 1
    assert inside(got["ipv4"][0], POOL4) and inside(got["ipv6"][0], POOL6)
    assert got["ipv4"][0] not in lines and got["ipv6"][0] not in lines
    assert ctl.json("ipam", "assign", "--host", "h2", "--handle", "e3", "--ip",
                    "10.65.200.7") == {"ipv4": ["10.65.200.7"], "ipv6": []}
    ctl.fails(2, ("ipam", "assign", "--host", "h1", "--handle", "e9", "--ip", "10.65.200.7"),
              "ip", "already assigned")

    v4, v6 = got["ipv4"][0], got["ipv6"][0]
    endpoint = ctl.json("endpoint", "add", "--host", "h1", "--interface", "cali0", "--ip", v4,
                        "--ip", v6, "--mac", "ee:ee:ee:00:00:01", "--profile", "web",
                        "--id", "e2")
    assert endpoint == {"id": "e2", "host": "h1", "interface": "cali0",
                        "mac": "ee:ee:ee:00:00:01", "ipv4_nets": [f"{v4}/32"],
                        "ipv6_nets": [f"{v6}/128"], "profiles": ["web"], "labels": {},
                        "state": "active"}
    assert ctl.json("endpoint", "list") == [endpoint]

    usage = ctl.json("ipam", "show")
    assert {u["pool"]: u["allocated"] for u in usage} == {POOL4: 4, POOL6: 2}
    assert ctl.ok("ipam", "release", "--ip", lines[0]).lines == [lines[0]]
    assert sorted(ctl.json("ipam", "release", "--handle", "e1")["released"]) == sorted(
        lines[1:])
    # e3 holds an address no endpoint uses: a leak until an endpoint takes it
    check = ctl.run("ipam", "check")
    assert check.code == 1 and check.lines == [
        "allocation-without-endpoint: /calico/v1/ipam/handles/e3: 1 address(es) (10.65.200.7) "
        "allocated but no endpoint has id e3; free with `calicoctl ipam gc`"], check

    # Lose a handle record behind the library's back: check fails, gc repairs.
    with open_datastore(datastore_url) as store:
        assert store.delete("/calico/v1/ipam/handles/e3")
    check = ctl.run("ipam", "check")
    assert check.code == 1 and check.err == "", check
    assert ("address-without-handle: /calico/v1/ipam/handles/e3: 1 address(es) allocated "
            "but no handle record") in check.lines
    assert ctl.ok("ipam", "gc", "--live", "e2").lines == [
        "released handle e3: 10.65.200.7 (not live and no endpoint)"]
    assert ctl.ok("ipam", "check").out == "IPAM is consistent\n"
    assert ctl.json("ipam", "check") == {"ok": True, "problems": []}

    ctl.ok("ipam", "config", "set", "--strict-affinity", "true")
    assert ctl.json("ipam", "config", "show") == {"strict_affinity": True}

    ctl.ok("endpoint", "remove", "e2", "--host", "h1")  # releases its addresses too
    assert ctl.json("endpoint", "list", "--host", "h1") == []
    assert ctl.json("ipam", "release", "--handle", "e2")["released"] == []
    ctl.ok("pool", "remove", POOL4)
    assert [p["cidr"] for p in ctl.json("pool", "list")] == [POOL6]


# --------------------------------------------------------------------------- pools


def test_pools(ctl: Ctl) -> None:
    if ctl.url.startswith("sqlite:"):  # listing never creates a store: a typo is an error
        path = ctl.url[len("sqlite:///"):]
        assert_error(ctl.run("pool", "list"), 1, path, "no such file")
        assert not os.path.exists(path)
    ctl.ok("profile", "add", "p0")  # a write creates the store
    assert ctl.json("pool", "list") == []
    assert ctl.ok("pool", "add", POOL4, "--nat-outgoing").out == ""
    ctl.ok("pool", "add", POOL6, "--disabled", "--block-size", "120")
    pools = ctl.json("pool", "list")
    assert pools == [
        {"cidr": POOL4, "block_size": 26, "nat_outgoing": True, "disabled": False},
        {"cidr": POOL6, "block_size": 120, "nat_outgoing": False, "disabled": True},
    ]
    table = ctl.ok("pool", "list").lines
    assert table[0].split() == ["CIDR", "BLOCK_SIZE", "NAT_OUTGOING", "DISABLED", "VXLAN"]
    assert table[1].split() == [POOL4, "26", "yes", "no", "never"]

    ctl.fails(2, ("pool", "add", "10.65.8.0/24"), "cidr", "overlaps", POOL4)
    ctl.fails(2, ("pool", "add", "10.0.0.0/8", "--nat-outgoing"), "cidr", "overlaps")
    ctl.fails(2, ("pool", "add", POOL4), "cidr", "already exists")
    ctl.fails(2, ("pool", "set", "10.99.0.0/16", "--disabled", "true"), "cidr", "not found")
    ctl.fails(2, ("pool", "remove", "10.99.0.0/16"), "cidr", "not found")
    assert ctl.json("pool", "list") == pools

    ctl.ok("pool", "set", POOL6, "--disabled", "false", "--nat-outgoing", "true")
    ctl.ok("pool", "set", POOL4, "--nat-outgoing", "false")
    assert [(p["nat_outgoing"], p["disabled"]) for p in ctl.json("pool", "list")] == [
        (False, False), (True, False)]

    # A pool with addresses assigned cannot be removed; an empty one can.
    [addr] = ctl.ok("ipam", "assign", "--host", "h1", "--handle", "e1").lines
    assert inside(addr, POOL4)
    ctl.fails(2, ("pool", "remove", POOL4), "cidr", "still has addresses")
    ctl.ok("ipam", "release", "--ip", addr)
    ctl.ok("pool", "remove", POOL4)
    ctl.ok("pool", "remove", POOL6)
    assert ctl.json("pool", "list") == []


def test_pool_vxlan(ctl: Ctl) -> None:
    """--vxlan on pool add and pool set; listed as the VXLAN column (and vxlan_mode in
    -o json unless never, as stored); IPv4 pools only."""
    ctl.ok("pool", "add", POOL4, "--vxlan", "cross-subnet")
    ctl.ok("pool", "add", "10.66.0.0/16")
    assert ctl.json("pool", "list") == [
        {"cidr": POOL4, "block_size": 26, "nat_outgoing": False, "disabled": False,
         "vxlan_mode": "cross-subnet"},
        {"cidr": "10.66.0.0/16", "block_size": 26, "nat_outgoing": False,
         "disabled": False},
    ]
    table = ctl.ok("pool", "list").lines
    assert table[0].split()[-1] == "VXLAN"
    assert [line.split()[-1] for line in table[1:]] == ["cross-subnet", "never"]

    ctl.ok("pool", "set", POOL4, "--vxlan", "always")
    ctl.ok("pool", "set", "10.66.0.0/16", "--vxlan", "cross-subnet", "--nat-outgoing", "true")
    assert [(p["vxlan_mode"], p["nat_outgoing"]) for p in ctl.json("pool", "list")] == [
        ("always", False), ("cross-subnet", True)]
    ctl.ok("pool", "set", POOL4, "--vxlan", "never")
    ctl.ok("pool", "set", "10.66.0.0/16", "--disabled", "true")  # --vxlan left out: kept
    assert [p.get("vxlan_mode") for p in ctl.json("pool", "list")] == [None, "cross-subnet"]

    # IPv6 pools route natively: refused with one line naming the field, nothing written
    ctl.fails(2, ("pool", "add", POOL6, "--vxlan", "always"), "vxlan_mode", "IPv4")
    ctl.ok("pool", "add", POOL6)
    ctl.fails(2, ("pool", "set", POOL6, "--vxlan", "cross-subnet"), "vxlan_mode", "IPv4")
    assert ctl.json("pool", "list")[-1] == {"cidr": POOL6, "block_size": 122,
                                            "nat_outgoing": False, "disabled": False}
    ctl.fails(2, ("pool", "add", "10.67.0.0/16", "--vxlan", "sometimes"), "--vxlan",
              "'sometimes'", "cross-subnet")
    ctl.fails(2, ("pool", "set", POOL4, "--vxlan", "Always"), "--vxlan", "'Always'")


# --------------------------------------------------------------------------- profiles


def test_profiles_and_rules(ctl: Ctl) -> None:
    ctl.ok("profile", "add", "web")
    web = ctl.json("profile", "show", "web")
    # Default rules: inbound allowed from members (tag web), outbound allowed.
    assert web == {"name": "web", "tags": ["web"], "labels": {},
                   "inbound_rules": [{"action": "allow", "src_tag": "web"}],
                   "outbound_rules": [{"action": "allow"}]}
    ctl.ok("profile", "add", "db", "--label", "tier=data")
    assert [(p["name"], p["labels"]) for p in ctl.json("profile", "list")] == [
        ("db", {"tier": "data"}), ("web", {})]
    table = ctl.ok("profile", "list").lines
    assert table[0].split() == ["NAME", "TAGS", "LABELS", "INBOUND", "OUTBOUND"]

    # --tag adds to the name's tag, with a rules file too (it used to replace it there)
    rules = Path(ctl.url.removeprefix("sqlite:///")).with_name("rules.json")
    rules.write_text('{"inbound_rules": [], "outbound_rules": [{"action": "allow"}]}')
    ctl.ok("profile", "add", "api", "--tag", "backend", "--rules", str(rules))
    assert ctl.json("profile", "show", "api")["tags"] == ["api", "backend"]
    ctl.ok("profile", "remove", "api")

    ctl.fails(2, ("profile", "add", "web"), "profile web", "already exists")
    ctl.fails(2, ("profile", "show", "nope"), "profile nope", "not found")

    # Rules land where asked: --position is 1-based, the default is last.
    ctl.ok("profile", "rule", "add", "web", "inbound", "allow", "--protocol", "tcp",
           "--dst-ports", "80,443", "--src-net", "192.0.2.0/24", "--position", "1")
    ctl.ok("profile", "rule", "add", "web", "inbound", "deny", "--protocol", "icmp",
           "--icmp-type", "8")
    ctl.ok("profile", "rule", "add", "web", "outbound", "deny", "--not-dst-net",
           "10.0.0.0/8", "--ip-version", "4", "--position", "1")
    web = ctl.json("profile", "show", "web")
    assert web["inbound_rules"] == [
        {"action": "allow", "protocol": "tcp", "src_net": ["192.0.2.0/24"],
         "dst_ports": [80, 443]},
        {"action": "allow", "src_tag": "web"},
        {"action": "deny", "protocol": "icmp", "icmp_type": 8, "ip_version": 4},
    ]
    assert web["outbound_rules"] == [
        {"action": "deny", "not_dst_net": ["10.0.0.0/8"], "ip_version": 4},
        {"action": "allow"}]
    shown = ctl.ok("profile", "show", "web").out
    assert "1  allow protocol tcp src net 192.0.2.0/24 dst ports 80,443\n" in shown
    assert "2  allow src tag web\n" in shown

    # Refused rule edits change nothing.
    ctl.fails(2, ("profile", "rule", "add", "web", "inbound", "allow", "--dst-ports", "80"),
              "dst_ports", "tcp")
    ctl.fails(2, ("profile", "rule", "add", "nope", "inbound", "allow"), "profile nope")
    ctl.fails(2, ("profile", "rule", "add", "web", "inbound", "allow", "--position", "9"),
              "position: 9 is out of range; use 1-4")
    ctl.fails(2, ("profile", "rule", "add", "web", "inbound", "allow", "--position", "0"),
              "position: 0 is out of range; use 1-4")
    ctl.fails(2, ("profile", "rule", "remove", "web", "outbound", "3"),
              "number: 3 is out of range; the profile has 2 outbound rule(s)")
    ctl.fails(2, ("profile", "rule", "remove", "nope", "outbound", "1"), "profile nope")
    assert ctl.json("profile", "show", "web") == web

    ctl.ok("profile", "rule", "remove", "web", "inbound", "1")
    ctl.ok("profile", "rule", "remove", "web", "outbound", "1")
    web = ctl.json("profile", "show", "web")
    assert web["inbound_rules"] == [
        {"action": "allow", "src_tag": "web"},
        {"action": "deny", "protocol": "icmp", "icmp_type": 8, "ip_version": 4},
    ]
    assert web["outbound_rules"] == [{"action": "allow"}]

    ctl.ok("profile", "remove", "web")
    ctl.fails(2, ("profile", "remove", "web"), "profile web", "not found")
    assert [p["name"] for p in ctl.json("profile", "list")] == ["db"]


# --------------------------------------------------------------------------- nodes, BGP


def test_nodes_and_bgp(ctl: Ctl) -> None:
    ctl.ok("node", "add", "node-1", "--ip", "192.0.2.11", "--ip6", "2001:db8::11",
           "--as", "65001")
    ctl.ok("node", "add", "node-2", "--ip", "192.0.2.12")
    nodes = ctl.json("node", "list")
    assert sorted(nodes, key=lambda n: n["name"]) == [
        {"name": "node-1", "ipv4": "192.0.2.11", "ipv6": "2001:db8::11", "as_number": 65001,
         "rr_cluster_id": None},
        {"name": "node-2", "ipv4": "192.0.2.12", "ipv6": None, "as_number": None,
         "rr_cluster_id": None},
    ]
    ctl.fails(2, ("node", "add", "node-1", "--ip", "192.0.2.99"), "node node-1",
              "already exists")
    assert ctl.ok("node", "list").lines[0].split() == [
        "NAME", "IPV4", "IPV4_SUBNET", "IPV6", "IPV6_SUBNET", "AS_NUMBER", "RR_CLUSTER_ID"]

    ctl.ok("bgp", "peer", "add", "192.0.2.1", "--as", "65000")
    ctl.ok("bgp", "peer", "add", "192.0.2.2", "--as", "65002", "--node", "node-1")
    ctl.ok("bgp", "peer", "add", "2001:db8::2", "--as", "65002", "--node", "node-1")
    ctl.fails(2, ("bgp", "peer", "add", "192.0.2.1", "--as", "65000"), "address",
              "already exists")
    ctl.fails(2, ("bgp", "peer", "add", "192.0.2.5", "--as", "1", "--node", "ghost"),
              "node ghost", "not found")
    peers = ctl.json("bgp", "peer", "list")
    assert {(p["address"], p["as_number"], p["node"]) for p in peers} == {
        ("192.0.2.1", 65000, None), ("192.0.2.2", 65002, "node-1"),
        ("2001:db8::2", 65002, "node-1")}
    assert ctl.json("bgp", "peer", "list", "--node", "node-2") == [
        {"address": "192.0.2.1", "as_number": 65000, "node": None}]

    ctl.ok("bgp", "peer", "remove", "192.0.2.2", "--node", "node-1")
    ctl.fails(2, ("bgp", "peer", "remove", "192.0.2.2", "--node", "node-1"), "192.0.2.2",
              "not found")
    # Removing a node removes its own peers, not the global ones.
    ctl.ok("node", "remove", "node-1")
    ctl.fails(2, ("node", "remove", "node-1"), "node node-1", "not found")
    assert [n["name"] for n in ctl.json("node", "list")] == ["node-2"]
    assert ctl.ok("bgp", "peer", "list").lines[1].split() == ["192.0.2.1", "65000", "-"]
    ctl.ok("bgp", "peer", "remove", "192.0.2.1")
    assert ctl.json("bgp", "peer", "list") == []

    assert ctl.json("bgp", "config", "show") == {"as_number": 64512, "node_to_node_mesh": True}
    ctl.ok("bgp", "config", "set", "--as", "65100", "--mesh", "off")
    assert ctl.json("bgp", "config", "show") == {"as_number": 65100, "node_to_node_mesh": False}
    ctl.fails(2, ("bgp", "config", "set", "--as", "99999999999", "--mesh", "on"), "as_number")
    ctl.ok("bgp", "config", "set", "--mesh", "on")
    assert ctl.ok("bgp", "config", "show").lines[1].split() == ["65100", "yes"]


def test_node_subnets(ctl: Ctl) -> None:
    """--ip ADDR/PREFIX, as Calico's ipv4Address: the address and the host's subnet."""
    ctl.ok("node", "add", "node-1", "--ip", "192.0.2.11/24", "--ip6", "2001:DB8::11/64")
    ctl.ok("node", "add", "node-2", "--ip", "198.51.100.12")
    node1 = {"name": "node-1", "ipv4": "192.0.2.11", "ipv4_subnet": "192.0.2.0/24",
             "ipv6": "2001:db8::11", "ipv6_subnet": "2001:db8::/64", "as_number": None,
             "rr_cluster_id": None}
    assert ctl.json("node", "show", "node-1") == node1
    # a node without a subnet: its record as before
    assert ctl.json("node", "show", "node-2") == {
        "name": "node-2", "ipv4": "198.51.100.12", "ipv6": None, "as_number": None,
        "rr_cluster_id": None}
    table = ctl.ok("node", "list").lines
    assert table[1].split() == ["node-1", "192.0.2.11", "192.0.2.0/24", "2001:db8::11",
                                "2001:db8::/64", "-", "-"], table
    assert table[2].split() == ["node-2", "198.51.100.12", "-", "-", "-", "-", "-"], table
    assert ctl.ok("node", "show", "node-2").lines[1].split()[:3] == [
        "node-2", "198.51.100.12", "-"]

    # set: what is given changes (an address together with its subnet), the rest stays,
    # the node's own peers too
    ctl.ok("bgp", "peer", "add", "198.51.100.1", "--as", "65000", "--node", "node-2")
    ctl.ok("node", "set", "node-2", "--ip", "198.51.100.12/25", "--as", "65002")
    assert ctl.json("node", "show", "node-2") == {
        "name": "node-2", "ipv4": "198.51.100.12", "ipv4_subnet": "198.51.100.0/25",
        "ipv6": None, "as_number": 65002, "rr_cluster_id": None}
    assert [p["node"] for p in ctl.json("bgp", "peer", "list")] == ["node-2"]
    ctl.ok("node", "set", "node-1", "--ip", "192.0.2.11")  # no prefix: subnet unknown
    assert "ipv4_subnet" not in ctl.json("node", "show", "node-1")
    assert ctl.json("node", "show", "node-1")["ipv6_subnet"] == "2001:db8::/64"

    # refused, naming the field; nothing written
    ctl.fails(2, ("node", "set", "node-1", "--ip6", "2001:db8::11/128x"), "ipv6_subnet")
    ctl.fails(2, ("node", "add", "node-3", "--ip", "192.0.2.13/24", "--ip6", "10.0.0.1/8"),
              "ipv6", "IPv6 is required")
    ctl.fails(2, ("node", "set", "node-2", "--ip", "192.0.2.11/24"), "ipv4",
              "already node node-1's")
    ctl.fails(1, ("node", "set", "node-2", "--ip6", "fd00::1/64x", "--dry-run"),
              "dry run: ipv6_subnet:")

    # a dry run shows BIRD's change: alone on a /32, node-2's own peer is behind a router
    text = ctl.ok("node", "set", "node-2", "--ip", "198.51.100.12/32", "--dry-run").out
    assert '+  description "node peer 198.51.100.1, multihop";' in text, text
    assert "+  multihop;" in text, text
    assert ctl.json("node", "show", "node-2")["ipv4_subnet"] == "198.51.100.0/25"


# --------------------------------------------------------------------------- IPAM, endpoints


def test_ipam_and_endpoints(ctl: Ctl) -> None:
    ctl.ok("pool", "add", POOL4)
    ctl.ok("pool", "add", POOL6)
    ctl.ok("profile", "add", "web")

    # Human output: one address per line, IPv4 first.
    lines = ctl.ok("ipam", "assign", "--host", "h1", "--handle", "e1", "--ipv4", "2",
                   "--ipv6", "1").lines
    assert len(lines) == 3 and len(set(lines)) == 3
    assert all(inside(a, POOL4) for a in lines[:2]) and inside(lines[2], POOL6)
    got = ctl.json("ipam", "assign", "--host", "h1", "--handle", "e2", "--ipv4", "1",
                   "--ipv6", "1")
    assert set(got) == {"ipv4", "ipv6"} and len(got["ipv4"]) == len(got["ipv6"]) == 1
    assert inside(got["ipv4"][0], POOL4) and inside(got["ipv6"][0], POOL6)
    # With neither --ipv4 nor --ipv6: one IPv4 address.
    default = ctl.json("ipam", "assign", "--host", "h2", "--handle", "e3")
    assert len(default["ipv4"]) == 1 and default["ipv6"] == []
    assert ctl.json("ipam", "assign", "--host", "h2", "--handle", "e4", "--ip",
                    "10.65.200.7") == {"ipv4": ["10.65.200.7"], "ipv6": []}
    assert ctl.ok("ipam", "assign", "--host", "h2", "--handle", "e4", "--ip",
                  "fd00:65::abcd").lines == ["fd00:65::abcd"]
    assert len({*lines, *got["ipv4"], *got["ipv6"], *default["ipv4"]}) == 6

    def allocated() -> dict[str, int]:
        return {u["pool"]: u["allocated"] for u in ctl.json("ipam", "show")}

    usage = ctl.json("ipam", "show")
    assert {u["pool"]: u["allocated"] for u in usage} == {POOL4: 5, POOL6: 3}
    blocks = [(b, u["pool"]) for u in usage for b in u["blocks"]]
    assert {b["affinity"] for b, _ in blocks} == {"h1", "h2"}
    assert all(netaddr.IPNetwork(b["cidr"]) in netaddr.IPNetwork(p) for b, p in blocks)
    assert sum(b["allocated"] for b, _ in blocks) == 8
    assert "ALLOCATED" in ctl.ok("ipam", "show").out

    # Refused assignments change nothing.
    ctl.fails(2, ("ipam", "assign", "--host", "h1", "--handle", "x", "--ip", "10.65.200.7"),
              "ip", "already assigned", "e4")
    ctl.fails(2, ("ipam", "assign", "--host", "h1", "--handle", "x", "--ip", "10.1.1.1"),
              "ip", "not in any pool")
    ctl.fails(2, ("ipam", "assign", "--host", "h1", "--handle", "x", "--pool", "10.9.0.0/16"),
              "pools", "10.9.0.0/16")
    # Exhaustion is an operational failure (1), all or nothing.
    ctl.ok("pool", "add", "10.70.0.0/30", "--block-size", "30")
    ctl.fails(1, ("ipam", "assign", "--host", "h1", "--handle", "x", "--ipv4", "5",
                  "--pool", "10.70.0.0/30"), "ipv4", "nothing was assigned")
    ctl.ok("pool", "remove", "10.70.0.0/30")

    # Endpoints.
    v4, v6 = got["ipv4"][0], got["ipv6"][0]
    endpoint = ctl.json("endpoint", "add", "--host", "h1", "--interface", "cali0", "--ip", v4,
                        "--ip", v6, "--mac", "EE-EE-EE-00-00-01", "--profile", "web",
                        "--id", "e2")
    assert endpoint == {"id": "e2", "host": "h1", "interface": "cali0",
                        "mac": "ee:ee:ee:00:00:01", "ipv4_nets": [f"{v4}/32"],
                        "ipv6_nets": [f"{v6}/128"], "profiles": ["web"], "labels": {},
                        "state": "active"}
    # Addresses of another handle are refused; a free one in a pool is assigned for it.
    ctl.fails(2, ("endpoint", "add", "--host", "h2", "--interface", "cali0", "--ip",
                  default["ipv4"][0], "--profile", "web"), "ip", "already assigned")
    ctl.fails(2, ("endpoint", "add", "--host", "h2", "--interface", "cali0", "--ip",
                  "10.1.1.1", "--profile", "web"), "ip", "not in any pool")
    table = ctl.ok("endpoint", "add", "--host", "h2", "--interface", "cali0", "--ip",
                   "10.65.99.9", "--profile", "web", "--id", "e7").lines
    assert ctl.json("ipam", "release", "--ip", "10.65.99.9", "--ip", "10.65.99.9") == {
        "released": ["10.65.99.9"]}
    ctl.ok("ipam", "assign", "--host", "h2", "--handle", "e7", "--ip", "10.65.99.9")
    assert table[0].split()[:3] == ["ID", "HOST", "INTERFACE"]
    ctl.fails(2, ("endpoint", "add", "--host", "h1", "--interface", "cali0", "--ip", v4,
                  "--profile", "web", "--id", "e2"), "endpoint e2", "already exists")
    assert ctl.json("endpoint", "list", "--host", "h1") == [endpoint]
    everything = ctl.json("endpoint", "list")
    assert len(everything) == 2 and {e["host"] for e in everything} == {"h1", "h2"}
    ctl.ok("endpoint", "remove", "e2", "--host", "h1")
    ctl.fails(2, ("endpoint", "remove", "e2", "--host", "h1"), "endpoint e2", "not found")
    assert ctl.ok("endpoint", "list", "--host", "h1").lines[1:] == []

    # Release by address and by handle.
    assert ctl.ok("ipam", "release", "--ip", lines[0]).lines == [lines[0]]
    assert ctl.json("ipam", "release", "--ip", lines[0]) == {"released": []}
    released = ctl.json("ipam", "release", "--handle", "e1")["released"]
    assert sorted(released) == sorted(lines[1:])
    assert ctl.ok("ipam", "release", "--handle", "e1").out == ""
    assert allocated() == {POOL4: 3, POOL6: 1}  # endpoint remove released e2

    # e3 and e4 hold addresses no endpoint uses: check names them, one line each
    check = ctl.run("ipam", "check")
    assert check.code == 1 and [line.split(":")[0] for line in check.lines] == [
        "allocation-without-endpoint"] * 2, check
    assert "/calico/v1/ipam/handles/e3" in check.lines[0]
    assert "/calico/v1/ipam/handles/e4" in check.lines[1]
    ctl.ok("ipam", "release", "--handle", "e3")
    ctl.ok("ipam", "release", "--handle", "e4")
    assert ctl.ok("ipam", "check").out == "IPAM is consistent\n"
    assert ctl.json("ipam", "check") == {"ok": True, "problems": []}


def test_ipam_check_gc_and_config(ctl: Ctl, tmp_path: Path) -> None:
    ctl.ok("pool", "add", POOL4)
    ctl.ok("pool", "add", POOL6)
    assert ctl.json("ipam", "config", "show") == {"strict_affinity": False}
    ctl.ok("ipam", "config", "set", "--strict-affinity", "true")
    assert ctl.ok("ipam", "config", "show").lines[1].split() == ["yes"]

    live = ctl.json("ipam", "assign", "--host", "h1", "--handle", "live", "--ipv6", "1")
    dead = ctl.json("ipam", "assign", "--host", "h2", "--handle", "dead", "--ipv4", "2")

    # Lose the handle record of "dead" behind the library's back.
    with open_datastore(ctl.url) as store:
        assert store.delete("/calico/v1/ipam/handles/dead")
    check = ctl.run("ipam", "check")
    assert check.code == 1 and check.err == "", check
    assert [line for line in check.lines if line.startswith("address-without-handle: ")] == [
        "address-without-handle: /calico/v1/ipam/handles/dead: 2 address(es) allocated but "
        "no handle record"], check
    report = ctl.run("ipam", "check", "-o", "json")
    assert report.code == 1, report
    assert report.json()["ok"] is False
    assert [(p["kind"], p["subject"]) for p in report.json()["problems"]] == [
        ("address-without-handle", "/calico/v1/ipam/handles/dead"),
        ("allocation-without-endpoint", "/calico/v1/ipam/handles/dead"),
        ("allocation-without-endpoint", "/calico/v1/ipam/handles/live")]

    # gc releases every handle that is not live, even addresses whose record is lost.
    assert ctl.ok("ipam", "gc", "--live", "live").lines == [
        f"released handle dead: {', '.join(dead['ipv4'])} (not live and no endpoint)"]
    assert [line.split(":")[0] for line in ctl.run("ipam", "check").lines] == [
        "allocation-without-endpoint"]  # "live" has no endpoint: a human decides
    assert ctl.json("ipam", "gc", "--live", "live") == {"dry_run": False, "released": [],
                                                        "skipped": []}
    assert {u["pool"]: u["allocated"] for u in ctl.json("ipam", "show")} == {POOL4: 0,
                                                                             POOL6: 1}
    # The freed addresses can be assigned again; the live one is still taken.
    ctl.ok("ipam", "assign", "--host", "h2", "--handle", "again", "--ip", dead["ipv4"][0])
    ctl.fails(2, ("ipam", "assign", "--host", "h2", "--handle", "x", "--ip",
                  live["ipv6"][0]), "ip", "already assigned")

    # Strict affinity: h3 may not borrow from h4's block, the only one of its pool.
    ctl.ok("pool", "add", "10.80.0.0/26")
    ctl.ok("ipam", "assign", "--host", "h4", "--handle", "h4-1", "--pool", "10.80.0.0/26")
    ctl.fails(1, ("ipam", "assign", "--host", "h3", "--handle", "h3-1", "--pool",
                  "10.80.0.0/26"), "ipv4", "nothing was assigned")
    ctl.ok("ipam", "config", "set", "--strict-affinity", "false")
    assert ctl.json("ipam", "config", "show") == {"strict_affinity": False}
    ctl.ok("ipam", "assign", "--host", "h3", "--handle", "h3-1", "--pool", "10.80.0.0/26")

    # Live handles from a file; everything else goes, once it is older than the grace
    # period (all three were made just now).
    live_file = tmp_path / "live-handles"
    live_file.write_text("live\n\nh3-1\n")
    assert ctl.ok("ipam", "gc", "--live-file", str(live_file)).out == ""
    freed = ctl.ok("ipam", "gc", "--live-file", str(live_file), "--grace", "0").lines
    assert [line.split(":")[0] for line in freed] == ["released handle again",
                                                      "released handle h4-1"]
    assert ctl.ok("ipam", "release-affinity", "--host", "h2").lines != []
    ctl.ok("ipam", "release", "--handle", "live")
    ctl.ok("ipam", "release", "--handle", "h3-1")
    assert ctl.ok("ipam", "check").code == 0


def run_tty(args: tuple[str, ...], answer: str | None) -> Result:
    """calicoctl with stdin a terminal that types ``answer`` (None: stdin is /dev/null)."""
    argv = [sys.executable, "-m", "calico_lib.cli", *args]
    if answer is None:
        proc = subprocess.run(argv, cwd=ROOT, env=_env(), capture_output=True, text=True,
                              timeout=60, stdin=subprocess.DEVNULL)
        return Result(proc.returncode, proc.stdout, proc.stderr)
    import pty

    master, slave = pty.openpty()
    try:
        os.write(master, (answer + "\n").encode())
        proc = subprocess.run(argv, cwd=ROOT, env=_env(), capture_output=True, text=True,
                              timeout=60, stdin=slave)
    finally:
        os.close(slave)
        os.close(master)
    return Result(proc.returncode, proc.stdout, proc.stderr)


def test_ipam_gc_needs_an_explicit_scope(ctl: Ctl) -> None:
    """(second audit) `ipam gc` with no arguments released every handle in the cluster."""
    ctl.ok("pool", "add", POOL4)
    ctl.ok("ipam", "assign", "--host", "h1", "--handle", "e1", "--ipv4", "2")
    ctl.fails(2, ("ipam", "gc"), "required", "--docker", "--live", "--live-file", "--all")
    ctl.fails(2, ("ipam", "gc", "--all", "--live", "e1"), "--live", "not allowed", "--all")
    ctl.fails(2, ("ipam", "gc", "--docker", "--live-file", "/dev/null"), "not allowed")
    assert ctl.json("ipam", "show")[0]["allocated"] == 2


def test_ipam_gc_all_must_be_confirmed(ctl: Ctl) -> None:
    ctl.ok("pool", "add", POOL4)
    addrs = ctl.json("ipam", "assign", "--host", "h1", "--handle", "e1", "--ipv4", "2")["ipv4"]
    before = store_state(ctl.url)
    # no terminal and no second flag: refused, nothing changed
    refused = run_tty(("ipam", "gc", "--all", "--datastore", ctl.url), None)
    assert_error(refused, 2, "all", "2 allocated address(es)", "--yes-release-everything")
    # a dry run says what it would do and changes nothing
    dry = ctl.ok("ipam", "gc", "--all", "--dry-run")
    assert dry.lines == [f"would release handle e1: {', '.join(addrs)} (every handle)"]
    # a terminal that types the wrong word: refused
    wrong = run_tty(("ipam", "gc", "--all", "--datastore", ctl.url), "yes")
    assert wrong.code == 2 and "not confirmed" in wrong.err, wrong
    assert store_state(ctl.url) == before
    # the typed word, or the flag, goes ahead
    typed = run_tty(("ipam", "gc", "--all", "--datastore", ctl.url), "release-everything")
    assert typed.code == 0 and typed.out.splitlines() == [
        f"released handle e1: {', '.join(addrs)} (every handle)"], typed
    ctl.ok("ipam", "assign", "--host", "h1", "--handle", "e2")
    assert ctl.json("ipam", "gc", "--all", "--yes-release-everything")["released"][0][
        "handle"] == "e2"
    assert ctl.json("ipam", "show")[0]["allocated"] == 0


def test_ipam_gc_live_never_frees_endpoints_or_new_handles(ctl: Ctl) -> None:
    ctl.ok("pool", "add", POOL4)
    ctl.ok("profile", "add", "web")
    ctl.ok("endpoint", "add", "--host", "h1", "--interface", "cali0000000e1", "--ip",
           "10.65.0.10", "--profile", "web", "--id", "e1")
    ctl.ok("ipam", "assign", "--host", "h2", "--handle", "young")
    with calico_lib.connect(ctl.url) as client:  # made before the grace period
        client.ipam.clock = lambda: time.time() - 3600
        old = client.ipam.auto_assign("h2", "old", num_ipv4=1).ipv4[0]
    # e1 is an endpoint's (never freed by --live); "young" is kept until the grace is over
    assert ctl.json("ipam", "gc", "--live", "nothing") == {
        "dry_run": False, "skipped": [], "released": [
            {"handle": "old", "addresses": [old], "endpoint": None,
             "reason": "not live and no endpoint"}]}
    before = store_state(ctl.url)
    dry = ctl.ok("ipam", "gc", "--live", "nothing", "--grace", "0", "--dry-run").lines
    assert [line.split(":")[0] for line in dry] == ["would release handle young"]
    assert store_state(ctl.url) == before
    freed = ctl.ok("ipam", "gc", "--live", "nothing", "--grace", "0").lines
    assert [line.split(":")[0] for line in freed] == ["released handle young"]
    assert ctl.json("ipam", "show")[0]["allocated"] == 1


def test_ipam_check_cross_checks_endpoints_and_repairs(ctl: Ctl) -> None:
    """`ipam check` said "consistent" while endpoints and allocations disagreed."""
    ctl.ok("pool", "add", POOL4)
    with calico_lib.connect(ctl.url) as client:
        ipam = client.ipam
        ipam.clock = lambda: time.time() - 3600
        pending = f"docker-pending.{int(time.time()) - 3600}.0123abcd"  # an hour old
        stale = ipam.auto_assign("h1", pending, num_ipv4=1).ipv4[0]
        shared = ipam.auto_assign("h1", "e-a", num_ipv4=1).ipv4[0]
        for ep_id, host in (("e-a", "h1"), ("e-b", "h2")):  # one address, two endpoints
            client.put_endpoint(Endpoint(ep_id, host, "cali" + ep_id, ipv4_nets=[shared]))
        client.put_endpoint(Endpoint("e-free", "h1", "califree", ipv4_nets=["10.65.0.50"]))
        client.store.put("/calico/v1/ipam/handles/broken", "{oops")
    check = ctl.run("ipam", "check")
    assert check.code == 1 and check.err == "", check
    # the hour's age is read a moment after it was written: a second may have passed
    lines = [re.sub(r"pending for 36[0-5]\d s", "pending for 3600 s", line)
             for line in check.lines]
    assert sorted(lines) == sorted([
        "unreadable: /calico/v1/ipam/handles/broken: not valid JSON",
        "address-on-two-endpoints: /calico/v1/endpoints/h1/e-a: address "
        f"{shared} is also on /calico/v1/endpoints/h2/e-b",
        "endpoint-address-taken: /calico/v1/endpoints/h2/e-b: address "
        f"{shared} is allocated to handle e-a, not to the endpoint's handle e-b",
        "endpoint-address-free: /calico/v1/endpoints/h1/e-free: address 10.65.0.50 is not "
        "allocated",
        f"stale-pending: {check_subject(check, 'stale-pending')}: 1 address(es) ({stale}) "
        "pending for 3600 s, longer than the grace period of 600 s: Docker never made the "
        "endpoint"]), check
    before = store_state(ctl.url)
    dry = ctl.run("ipam", "check", "--repair", "--dry-run")
    assert dry.code == 1
    assert [line for line in dry.lines if line.startswith("would repair")] == [
        "would repair: /calico/v1/endpoints/h1/e-free: allocate 10.65.0.50 to handle e-free",
        f"would repair: {check_subject(check, 'stale-pending')}: release {stale}"]
    assert store_state(ctl.url)[0] == before[0]
    fixed = ctl.run("ipam", "check", "--repair", "-o", "json")
    assert fixed.code == 1, fixed  # the shared address and the bad record need a human
    report = fixed.json()
    assert [r["result"] for r in report["repairs"]] == ["repaired", "repaired"]
    assert {p["kind"] for p in report["remaining"]} == {
        "unreadable", "address-on-two-endpoints", "endpoint-address-taken"}
    assert report["ok"] is False
    ctl.fails(2, ("ipam", "check", "--dry-run"), "dry_run", "--repair")
    with open_datastore(ctl.url) as store:
        store.delete("/calico/v1/ipam/handles/broken")
        store.delete("/calico/v1/endpoints/h2/e-b")
    assert ctl.ok("ipam", "check", "--repair").lines == ["IPAM is consistent"]


def check_subject(result: Result, kind: str) -> str:
    [line] = [line for line in result.lines if line.startswith(kind + ": ")]
    return line.split(": ")[1]



# --------------------------------------------------------------------------- bad input


BAD_INPUT: list[tuple[tuple[str, ...], tuple[str, ...]]] = [
    # (arguments, words the one error line must hold)
    (("pool", "add", "10.999.0.0/16"), ("cidr", "10.999.0.0/16", "not a CIDR")),
    (("pool", "add", "127.0.0.0/16"), ("cidr", "reserved")),
    (("pool", "add", "10.66.0.0/16", "--block-size", "8"), ("block_size", "20-32")),
    (("pool", "add", "10.66.0.0/16", "--block-size", "big"), ("--block-size", "'big'")),
    (("pool", "set", POOL4, "--disabled", "maybe"), ("--disabled", "true or false")),
    (("pool", "add", "10.66.0.0/16", "--vxlan", "sometimes"), ("--vxlan", "'sometimes'")),
    (("pool", "add", "fd00:66::/64", "--vxlan", "always"), ("vxlan_mode", "IPv4")),
    (("profile", "add", "no spaces"), ("name:", "'no spaces'")),
    (("profile", "add", "x", "--label", "novalue"), ("label", "KEY=VALUE")),
    (("profile", "rule", "add", "web", "inbound", "allow", "--src-net", "bad"), ("src_net",)),
    (("profile", "rule", "add", "web", "inbound", "allow", "--icmp-type", "8"),
     ("icmp_type", "icmp")),
    (("profile", "rule", "add", "web", "sideways", "allow"), ("direction", "inbound")),
    (("profile", "rule", "add", "web", "inbound", "maybe"), ("action", "allow")),
    (("node", "add", "node-3", "--ip", "192.0.2.300"), ("ipv4", "192.0.2.300")),
    (("node", "add", "node-3", "--ip", "192.0.2.3/33"), ("ipv4_subnet", "0-32")),
    (("node", "add", "node-3", "--ip6", "2001:db8::3/129"), ("ipv6_subnet", "0-128")),
    (("node", "add", "node-3", "--ip", "192.0.2.3/24x"), ("ipv4_subnet", "not a subnet")),
    (("node", "set", "node-3", "--ip", "192.0.2.3/24"), ("node node-3", "not found")),
    (("node", "set", "h1"), ("node", "nothing to change", "--ip")),
    (("node", "show", "no such"), ("name", "host name")),
    (("node", "add", "node-3", "--ip", "2001:db8::3"), ("ipv4", "IPv4")),
    (("node", "add", "node-3", "--ip6", "192.0.2.3"), ("ipv6", "IPv6")),
    (("node", "add", "node-3", "--as", "0"), ("as_number", "1-4294967295")),
    (("bgp", "peer", "add", "192.0.2.5", "--as", "x"), ("as_number",)),
    (("bgp", "peer", "add", "192.0.2.5"), ("--as",)),
    (("bgp", "peer", "add", "nonsense", "--as", "1"), ("address", "nonsense")),
    (("bgp", "config", "set", "--mesh", "maybe"), ("--mesh", "on")),
    (("ipam", "assign", "--host", "h1", "--handle", "x", "--ip", "10.65.9.9", "--ipv4", "1"),
     ("ip",)),
    (("ipam", "assign", "--host", "h1", "--handle", "x", "--ipv4", "0"), ("ipv4",)),
    (("ipam", "assign", "--host", "h 1", "--handle", "x"), ("host", "'h 1'")),
    (("ipam", "assign", "--host", "h1", "--handle", "x/y"), ("handle",)),
    (("ipam", "assign", "--handle", "x"), ("--host",)),
    (("ipam", "release"), ("ip", "--handle")),
    (("ipam", "release", "--ip", "nonsense"), ("ip", "nonsense")),
    (("ipam", "config", "set", "--strict-affinity", "sometimes"),
     ("--strict-affinity", "true or false")),
    (("ipam", "config", "set"), ("--strict-affinity",)),
    (("endpoint", "add", "--host", "h1", "--interface", "cali1", "--mac", "zz",
      "--profile", "web"), ("mac", "'zz'")),
    (("endpoint", "add", "--host", "h1", "--interface", "cali1", "--ip", "10.65.1.999",
      "--profile", "web"), ("ipv4_nets", "10.65.1.999")),
    (("endpoint", "add", "--host", "h1", "--interface", "a-much-too-long-name",
      "--profile", "web"), ("interface",)),
    (("endpoint", "add", "--host", "h1", "--interface", "cali1"), ("--profile",)),
    (("pool", "list", "-o", "yaml"), ("--output", "yaml")),
    (("pool", "frobnicate"), ("frobnicate",)),
    (("frobnicate",), ("frobnicate",)),
    ((), ("COMMAND",)),
]


def test_bad_input(ctl: Ctl) -> None:
    """Each bad input: exit 2, one line naming the field, and the store untouched."""
    ctl.ok("pool", "add", POOL4)
    ctl.ok("profile", "add", "web")
    ctl.ok("ipam", "assign", "--host", "h1", "--handle", "e1")
    before = store_state(ctl.url)
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda case: run_calicoctl("--datastore", ctl.url, *case[0]),
                                BAD_INPUT))
    for (args, words), result in zip(BAD_INPUT, results, strict=True):
        try:
            assert_error(result, 2, *words)
        except AssertionError as exc:
            raise AssertionError(f"calicoctl {' '.join(args)}: {exc}") from None
    assert store_state(ctl.url) == before


# --------------------------------------------------------------------------- --dry-run


def test_dry_run_prints_each_hosts_change_and_writes_nothing(ctl: Ctl, tmp_path: Path) -> None:
    ctl.ok("pool", "add", POOL4)
    ctl.ok("pool", "add", POOL6)
    for n, host in enumerate(("h1", "h2", "h3"), 1):
        ctl.ok("node", "add", host, "--ip", f"198.18.0.{n}")
    ctl.ok("profile", "add", "frontend")
    ctl.ok("profile", "add", "backend")
    ctl.ok("endpoint", "add", "--host", "h1", "--interface", "calife1", "--ip", "10.65.0.1",
           "--ip", "fd00:65::1", "--profile", "frontend")
    ctl.ok("endpoint", "add", "--host", "h2", "--interface", "calibe1", "--ip", "10.65.1.1",
           "--ip", "fd00:65::1:1", "--profile", "backend")
    before = store_state(ctl.url)
    rule = ("profile", "rule", "add", "backend", "inbound", "allow", "--protocol", "tcp",
            "--src-tag", "frontend", "--dst-ports", "80", "--dry-run")

    text = ctl.ok(*rule).lines
    assert text[:3] == ["dry run, nothing written: 1 record(s) would be written, 0 removed",
                        "1 host: +4 rules, -0; ipset members +2, -0; 2 hosts unaffected",
                        "h2:"], text
    assert ("    + -A cali-pi-backend -p tcp -m set --match-set cali4-t-frontend src -m "
            "multiport --dports 80 -j MARK --set-xmark 0x10000/0x10000") in text, text
    assert "  ipset cali6-t-frontend (made): +fd00:65::1" in text, text
    found = ctl.json(*rule)
    assert found["dry_run"] is True
    assert found["records"] == {"put": ["/calico/v1/profiles/backend"], "deleted": []}
    assert list(found["hosts"]) == ["h2"] and found["hosts"]["h2"]["rules_added"] == 4
    assert store_state(ctl.url) == before

    # a dry run is a check: what the command would refuse fails it (exit 1), nothing written
    ctl.fails(1, ("pool", "add", "10.65.128.0/17", "--dry-run"), "dry run: cidr:",
              "overlaps pool 10.65.0.0/16")
    ctl.fails(1, ("profile", "add", "backend", "--dry-run"), "dry run:", "already exists")
    ctl.fails(1, ("profile", "remove", "backend", "--dry-run"), "dry run: name:",
              "used by endpoint")
    ctl.fails(1, ("profile", "rule", "add", "backend", "inbound", "allow", "--protocol",
                  "tcp", "--dst-ports", "99999", "--dry-run"), "dry run: dst_ports:")
    # a malformed command line is still bad input
    assert_error(ctl.run("pool", "add", "--dry-run"), 2, "cidr")

    # what the command would print (a new endpoint) is not printed; its addresses are
    # taken in the draft only
    text = ctl.ok("endpoint", "add", "--host", "h3", "--interface", "calife2", "--ip",
                  "10.65.2.7", "--profile", "frontend", "--dry-run").out
    assert text.startswith("dry run, nothing written: ") and "h3:" in text, text
    assert "route + 10.65.2.7/32 dev calife2" in text, text

    # BGP: BIRD's lines, never the password
    secret = tmp_path / "password"
    secret.write_text("s3cret-pass\n")
    text = ctl.ok("bgp", "peer", "add", "198.18.0.254", "--as", "65001", "--password-file",
                  str(secret), "--dry-run").out
    assert "+protocol bgp Global_198_18_0_254" in text and "s3cret" not in text, text
    assert '+  password "********"; (changed)' in text, text
    text = ctl.ok("bgp", "config", "set", "--as", "64600", "--dry-run").out
    assert "BIRD configuration on 3 hosts" in text.splitlines()[1], text
    text = ctl.ok("config", "set", "--default-endpoint-to-host-action", "drop",
                  "--dry-run").out
    assert "+ -A cali-wl-to-host -j DROP" in text, text
    assert store_state(ctl.url) == before

    # a dry run never creates an embedded store: without one it starts from an empty one
    missing = tmp_path / "none" / "calico.db"
    result = run_calicoctl("pool", "add", POOL4, "--dry-run", "--datastore",
                           f"sqlite:///{missing}")
    assert result.code == 0 and "starts from an empty datastore" in result.err, result
    assert result.lines[0] == "dry run, nothing written: 2 record(s) would be written, 0 removed"
    assert not missing.parent.exists()


# --------------------------------------------------------------------------- datastore choice


def test_datastore_from_environment(datastore_url: str) -> None:
    env = _env(CALICO_DATASTORE=datastore_url)
    assert run_calicoctl("pool", "add", POOL4, env=env).code == 0
    listed = run_calicoctl("pool", "list", "-o", "json", env=env)
    assert listed.code == 0 and [p["cidr"] for p in listed.json()] == [POOL4]
    # --datastore wins over the environment.
    broken = _env(CALICO_DATASTORE="etcd://127.0.0.1:1")
    listed = run_calicoctl("-o", "json", "pool", "list", "--datastore", datastore_url,
                           env=broken)
    assert listed.code == 0 and [p["cidr"] for p in listed.json()] == [POOL4]


def test_bad_datastore() -> None:
    # An unreachable datastore is an operational failure (1), not bad input.
    line = assert_error(run_calicoctl("pool", "list", "--datastore", "etcd://127.0.0.1:1"),
                        1, "etcd", "127.0.0.1:1")
    assert "unreachable" in line
    assert_error(run_calicoctl("--datastore", "etcd://127.0.0.1:1", "pool", "add", POOL4), 1)
    # An unusable URL is bad input.
    assert_error(run_calicoctl("pool", "list", "--datastore", "mysql://x"), 2, "datastore")
    assert_error(run_calicoctl("pool", "list", "--datastore", "etcd://host:99999"), 2,
                 "datastore", "host:99999")
    help_text = run_calicoctl("--help")
    assert help_text.code == 0 and "pool" in help_text.out


def test_ipam_show_in_address_order(ctl: Ctl) -> None:
    """Pools and blocks by address (text order puts 10.10 before 10.9, .128 before .64)."""
    ctl.ok("pool", "add", "10.10.0.0/16")
    ctl.ok("pool", "add", "10.9.0.0/16")
    ctl.ok("pool", "add", "fd00:9::/64")
    for address in ("10.9.0.130", "10.9.0.70", "10.10.0.5"):
        ctl.ok("ipam", "assign", "--hostname", "h1", "--handle", f"x{address}",
               "--ip", address)
    shown = ctl.json("ipam", "show")
    assert [u["pool"] for u in shown] == ["10.9.0.0/16", "10.10.0.0/16", "fd00:9::/64"]
    assert [b["cidr"] for b in shown[0]["blocks"]] == ["10.9.0.64/26", "10.9.0.128/26"]
    # gc takes --host as assign does (and assign --hostname as gc does): not a usage error
    gone = ctl.run("ipam", "gc", "--docker", "--host", "h1", "--docker-socket", "/nonexistent")
    assert gone.code == 1 and "docker" in gone.err.lower(), gone


def test_rule_add_help_describes_every_flag(ctl: Ctl) -> None:
    text = ctl.ok("profile", "rule", "add", "--help").out
    flat = " ".join(text.split())
    for flag in ("--src-net CIDR from this CIDR", "--not-dst-ports PORTS not to these ports",
                 "--protocol PROTO the protocol", "--icmp-code CODE this ICMP code"):
        assert flag in flat, flag
