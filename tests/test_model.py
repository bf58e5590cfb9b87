"""Validation and serialisation of the data model (calico_lib/model.py)."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from calico_lib.errors import ValidationError
from calico_lib.model import (
    BGPConfig,
    BGPPeer,
    Endpoint,
    IPAMConfig,
    IPPool,
    Node,
    Profile,
    Rule,
)


def ep(**kwargs) -> Endpoint:
    return Endpoint(**{"id": "ep1", "host": "host1", "interface": "cali0ab12", **kwargs})


# --------------------------------------------------------------------------- normalisation


class TestIPPool:
    def test_host_bits_cleared_and_v4_default_block(self) -> None:
        pool = IPPool("10.1.2.3/16")
        assert pool.cidr == "10.1.0.0/16"
        assert pool.block_size == 26
        assert pool.nat_outgoing is False and pool.disabled is False
        assert pool.version == 4
        assert str(pool.network) == "10.1.0.0/16"

    def test_v6_default_block(self) -> None:
        pool = IPPool(" FD00:0:0:1::5/64 ")
        assert pool.cidr == "fd00:0:0:1::/64"
        assert pool.block_size == 122
        assert pool.version == 6

    def test_explicit_values_are_coerced(self) -> None:
        pool = IPPool("10.0.0.0/8", block_size="20", nat_outgoing="yes", disabled="false")
        assert (pool.block_size, pool.nat_outgoing, pool.disabled) == (20, True, False)
        assert IPPool("10.0.0.0/24", block_size=24).block_size == 24
        assert IPPool("10.0.0.0/24", block_size=32).block_size == 32
        assert IPPool("fd00::/116", block_size=128).block_size == 128

    def test_vxlan_mode_never_by_default_and_left_out_of_to_dict(self) -> None:
        pool = IPPool("10.1.0.0/16")
        assert pool.vxlan_mode == "never" and pool.encapsulates is False
        assert "vxlan_mode" not in pool.to_dict()
        assert "vxlan_mode" not in IPPool("10.1.0.0/16", vxlan_mode="never").to_dict()
        assert IPPool.from_dict(pool.to_dict()) == pool

    def test_vxlan_mode_cross_subnet_round_trips(self) -> None:
        pool = IPPool("10.1.0.0/16", vxlan_mode="cross-subnet")
        assert pool.encapsulates is True
        data = pool.to_dict()
        assert data["vxlan_mode"] == "cross-subnet"
        assert IPPool.from_dict(json.loads(json.dumps(data))) == pool
        assert IPPool("10.1.0.0/16", vxlan_mode="always").to_dict()["vxlan_mode"] == "always"

    @pytest.mark.parametrize("mode", ["sometimes", "Always", "cross_subnet", "", None, True])
    def test_bad_vxlan_mode_is_refused_naming_the_field(self, mode: object) -> None:
        with pytest.raises(ValidationError) as info:
            IPPool("10.1.0.0/16", vxlan_mode=mode)
        assert info.value.field == "vxlan_mode"
        assert str(info.value).startswith("vxlan_mode: ") and "\n" not in str(info.value)
        assert "cross-subnet" in info.value.problem

    @pytest.mark.parametrize("mode", ["always", "cross-subnet"])
    def test_vxlan_mode_is_for_ipv4_pools(self, mode: str) -> None:
        with pytest.raises(ValidationError) as info:
            IPPool.from_dict({"cidr": "fd00:1::/48", "vxlan_mode": mode})
        assert info.value.field == "vxlan_mode" and "IPv4" in info.value.problem
        assert IPPool("fd00:1::/48", vxlan_mode="never").vxlan_mode == "never"


class TestRule:
    def test_defaults(self) -> None:
        rule = Rule()
        assert rule.action == "allow"
        assert rule.protocol is None and rule.ip_version is None
        assert rule.src_net == [] and rule.dst_ports is None
        assert rule.versions() == (4, 6)

    def test_ports(self) -> None:
        assert Rule(protocol="tcp", dst_ports="80, 443").dst_ports == [80, 443]
        assert Rule(protocol="udp", src_ports="1000:2000").src_ports == ["1000:2000"]
        assert Rule(protocol="sctp", dst_ports=[" 22 ", 0, "65535", "5 : 7"]).dst_ports == [
            22, 0, 65535, "5:7"]
        assert Rule(protocol="tcp", not_dst_ports=8080).not_dst_ports == [8080]
        assert Rule(protocol="6", dst_ports="1:1").dst_ports == ["1:1"]

    def test_protocols(self) -> None:
        assert Rule(protocol="TCP").protocol == "tcp"
        assert Rule(protocol="6").protocol == 6
        assert Rule(protocol=17).protocol == 17
        assert Rule(not_protocol="UDP").not_protocol == "udp"

    def test_icmp_implies_ip_version(self) -> None:
        rule = Rule(protocol="icmp", icmp_type=8, icmp_code=0)
        assert (rule.ip_version, rule.icmp_type, rule.icmp_code) == (4, 8, 0)
        assert rule.versions() == (4,)
        assert Rule(protocol="ICMPv6").ip_version == 6
        assert Rule(protocol=58).ip_version == 6
        assert Rule(protocol="1", ip_version="4").ip_version == 4

    def test_nets_and_tags(self) -> None:
        rule = Rule(src_net="10.1.2.3/8, 192.168.0.1", dst_net=["fd00::1/64", "10.9.0.0/16"],
                    src_tag="net1", not_dst_tag="net_2.x-y", ip_version=None)
        assert rule.src_net == ["10.0.0.0/8", "192.168.0.1/32"]
        assert rule.dst_net == ["fd00::/64", "10.9.0.0/16"]
        assert rule.tags() == {"net1", "net_2.x-y"}
        assert Rule(ip_version=6, not_src_net=["fd00::/8"]).not_src_net == ["fd00::/8"]


class TestProfile:
    def test_tags_and_labels_normalised(self) -> None:
        profile = Profile("p1", tags="b, a, b", labels={"z": "1", "app.io/role": "web"},
                          inbound_rules=[{"action": "deny", "protocol": "TCP"}])
        assert profile.tags == ["a", "b"]
        assert list(profile.labels) == ["app.io/role", "z"]
        assert profile.inbound_rules == [Rule(action="deny", protocol="tcp")]
        assert profile.outbound_rules == []

    def test_with_default_rules(self) -> None:
        profile = Profile.with_default_rules("net1")
        assert profile.name == "net1"
        assert profile.tags == ["net1"]
        assert profile.inbound_rules == [Rule(action="allow", src_tag="net1")]
        assert profile.outbound_rules == [Rule(action="allow")]
        (outbound,) = profile.outbound_rules
        assert outbound.to_dict().keys() <= {"action"}  # allow everything: no match at all

    def test_with_defaults_gives_what_is_given_and_defaults_the_rest(self) -> None:
        """The one default-profile merge (calicoctl profile add, the profile module, a
        Docker network's profile)."""
        assert Profile.with_defaults("web") == Profile.with_default_rules("web")
        given = Profile.with_defaults("web", tags=["web", "x"], labels={"a": "b"},
                                      docker_network=True)
        assert (given.tags, given.labels, given.docker_network) == (["web", "x"],
                                                                    {"a": "b"}, True)
        assert given.inbound_rules == Profile.with_default_rules("web").inbound_rules
        ruled = Profile.with_defaults("web", rules={"inbound_rules": [{"action": "deny"}]})
        assert ruled.inbound_rules == [Rule(action="deny")] and ruled.outbound_rules == []
        assert Profile.with_defaults("web", rules={}).inbound_rules == []
        bare = Profile.with_defaults("web", default_rules=False)
        assert bare.tags == ["web"] and bare.inbound_rules == bare.outbound_rules == []
        with pytest.raises(ValidationError) as info:
            Profile.with_defaults("web", rules={"colour": "red"})
        assert info.value.field == "colour"
        with pytest.raises(ValidationError) as info:
            Profile.with_defaults("no spaces")
        assert info.value.field == "name"


class TestEndpoint:
    def test_mac_and_addresses(self) -> None:
        endpoint = ep(mac="EE-EE-EE-EE-EE-0A", ipv4_nets="10.0.0.2, 10.0.0.1/24, 10.0.0.2",
                      ipv6_nets=["FD00::1"], profiles="net1,net2")
        assert endpoint.mac == "ee:ee:ee:ee:ee:0a"
        assert endpoint.ipv4_nets == ["10.0.0.1/32", "10.0.0.2/32"]
        assert endpoint.ipv6_nets == ["fd00::1/128"]
        assert endpoint.profiles == ["net1", "net2"]
        assert endpoint.addresses == ["10.0.0.1", "10.0.0.2", "fd00::1"]
        assert endpoint.state == "active"

    def test_mac_forms(self) -> None:
        assert ep(mac="eeee.eeee.ee0a").mac == "ee:ee:ee:ee:ee:0a"
        assert ep(mac="EE:EE:EE:EE:EE:EE").mac == "ee:ee:ee:ee:ee:ee"
        assert ep().mac is None

    def test_addresses_sorted_numerically(self) -> None:
        assert ep(ipv4_nets=["10.0.0.10", "10.0.0.9"]).ipv4_nets == ["10.0.0.9/32",
                                                                    "10.0.0.10/32"]

    def test_interface_of_15_characters(self) -> None:
        assert ep(interface="cali" + "a" * 11, state="inactive").interface == "cali" + "a" * 11


class TestNodeAndBGP:
    def test_node(self) -> None:
        node = Node("node-1.example.com", ipv4="10.0.0.1/24", ipv6="FD00::1",
                    as_number="65000", rr_cluster_id="1")
        assert node.ipv4 == "10.0.0.1"
        assert node.ipv6 == "fd00::1"
        assert node.as_number == 65000
        assert node.rr_cluster_id == "0.0.0.1"
        assert Node("n", rr_cluster_id="224.0.0.1").rr_cluster_id == "224.0.0.1"
        assert Node("n", rr_cluster_id=256).rr_cluster_id == "0.0.1.0"
        assert Node("n", as_number=4294967295).as_number == 4294967295

    def test_node_subnets(self) -> None:
        node = Node("n", "10.0.0.1", "FD00::1", ipv4_subnet="10.0.0.77/24",
                    ipv6_subnet="FD00::1/64")
        # host bits cleared (Calico's ipv4Address: 10.0.0.1/24 form), IPv6 compressed
        assert (node.ipv4_subnet, node.ipv6_subnet) == ("10.0.0.0/24", "fd00::/64")
        assert str(node.subnet(4)) == "10.0.0.0/24" and str(node.subnet(6)) == "fd00::/64"
        assert node.address(4) == "10.0.0.1" and node.address(6) == "fd00::1"
        # a host alone on its subnet (a cloud /32): every peer is behind a router
        assert Node("n", "10.0.0.1", ipv4_subnet="10.0.0.1/32").ipv4_subnet == "10.0.0.1/32"
        # one version known, the other not
        assert Node("n", "10.0.0.1", "fd00::1", ipv4_subnet="10.0.0.0/8").subnet(6) is None
        # records without subnets (made before they existed) read and write as before
        old = {"name": "n", "ipv4": "10.0.0.1", "ipv6": None, "as_number": None,
               "rr_cluster_id": None}
        assert Node.from_dict(old).to_dict() == old
        assert Node.from_dict(old).subnet(4) is None
        assert Node("n", "10.0.0.1", ipv4_subnet="10.0.0.0/24").to_dict() == {
            **old, "ipv4_subnet": "10.0.0.0/24"}
        with pytest.raises(ValidationError, match="unknown field 'ipv4_net'"):
            Node.from_dict({**old, "ipv4_net": "10.0.0.0/24"})

    def test_bgp_peer(self) -> None:
        peer = BGPPeer("FD00::0001", "64513", node="node1")
        assert (peer.address, peer.as_number, peer.node) == ("fd00::1", 64513, "node1")
        assert BGPPeer("10.0.0.1", 1).node is None

    def test_bgp_config(self) -> None:
        assert (BGPConfig().as_number, BGPConfig().node_to_node_mesh) == (64512, True)
        config = BGPConfig(as_number="65001", node_to_node_mesh="off")
        assert (config.as_number, config.node_to_node_mesh) == (65001, False)

    def test_ipam_config(self) -> None:
        assert IPAMConfig().strict_affinity is False
        assert IPAMConfig(strict_affinity="Yes").strict_affinity is True
        assert IPAMConfig(strict_affinity=True).strict_affinity is True


# --------------------------------------------------------------------------- bad input

RULE_ALLOWED_PORTS = "0-65535"

BAD_CASES: list[tuple[str, Callable[[], object], str, str]] = [
    # (id, constructor, field, a hint of what is allowed)
    ("action", lambda: Rule(action="accept"), "action", "allow, deny or log"),
    ("action-case", lambda: Rule(action="ALLOW"), "action", "allow, deny or log"),
    ("protocol-name", lambda: Rule(protocol="gre"), "protocol", "tcp, udp"),
    ("protocol-0", lambda: Rule(protocol=0), "protocol", "1-255"),
    ("protocol-256", lambda: Rule(protocol="256"), "protocol", "1-255"),
    ("protocol-bool", lambda: Rule(protocol=True), "protocol", "1-255"),
    ("not-protocol", lambda: Rule(not_protocol="http"), "not_protocol", "tcp, udp"),
    ("ports-no-protocol", lambda: Rule(dst_ports="80"), "dst_ports", "tcp, udp or sctp"),
    ("ports-icmp", lambda: Rule(protocol="icmp", src_ports=[80]), "src_ports",
     "tcp, udp or sctp"),
    ("ports-not-protocol", lambda: Rule(not_protocol="tcp", not_dst_ports=[80]),
     "not_dst_ports", "tcp, udp or sctp"),
    ("port-70000", lambda: Rule(protocol="tcp", dst_ports=[70000]), "dst_ports",
     RULE_ALLOWED_PORTS),
    ("port-range-reversed", lambda: Rule(protocol="tcp", dst_ports="2000:1000"), "dst_ports",
     "a <= b"),
    ("port-range-high", lambda: Rule(protocol="udp", src_ports="1:65536"), "src_ports",
     RULE_ALLOWED_PORTS),
    ("port-word", lambda: Rule(protocol="tcp", dst_ports="http"), "dst_ports",
     RULE_ALLOWED_PORTS),
    ("port-negative", lambda: Rule(protocol="tcp", dst_ports="-1"), "dst_ports",
     RULE_ALLOWED_PORTS),
    ("port-list-empty", lambda: Rule(protocol="tcp", dst_ports=[]), "dst_ports",
     RULE_ALLOWED_PORTS),
    ("icmp-type-no-icmp", lambda: Rule(icmp_type=8), "icmp_type", "icmp or icmpv6"),
    ("icmp-type-tcp", lambda: Rule(protocol="tcp", not_icmp_type=8), "not_icmp_type",
     "icmp or icmpv6"),
    ("icmp-type-255", lambda: Rule(protocol="icmp", icmp_type=255), "icmp_type", "0-254"),
    ("icmp-code-256", lambda: Rule(protocol="icmp", icmp_type=3, icmp_code=256),
     "icmp_code", "0-255"),
    ("icmp-code-without-type", lambda: Rule(protocol="icmp", icmp_code=1), "icmp_code",
     "icmp_type"),
    ("ip-version-5", lambda: Rule(ip_version=5), "ip_version", "4 or 6"),
    ("ip-version-word", lambda: Rule(ip_version="four"), "ip_version", "4"),
    ("icmp-v6", lambda: Rule(protocol="icmp", ip_version=6), "ip_version", "ip_version 4"),
    ("icmpv6-v4", lambda: Rule(protocol="icmpv6", ip_version=4), "ip_version",
     "ip_version 6"),
    ("src-net-v6-in-v4-rule", lambda: Rule(ip_version=4, src_net=["fd00::/64"]), "src_net",
     "IPv4 is required"),
    ("dst-net-v4-in-icmpv6", lambda: Rule(protocol="icmpv6", not_dst_net="10.0.0.0/8"),
     "not_dst_net", "IPv6 is required"),
    ("src-net-bad", lambda: Rule(src_net=["10.0.0.0/33"]), "src_net", "10.0.0.0/16"),
    ("tag-space", lambda: Rule(src_tag="my net"), "src_tag", "letters, digits"),
    ("tag-leading-dash", lambda: Rule(dst_tag="-net"), "dst_tag", "starting with a letter"),
    ("tag-empty", lambda: Rule(not_src_tag=""), "not_src_tag", "letters, digits"),
    ("profile-tag", lambda: Profile("p", tags=["ok", "not ok"]), "tags", "letters, digits"),
    ("profile-name", lambda: Profile("bad/name"), "name", "letters, digits"),
    ("profile-label", lambda: Profile("p", labels={"a": "b c"}), "labels", "63"),
    ("cidr-garbage", lambda: IPPool("banana"), "cidr", "10.0.0.0/16"),
    ("cidr-octet", lambda: IPPool("10.0.0.300/16"), "cidr", "10.0.0.0/16"),
    ("cidr-prefix", lambda: IPPool("10.0.0.0/33"), "cidr", "10.0.0.0/16"),
    ("cidr-none", lambda: IPPool(None), "cidr", "10.0.0.0/16"),
    ("pool-loopback", lambda: IPPool("127.0.0.0/8"), "cidr", "outside loopback"),
    ("pool-in-loopback", lambda: IPPool("127.1.0.0/16"), "cidr", "outside loopback"),
    ("pool-link-local", lambda: IPPool("169.254.0.0/16"), "cidr", "link-local"),
    ("pool-over-link-local", lambda: IPPool("169.0.0.0/8"), "cidr", "link-local"),
    ("pool-v6-link-local", lambda: IPPool("fe80::/64"), "cidr", "link-local"),
    ("pool-multicast", lambda: IPPool("224.1.0.0/16"), "cidr", "multicast"),
    ("pool-everything", lambda: IPPool("0.0.0.0/0"), "cidr", "outside loopback"),
    ("block-19", lambda: IPPool("10.0.0.0/8", block_size=19), "block_size", "20-32"),
    ("block-33", lambda: IPPool("10.0.0.0/8", block_size=33), "block_size", "20-32"),
    ("block-v6-115", lambda: IPPool("fd00::/64", block_size=115), "block_size", "116-128"),
    ("block-word", lambda: IPPool("10.0.0.0/8", block_size="big"), "block_size", "20-32"),
    ("block-bigger-than-pool", lambda: IPPool("10.0.0.0/24", block_size=22), "block_size",
     "24-32"),
    ("block-default-too-big", lambda: IPPool("10.0.0.0/28"), "block_size", "28-32"),
    ("pool-nat", lambda: IPPool("10.0.0.0/16", nat_outgoing="maybe"), "nat_outgoing",
     "true or false"),
    ("mac-garbage", lambda: ep(mac="zz:zz"), "mac", "ee:ee:ee:ee:ee:ee"),
    ("mac-short", lambda: ep(mac="ee:ee:ee:ee:ee"), "mac", "ee:ee:ee:ee:ee:ee"),
    ("interface-16", lambda: ep(interface="cali" + "a" * 12), "interface", "1-11"),
    ("interface-slash", lambda: ep(interface="cali/0"), "interface", "1-11"),
    ("interface-not-cali", lambda: ep(interface="eth0"), "interface", "'cali'"),
    ("state", lambda: ep(state="up"), "state", "active or inactive"),
    ("endpoint-host", lambda: ep(host="bad host"), "host", "host name"),
    ("endpoint-id", lambda: ep(id=""), "id", "letters, digits"),
    ("endpoint-v6-as-v4", lambda: ep(ipv4_nets=["fd00::1"]), "ipv4_nets", "IPv4 is required"),
    ("endpoint-bad-ip", lambda: ep(ipv6_nets="fd00::zz"), "ipv6_nets", "fd00::1"),
    ("endpoint-profile", lambda: ep(profiles=["a b"]), "profiles", "letters, digits"),
    ("node-name", lambda: Node("bad_host-"), "name", "host name"),
    ("node-name-space", lambda: Node("my node"), "name", "host name"),
    ("node-ipv4", lambda: Node("n", ipv4="fd00::1"), "ipv4", "IPv4 is required"),
    ("node-ipv6", lambda: Node("n", ipv6="10.0.0.1"), "ipv6", "IPv6 is required"),
    ("node-as-0", lambda: Node("n", as_number=0), "as_number", "1-4294967295"),
    ("node-as-big", lambda: Node("n", as_number=4294967296), "as_number", "1-4294967295"),
    ("node-rr", lambda: Node("n", rr_cluster_id="cluster"), "rr_cluster_id", "dotted quad"),
    ("node-rr-big", lambda: Node("n", rr_cluster_id="4294967296"), "rr_cluster_id",
     "dotted quad"),
    ("subnet-not-holding", lambda: Node("n", "10.0.0.1", ipv4_subnet="10.0.1.0/24"),
     "ipv4_subnet", "does not hold ipv4 10.0.0.1; use the network of the host's interface "
                    "that holds it, e.g. 10.0.0.0/24"),
    ("subnet-v6-not-holding", lambda: Node("n", ipv6="fd00::1", ipv6_subnet="fd01::/64"),
     "ipv6_subnet", "e.g. fd00::/64"),
    ("subnet-without-address", lambda: Node("n", ipv6_subnet="fd00::/64"), "ipv6_subnet",
     "given without ipv6"),
    ("subnet-v4-without-address", lambda: Node("n", ipv6="fd00::1", ipv4_subnet="10.0.0.0/8"),
     "ipv4_subnet", "given without ipv4"),
    ("subnet-wrong-version", lambda: Node("n", "10.0.0.1", ipv4_subnet="fd00::/64"),
     "ipv4_subnet", "IPv4 is required"),
    ("subnet-v6-wrong-version", lambda: Node("n", "10.0.0.1", "fd00::1",
                                             ipv6_subnet="10.0.0.0/24"),
     "ipv6_subnet", "IPv6 is required"),
    ("subnet-bare-address", lambda: Node("n", "10.0.0.1", ipv4_subnet="10.0.0.1"),
     "ipv4_subnet", "use a CIDR such as 10.0.0.0/24"),
    ("subnet-prefix-33", lambda: Node("n", "10.0.0.1", ipv4_subnet="10.0.0.0/33"),
     "ipv4_subnet", "prefix length 0-32"),
    ("subnet-prefix-129", lambda: Node("n", ipv6="fd00::1", ipv6_subnet="fd00::/129"),
     "ipv6_subnet", "prefix length 0-128"),
    ("subnet-octet", lambda: Node("n", "10.0.0.1", ipv4_subnet="10.0.0.300/24"),
     "ipv4_subnet", "not a subnet"),
    ("subnet-short", lambda: Node("n", "10.0.0.1", ipv4_subnet="10.0/16"),
     "ipv4_subnet", "not a subnet"),
    ("subnet-newline", lambda: Node("n", "10.0.0.1", ipv4_subnet="10.0.0.0/24\n"),
     "ipv4_subnet", "not a subnet"),
    ("subnet-space", lambda: Node("n", "10.0.0.1", ipv4_subnet=" 10.0.0.0/24"),
     "ipv4_subnet", "not a subnet"),
    ("subnet-number", lambda: Node("n", "10.0.0.1", ipv4_subnet=24), "ipv4_subnet",
     "not a subnet"),
    ("subnet-list", lambda: Node("n", "10.0.0.1", ipv4_subnet=["10.0.0.0/24"]),
     "ipv4_subnet", "not a subnet"),
    ("subnet-zone", lambda: Node("n", ipv6="fe80::1%eth0", ipv6_subnet="fe80::/64"),
     "ipv6", "fd00::1"),
    ("peer-address", lambda: BGPPeer("10.0.0", 64512), "address", "10.0.0.1"),
    ("peer-as-0", lambda: BGPPeer("10.0.0.1", 0), "as_number", "1-4294967295"),
    ("peer-as-big", lambda: BGPPeer("10.0.0.1", "4294967296"), "as_number", "1-4294967295"),
    ("peer-as-bool", lambda: BGPPeer("10.0.0.1", True), "as_number", "1-4294967295"),
    ("peer-node", lambda: BGPPeer("10.0.0.1", 1, node="a b"), "node", "host name"),
    ("bgp-as-0", lambda: BGPConfig(as_number=0), "as_number", "1-4294967295"),
    ("bgp-as-big", lambda: BGPConfig(as_number=4294967296), "as_number", "1-4294967295"),
    ("bgp-mesh", lambda: BGPConfig(node_to_node_mesh="sometimes"), "node_to_node_mesh",
     "true or false"),
    ("ipam-strict", lambda: IPAMConfig(strict_affinity=2), "strict_affinity", "true or false"),
    ("unknown-pool-field",
     lambda: IPPool.from_dict({"cidr": "10.0.0.0/16", "nat": True}), "nat",
     "allowed: cidr, block_size"),
    ("unknown-rule-field", lambda: Rule.from_dict({"acton": "allow"}), "acton",
     "allowed: action"),
    ("unknown-endpoint-field",
     lambda: Endpoint.from_dict({"id": "e", "host": "h", "interface": "i", "ip": "x"}),
     "ip", "allowed: id, host, interface"),
    ("unknown-bgpconfig-field", lambda: BGPConfig.from_dict({"asn": 1}), "asn",
     "allowed: as_number"),
    ("from-dict-not-mapping", lambda: Node.from_dict(["n"]), "node", "mapping"),
    ("nested-action",
     lambda: Profile.from_dict({"name": "p", "inbound_rules": [{"action": "x"}]}),
     "inbound_rules[0].action", "allow, deny or log"),
    ("nested-second-rule",
     lambda: Profile.from_dict({"name": "p", "outbound_rules": [
         {}, {"protocol": "tcp", "dst_ports": "1:2:3"}]}),
     "outbound_rules[1].dst_ports", RULE_ALLOWED_PORTS),
    ("nested-unknown",
     lambda: Profile.from_dict({"name": "p", "inbound_rules": [{"bogus": 1}]}),
     "inbound_rules[0].bogus", "allowed: action"),
    ("rules-not-list", lambda: Profile("p", inbound_rules={"action": "allow"}),
     "inbound_rules", "list of rules"),
]


@pytest.mark.parametrize("make, field, allowed", [case[1:] for case in BAD_CASES],
                         ids=[case[0] for case in BAD_CASES])
def test_bad_input(make: Callable[[], object], field: str, allowed: str) -> None:
    with pytest.raises(ValidationError) as info:
        make()
    error = info.value
    text = str(error)
    assert error.field == field
    assert "\n" not in text
    assert text.startswith(f"{field}: ")
    assert text == f"{error.field}: {error.problem}"
    assert allowed in error.problem
    assert error.exit_code == 2
    assert isinstance(error, ValueError)


def test_unknown_field_is_named() -> None:
    with pytest.raises(ValidationError, match="^nat: unknown field 'nat' of a ippool"):
        IPPool.from_dict({"cidr": "10.0.0.0/16", "nat": True})
    with pytest.raises(ValidationError, match=r"^inbound_rules\[0\]\.port: unknown field"):
        Profile.from_dict({"name": "p", "inbound_rules": [{"port": 80}]})
    with pytest.raises(ValidationError, match="^mac: "):
        Endpoint("e1", "h1", "cali1", mac=123)


@pytest.mark.parametrize("cls, data, field", [
    (Endpoint, {"id": "e1", "host": "h"}, "interface"),
    (IPPool, {}, "cidr"),
    (BGPPeer, {"address": "10.0.0.1"}, "as_number"),
    (Profile, {"tags": ["a"]}, "name"),
])
def test_from_dict_missing_required_field(cls, data, field) -> None:
    with pytest.raises(ValidationError) as info:
        cls.from_dict(data)
    assert info.value.field == field
    text = str(info.value)
    assert text.startswith(f"{field}: ") and "\n" not in text


# --------------------------------------------------------------------------- round trips

ROUND_TRIP = [
    IPPool("10.1.0.0/16"),
    IPPool("fd00:1::/48", block_size=120, nat_outgoing=True, disabled=True),
    Rule(),
    Rule(action="deny", protocol="tcp", src_net=["10.0.0.0/8"], not_src_net="10.1.0.0/16",
         src_tag="a", dst_tag="b", not_dst_tag="c", not_src_tag="d",
         src_ports=[1, "2:3"], not_src_ports=[4], dst_ports="80,443", not_dst_ports=[8080]),
    Rule(protocol="icmp", icmp_type=8, icmp_code=0, not_icmp_type=3, not_icmp_code=1),
    Rule(protocol=132, dst_ports=["5:6"], ip_version=6,
         dst_net=["fd00::/64"], not_dst_net=["fd00:1::/64"]),
    Profile("web", tags=["web", "frontend"], labels={"tier": "front"},
            inbound_rules=[Rule(protocol="tcp", dst_ports=[80]), Rule(action="deny")],
            outbound_rules=[Rule(action="deny", dst_net=["10.0.0.0/8"]), Rule()]),
    Profile.with_default_rules("net1"),
    Endpoint("ep1", "host1", "cali1", mac="ee:ee:ee:ee:ee:ee", ipv4_nets=["10.0.0.1"],
             ipv6_nets=["fd00::1"], profiles=["net1"], labels={"app": "x"}, state="inactive"),
    Endpoint("ep2", "host2", "cali2"),
    Node("node1", ipv4="10.0.0.1", ipv6="fd00::1", as_number=65000, rr_cluster_id="1.2.3.4"),
    Node("node2"),
    Node("node3", ipv4="10.0.0.3", ipv6="fd00::3", ipv4_subnet="10.0.0.0/24",
         ipv6_subnet="fd00::/64"),
    BGPPeer("10.0.0.254", 65001),
    BGPPeer("fd00::fe", 65002, node="node1"),
    BGPConfig(),
    BGPConfig(as_number=65003, node_to_node_mesh=False),
    IPAMConfig(strict_affinity=True),
]


@pytest.mark.parametrize("obj", ROUND_TRIP, ids=lambda o: type(o).__name__)
def test_round_trip(obj) -> None:
    data = obj.to_dict()
    assert type(obj).from_dict(data) == obj
    # through JSON text too, as the datastore stores it
    text = json.dumps(data, sort_keys=True)
    again = type(obj).from_dict(json.loads(text))
    assert again == obj
    assert json.dumps(again.to_dict(), sort_keys=True) == text


def test_to_dict_is_plain_data() -> None:
    profile = Profile("p", inbound_rules=[Rule(protocol="tcp", dst_ports="80")])
    data = profile.to_dict()
    assert data == {"name": "p", "tags": [], "labels": {},
                    "inbound_rules": [{"action": "allow", "protocol": "tcp",
                                       "dst_ports": [80]}],
                    "outbound_rules": []}
    assert isinstance(data["inbound_rules"][0], dict)
    assert IPPool("10.0.0.0/16").to_dict() == {"cidr": "10.0.0.0/16", "block_size": 26,
                                               "nat_outgoing": False, "disabled": False}
    assert Node("n", rr_cluster_id="1").to_dict()["rr_cluster_id"] == "0.0.0.1"


def test_rule_to_dict_omits_defaults() -> None:
    assert Rule(action="deny").to_dict() == {"action": "deny"}
    assert Rule(protocol="TCP", dst_ports="80, 443").to_dict() == {
        "action": "allow", "protocol": "tcp", "dst_ports": [80, 443]}
    assert Rule(protocol="icmp", icmp_type=8).to_dict() == {
        "action": "allow", "protocol": "icmp", "icmp_type": 8, "ip_version": 4}


def test_rule_to_dict_keeps_action() -> None:
    assert Rule().to_dict() == {"action": "allow"}
    assert Profile.with_default_rules("n").to_dict()["outbound_rules"] == [{"action": "allow"}]
