"""Golden-file tests of the BIRD 2 config renderer; every golden file must pass ``bird -p -c``.

Regenerate the golden files after an intended change with:
    UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/test_render_bird.py
and review the diff.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

import calico_lib
from calico_lib.model import BGPConfig, BGPPeer, Endpoint, IPPool, Node
from calico_lib.render.bird import protocol_name, render_bird, sessions
from calico_lib.snapshot import Snapshot, load_snapshot

GOLDEN = Path(__file__).parent / "golden"

POOLS = (IPPool("10.65.0.0/16"), IPPool("fd00:65::/64"))


def check_golden(name: str, text: str | None) -> str:
    assert text is not None, f"{name}: the renderer returned no config"
    path = GOLDEN / f"bird-{name}.conf"
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(text)
    assert path.exists(), f"{path} missing: run with UPDATE_GOLDEN=1 and review it"
    assert text == path.read_text()
    return text


def bird_parses(path: Path) -> None:
    """``bird -p -c``: BIRD itself accepts the file (parse only, nothing is started)."""
    if shutil.which("bird") is None:
        pytest.fail("bird is not installed (apt-get install bird2)", pytrace=False)
    proc = subprocess.run(["bird", "-p", "-c", str(path)], capture_output=True, text=True,
                          timeout=30)
    assert proc.returncode == 0, f"bird -p -c {path.name}: {proc.stderr.strip()}"


def protocols(text: str) -> dict[str, str]:
    """Protocol name -> its body, for the ``protocol bgp`` blocks of a config."""
    return {m.group(1): m.group(2) for m in
            re.finditer(r"^protocol bgp (\S+) \{\n(.*?)^\}", text, re.S | re.M)}


def endpoint(ep_id: str, host: str, v4: list[str], v6: list[str] | None = None,
             state: str = "active") -> Endpoint:
    return Endpoint(ep_id, host, "cali" + ep_id[:11], ipv4_nets=v4, ipv6_nets=v6 or [],
                    state=state)


# ----------------------------------------------------------------------------- snapshots

def mesh_snapshot() -> Snapshot:
    """Three nodes in the default mesh, v4 and v6; host-b sits in another AS."""
    return Snapshot(
        hostname="host-a",
        pools=POOLS,
        nodes={"host-a": Node("host-a", "10.100.0.1", "fd00:100::1"),
               "host-b": Node("host-b", "10.100.0.2", "fd00:100::2", as_number=64600),
               "host-c": Node("host-c", "10.100.0.3", "fd00:100::3")},
        blocks=("10.65.0.0/26", "fd00:65::/122"),
        endpoints=(endpoint("aaaaaaaaaaaa1", "host-a", ["10.65.0.1"], ["fd00:65::1"]),
                   endpoint("bbbbbbbbbbbb2", "host-b", ["10.65.0.65"])),
    )


def rr_snapshot(hostname: str) -> Snapshot:
    """Mesh off: one route reflector (cluster id 1.0.0.1) and two clients."""
    return Snapshot(
        hostname=hostname,
        pools=POOLS,
        bgp=BGPConfig(as_number=64512, node_to_node_mesh=False),
        nodes={"rr": Node("rr", "10.100.0.10", "fd00:100::10", rr_cluster_id="1.0.0.1"),
               "client-1": Node("client-1", "10.100.0.11", "fd00:100::11"),
               "client-2": Node("client-2", "10.100.0.12", "fd00:100::12")},
        blocks={"rr": (), "client-1": ("10.65.1.0/26",),
                "client-2": ("10.65.2.0/26",)}[hostname],
    )


def peers_snapshot(hostname: str = "host-a") -> Snapshot:
    """A global peer (ToR) with a password, and per-node peers of host-a and host-b."""
    return Snapshot(
        hostname=hostname,
        pools=POOLS,
        bgp=BGPConfig(as_number=64512),
        nodes={"host-a": Node("host-a", "10.100.0.1", "fd00:100::1"),
               "host-b": Node("host-b", "10.100.0.2")},
        peers=(BGPPeer("10.100.0.254", 65000, password="s3cr3t-md5",
                       accept_default_route=True, accept_nets=["198.51.100.0/24"]),
               BGPPeer("fd00:100::fe", 65000, accept_default_route=True),
               BGPPeer("192.0.2.7", 65001, node="host-a"),
               BGPPeer("192.0.2.8", 65002, node="host-b")),
        blocks=("10.65.3.0/26",),
    )


def borrowed_snapshot() -> Snapshot:
    """host-a borrowed addresses from blocks affine to other hosts: /32 and /128 exports."""
    return Snapshot(
        hostname="host-a",
        pools=POOLS,
        nodes={"host-a": Node("host-a", "10.100.0.1", "fd00:100::1"),
               "host-b": Node("host-b", "10.100.0.2", "fd00:100::2")},
        blocks=("10.65.0.0/26",),
        endpoints=(
            endpoint("aaaaaaaaaaaa1", "host-a", ["10.65.0.1"]),            # in its own block
            endpoint("cccccccccccc3", "host-a", ["10.65.0.70"], ["fd00:65::45"]),  # borrowed
            endpoint("dddddddddddd4", "host-a", ["10.65.0.71"], state="inactive"),
            endpoint("eeeeeeeeeeee5", "host-b", ["10.65.0.72"]),           # another host's
        ),
    )


def multihop_snapshot(hostname: str = "host-a", v6_subnets: bool = True) -> Snapshot:
    """Hosts on two subnets (10.100.0.0/24 and fd00:100::/64; 10.200.0.0/24 and
    fd00:200::/64): host-b shares host-a's, host-c and host-d (another AS) are behind a
    router; a global peer on each subnet, and host-a's own peer further away."""
    def node(name: str, v4: str, v6: str | None, as_number: int | None = None) -> Node:
        return Node(name, f"{v4}", v6, as_number=as_number,
                    ipv4_subnet=f"{v4.rsplit('.', 1)[0]}.0/24",
                    ipv6_subnet=f"{v6.rsplit(':', 1)[0]}:/64" if v6 and v6_subnets else None)
    return Snapshot(
        hostname=hostname,
        pools=POOLS,
        nodes={"host-a": node("host-a", "10.100.0.1", "fd00:100::1"),
               "host-b": node("host-b", "10.100.0.2", "fd00:100::2"),
               "host-c": node("host-c", "10.200.0.3", "fd00:200::3"),
               "host-d": node("host-d", "10.200.0.4", None, as_number=64600)},
        peers=(BGPPeer("10.100.0.254", 65000), BGPPeer("fd00:200::fe", 65000),
               BGPPeer("192.0.2.7", 65001, node="host-a", password="s3cr3t-md5")),
        blocks=("10.65.1.0/26", "fd00:65::1:0/122"),
    )


CASES = {
    "mesh": mesh_snapshot,
    "rr-reflector": lambda: rr_snapshot("rr"),
    "rr-client": lambda: rr_snapshot("client-1"),
    "peers": peers_snapshot,
    "borrowed": borrowed_snapshot,
    "multihop": multihop_snapshot,
    "multihop-v4-subnet-only": lambda: multihop_snapshot(v6_subnets=False),
}


# ----------------------------------------------------------------------------- golden files

@pytest.mark.parametrize("name", sorted(CASES))
def test_golden_and_bird_accepts_it(name: str, tmp_path: Path) -> None:
    text = check_golden(name, render_bird(CASES[name]()))
    path = tmp_path / f"bird-{name}.conf"
    path.write_text(text)
    bird_parses(path)


def test_every_golden_file_is_a_case() -> None:
    names = {p.name[len("bird-"):-len(".conf")] for p in GOLDEN.glob("bird-*.conf")}
    assert names == set(CASES)


def test_render_is_deterministic() -> None:
    for make in CASES.values():
        assert render_bird(make()) == render_bird(make())


# ----------------------------------------------------------------------------- semantics

def test_mesh_peers_every_other_node_with_its_as() -> None:
    text = render_bird(mesh_snapshot())
    assert text is not None
    assert "router id 10.100.0.1;" in text
    bgp = protocols(text)
    assert set(bgp) == {"Mesh_10_100_0_2", "Mesh_fd00_100__2", "Mesh_10_100_0_3",
                        "Mesh_fd00_100__3"}
    assert "neighbor 10.100.0.2 as 64600;" in bgp["Mesh_10_100_0_2"]
    assert "neighbor fd00:100::2 as 64600;" in bgp["Mesh_fd00_100__2"]
    assert "neighbor 10.100.0.3 as 64512;" in bgp["Mesh_10_100_0_3"]
    assert "local fd00:100::1 as 64512;" in bgp["Mesh_fd00_100__3"]
    assert "ipv6 {" in bgp["Mesh_fd00_100__3"] and "ipv4 {" not in bgp["Mesh_fd00_100__3"]
    # host-b renders with its own AS towards the others
    b = render_bird(replace(mesh_snapshot(), hostname="host-b"))
    assert b is not None
    assert "local 10.100.0.2 as 64600;" in protocols(b)["Mesh_10_100_0_1"]
    assert "neighbor 10.100.0.1 as 64512;" in protocols(b)["Mesh_10_100_0_1"]


def test_route_reflector_and_clients() -> None:
    reflector = render_bird(rr_snapshot("rr"))
    client = render_bird(rr_snapshot("client-1"))
    assert reflector is not None and client is not None
    rr = protocols(reflector)
    assert set(rr) == {"Mesh_10_100_0_11", "Mesh_fd00_100__11", "Mesh_10_100_0_12",
                       "Mesh_fd00_100__12"}
    for body in rr.values():
        assert "rr client;" in body and "rr cluster id 1.0.0.1;" in body
    # clients peer with the reflector only, and are no reflectors themselves
    assert set(protocols(client)) == {"Mesh_10_100_0_10", "Mesh_fd00_100__10"}
    assert "rr client" not in client and "rr cluster id" not in client


def test_reflectors_peer_with_each_other_as_non_clients() -> None:
    snap = rr_snapshot("rr")
    nodes = dict(snap.nodes, rr2=Node("rr2", "10.100.0.20", rr_cluster_id="1.0.0.1"))
    text = render_bird(replace(snap, nodes=nodes))
    assert text is not None
    body = protocols(text)["Mesh_10_100_0_20"]
    assert "rr client" not in body
    assert "rr client;" in protocols(text)["Mesh_10_100_0_11"]


def test_mesh_on_ignores_cluster_ids() -> None:
    snap = rr_snapshot("client-1")
    text = render_bird(replace(snap, bgp=BGPConfig()))
    assert text is not None
    assert set(protocols(text)) == {"Mesh_10_100_0_10", "Mesh_fd00_100__10",
                                    "Mesh_10_100_0_12", "Mesh_fd00_100__12"}
    assert "rr client" not in text


def test_global_and_node_peers() -> None:
    a = render_bird(peers_snapshot("host-a"))
    b = render_bird(peers_snapshot("host-b"))
    assert a is not None and b is not None
    pa, pb = protocols(a), protocols(b)
    assert {"Global_10_100_0_254", "Global_fd00_100__fe", "Node_192_0_2_7"} <= set(pa)
    assert "Node_192_0_2_8" not in pa
    assert 'password "s3cr3t-md5";' in pa["Global_10_100_0_254"]
    assert "password" not in pa["Global_fd00_100__fe"]
    assert "neighbor 192.0.2.7 as 65001;" in pa["Node_192_0_2_7"]
    # host-b: its own node peer only, and no IPv6 global peer (host-b has no IPv6 address)
    assert "Node_192_0_2_8" in pb and "Node_192_0_2_7" not in pb
    assert "Global_10_100_0_254" in pb and "Global_fd00_100__fe" not in pb
    # external (eBGP) peers get each route's own next hop where it is on their network
    # (BIRD's third-party next hop: another host's block is routed to that host, not
    # through this one); a peer in the nodes' AS gets this host as next hop
    for name, body in pa.items():
        if not name.startswith("Mesh_"):
            assert "next hop self;" not in body
    internal = render_bird(replace(peers_snapshot(), peers=(BGPPeer("10.100.0.253", 64512),)))
    assert internal is not None
    assert "next hop self;" in protocols(internal)["Global_10_100_0_253"]


def test_borrowed_addresses_are_exported_as_host_routes() -> None:
    text = render_bird(borrowed_snapshot())
    assert text is not None
    static4 = re.search(r"protocol static calico_routes4 \{(.*?)\}", text, re.S)
    static6 = re.search(r"protocol static calico_routes6 \{(.*?)\}", text, re.S)
    assert static4 and static6
    assert re.findall(r"route (\S+) blackhole;", static4.group(1)) == [
        "10.65.0.0/26", "10.65.0.70/32"]          # not .1 (in the block), .71 (inactive), .72
    assert re.findall(r"route (\S+) blackhole;", static6.group(1)) == ["fd00:65::45/128"]


def test_only_pool_addresses_are_exported() -> None:
    text = render_bird(mesh_snapshot())
    assert text is not None
    assert "if net ~ [ 10.65.0.0/16+ ] then accept;" in text
    assert "if net ~ [ fd00:65::/64+ ] then accept;" in text
    for body in protocols(text).values():
        assert re.search(r"export filter calico_export[46];", body)
    # no pool of a version: that filter rejects everything
    v4_only = render_bird(replace(mesh_snapshot(), pools=POOLS[:1]))
    assert v4_only is not None
    assert re.search(r"filter calico_export6 \{\n  reject;\n\}", v4_only)


def test_host_that_is_not_a_node_renders_none() -> None:
    snap = mesh_snapshot()
    assert render_bird(replace(snap, hostname="stranger")) is None
    # a node without an IPv4 address has no router id: no BIRD config either
    nodes = dict(snap.nodes, **{"host-a": Node("host-a", ipv6="fd00:100::1")})
    assert render_bird(replace(snap, nodes=nodes)) is None


def test_protocol_names_replace_dots_and_colons() -> None:
    assert protocol_name("Mesh", "10.100.0.2") == "Mesh_10_100_0_2"
    assert protocol_name("Global", "fd00:100::fe") == "Global_fd00_100__fe"
    assert protocol_name("Node", "2001:db8::1:2") == "Node_2001_db8__1_2"
    for s in sessions(peers_snapshot()) + sessions(mesh_snapshot()):
        assert re.fullmatch(r"(Mesh|Global|Node)_[0-9a-f_]+", s.name), s.name


def test_snapshot_from_datastore_gives_node_peers_to_their_node_only(tmp_path: Path) -> None:
    """The same peers written through the client and read by load_snapshot."""
    with calico_lib.connect(f"sqlite:///{tmp_path}/calico.db") as client:
        for pool in POOLS:
            client.add_pool(pool)
        client.add_node(Node("host-a", "10.100.0.1", "fd00:100::1"))
        client.add_node(Node("host-b", "10.100.0.2"))
        client.add_bgp_peer(BGPPeer("10.100.0.254", 65000, password="s3cr3t-md5"))
        client.add_bgp_peer(BGPPeer("fd00:100::fe", 65000))
        client.add_bgp_peer(BGPPeer("192.0.2.7", 65001, node="host-a"))
        client.add_bgp_peer(BGPPeer("192.0.2.8", 65002, node="host-b"))
        client.ipam.assign_ip("10.65.3.1", "ep1", "host-a")  # host-a claims 10.65.3.0/26
        snap = load_snapshot(client.store, "host-a")
        assert snap.blocks == ("10.65.3.0/26",)
        text = render_bird(snap)
        assert text is not None
        assert set(protocols(text)) == set(protocols(render_bird(peers_snapshot()) or ""))
        assert "Node_192_0_2_8" not in text
        assert "Node_192_0_2_8" in (render_bird(load_snapshot(client.store, "host-b")) or "")


# ----------------------------------------------------------------------------- other subnets


def kernel_protocol(text: str, version: int) -> str:
    match = re.search(rf"^protocol kernel kernel{version} \{{\n(.*?)^\}}", text, re.S | re.M)
    assert match, text
    return match.group(1)


def test_peers_off_the_subnet_are_multihop_from_this_hosts_address() -> None:
    text = render_bird(multihop_snapshot())
    assert text is not None
    bgp = protocols(text)
    multihop = {name for name, body in bgp.items() if "\n  multihop;" in body}
    # host-c, host-d (v4 only), the IPv6 global peer and host-a's own peer are behind the
    # router; host-b and the IPv4 global peer share host-a's subnet
    assert multihop == {"Mesh_10_200_0_3", "Mesh_fd00_200__3", "Mesh_10_200_0_4",
                        "Global_fd00_200__fe", "Node_192_0_2_7"}
    for name, body in bgp.items():
        local = "fd00:100::1" if "_fd00_" in name else "10.100.0.1"
        assert f"local {local} as 64512;" in body  # the source, multihop or not
        assert (", multihop\";" in body) == (name in multihop)
        if name.startswith("Mesh_"):  # GTSM stays on both ends of every mesh session
            assert "ttl security on;" in body
        else:
            assert "ttl security" not in body
    assert "neighbor 10.200.0.4 as 64600;" in bgp["Mesh_10_200_0_4"]
    # directly connected sessions render exactly as for a node without a subnet
    old = replace(multihop_snapshot(), nodes={n: replace(node, ipv4_subnet=None,
                                                         ipv6_subnet=None)
                                              for n, node in multihop_snapshot().nodes.items()})
    before = protocols(render_bird(old) or "")
    for name in set(bgp) - multihop:
        assert bgp[name] == before[name], name
    for name in multihop:
        assert "multihop" not in before[name]


def test_kernel_routes_are_learned_only_where_a_next_hop_may_be_off_the_subnet() -> None:
    text = render_bird(multihop_snapshot())
    assert text is not None
    for version, pool in ((4, "10.65.0.0/16+"), (6, "fd00:65::/64+")):
        body = kernel_protocol(text, version)
        assert "\n  learn;\n" in body and "import none;" not in body
        # never a pool's address or a container's route; exports unchanged (BGP's only)
        assert f"if net ~ [ {pool} ] then reject;" in body
        assert 'if ifname ~ "cali*" then reject;' in body
        assert "export filter { if source = RTS_BGP then accept; reject; };" in body
    # the BGP sessions still export the pools only
    for body in protocols(text).values():
        assert re.search(r"export filter calico_export[46];", body)
    # IPv6 subnet unknown: IPv6 renders as before, IPv4 learns
    v4_only = render_bird(multihop_snapshot(v6_subnets=False))
    assert v4_only is not None
    assert "learn;" in kernel_protocol(v4_only, 4)
    assert "import none;" in kernel_protocol(v4_only, 6)
    assert "learn" not in kernel_protocol(v4_only, 6)
    assert not any("multihop" in body for name, body in protocols(v4_only).items()
                   if "_fd00_" in name)
    # every peer on the subnet: nothing learned, nothing multihop
    snap = multihop_snapshot("host-b")
    nodes = {n: node for n, node in snap.nodes.items() if n in ("host-a", "host-b")}
    same = render_bird(replace(snap, nodes=nodes, peers=snap.peers[:1]))
    assert same is not None
    assert "multihop" not in same and "learn;" not in same
    assert same.count("import none;") == 2


def test_reflected_next_hops_off_the_subnet_are_learned_too() -> None:
    """A route reflector on this host's subnet passes on the blocks of clients behind a
    router with their own next hop: the client resolves it through the kernel's routes
    although its only session is direct."""
    snap = rr_snapshot("client-1")
    nodes = {"rr": replace(snap.nodes["rr"], ipv4_subnet="10.100.0.0/24"),
             "client-1": replace(snap.nodes["client-1"], ipv4_subnet="10.100.0.0/24"),
             "client-2": Node("client-2", "10.200.0.12", ipv4_subnet="10.200.0.0/24")}
    text = render_bird(replace(snap, nodes=nodes))
    assert text is not None
    assert set(protocols(text)) == {"Mesh_10_100_0_10", "Mesh_fd00_100__10"}
    assert "  multihop;" not in text
    assert "learn;" in kernel_protocol(text, 4) and "learn" not in kernel_protocol(text, 6)


def test_a_node_without_subnets_renders_as_before() -> None:
    """Records made before subnets existed: today's config, whatever the addresses."""
    snap = multihop_snapshot()
    nodes = {n: replace(node, ipv4_subnet=None, ipv6_subnet=None)
             for n, node in snap.nodes.items()}
    text = render_bird(replace(snap, nodes=nodes))
    assert text is not None
    assert "multihop" not in text and "learn;" not in text
    assert text.count("import none;") == 2
    # only this node's subnet counts: the others' are not its business
    mine = dict(snap.nodes, **{"host-a": nodes["host-a"]})
    assert render_bird(replace(snap, nodes=mine)) == text
