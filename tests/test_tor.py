"""The top-of-rack router role (calico.docker.tor), deployed by site.yml, with real BIRD 2.

Topology (network namespaces, ``tests.netns``): two Calico hosts, host-a and host-b, each
running the real agent and BIRD (``tests.test_bgp.Fabric``, one SQLite datastore), joined
by the lab's fabric bridge to the ToR namespace (198.18.0.254, 2001:db8:ff::fe); behind the
ToR, on a veth of its own, an outside network (203.0.113.0/24, 2001:db8:77::/64) with one
host in it, whose way to the pools is the ToR. The Calico hosts' IPv6 way out is only what
the ToR advertises (their IPv4 default route stays on the ToR, a rack's gateway: Calico's
proxy ARP for 169.254.1.1 needs a route to it). Nothing on the way between a container and
the outside translates addresses but a nat_outgoing pool's masquerade on its host.

The ToR's BIRD configuration comes from the role, run by ``ansible-playbook site.yml --tags
tor`` with an inventory shaped like a real site's (calico_nodes with their BGP addresses,
calico_policy_pools, calico_policy_bgp, the tor group with its variables): the module runs inside
the ToR's namespace (the wrapper interpreter of tests/playbooks/harness.py), BIRD's files are in
tmp_path, and the test starts BIRD on the rendered file itself. The Calico hosts have the
ToR as a global peer with accept_nets, as inventory/example documents.

Checked: the ToR learns exactly the pools' blocks and a borrowed address (no container's
/32 inside its own host's block), IPv4 and IPv6, each routed to the host that holds it (a
host passes the others' routes on with their own next hop); the hosts learn the outside
networks from it; a container of a pool without NAT reaches the outside with its own
address (IPv4 and IPv6, the borrowed one too), one of a nat_outgoing pool with its host's;
the outside reaches a container only once a profile rule allows its network. And a bad
inventory value fails the role with one message naming the variable, before anything is written; and
site.yml runs the Calico plays on calico_nodes only, the ToR's on tor only.

Racks (Calico's "AS per rack", node-to-node mesh off): two ToRs rendered by the role in one
run, each serving its rack's hosts (calico_tor_nodes) as iBGP route reflector clients in the
rack's AS and peering with the other ToR over a link of their own (calico_tor_peers with local).
A rack's hosts learn each other's blocks with the holder as next hop (reflected), the other
rack's via their ToR, which has them via the other ToR; containers reach each other across
racks, and a packet to the other rack crosses both ToRs.
"""

from __future__ import annotations

import grp
import ipaddress
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

import calico_lib
from calico_lib import BGPPeer, IPPool, Node, Rule
from tests import netns
from tests.netns import OUTSIDE4, OUTSIDE6, Host, Lab
from tests.playbooks.harness import (
    REPO,
    SITE,
    ansible_command,
    ansible_env,
    netns_host_vars,
    netns_python,
    playbook,
    write_inventory,
)
from tests.test_bgp import ESTABLISHED_TIMEOUT, ROUTE_TIMEOUT, Fabric, wait_for

POOL4, POOL6 = "10.65.0.0/16", "fd00:65::/64"  # no NAT: the outside sees the containers
NAT_POOL4 = "10.66.0.0/16"  # nat_outgoing: the outside sees the host
OUT4, OUT6 = "203.0.113.0/24", "2001:db8:77::/64"  # the outside network, behind the ToR
TOR_OUT4, TOR_OUT6 = "203.0.113.1", "2001:db8:77::1"
EXT4, EXT6 = "203.0.113.10", "2001:db8:77::10"  # a host out there
TOR_AS, NODE_AS = 65000, 64512
PASSWORD = "tor-md5-s3cret"
PORT = 8080

pytestmark = pytest.mark.ansible


def tor_vars(python: Path, work: Path, **extra: object) -> dict[str, object]:
    """The ToR's inventory variables: the role's defaults but packages, service and sysctl
    file, which the namespace host cannot have; BIRD's files in ``work``."""
    return {
        "ansible_connection": "local",
        "ansible_python_interpreter": str(python),
        "ansible_become": False,
        "calico_tor_bgp_ipv4": OUTSIDE4,
        "calico_tor_install_packages": False,
        "calico_tor_manage_service": False,
        "calico_tor_sysctl_file": str(work / "sysctl.conf"),
        "calico_tor_bird_config": str(work / "bird.conf"),
        "calico_tor_bird_socket": str(work / "bird.ctl"),
        **extra,
    }


def kernel_routes(lab: Lab, ns: str, *selector: str) -> dict[str, dict[str, object]]:
    """The main table's routes in ``ns`` (IPv4 and IPv6) matching ``selector``, by prefix."""
    out = {}
    for family in ("-4", "-6"):
        for route in json.loads(lab.ip(ns, "-j", family, "route", "show", *selector) or "[]"):
            dst = route["dst"]
            out[dst if "/" in dst or dst == "default" else
                f"{dst}/{32 if family == '-4' else 128}"] = route
    return out


@pytest.mark.netns
def test_tor_learns_blocks_and_routes_the_outside(lab: Lab, tmp_path: Path) -> None:
    netns.require("bird", "birdc")
    url = "sqlite:///" + str((tmp_path / "calico.db").resolve())
    with calico_lib.connect(url) as client:
        client.add_pool(IPPool(POOL4, block_size=26))
        client.add_pool(IPPool(POOL6, block_size=122))
        client.add_pool(IPPool(NAT_POOL4, block_size=26, nat_outgoing=True))
        client.add_profile("web")
        # the ToR as a global peer of every host, as inventory/example has it
        for address, outside in ((OUTSIDE4, OUT4), (OUTSIDE6, OUT6)):
            client.add_bgp_peer(BGPPeer(address, TOR_AS, password=PASSWORD,
                                        accept_nets=[outside]))
        fabric = Fabric(lab, client, url)
        a, b = fabric.host("host-a"), fabric.host("host-b")
        ctr_a = fabric.workload(a, "ctr-a", ["10.65.1.10"], ["fd00:65::1:10"])
        ctr_b = fabric.workload(b, "ctr-b", ["10.65.2.10"], ["fd00:65::2:10"])
        ctr_nat = fabric.workload(a, "ctr-nat", ["10.66.1.10"], [])
        # host-b borrows an address of each version from host-a's blocks
        borrowed = fabric.workload(b, "ctr-borrowed", ["10.65.1.20"], ["fd00:65::1:20"])
        tor = lab.outside
        assert tor is not None
        ext = outside_network(lab, tor)
        for host in (a, b):
            # IPv6's way out is what the ToR advertises, nothing else. (IPv4 keeps the
            # default route via the ToR, a rack's gateway: without a route to 169.254.1.1 a
            # host answers no proxy ARP for it, as with Calico.)
            lab.ip(host.ns, "-6", "route", "del", "default")
            fabric.agent(host)
            fabric.start(host)
        # the ToR has no way back to the pools yet
        assert not lab.ping(ctr_a.ns, EXT4, count=1, wait=0.5)

        work = tmp_path / "tor"
        work.mkdir()
        nodes = {h.name: netns_host_vars(h.name, h.ns, tmp_path, url)
                 | {"calico_node_bgp_ipv4": h.ipv4, "calico_node_bgp_ipv6": h.ipv6} for h in (a, b)}
        inventory = write_inventory(
            tmp_path / "inventory.yml", nodes,
            group_vars={"calico_policy_pools": [{"cidr": POOL4}, {"cidr": POOL6},
                                         {"cidr": NAT_POOL4, "nat_outgoing": True}],
                        "calico_policy_bgp": {"as_number": NODE_AS}},
            groups={"tor": {"tor-1": tor_vars(
                netns_python(tor, tmp_path / "python-tor"), work, calico_tor_bgp_ipv6=OUTSIDE6,
                calico_tor_advertise=[OUT4, OUT6], calico_tor_password=PASSWORD)}})
        first = playbook(SITE, inventory, "--tags", "tor", workdir=tmp_path).check()
        assert first.recap["tor-1"]["changed"] == 2, first.output  # the sysctls, the config
        assert PASSWORD not in first.output
        again = playbook(SITE, inventory, "--tags", "tor", workdir=tmp_path).check()
        assert again.changed() == 0, again.output
        conf = work / "bird.conf"
        st = conf.stat()
        assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (0, grp.getgrnam("bird").gr_gid,
                                                               0o640)
        assert lab.sysctl(tor, "net.ipv4.ip_forward") == "1"
        assert lab.sysctl(tor, "net.ipv6.conf.all.forwarding") == "1"
        text = conf.read_text()
        for name in ("node_198_18_0_2", "node_198_18_0_3", "node_2001_db8_ff__2",
                     "node_2001_db8_ff__3"):
            assert f"protocol bgp {name} {{" in text, text
        lab.start_bird(tor, conf, work / "bird.ctl", work / "bird.pid")

        def tor_status() -> str:
            return fabric.birdc(work / "bird.ctl", "show", "protocols")

        fabric.wait_established(a, b)
        wait_for("the ToR's four sessions", lambda: tor_status().count("Established") == 4,
                 ROUTE_TIMEOUT, tor_status)

        # The ToR's kernel: the pools' blocks, and the borrowed addresses (more specific
        # than host-a's block, via host-b), from BGP; never a container's address inside
        # its own host's block.
        learned = {"10.65.1.0/26": a.ipv4, "10.65.2.0/26": b.ipv4, "10.66.1.0/26": a.ipv4,
                   "10.65.1.20/32": b.ipv4, "fd00:65::1:0/122": a.ipv6,
                   "fd00:65::2:0/122": b.ipv6, "fd00:65::1:20/128": b.ipv6}

        def tor_routes() -> dict[str, object] | None:
            routes = kernel_routes(lab, tor, "proto", "bird")
            return routes if set(routes) == set(learned) else None

        routes = wait_for("the ToR's routes from BGP", tor_routes, ROUTE_TIMEOUT,
                          lambda: fabric.birdc(work / "bird.ctl", "show", "route", "all"))
        for prefix, via in learned.items():
            assert routes[prefix]["gateway"] == via, (prefix, routes[prefix])

        # The hosts: the outside networks from the ToR (accept_nets), and nothing else
        for host in (a, b):
            def outside_routes(host: Host = host) -> dict[str, object] | None:
                routes = kernel_routes(lab, host.ns, "proto", "bird")
                return routes if {OUT4, OUT6} <= set(routes) else None

            routes = wait_for(f"{host.name}'s routes to the outside", outside_routes,
                              ROUTE_TIMEOUT, lambda host=host: fabric.diagnostics(host))
            assert routes[OUT4]["gateway"] == OUTSIDE4
            pools = [ipaddress.ip_network(p) for p in (POOL4, POOL6, NAT_POOL4)]
            assert {p for p in routes if not any(
                ipaddress.ip_network(p).version == pool.version
                and ipaddress.ip_network(p).subnet_of(pool) for pool in pools)} == {OUT4, OUT6}

        # Out: a container's own address (no NAT on the way), or its host's (nat_outgoing)
        with lab.listen(ext, EXT4, PORT), lab.listen(ext, EXT6, PORT):
            seen = {(ctr.name, addr): lab.connect(ctr.ns, addr, PORT, timeout=2.0)
                    for ctr, addr in ((ctr_a, EXT4), (ctr_a, EXT6), (ctr_b, EXT4),
                                      (ctr_b, EXT6), (borrowed, EXT4), (borrowed, EXT6),
                                      (ctr_nat, EXT4))}
        assert seen == {("ctr-a", EXT4): "10.65.1.10", ("ctr-a", EXT6): "fd00:65::1:10",
                        ("ctr-b", EXT4): "10.65.2.10", ("ctr-b", EXT6): "fd00:65::2:10",
                        ("ctr-borrowed", EXT4): "10.65.1.20",
                        ("ctr-borrowed", EXT6): "fd00:65::1:20",
                        ("ctr-nat", EXT4): a.ipv4}, seen

        # In: dropped by the containers' profile until a rule allows the outside network
        targets = [(ctr, addr) for ctr in (ctr_a, ctr_b, borrowed) for addr in ctr.addresses]
        for ctr, addr in targets:
            assert lab.tcp_peer(ext, ctr.ns, addr, PORT) is None, (ctr.name, addr)
        client.add_rule("web", "inbound", Rule(action="allow", src_net=[OUT4]))
        client.add_rule("web", "inbound", Rule(action="allow", src_net=[OUT6]))
        for host in (a, b):
            fabric.agent(host)
        for ctr, addr in targets:
            expected = EXT6 if ":" in addr else EXT4
            assert lab.tcp_peer(ext, ctr.ns, addr, PORT, timeout=2.0) == expected, \
                (ctr.name, addr, fabric.diagnostics(ctr.host))


def outside_network(lab: Lab, tor: str) -> str:
    """A namespace behind the ToR (on a veth of its own), routed to everything through it."""
    ext = lab.namespace("ext")
    lab.ip(tor, "link", "add", "ext0", "type", "veth", "peer", "name", "eth0", "netns", ext)
    for ns, dev, v4, v6 in ((tor, "ext0", TOR_OUT4, TOR_OUT6), (ext, "eth0", EXT4, EXT6)):
        lab.ip(ns, "addr", "add", f"{v4}/24", "dev", dev)
        lab.ip(ns, "addr", "add", f"{v6}/64", "dev", dev, "nodad")
        lab.ip(ns, "link", "set", dev, "up")
    lab.ip(ext, "route", "add", "default", "via", TOR_OUT4)
    lab.ip(ext, "-6", "route", "add", "default", "via", TOR_OUT6)
    return ext


# ------------------------------------------------------------------ racks: an AS per rack

#: the racks: AS number, hosts; rack N on 198.18.N.0/24 and 2001:db8:N::/64, its ToR .254/::fe
RACKS = {1: (65001, ("host-a", "host-b")), 2: (65002, ("host-c",))}
#: the ToRs' own link (the "spine"): tor-N has .N and ::N
SPINE4, SPINE6 = "198.18.255.{}", "2001:db8:ffff::{}"


def rack_subnets(rack: int) -> tuple[str, str]:
    return f"198.18.{rack}.0/24", f"2001:db8:{rack}::/64"


def rack_tor(rack: int) -> tuple[str, str]:
    """A rack's ToR's addresses facing its hosts."""
    return f"198.18.{rack}.254", f"2001:db8:{rack}::fe"


def build_racks(lab: Lab) -> tuple[dict[int, str], dict[str, Host]]:
    """The racks' namespaces: each ToR with a bridge for its hosts, the two ToRs joined by
    a veth of their own. The underlay a fabric has before Calico: each ToR routes the other
    rack's subnet via the other ToR, each host the other rack's subnet via its ToR (and its
    IPv4 default route: without a route to 169.254.1.1 no proxy ARP for the containers)."""
    tors: dict[int, str] = {}
    hosts: dict[str, Host] = {}
    for rack, (_, names) in RACKS.items():
        tor = tors[rack] = lab.namespace(f"tor{rack}")
        tor4, tor6 = rack_tor(rack)
        lab.ip(tor, "link", "add", "br0", "type", "bridge")
        lab.ip(tor, "addr", "add", f"{tor4}/24", "dev", "br0")
        lab.ip(tor, "addr", "add", f"{tor6}/64", "dev", "br0", "nodad")
        lab.ip(tor, "link", "set", "br0", "up")
        for n, name in enumerate(names, start=2):
            ns = lab.namespace(name)
            host = hosts[name] = Host(name=name, ns=ns, index=len(hosts) + 1,
                                      ipv4=f"198.18.{rack}.{n}", ipv6=f"2001:db8:{rack}::{n:x}")
            lab.ip(tor, "link", "add", f"port{n}", "type", "veth", "peer", "name", "eth0",
                   "netns", ns)
            lab.ip(tor, "link", "set", f"port{n}", "master", "br0", "up")
            lab.ip(ns, "addr", "add", f"{host.ipv4}/24", "dev", "eth0")
            lab.ip(ns, "addr", "add", f"{host.ipv6}/64", "dev", "eth0", "nodad")
            lab.ip(ns, "link", "set", "eth0", "up")
            lab.ip(ns, "route", "add", "default", "via", tor4)
            other4, other6 = rack_subnets(3 - rack)
            lab.ip(ns, "route", "add", other4, "via", tor4)
            lab.ip(ns, "-6", "route", "add", other6, "via", tor6)
            lab.hosts.append(host)
    lab.ip(tors[1], "link", "add", "spine", "type", "veth", "peer", "name", "spine", "netns",
           tors[2])
    for rack, tor in tors.items():
        lab.ip(tor, "addr", "add", SPINE4.format(rack) + "/24", "dev", "spine")
        lab.ip(tor, "addr", "add", SPINE6.format(rack) + "/64", "dev", "spine", "nodad")
        lab.ip(tor, "link", "set", "spine", "up")
        other = 3 - rack
        other4, other6 = rack_subnets(other)
        lab.ip(tor, "route", "add", other4, "via", SPINE4.format(other))
        lab.ip(tor, "-6", "route", "add", other6, "via", SPINE6.format(other))
    return tors, hosts


@pytest.mark.netns
def test_racks_each_in_its_own_as_with_the_tors_peering(lab: Lab, tmp_path: Path) -> None:
    netns.require("bird", "birdc")
    url = "sqlite:///" + str((tmp_path / "calico.db").resolve())
    tors, hosts = build_racks(lab)
    a, b, c = hosts["host-a"], hosts["host-b"], hosts["host-c"]
    rack_of = {name: rack for rack, (_, names) in RACKS.items() for name in names}
    with calico_lib.connect(url) as client:
        client.add_pool(IPPool(POOL4, block_size=26))
        client.add_pool(IPPool(POOL6, block_size=122))
        client.add_profile("web")
        client.set_bgp_config(node_to_node_mesh=False)
        for host in (a, b, c):
            rack = rack_of[host.name]
            client.add_node(Node(host.name, host.ipv4, host.ipv6, as_number=RACKS[rack][0]))
            # each host peers with its rack's ToR only (a per-node BGP peer), in its AS
            for address in rack_tor(rack):
                client.add_bgp_peer(BGPPeer(address, RACKS[rack][0], node=host.name))
        fabric = Fabric(lab, client, url)
        ctr_a = fabric.workload(a, "ctr-a", ["10.65.1.10"], ["fd00:65::1:10"])
        ctr_b = fabric.workload(b, "ctr-b", ["10.65.2.10"], ["fd00:65::2:10"])
        ctr_c = fabric.workload(c, "ctr-c", ["10.65.3.10"], ["fd00:65::3:10"])
        blocks = {"host-a": ("10.65.1.0/26", "fd00:65::1:0/122"),
                  "host-b": ("10.65.2.0/26", "fd00:65::2:0/122"),
                  "host-c": ("10.65.3.0/26", "fd00:65::3:0/122")}
        for host in (a, b, c):
            fabric.agent(host)
            fabric.start(host)

        # Both ToRs' BIRD from the role, in one run, as a site with two racks has it
        nodes = {h.name: netns_host_vars(h.name, h.ns, tmp_path, url)
                 | {"calico_node_bgp_ipv4": h.ipv4, "calico_node_bgp_ipv6": h.ipv6,
                    "calico_node_as_number": RACKS[rack_of[h.name]][0]} for h in (a, b, c)}
        work = {rack: tmp_path / f"tor-{rack}" for rack in RACKS}
        tor_hosts = {}
        for rack, (as_number, names) in RACKS.items():
            work[rack].mkdir()
            other = 3 - rack
            tor4, tor6 = rack_tor(rack)
            tor_hosts[f"tor-{rack}"] = tor_vars(
                netns_python(tors[rack], tmp_path / f"python-tor-{rack}"), work[rack],
                calico_tor_bgp_ipv4=tor4, calico_tor_bgp_ipv6=tor6, calico_tor_as_number=as_number,
                calico_tor_nodes=list(names),
                calico_tor_peers=[{"address": SPINE4.format(other), "as_number": RACKS[other][0],
                            "local": SPINE4.format(rack)},
                           {"address": SPINE6.format(other), "as_number": RACKS[other][0],
                            "local": SPINE6.format(rack)}])
        inventory = write_inventory(
            tmp_path / "inventory.yml", nodes,
            group_vars={"calico_policy_pools": [{"cidr": POOL4}, {"cidr": POOL6}],
                        "calico_policy_bgp": {"as_number": NODE_AS, "node_to_node_mesh": False}},
            groups={"tor": tor_hosts})
        playbook(SITE, inventory, "--tags", "tor", workdir=tmp_path).check()
        conf = {rack: (work[rack] / "bird.conf") for rack in RACKS}
        text = conf[1].read_text()
        assert text.count("rr client;") == 4 and text.count("next hop self ebgp;") == 4, text
        for name in ("peer_198_18_255_2", "peer_2001_db8_ffff__2"):
            assert f"protocol bgp {name} {{" in text, text
        assert "local 198.18.255.1 as 65001;" in text and "node_198_18_2_2" not in text, text
        for rack in RACKS:
            assert lab.sysctl(tors[rack], "net.ipv4.ip_forward") == "1"
            lab.start_bird(tors[rack], conf[rack], work[rack] / "bird.ctl",
                           work[rack] / "bird.pid")

        def tor_status(rack: int) -> str:
            return fabric.birdc(work[rack] / "bird.ctl", "show", "protocols")

        # tor-1: 4 node sessions and 2 with tor-2; tor-2: 2 and 2
        for rack, sessions in ((1, 6), (2, 4)):
            wait_for(f"tor-{rack}'s {sessions} sessions",
                     lambda rack=rack, n=sessions: tor_status(rack).count("Established") == n,
                     ESTABLISHED_TIMEOUT, lambda rack=rack: tor_status(rack))
        fabric.wait_established(a, b, c)

        # A rack's hosts: each other's blocks reflected by their ToR with the holder as next
        # hop; the other rack's via their ToR (IPv6: its global or its link-local address,
        # both of which a directly connected BGP speaker sends)
        def via_tor(rack: int) -> tuple[set[str], set[str]]:
            tor4, tor6 = rack_tor(rack)
            return {tor4}, {tor6, link_local(lab, tors[rack], "br0")}

        for host, other in ((a, b), (b, a)):
            for block, via in zip(blocks[other.name], ({other.ipv4}, {other.ipv6}),
                                  strict=True):
                wait_route_via(fabric, host, block, via)
            for block, via in zip(blocks["host-c"], via_tor(1), strict=True):
                wait_route_via(fabric, host, block, via)
        detail = fabric.birdc(fabric.sock(a), "show", "route", blocks["host-b"][0], "all")
        assert "BGP.cluster_list: 198.18.1.254" in detail, detail  # reflected by tor-1
        for other in (a, b):
            for block, via in zip(blocks[other.name], via_tor(2), strict=True):
                wait_route_via(fabric, c, block, via)

        # The ToRs' kernels: their rack's blocks via the hosts, the other rack's via the
        # other ToR; nothing else from BGP
        for rack, (_, names) in RACKS.items():
            other = 3 - rack
            learned = {}
            for name, (block4, block6) in blocks.items():
                if name in names:
                    learned |= {block4: hosts[name].ipv4, block6: hosts[name].ipv6}
                else:
                    learned |= {block4: SPINE4.format(other), block6: SPINE6.format(other)}

            def tor_routes(rack: int = rack, learned: dict[str, str] = learned
                           ) -> dict[str, dict[str, object]] | None:
                routes = kernel_routes(lab, tors[rack], "proto", "bird")
                return routes if set(routes) == set(learned) else None

            routes = wait_for(f"tor-{rack}'s routes from BGP", tor_routes, ROUTE_TIMEOUT,
                              lambda rack=rack: fabric.birdc(work[rack] / "bird.ctl", "show",
                                                             "route", "all"))
            for prefix, via in learned.items():
                assert routes[prefix]["gateway"] == via, (rack, prefix, routes[prefix])

    # Packets, both ways, each with its own address (nothing translates on the way), the
    # profile allowing its own members
    pairs = ((ctr_a, ctr_b), (ctr_b, ctr_a), (ctr_a, ctr_c), (ctr_c, ctr_a), (ctr_b, ctr_c),
             (ctr_c, ctr_b))
    for src, dst in pairs:
        for index, addr in enumerate(dst.addresses):
            seen = lab.tcp_peer(src.ns, dst.ns, addr, PORT, timeout=2.0)
            assert seen == src.addresses[index], (src.name, addr, seen,
                                                  fabric.diagnostics(src.host))
    # ... and to the other rack across both ToRs: host-a, tor-1, tor-2 and host-c forward
    # it (in the rack: host-a and host-b only)
    for src, dst, routers in ((ctr_a, ctr_c, 4), (ctr_c, ctr_a, 4), (ctr_a, ctr_b, 2)):
        for addr in dst.addresses:
            assert hops(lab, src.ns, addr, routers + 1), (src.name, addr)
            assert not hops(lab, src.ns, addr, routers), (src.name, addr)


def link_local(lab: Lab, ns: str, dev: str) -> str:
    """The IPv6 link-local address of ``dev`` in ``ns``."""
    (link,) = json.loads(lab.ip(ns, "-j", "-6", "addr", "show", "dev", dev))
    return next(a["local"] for a in link["addr_info"] if a.get("scope") == "link")


def wait_route_via(fabric: Fabric, host: Host, prefix: str, vias: set[str]) -> None:
    """Wait for ``prefix`` installed by BIRD in ``host``'s kernel via one of ``vias``."""
    def probe() -> bool:
        route = fabric.route(host, prefix)
        return bool(route and route.get("gateway") in vias and route.get("protocol") == "bird")

    wait_for(f"{prefix} via {' or '.join(sorted(vias))} (proto bird) on {host.name}", probe,
             ROUTE_TIMEOUT, lambda: fabric.diagnostics(host))


def hops(lab: Lab, ns: str, addr: str, ttl: int) -> bool:
    """Whether an echo request with this TTL (hop limit) is answered: it is dropped at the
    ttl-th router on the way."""
    argv = ["ping", "-n", "-q", "-c", "1", "-W", "1", "-t", str(ttl), addr]
    if ":" in addr:
        argv.insert(1, "-6")
    return lab.exec(ns, *argv, timeout=10, check=False).returncode == 0


# ------------------------------------------------------------------ bad inventory values


@pytest.mark.parametrize(("values", "message"), [
    ({"calico_tor_advertise": ["not-a-cidr"]},
     'calico_tor_advertise: "not-a-cidr" is not a network in CIDR notation'),
    ({"calico_tor_bgp_ipv4": "198.18.0.254\nprotocol kernel { }"},
     'calico_tor_bgp_ipv4: "198.18.0.254\\nprotocol kernel { }" is not an IPv4 address'),
    ({"calico_tor_accept": ["10.65.0.1/16"]},
     'calico_tor_accept: "10.65.0.1/16" is not a network in CIDR notation'),
    ({"calico_tor_neighbors": [{"address": "198.18.0.2", "as_number": 64512},
                        {"address": "198.18.0.2", "as_number": 64513}]},
     "calico_tor_neighbors: 198.18.0.2 listed more than once"),
    ({"calico_tor_password": 'x"; protocol'},
     "calico_tor_password: use 1-80 printable characters without spaces, quotes or backslashes"),
    ({"calico_tor_nodes": ["host-x"]},
     'calico_tor_nodes: ["host-x"] is not a list of inventory hostnames in calico_nodes'),
    # (the role's argument spec catches a wrong type or key first: Ansible's message)
    ({"calico_tor_peers": {"address": "198.18.255.2", "as_number": 65002}},
     "argument 'calico_tor_peers' is of type dict and we were unable to convert to list"),
    ({"calico_tor_peers": [{"address": "spine-1", "as_number": 65002}]},
     "needs an address, an IPv4 or IPv6 address"),
    ({"calico_tor_peers": [{"address": "198.18.255.2", "as_number": 0}]},
     'calico_tor_peers: {"address": "198.18.255.2", "as_number": 0} needs an as_number'
     " (1-4294967295)"),
    ({"calico_tor_peers": [{"address": "198.18.255.2", "as_number": 65002,
                     "local": "2001:db8:ffff::1"}]},
     "has a local that is not an IPv4 address"),
    ({"calico_tor_peers": [{"address": "198.18.255.2", "as_number": 65002,
                     "password": 'x" }; protocol'}]},
     'calico_tor_peers: {"address": "198.18.255.2", "as_number": 65002} has a password that is'
     " not 1-80 printable characters"),
    ({"calico_tor_peers": [{"address": "198.18.255.2", "as_number": 65002, "pasword": "s3cret"}]},
     "calico_tor_peers.pasword. Supported parameters include: address, as_number, local, password"),
    ({"calico_tor_peers": [{"address": "2001:db8:ffff::2", "as_number": 65002}]},
     "is an IPv6 peer, which needs calico_tor_bgp_ipv6"),
    ({"calico_tor_neighbors": [{"address": "198.18.0.2", "as_number": 64512}],
      "calico_tor_peers": [{"address": "198.18.0.2", "as_number": 65002}]},
     "calico_tor_peers: 198.18.0.2 listed more than once (in calico_tor_neighbors and "
     "calico_tor_peers together)"),
    ({"calico_tor_peer_accept": ["10.65.0.1/16"]},
     'calico_tor_peer_accept: "10.65.0.1/16" is not a network in CIDR notation'),
])
def test_bad_inventory_value_fails_before_anything_is_written(
        tmp_path: Path, values: dict[str, object], message: str) -> None:
    conf = tmp_path / "bird.conf"
    conf.write_text("# the configuration BIRD runs\n")
    inventory = write_inventory(tmp_path / "inventory.yml", {}, groups={"tor": {
        "tor-1": tor_vars(Path(sys.executable), tmp_path, calico_tor_sysctls={}, **values)}})
    run = playbook(SITE, inventory, "--tags", "tor", workdir=tmp_path)
    assert run.returncode != 0 and run.recap["tor-1"]["failed"] == 1, run.output
    # each error: its [ERROR] line and what follows it up to its Origin
    errors = [error.split("\nOrigin:")[0].replace("\n", " ")
              for error in run.output.split("\n[ERROR]")[1:]]
    assert len(errors) == 1 and message in errors[0], run.output
    assert conf.read_text() == "# the configuration BIRD runs\n"
    # no password shown, nor a value under a misspelt key (it may be one)
    secrets = [values.get("calico_tor_password")] + [
        value for peer in values.get("calico_tor_peers", []) if isinstance(peer, dict)
        for key, value in peer.items() if key not in ("address", "as_number", "local")]
    for secret in filter(None, secrets):
        assert str(secret) not in run.output


# ------------------------------------------------------------------ site.yml's plays


def test_site_runs_the_calico_plays_on_calico_nodes_and_the_tor_play_on_tor(
        tmp_path: Path) -> None:
    """With the example inventory, the ToR gets its play only and the Calico hosts none of
    it; an inventory without a tor group has no host in that play."""
    def hosts_per_play(inventory: Path) -> dict[str, list[str]]:
        """``--list-hosts``: each play's hosts (sorted), by the play's tag."""
        proc = subprocess.run(
            [ansible_command("ansible-playbook"), "--list-hosts", str(SITE), "-i",
             str(inventory)], cwd=REPO, env=ansible_env(tmp_path), capture_output=True,
            text=True, timeout=120)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        plays: dict[str, list[str]] = {}
        for line in proc.stdout.splitlines():
            play = re.match(r"\s*play #\d+ .*TAGS: \[(\w+)\]", line)
            if play:
                hosts = plays[play.group(1)] = []
            elif line.startswith(" " * 6) and line.strip():
                hosts.append(line.strip())
        return {play: sorted(hosts) for play, hosts in plays.items()}

    example = hosts_per_play(REPO / "inventory" / "example")
    calico = ["host-1", "host-2", "host-3"]
    assert example == {"etcd": ["host-1"], "node": calico, "tor": ["tor-1"], "policy": calico,
                       "docker": calico, "dataplane": calico}, example
    bare = hosts_per_play(write_inventory(tmp_path / "inventory.yml", {"h1": {}}))
    assert bare == {"etcd": [], "node": ["h1"], "tor": [], "policy": ["h1"], "docker": ["h1"],
                    "dataplane": ["h1"]}, bare
