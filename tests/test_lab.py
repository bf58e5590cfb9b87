"""The local lab (issue 7): ``calicoctl lab`` wiring, its pure parts, and a real two-node lab.

The real lab runs beside a user's: its containers are ``calico-labtest-1`` and ``-2`` on
``calico-labtest-fabric`` (172.31.251.0/24) with state in a temporary folder, so a running
``calico-lab`` (``make demo``) is left alone; the outside world of ``--fabric`` gets a
one-node lab of its own, ``calico-fabtest`` (172.31.248.0/24). They share the node image
with it: built once (about 90 s, debootstrap) and then taken from its tag, a hash of the
recipe. They skip the Ansible deploy (the demo and the playbook tests do that); each takes
about 15 s with the image cached.

Needs root and docker.io (the lab starts dockerd when it is not running); debootstrap is
installed by the lab when the image has to be built.

From a wheel (issue 15): the project built and installed into a virtualenv of its own
(tests/wheel_install.py), ``calicoctl lab up --skip-deploy --nodes 1`` run from a folder
outside the checkout makes ``calico-wheeltest-1`` on ``calico-wheeltest-fabric``
(172.31.249.0/24), chosen with the CALICO_LAB_* environment, and ``lab down`` removes it.
"""

from __future__ import annotations

import io
import ipaddress
import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest

from calico_lib import cli, lab
from calico_lib.lab import Lab, LabError, NodeSpec, command, image
from tests import wheel_install

PREFIX = "calico-labtest"
SUBNET4 = "172.31.251.0/24"
SUBNET6 = "fd7a:ca1:1ac::/64"


# ------------------------------------------------------------------------------ pure parts


def test_cli_lab_commands_reach_the_lab_without_a_datastore(monkeypatch) -> None:
    calls: list[tuple[Any, ...]] = []

    class FakeLab:
        def __init__(self, nodes: int = 3, ipv6: bool = False,
                     route_reflectors: int = 0, fabric: bool = False, racks: int = 1) -> None:
            calls.append(("init", nodes, ipv6, route_reflectors, fabric, racks))

        def up(self, deploy: bool = True) -> None:
            calls.append(("up", deploy))

        def down(self) -> None:
            calls.append(("down",))

    monkeypatch.setattr(command, "Lab", FakeLab)
    monkeypatch.setenv("CALICO_DATASTORE", "etcd://192.0.2.1:1")  # would fail if opened
    assert cli.main(["lab", "up", "--nodes", "2", "--ipv6", "--skip-deploy"]) == 0
    assert cli.main(["lab", "down"]) == 0
    assert cli.main(["lab", "up", "--nodes", "10", "--route-reflectors", "2"]) == 0
    assert cli.main(["lab", "up", "--ipv6", "--fabric"]) == 0
    assert cli.main(["lab", "up", "--racks", "2"]) == 0
    assert calls == [("init", 2, True, 0, False, 1), ("up", False),
                     ("init", 3, False, 0, False, 1), ("down",),
                     ("init", 10, False, 2, False, 1), ("up", True),
                     ("init", 3, True, 0, True, 1), ("up", True),
                     ("init", 3, False, 0, False, 2), ("up", True)]


def test_cli_lab_errors_name_the_step(monkeypatch, capsys) -> None:
    class FailingLab:
        def __init__(self, **_: Any) -> None:
            pass

        def up(self, deploy: bool = True) -> None:
            raise LabError("boot", "calico-lab-1 stopped while booting")

    monkeypatch.setattr(command, "Lab", FailingLab)
    assert cli.main(["lab", "up"]) == 1
    assert capsys.readouterr().err.strip() == (
        "calicoctl: lab step 'boot' failed: calico-lab-1 stopped while booting")


def test_cli_lab_beside_another_from_the_environment(monkeypatch) -> None:
    """CALICO_LAB_PREFIX and friends make a second lab (tests of an installed package)."""
    made: list[dict[str, Any]] = []

    class RecordingLab:
        def __init__(self, **kwargs: Any) -> None:
            made.append(kwargs)

        def up(self, deploy: bool = True) -> None:
            pass

        def down(self) -> None:
            pass

    monkeypatch.setattr(command, "Lab", RecordingLab)
    for name in command.ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)
    assert cli.main(["lab", "down"]) == 0
    monkeypatch.setenv("CALICO_LAB_PREFIX", PREFIX)
    monkeypatch.setenv("CALICO_LAB_SUBNET4", SUBNET4)
    monkeypatch.setenv("CALICO_LAB_SUBNET6", SUBNET6)
    monkeypatch.setenv("CALICO_LAB_STATE_DIR", "/tmp/labtest-state")
    monkeypatch.setenv("CALICO_LAB_OUTSIDE_SUBNET4", "192.0.2.0/24")
    monkeypatch.setenv("CALICO_LAB_OUTSIDE_SUBNET6", "2001:db8:99::/64")
    assert cli.main(["lab", "up", "--nodes", "1", "--skip-deploy", "--fabric"]) == 0
    assert cli.main(["lab", "down"]) == 0
    other = {"prefix": PREFIX, "subnet4": SUBNET4, "subnet6": SUBNET6,
             "state_dir": "/tmp/labtest-state", "outside_subnet4": "192.0.2.0/24",
             "outside_subnet6": "2001:db8:99::/64"}
    assert made == [{}, {"nodes": 1, "ipv6": False, "route_reflectors": 0, "fabric": True,
                         "racks": 1, **other}, other]


@pytest.mark.parametrize("count", ["many", "0", "51", "-1"])
def test_cli_lab_rejects_a_bad_node_count(capsys, count: str) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["lab", "up", "--nodes", count])
    assert exc.value.code == 2
    assert capsys.readouterr().err.strip() == \
        f"calicoctl: argument --nodes: {count!r} is not allowed; use 1 to 50"


def test_apt_mirror_from_deb822_and_one_line_sources(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("CALICO_LAB_MIRROR", raising=False)
    apt = tmp_path / "etc/apt"
    (apt / "sources.list.d").mkdir(parents=True)
    (apt / "sources.list.d/debian.sources").write_text(
        "Types: deb\nURIs: http://security.example/debian-security\n"
        "Suites: bookworm-security\nComponents: main\n\n"
        "Types: deb deb-src\nURIs: http://mirror.example/debian\n"
        "Suites: bookworm bookworm-updates\nComponents: main\n")
    assert lab.apt_mirror(str(tmp_path)) == "http://mirror.example/debian"

    (apt / "sources.list.d/debian.sources").unlink()
    (apt / "sources.list").write_text(
        "# deb http://old.example/debian bookworm main\n"
        "deb [signed-by=/usr/share/keyrings/x.gpg] http://one.example/debian bookworm main\n")
    assert lab.apt_mirror(str(tmp_path)) == "http://one.example/debian"

    (apt / "sources.list").write_text("")
    with pytest.raises(LabError, match="CALICO_LAB_MIRROR"):
        lab.apt_mirror(str(tmp_path))
    monkeypatch.setenv("CALICO_LAB_MIRROR", "http://override.example/debian")
    assert lab.apt_mirror(str(tmp_path)) == "http://override.example/debian"


def test_image_tag_is_a_hash_of_the_recipe(monkeypatch) -> None:
    tag = lab.image_tag()
    assert tag.startswith("calico-lab-node:") and len(tag.split(":")[1]) == 12
    assert lab.image_tag() == tag
    monkeypatch.setattr(image, "PACKAGES", (*image.PACKAGES, "less"))
    assert lab.image_tag() != tag


def test_inventory_names_the_nodes_and_their_fabric_addresses() -> None:
    the_lab = Lab(nodes=3, ipv6=True)
    specs = the_lab.node_specs()
    assert specs[0] == NodeSpec(1, "calico-lab-1", "172.31.250.11", "fd7a:ca1:1ab::11")
    inventory = the_lab.inventory(specs)["all"]
    assert inventory["vars"]["ansible_connection"] == "community.docker.docker"
    assert inventory["vars"]["ansible_python_interpreter"] == "/usr/bin/python3"
    assert list(inventory["children"]["etcd"]["hosts"]) == ["calico-lab-1"]
    hosts = inventory["children"]["calico_nodes"]["hosts"]
    assert list(hosts) == ["calico-lab-1", "calico-lab-2", "calico-lab-3"]
    assert hosts["calico-lab-3"] == {"ansible_host": "calico-lab-3",
                                     "calico_node_bgp_ipv4": "172.31.250.13",
                                     "calico_etcd_address": "172.31.250.13",
                                     "calico_node_bgp_ipv6": "fd7a:ca1:1ab::13"}
    assert [n["name"] for n in inventory["vars"]["calico_docker_networks"]] == \
        ["frontend", "backend"]
    # etcd's TLS, the default: the CA and certificates with the lab's state
    assert inventory["vars"]["calico_pki_dir"] == "/var/lib/calico-lab/pki"
    assert Lab(prefix="calico-labtest", state_dir="/tmp/x").inventory(specs)["all"]["vars"][
        "calico_pki_dir"] == "/tmp/x/pki"
    assert not any(k.startswith((
        "calico_node_datastore", "calico_etcd_pki", "calico_policy_etcd", "calico_etcd_auth"))
                   for k in inventory["vars"]), \
        "TLS and etcd's users (passwords in calico_pki_dir) are not options the lab turns on"
    # the networks' profiles are marked as theirs (the plugin refuses an operator's profile)
    assert all(p["docker_network"] for p in inventory["vars"]["calico_policy_profiles"])
    # metrics on in the lab, inside each node (off by default elsewhere)
    assert inventory["vars"]["calico_node_agent_metrics_address"] == "127.0.0.1:9091"
    assert inventory["vars"]["calico_docker_plugin_metrics_address"] == "127.0.0.1:9092"
    assert Lab(nodes=2).node_specs()[1].ip6 is None


def test_the_default_lab_has_no_outside_world() -> None:
    the_lab = Lab(nodes=3, ipv6=True)
    assert the_lab.fabric_layout is None
    inventory = the_lab.inventory(the_lab.node_specs())["all"]
    assert "tor" not in inventory["children"]
    assert "calico_policy_bgp_peers" not in inventory["vars"]
    assert [p["cidr"] for p in inventory["vars"]["calico_policy_pools"]] == \
        ["10.200.0.0/16", "fd00:200::/64"]
    assert [n["name"] for n in inventory["vars"]["calico_docker_networks"]] == \
        ["frontend", "backend"]


def test_fabric_adds_the_tor_as_a_global_peer_and_a_pool_without_nat() -> None:
    """`lab up --fabric`: the ToR in the tor group (the role's variables), a global peer of
    every node whose routes are accepted for the outside network only; a second IPv4 pool
    without nat_outgoing for the network edge."""
    the_lab = Lab(nodes=3, ipv6=True, fabric=True)
    layout = the_lab.fabric_layout
    assert layout == lab.FabricLayout(
        network="calico-lab-outside-net", subnet4="198.19.250.0/24",
        subnet6="2001:db8:1ab::/64",
        tors=(lab.outside.Tor(name="calico-lab-tor", rack=1, network="calico-lab-fabric",
                              fabric4="172.31.250.2", fabric6="fd7a:ca1:1ab::2",
                              outside4="198.19.250.2", outside6="2001:db8:1ab::2",
                              as_number=65000),),
        outside="calico-lab-outside", outside4="198.19.250.100",
        outside6="2001:db8:1ab::100")
    assert (layout.tor, layout.tor_fabric4, layout.as_number, layout.racked) == \
        ("calico-lab-tor", "172.31.250.2", 65000, False)
    inventory = the_lab.inventory(the_lab.node_specs())["all"]
    tor = inventory["children"]["tor"]
    assert tor == {"hosts": {"calico-lab-tor": {"ansible_host": "calico-lab-tor",
                                                "calico_tor_bgp_ipv4": "172.31.250.2",
                                                "calico_tor_bgp_ipv6": "fd7a:ca1:1ab::2"}},
                   "vars": {"calico_tor_as_number": 65000,
                            "calico_tor_advertise": ["198.19.250.0/24", "2001:db8:1ab::/64"]}}
    # the ToR is no Calico node and no etcd member
    assert "calico-lab-tor" not in inventory["children"]["calico_nodes"]["hosts"]
    assert list(inventory["children"]["etcd"]["hosts"]) == ["calico-lab-1"]
    variables = inventory["vars"]
    assert variables["calico_policy_bgp_peers"] == [
        {"address": "172.31.250.2", "as_number": 65000, "accept_nets": ["198.19.250.0/24"]},
        {"address": "fd7a:ca1:1ab::2", "as_number": 65000,
         "accept_nets": ["2001:db8:1ab::/64"]}]
    assert variables["calico_policy_pools"] == [{"cidr": "10.200.0.0/16", "nat_outgoing": True},
                                         {"cidr": "10.201.0.0/16", "nat_outgoing": False},
                                         {"cidr": "fd00:200::/64"}]
    assert variables["calico_docker_networks"][-1] == \
        {"name": "edge", "subnet": ["10.201.0.0/16"], "ipv6": True}
    assert {"name": "edge", "default_rules": True, "docker_network": True} in \
        variables["calico_policy_profiles"]
    # the mesh stays on: the nodes keep their routes to each other without the ToR
    assert variables["calico_policy_bgp"]["node_to_node_mesh"] is True

    # IPv4 only: one session, no IPv6 addresses anywhere
    v4 = Lab(nodes=2, fabric=True)
    inventory = v4.inventory(v4.node_specs())["all"]
    assert inventory["children"]["tor"]["hosts"]["calico-lab-tor"] == {
        "ansible_host": "calico-lab-tor", "calico_tor_bgp_ipv4": "172.31.250.2"}
    assert inventory["children"]["tor"]["vars"]["calico_tor_advertise"] == ["198.19.250.0/24"]
    assert [p["address"] for p in inventory["vars"]["calico_policy_bgp_peers"]] == ["172.31.250.2"]
    assert v4.fabric_layout is not None and v4.fabric_layout.outside6 is None


def test_outside_networks_follow_the_fabric_and_the_environment() -> None:
    """Derived from the fabric so that labs beside each other never share one (the tests'
    fabrics are 172.31.249-254.0/24); CALICO_LAB_OUTSIDE_SUBNET4/6 choose others."""
    derived = {lab.outside_subnets(f"172.31.{n}.0/24", f"fd7a:ca1:1{n - 150:x}::/64")
               for n in range(249, 255)}
    assert len(derived) == 6
    assert lab.outside_subnets("172.31.250.0/24", "fd7a:ca1:1ab::/64") == \
        ("198.19.250.0/24", "2001:db8:1ab::/64")
    assert lab.outside_subnets("172.31.251.0/24", "fd7a:ca1:1ac::/64") == \
        ("198.19.251.0/24", "2001:db8:1ac::/64")
    fabrics = [ipaddress.ip_network(f"172.31.{n}.0/24") for n in range(249, 255)]
    assert not any(ipaddress.ip_network(four).overlaps(f) for four, _ in derived
                   for f in fabrics)
    chosen = Lab(ipv6=True, fabric=True, outside_subnet4="192.0.2.0/24",
                 outside_subnet6="2001:db8:99::/64").fabric_layout
    assert chosen is not None
    assert (chosen.subnet4, chosen.tor_outside4, chosen.outside4, chosen.outside6) == \
        ("192.0.2.0/24", "192.0.2.2", "192.0.2.100", "2001:db8:99::100")
    with pytest.raises(LabError, match="outside subnet: .* overlaps the fabric"):
        Lab(fabric=True, outside_subnet4="172.31.250.0/25")
    with pytest.raises(LabError, match="outside subnet"):
        Lab(fabric=True, outside_subnet4="not-a-net")
    # without --fabric a bad outside subnet matters not (down removes by name)
    assert Lab(outside_subnet4="not-a-net").fabric_layout is None


def test_the_outside_host_reaches_the_pools_and_the_fabric_through_the_tor_only() -> None:
    the_lab = Lab(nodes=3, ipv6=True, fabric=True)
    argv = the_lab.outside_command()
    assert argv[:2] == ["sh", "-c"] and argv[-1] == lab.outside.OUTSIDE_SERVER
    script = argv[2]
    assert "ip route del default" in script and "ip -6 route del default" in script
    routes = re.findall(r"(ip(?: -6)?) route replace (\S+) via (\S+)", script)
    assert routes == [("ip", "10.200.0.0/16", "198.19.250.2"),
                      ("ip", "10.201.0.0/16", "198.19.250.2"),
                      ("ip -6", "fd00:200::/64", "2001:db8:1ab::2"),
                      ("ip", "172.31.250.0/24", "198.19.250.2"),
                      ("ip -6", "fd7a:ca1:1ab::/64", "2001:db8:1ab::2")]
    # the server's code compiles (it runs in the outside host's python3)
    compile(lab.outside.OUTSIDE_SERVER, "outside-server", "exec")
    # a change of the routes makes another container (``up`` replaces the old one)
    v4 = Lab(fabric=True)
    assert the_lab.outside is not None and v4.outside is not None
    assert the_lab.outside.outside_spec() != v4.outside.outside_spec()
    # the ToR: the pools unreachable but for the blocks' routes (no default route for them),
    # Docker masked before systemd starts
    tor = the_lab.outside.tor_command[2]
    assert re.findall(r"ip(?: -6)? route replace unreachable (\S+)", tor) == \
        ["10.200.0.0/16", "10.201.0.0/16", "fd00:200::/64"]
    assert "ln -sf /dev/null /etc/systemd/system/$unit" in tor
    assert tor.endswith("exec /lib/systemd/systemd")
    assert the_lab.outside.tor_spec(layout_tor(the_lab)) != v4.outside.tor_spec(
        layout_tor(v4))


def layout_tor(the_lab: Lab) -> lab.outside.Tor:
    assert the_lab.fabric_layout is not None
    return the_lab.fabric_layout.tors[0]


def test_racks_split_the_fabric_with_a_tor_and_an_as_per_rack() -> None:
    """`lab up --racks 2`: each rack a network holding half the fabric subnets, the nodes in
    order, a ToR per rack at host address 2 in AS 65000 + rack; Calico's "AS per rack" in
    the inventory (the mesh off, every node in its rack's AS with its ToR as its own peer;
    each ToR serving its rack's nodes and peering with the other over the outside network);
    the nodes reach the rest of the fabric through their ToR, the ToRs the other racks
    through each other, the outside host each rack through its ToR."""
    the_lab = Lab(nodes=3, ipv6=True, racks=2)
    assert the_lab.fabric  # racks need their ToRs
    racks = the_lab.cluster.racks
    assert [(r.network, str(r.subnet4), str(r.subnet6), r.router4, r.router6)
            for r in racks] == [
        ("calico-lab-fabric-1", "172.31.250.0/25", "fd7a:ca1:1ab::/65", "172.31.250.2",
         "fd7a:ca1:1ab::2"),
        ("calico-lab-fabric-2", "172.31.250.128/25", "fd7a:ca1:1ab:0:8000::/65",
         "172.31.250.130", "fd7a:ca1:1ab:0:8000::2")]
    specs = the_lab.node_specs()
    assert [(s.name, s.rack, s.ip4, s.ip6) for s in specs] == [
        ("calico-lab-1", 1, "172.31.250.11", "fd7a:ca1:1ab::11"),
        ("calico-lab-2", 1, "172.31.250.12", "fd7a:ca1:1ab::12"),
        ("calico-lab-3", 2, "172.31.250.141", "fd7a:ca1:1ab:0:8000::13")]
    layout = the_lab.fabric_layout
    assert layout is not None and layout.racked
    assert [(t.name, t.network, t.fabric4, t.outside4, t.outside6, t.as_number)
            for t in layout.tors] == [
        ("calico-lab-tor-1", "calico-lab-fabric-1", "172.31.250.2", "198.19.250.2",
         "2001:db8:1ab::2", 65001),
        ("calico-lab-tor-2", "calico-lab-fabric-2", "172.31.250.130", "198.19.250.3",
         "2001:db8:1ab::3", 65002)]

    inventory = the_lab.inventory(specs)["all"]
    variables = inventory["vars"]
    assert variables["calico_policy_bgp"]["node_to_node_mesh"] is False
    hosts = inventory["children"]["calico_nodes"]["hosts"]
    assert [hosts[s.name]["calico_node_as_number"] for s in specs] == [65001, 65001, 65002]
    assert {(p["node"], p["address"], p["as_number"])
            for p in variables["calico_policy_bgp_peers"]} \
        == {("calico-lab-1", "172.31.250.2", 65001), ("calico-lab-1", "fd7a:ca1:1ab::2", 65001),
            ("calico-lab-2", "172.31.250.2", 65001), ("calico-lab-2", "fd7a:ca1:1ab::2", 65001),
            ("calico-lab-3", "172.31.250.130", 65002),
            ("calico-lab-3", "fd7a:ca1:1ab:0:8000::2", 65002)}
    assert all(p["accept_nets"] == [layout.subnet4 if "." in p["address"] else layout.subnet6]
               for p in variables["calico_policy_bgp_peers"])
    tors = inventory["children"]["tor"]
    assert tors["vars"] == {"calico_tor_advertise": ["198.19.250.0/24", "2001:db8:1ab::/64"]}
    assert tors["hosts"]["calico-lab-tor-2"] == {
        "ansible_host": "calico-lab-tor-2", "calico_tor_bgp_ipv4": "172.31.250.130",
        "calico_tor_bgp_ipv6": "fd7a:ca1:1ab:0:8000::2", "calico_tor_as_number": 65002,
        "calico_tor_nodes": ["calico-lab-3"],
        "calico_tor_peers": [{"address": "198.19.250.2", "as_number": 65001,
                              "local": "198.19.250.3"},
                      {"address": "2001:db8:1ab::2", "as_number": 65001,
                       "local": "2001:db8:1ab::3"}]}
    assert tors["hosts"]["calico-lab-tor-1"]["calico_tor_nodes"] == ["calico-lab-1", "calico-lab-2"]

    # the underlay: nodes through their ToR, ToRs through each other, the outside host to
    # each rack through its ToR (the pools through the first)
    command = the_lab.cluster.node_command(specs[2])[2]
    assert re.findall(r"(ip(?: -6)?) route replace (\S+) via (\S+)", command) == [
        ("ip", "172.31.250.0/24", "172.31.250.130"),
        ("ip -6", "fd7a:ca1:1ab::/64", "fd7a:ca1:1ab:0:8000::2")]
    assert command.endswith("exec /lib/systemd/systemd")
    assert the_lab.outside is not None
    tor2 = the_lab.outside.tor_commands["calico-lab-tor-2"][2]
    assert re.findall(r"(ip(?: -6)?) route replace (\S+) via (\S+)", tor2) == [
        ("ip", "172.31.250.0/25", "198.19.250.2"),
        ("ip -6", "fd7a:ca1:1ab::/65", "2001:db8:1ab::2")]
    routes = re.findall(r"route replace (\S+) via (\S+)", the_lab.outside_command()[2])
    assert ("10.200.0.0/16", "198.19.250.2") in routes
    assert ("172.31.250.128/25", "198.19.250.3") in routes
    assert ("172.31.250.0/25", "198.19.250.2") in routes
    # one rack is the lab as it was: no command of its own for the nodes
    assert Lab(nodes=3).cluster.node_command(Lab(nodes=3).node_specs()[0]) == []


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"nodes": 2, "racks": 3}, "--racks must be between 1 and the node count"),
    ({"nodes": 20, "racks": 9}, "at most 8"),
    ({"nodes": 3, "racks": 0}, "--racks must be between"),
    ({"nodes": 4, "racks": 2, "route_reflectors": 1}, "do not go together"),
    ({"nodes": 8, "racks": 8, "subnet4": "172.31.250.0/26"}, "cannot be split in 8 racks"),
    ({"nodes": 50, "racks": 8}, "50 nodes in 8 racks: .* too small"),
])
def test_racks_refuse_what_does_not_fit(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(LabError, match=message):
        Lab(**kwargs).node_specs()


def test_cli_lab_up_documents_fabric_and_its_environment(capsys) -> None:
    with pytest.raises(SystemExit):
        cli.main(["lab", "up", "--help"])
    # argparse wraps lines at hyphens too
    text = " ".join(capsys.readouterr().out.split()).replace("- ", "-")
    assert "--fabric" in text and "calico-lab-tor" in text and "calico-lab-outside-net" in text
    assert "CALICO_LAB_OUTSIDE_SUBNET4" in text and "CALICO_LAB_OUTSIDE_SUBNET6" in text


# ------------------------------------------------------------------------------ a real lab


def docker(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, DOCKER_HOST=f"unix://{lab.DOCKER_SOCKET}")
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=120,
                          check=check, env=env)


def clear(out: io.StringIO) -> None:
    out.seek(0)
    out.truncate(0)


@pytest.fixture
def dockerd() -> Iterator[None]:
    """The machine's dockerd as the lab needs it; stopped afterwards when the lab started it
    (a daemon that was running before, with a user's lab on it, is left alone)."""
    if os.geteuid() != 0:
        pytest.fail("the lab test needs root (dockerd, debootstrap)", pytrace=False)
    was_running = os.path.exists(lab.DOCKER_SOCKET) and \
        docker("version", check=False).returncode == 0
    yield
    if was_running:
        return
    try:
        with open("/var/run/docker.pid") as handle:
            pid = int(handle.read().strip())
        with open(f"/proc/{pid}/comm") as handle:
            if handle.read().strip() != "dockerd":
                return
    except (OSError, ValueError):
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


@pytest.mark.lab
@pytest.mark.slow
def test_two_nodes_boot_run_docker_inside_and_go_away(tmp_path, dockerd: None) -> None:
    out = io.StringIO()
    state_dir = str(tmp_path / "state")
    the_lab = Lab(nodes=2, ipv6=True, prefix=PREFIX, subnet4=SUBNET4, subnet6=SUBNET6,
                  state_dir=state_dir, out=out)
    names = [f"{PREFIX}-1", f"{PREFIX}-2"]
    volumes: list[str] = []
    try:
        try:
            the_lab.up(deploy=False)
        except LabError as exc:
            pytest.fail(f"{exc}\nprogress:\n{out.getvalue()}", pytrace=False)
        log = out.getvalue()
        assert "[1/8] Docker daemon" in log and "[8/8] Ansible inventory" in log
        assert docker("image", "inspect", lab.image_tag()).returncode == 0

        for name in names:
            info = json.loads(docker("inspect", name).stdout)[0]
            volumes += [m["Name"] for m in info["Mounts"] if m["Type"] == "volume"]
            state = docker("exec", name, "systemctl", "is-system-running", check=False)
            assert state.stdout.strip() in ("running", "degraded"), (name, state)
            assert docker("exec", name, "systemctl", "is-active", "docker").stdout.strip() \
                == "active"
            inner = docker("exec", name, "docker", "run", "--rm", "--net", "none",
                           lab.WORKLOAD_IMAGE, "ip", "-o", "link", check=False)
            assert inner.returncode == 0, inner.stderr
            assert "lo" in inner.stdout and "eth0" not in inner.stdout
            assert docker("exec", name, "hostname").stdout.strip() == name
        assert volumes, "the inner dockerd's storage is a volume"

        # the fabric: IPv4 and IPv6 between the nodes
        assert docker("exec", names[0], "ping", "-c", "1", "-W", "2", "172.31.251.12",
                      check=False).returncode == 0
        assert docker("exec", names[0], "ping", "-c", "1", "-W", "2", "fd7a:ca1:1ac::12",
                      check=False).returncode == 0

        # the inventory reaches the nodes through the docker connection
        inventory = the_lab.inventory_path
        assert os.path.dirname(inventory) == state_dir
        text = open(inventory).read()
        assert all(name in text for name in names)
        assert f"calico_pki_dir: {state_dir}/pki" in text  # etcd's CA, kept with the lab's state
        assert json.load(open(os.path.join(state_dir, "lab.json")))["nodes"][1]["ip6"] == \
            "fd7a:ca1:1ac::12"

        # up again after a "failed run": the healthy node is kept, the dead one replaced
        docker("kill", names[1])
        clear(out)
        the_lab.up(deploy=False)
        log = out.getvalue()
        assert f"{names[0]}: kept" in log, log
        assert f"removing {names[1]}: not running" in log, log
        assert docker("exec", names[1], "systemctl", "is-system-running",
                      check=False).stdout.strip() in ("running", "degraded")
        volumes += [m["Name"] for m in json.loads(docker("inspect", names[1]).stdout)[0]
                    ["Mounts"] if m["Type"] == "volume"]
    finally:
        clear(out)
        the_lab.down()

    # everything the lab made is gone; down again changes nothing
    for name in names:
        assert docker("inspect", name, check=False).returncode != 0
    assert docker("network", "inspect", f"{PREFIX}-fabric", check=False).returncode != 0
    for volume in volumes:
        assert docker("volume", "inspect", volume, check=False).returncode != 0, volume
    assert not os.path.exists(state_dir)
    the_lab.down()
    assert "no node containers" in out.getvalue()
    # the image stays cached
    assert docker("image", "inspect", lab.image_tag()).returncode == 0


FABRIC_PREFIX = "calico-fabtest"
FABRIC_SUBNET4 = "172.31.248.0/24"
FABRIC_SUBNET6 = "fd7a:ca1:1a8::/64"


@pytest.mark.lab
@pytest.mark.slow
def test_fabric_tor_and_outside_host_come_and_go(tmp_path, dockerd: None) -> None:
    """`up --fabric` (no deploy): the ToR on both networks, forwarding, without Docker; the
    outside host without a default route, its server answering, the ToR's fabric address
    reached through the ToR; `up` keeps them, `up` without --fabric and `down` remove them.
    A one-node lab of its own (calico-fabtest-1 on 172.31.248.0/24, the outside network
    198.19.248.0/24), beside any other."""
    out = io.StringIO()
    state_dir = str(tmp_path / "state")

    def make(fabric: bool) -> Lab:
        return Lab(nodes=1, ipv6=True, prefix=FABRIC_PREFIX, subnet4=FABRIC_SUBNET4,
                   subnet6=FABRIC_SUBNET6, state_dir=state_dir, out=out, fabric=fabric)

    the_lab = make(True)
    layout = the_lab.fabric_layout
    assert layout is not None and layout.subnet4 == "198.19.248.0/24"
    tor, outside, net = layout.tor, layout.outside, layout.network
    try:
        try:
            the_lab.up(deploy=False)
        except LabError as exc:
            pytest.fail(f"{exc}\nprogress:\n{out.getvalue()}", pytrace=False)
        log = out.getvalue()
        assert "[6/9] the outside world" in log and "[9/9] Ansible inventory" in log, log
        info = json.loads(docker("inspect", tor).stdout)[0]
        networks = info["NetworkSettings"]["Networks"]
        assert networks[f"{FABRIC_PREFIX}-fabric"]["IPAddress"] == "172.31.248.2"
        assert networks[net]["IPAddress"] == "198.19.248.2"
        assert networks[net]["GlobalIPv6Address"] == "2001:db8:1a8::2"
        assert docker("exec", tor, "sysctl", "-n", "net.ipv4.ip_forward",
                      "net.ipv6.conf.all.forwarding").stdout.split() == ["1", "1"]
        assert docker("exec", tor, "systemctl", "is-active", "docker",
                      check=False).stdout.strip() != "active"
        assert docker("exec", tor, "iptables", "-S", "FORWARD").stdout.startswith(
            "-P FORWARD ACCEPT")
        routes = docker("exec", outside, "ip", "route").stdout
        assert "default" not in routes and "10.200.0.0/16 via 198.19.248.2" in routes, routes
        assert "default" not in docker("exec", outside, "ip", "-6", "route").stdout
        for address in ("172.31.248.2", "fd7a:ca1:1a8::2"):  # through the ToR
            assert docker("exec", outside, "ping", "-c", "1", "-W", "2", address,
                          check=False).returncode == 0, address
        state = json.load(open(os.path.join(state_dir, "lab.json")))
        assert state["fabric"]["tor"]["ip4"] == "172.31.248.2"
        assert state["fabric"]["outside"]["ip6"] == "2001:db8:1a8::100"
        inventory = open(the_lab.inventory_path).read()
        assert "calico_tor_bgp_ipv4: 172.31.248.2" in inventory

        clear(out)
        the_lab.up(deploy=False)
        assert f"{tor}: kept" in out.getvalue() and f"{outside}: kept" in out.getvalue()

        clear(out)
        make(False).up(deploy=False)  # the lab without the outside world
        assert f"removing {tor}: the lab runs without --fabric" in out.getvalue()
        for name in (tor, outside):
            assert docker("inspect", name, check=False).returncode != 0
        assert docker("network", "inspect", net, check=False).returncode != 0
        assert json.load(open(os.path.join(state_dir, "lab.json")))["fabric"] is None

        clear(out)
        the_lab.up(deploy=False)  # and with it again
        assert docker("inspect", tor).returncode == 0
    finally:
        clear(out)
        make(False).down()
    for name in (tor, outside, f"{FABRIC_PREFIX}-1"):
        assert docker("inspect", name, check=False).returncode != 0
    for network in (net, f"{FABRIC_PREFIX}-fabric"):
        assert docker("network", "inspect", network, check=False).returncode != 0


def test_route_reflectors_turn_the_mesh_off_and_mark_the_first_nodes() -> None:
    the_lab = Lab(nodes=10, route_reflectors=2)
    inventory = the_lab.inventory(the_lab.node_specs())["all"]
    hosts = inventory["children"]["calico_nodes"]["hosts"]
    assert [n for n, h in hosts.items() if "calico_node_rr_cluster_id" in h] == \
        ["calico-lab-1", "calico-lab-2"]
    assert inventory["vars"]["calico_policy_bgp"]["node_to_node_mesh"] is False
    assert Lab(nodes=3).inventory(Lab(nodes=3).node_specs())["all"]["vars"][
        "calico_policy_bgp"]["node_to_node_mesh"] is True
    with pytest.raises(lab.LabError, match="--route-reflectors"):
        Lab(nodes=3, route_reflectors=4)


# ------------------------------------------------------------------------------ where from


def test_the_checkout_is_the_collection_it_deploys_with(monkeypatch) -> None:
    from calico_lib.lab import collection

    monkeypatch.delenv("CALICO_LAB_REPO", raising=False)
    found = lab.find_collection()
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    assert found == collection.Collection(repo, repo, installed=False)
    assert found.has_library


def test_deploy_from_an_installed_copy_builds_the_hosts_wheel_from_installed_files(
        tmp_path, monkeypatch) -> None:
    from calico_lib.lab import collection, deploy
    from calico_lib.lab.shell import Shell

    bundle = tmp_path / "site" / "ansible_collections" / "calico" / "docker"
    (bundle / "playbooks").mkdir(parents=True)
    (bundle / "playbooks" / "site.yml").write_text("---\n")
    for name in collection.WHEEL_SOURCES:
        (bundle / name).write_text(name)
    installed = collection.Collection(str(bundle), str(tmp_path / "site"), installed=True)
    assert not installed.has_library
    runs: list[dict[str, Any]] = []
    monkeypatch.setattr(deploy, "find_collection", lambda: installed)
    monkeypatch.setattr(deploy, "ansible_playbook", lambda step: "/usr/bin/ansible-playbook")
    monkeypatch.setattr(deploy, "run_playbook", lambda shell, ansible, playbook, root, env,
                        log_path, inventory_path, extra, step: runs.append(
                            {"root": root, "env": env, "extra": extra}))
    state = tmp_path / "state"
    state.mkdir()
    deploy.deploy(Shell(io.StringIO()), inventory_path=str(state / "inventory.yml"),
                  state_dir=str(state), base_env={"PATH": "/bin"})
    [run] = runs
    assert run["root"] == str(bundle)
    assert run["env"]["ANSIBLE_CONFIG"] == str(bundle / "ansible.cfg")
    assert run["env"]["ANSIBLE_COLLECTIONS_PATH"] == str(tmp_path / "site")
    flag, value = run["extra"]
    source = state / deploy.WHEEL_SOURCE
    assert flag == "-e" and json.loads(value) == {"calico_node_wheelhouse_source": str(source)}
    # build_wheelhouse.py's sources: the copy's pyproject.toml, LICENSE and README.md, and
    # the installed calico_lib
    assert (source / "pyproject.toml").read_text() == "pyproject.toml"
    assert (source / "calico_lib" / "lab" / "core.py").is_file()

    # from a checkout (it holds the sources), the role's default source stays
    runs.clear()
    monkeypatch.setattr(deploy, "find_collection", lambda: lab.find_collection())
    deploy.deploy(Shell(io.StringIO()), inventory_path=str(state / "inventory.yml"),
                  state_dir=str(state), base_env={"PATH": "/bin"})
    assert runs[0]["extra"] == []


# ------------------------------------------------------------------------------ from a wheel

WHEEL_PREFIX = "calico-wheeltest"
WHEEL_SUBNET4 = "172.31.249.0/24"
WHEEL_SUBNET6 = "fd7a:ca1:1af::/64"


@pytest.mark.slow
@pytest.mark.lab
def test_lab_up_from_a_wheel_install_outside_the_checkout(tmp_path, dockerd: None) -> None:
    """`pip install` of the wheel, then `calicoctl lab up --skip-deploy` from elsewhere: a
    one-node lab of its own (calico-wheeltest-1 on 172.31.249.0/24) beside any other."""
    installed = wheel_install.build_and_install(tmp_path / "wheel")
    state_dir = tmp_path / "state"
    env = wheel_install.outside_env(
        CALICO_LAB_PREFIX=WHEEL_PREFIX, CALICO_LAB_SUBNET4=WHEEL_SUBNET4,
        CALICO_LAB_SUBNET6=WHEEL_SUBNET6, CALICO_LAB_STATE_DIR=str(state_dir))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    calicoctl = str(installed.bin / "calicoctl")
    node = f"{WHEEL_PREFIX}-1"

    def calicoctl_lab(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([calicoctl, "lab", *args], cwd=elsewhere, env=env,
                              capture_output=True, text=True, timeout=1800)

    try:
        up = calicoctl_lab("up", "--skip-deploy", "--nodes", "1")
        assert up.returncode == 0, up.stdout[-4000:] + up.stderr[-4000:]
        assert "[8/8] Ansible inventory" in up.stdout, up.stdout
        info = json.loads(docker("inspect", node).stdout)[0]
        assert info["State"]["Running"]
        assert info["NetworkSettings"]["Networks"][f"{WHEEL_PREFIX}-fabric"]["IPAddress"] \
            == "172.31.249.11"
        assert docker("exec", node, "systemctl", "is-system-running",
                      check=False).stdout.strip() in ("running", "degraded")
        state = json.loads((state_dir / "lab.json").read_text())
        assert [n["name"] for n in state["nodes"]] == [node]
        assert (state_dir / "inventory.yml").is_file()
    finally:
        down = calicoctl_lab("down")
        if down.returncode != 0:  # leave nothing behind whatever happened
            docker("rm", "-f", "-v", node, check=False)
            docker("network", "rm", f"{WHEEL_PREFIX}-fabric", check=False)
    assert down.returncode == 0, down.stdout + down.stderr
    assert docker("inspect", node, check=False).returncode != 0
    assert docker("network", "inspect", f"{WHEEL_PREFIX}-fabric", check=False).returncode != 0
    assert not state_dir.exists()
