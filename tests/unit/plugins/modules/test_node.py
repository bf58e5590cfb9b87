from __future__ import annotations

import pytest

import calico_lib
from ansible_collections.calico.docker.plugins.modules import bgp_peer, node
from ansible_collections.calico.docker.tests.unit.plugins.modules.helpers import client, failed, ok


@pytest.mark.parametrize("args, field", [
    ({"name": "bad host!"}, "name"),
    ({"name": "host-1", "ipv4": "fd00::1"}, "ipv4"),
    ({"name": "host-1", "ipv6": "10.0.0.1"}, "ipv6"),
    ({"name": "host-1", "as_number": 0}, "as_number"),
    ({"name": "host-1", "as_number": "lots"}, "as_number"),
    ({"name": "host-1", "rr_cluster_id": "not-an-id"}, "rr_cluster_id"),
    ({"ipv4": "10.0.0.1"}, "name"),
    ({"name": "host-1", "ipv4": "10.0.0.1", "ipv4_subnet": "10.0.1.0/24"}, "ipv4_subnet"),
    ({"name": "host-1", "ipv4": "10.0.0.1", "ipv4_subnet": "10.0.0.0"}, "ipv4_subnet"),
    ({"name": "host-1", "ipv6_subnet": "fd00::/64"}, "ipv6_subnet"),
    ({"name": "host-1", "ipv6": "fd00::1", "ipv6_subnet": "10.0.0.0/8"}, "ipv6_subnet"),
])
def test_bad_arguments_name_the_field(url, args, field) -> None:
    msg = failed(node, dict(args, datastore=url))
    assert field in msg
    with client(url) as c:
        assert c.list_nodes() == []


def test_create_then_no_change(url) -> None:
    args = {"name": "host-1", "ipv4": "10.0.0.1/24", "ipv6": "fd00::1", "as_number": 64513,
            "datastore": url}
    first = ok(node, args)
    assert first["changed"] is True
    assert first["diff"] == {"before": {}, "after": {
        "name": "host-1", "ipv4": "10.0.0.1", "ipv6": "fd00::1", "as_number": 64513,
        "rr_cluster_id": None}}
    assert ok(node, args)["changed"] is False
    with client(url) as c:
        assert c.get_node("host-1").ipv4 == "10.0.0.1"


def test_record_is_exactly_as_given(url) -> None:
    ok(node, {"name": "host-1", "ipv4": "10.0.0.1", "as_number": 64513, "datastore": url})
    out = ok(node, {"name": "host-1", "ipv4": "10.0.0.1", "rr_cluster_id": "224.0.0.1",
                    "datastore": url})
    assert out["changed"] is True
    assert out["diff"]["before"]["as_number"] == 64513
    assert out["node"]["as_number"] is None
    assert out["node"]["rr_cluster_id"] == "224.0.0.1"


def test_check_mode_reports_and_writes_nothing(url) -> None:
    out = ok(node, {"name": "host-1", "ipv4": "10.0.0.1", "datastore": url}, check=True)
    assert out["changed"] is True and out["diff"]["after"]["ipv4"] == "10.0.0.1"
    with client(url) as c:
        assert c.list_nodes() == []
    ok(node, {"name": "host-1", "ipv4": "10.0.0.1", "datastore": url})
    assert ok(node, {"name": "host-1", "ipv4": "10.0.0.2", "datastore": url},
              check=True)["changed"] is True
    assert ok(node, {"name": "host-1", "state": "absent", "datastore": url},
              check=True)["changed"] is True
    with client(url) as c:
        assert c.get_node("host-1").ipv4 == "10.0.0.1"


def test_absent_removes_the_node_and_its_peers(url) -> None:
    ok(node, {"name": "host-1", "ipv4": "10.0.0.1", "datastore": url})
    ok(bgp_peer, {"address": "10.0.1.254", "as_number": 65001, "node": "host-1",
                  "datastore": url})
    out = ok(node, {"name": "host-1", "state": "absent", "datastore": url})
    assert out["changed"] is True and out["diff"]["after"] == {}
    assert ok(node, {"name": "host-1", "state": "absent", "datastore": url})["changed"] is False
    with client(url) as c:
        assert c.list_nodes() == [] and c.list_bgp_peers() == []


def test_absent_removes_the_host_and_the_diff_shows_all_it_held(url) -> None:
    with client(url) as c:
        c.add_pool(calico_lib.IPPool("10.65.0.0/16"))
        c.add_node(calico_lib.Node("host-1", ipv4="10.0.0.1"))
        c.add_bgp_peer(calico_lib.BGPPeer("10.0.1.254", 65001, "host-1", password="s3cret"))
        address = c.ipam.auto_assign("host-1", "ep-1", num_ipv4=1).ipv4[0]
        c.add_endpoint(calico_lib.Endpoint("ep-1", "host-1", "caliep1", ipv4_nets=[address]))
    out = ok(node, {"name": "host-1", "state": "absent", "datastore": url}, diff=True)
    before = out["diff"]["before"]
    assert (before["ipv4"], before["endpoints"], before["addresses"]) == (
        "10.0.0.1", ["ep-1"], [address])
    assert before["blocks"] == ["10.65.0.0/26"]
    assert before["peers"][0]["password"] == "********"
    assert "s3cret" not in str(out)
    with client(url) as c:
        assert c.list_endpoints() == [] and c.ipam.check() == []
        assert c.ipam.usage()[0]["blocks"] == []  # the emptied block went back to the pool
    assert ok(node, {"name": "host-1", "state": "absent", "datastore": url})["changed"] is False


def test_subnets_add_to_a_record_made_without_them(url) -> None:
    ok(node, {"name": "host-1", "ipv4": "10.0.0.1", "ipv6": "fd00::1", "datastore": url})
    args = {"name": "host-1", "ipv4": "10.0.0.1", "ipv4_subnet": "10.0.0.1/24",
            "ipv6": "fd00::1", "ipv6_subnet": "fd00::/64", "datastore": url}
    preview = ok(node, args, check=True, diff=True)
    assert preview["changed"] is True
    assert preview["diff"]["before"] == {"name": "host-1", "ipv4": "10.0.0.1",
                                         "ipv6": "fd00::1", "as_number": None,
                                         "rr_cluster_id": None}
    assert preview["diff"]["after"] == {**preview["diff"]["before"],
                                        "ipv4_subnet": "10.0.0.0/24", "ipv6_subnet": "fd00::/64"}
    with client(url) as c:
        assert c.get_node("host-1").ipv4_subnet is None  # check mode wrote nothing
    out = ok(node, args)
    assert out["changed"] is True and out["node"]["ipv4_subnet"] == "10.0.0.0/24"
    assert ok(node, args)["changed"] is False
    # left out: cleared, as every option of the module
    out = ok(node, {"name": "host-1", "ipv4": "10.0.0.1", "datastore": url})
    assert out["changed"] is True and "ipv4_subnet" not in out["node"]


def test_the_agents_tunnel_address_is_kept(url) -> None:
    """The agent records its VXLAN tunnel address in its node record: the role's next run
    neither clears it nor reports a change."""
    args = {"name": "host-1", "ipv4": "10.0.0.1", "datastore": url}
    ok(node, args)
    with client(url) as c:
        c.update_node("host-1", ipv4_vxlan_tunnel="10.66.1.1")
    assert ok(node, args)["changed"] is False
    assert ok(node, dict(args, as_number=64513))["changed"] is True
    with client(url) as c:
        assert c.get_node("host-1").ipv4_vxlan_tunnel == "10.66.1.1"


NOT_UNICAST = "is not allowed; use a unicast address"


@pytest.mark.parametrize("args, message", [
    # refused by the model (calico_lib.model.routable_address)
    ({"ipv4": "0.0.0.0"}, f"ipv4: 0.0.0.0 {NOT_UNICAST}"),
    ({"ipv4": "0.0.0.0/0"}, f"ipv4: 0.0.0.0 {NOT_UNICAST}"),
    ({"ipv4": "224.0.0.5"}, f"ipv4: 224.0.0.5 {NOT_UNICAST}"),
    ({"ipv4": "239.1.2.3/24"}, f"ipv4: 239.1.2.3 {NOT_UNICAST}"),
    ({"ipv4": "127.0.0.1"}, f"ipv4: 127.0.0.1 {NOT_UNICAST}"),
    ({"ipv4": "169.254.0.1"}, f"ipv4: 169.254.0.1 {NOT_UNICAST}"),
    ({"ipv6": "::"}, f"ipv6: :: {NOT_UNICAST}"),
    ({"ipv6": "ff02::2"}, f"ipv6: ff02::2 {NOT_UNICAST}"),
    ({"ipv6": "ff05::1:3/64"}, f"ipv6: ff05::1:3 {NOT_UNICAST}"),
    ({"ipv6": "::1"}, f"ipv6: ::1 {NOT_UNICAST}"),
    ({"ipv6": "fe80::1"}, f"ipv6: fe80::1 {NOT_UNICAST}"),
    # refused by the module: broadcast, and a subnet's own network or broadcast address
    ({"ipv4": "255.255.255.255"}, f"ipv4: 255.255.255.255 {NOT_UNICAST}"),
    ({"ipv4": "10.0.0.0/24"},
     "ipv4: 10.0.0.0 is the network address of 10.0.0.0/24; use the host's own address"),
    ({"ipv4": "10.0.0.255/24"},
     "ipv4: 10.0.0.255 is the broadcast address of 10.0.0.0/24; use the host's own address"),
    ({"ipv4": "10.0.1.255", "ipv4_subnet": "10.0.0.0/23"},
     "ipv4: 10.0.1.255 is the broadcast address of 10.0.0.0/23; use the host's own address"),
    ({"ipv4": "10.0.0.0", "ipv4_subnet": "10.0.0.1/24"},
     "ipv4: 10.0.0.0 is the network address of 10.0.0.0/24; use the host's own address"),
    ({"ipv6": "fd00::/64"}, "ipv6: fd00:: is the subnet-router anycast address of fd00::/64; "
                            "use the host's own address"),
    ({"ipv6": "fd00::", "ipv6_subnet": "fd00::/64"},
     "ipv6: fd00:: is the subnet-router anycast address of fd00::/64; use the host's own "
     "address"),
])
@pytest.mark.parametrize("check", [True, False])
def test_non_unicast_addresses_are_refused(url, args, message, check) -> None:
    """Issue 20: an address BIRD cannot peer with is refused naming the option, in check
    mode as in a real run, and nothing is written."""
    msg = failed(node, {"name": "host-1", **args, "datastore": url}, check=check)
    assert msg.startswith(message), msg
    with client(url) as c:
        assert c.list_nodes() == []


@pytest.mark.parametrize("args, ipv4, ipv6", [
    ({"ipv4": "10.0.0.1/24"}, "10.0.0.1", None),  # ADDR/PREFIX, as before
    ({"ipv4": "10.0.0.254/24", "ipv4_subnet": "10.0.0.0/24"}, "10.0.0.254", None),
    ({"ipv4": "10.0.0.255/23"}, "10.0.0.255", None),  # not the /23's broadcast
    ({"ipv4": "10.0.0.0/31"}, "10.0.0.0", None),  # point-to-point links: both are hosts
    ({"ipv4": "10.0.0.1", "ipv4_subnet": "10.0.0.0/31"}, "10.0.0.1", None),
    ({"ipv4": "10.0.0.7/32"}, "10.0.0.7", None),
    ({"ipv6": "fd00::/127"}, None, "fd00::"),
    ({"ipv6": "fd00::1", "ipv6_subnet": "fd00::/64"}, None, "fd00::1"),
    ({"ipv6": "fd00::ffff:ffff:ffff:ffff/64"}, None, "fd00::ffff:ffff:ffff:ffff"),
])
def test_unicast_host_addresses_at_the_edges_are_taken(url, args, ipv4, ipv6) -> None:
    out = ok(node, {"name": "host-1", **args, "datastore": url})
    assert (out["node"]["ipv4"], out["node"]["ipv6"]) == (ipv4, ipv6)


#: what a node without containers holds beside its record and peers
NOTHING_HELD = {"endpoints": [], "handles": [], "addresses": [], "blocks": [], "records": []}


@pytest.mark.parametrize("check", [True, False])
def test_absent_diff_shows_the_peers_removed_with_the_node(url, check) -> None:
    """Issue 20: removing a node removes its own BGP peers; the diff shows them (passwords
    masked), and not the global peers, which stay."""
    ok(node, {"name": "host-1", "ipv4": "10.0.0.1", "datastore": url})
    ok(node, {"name": "host-2", "ipv4": "10.0.0.2", "datastore": url})
    for address, name in (("10.0.1.254", "host-1"), ("fd00::fe", "host-1"),
                          ("10.0.2.254", "host-2"), ("10.0.0.254", None)):
        ok(bgp_peer, {"address": address, "as_number": 65001, "node": name,
                      "password": "s3cret", "datastore": url})
    out = ok(node, {"name": "host-1", "state": "absent", "datastore": url}, check=check)
    assert out["changed"] is True and out["node"] is None
    assert out["diff"]["before"] == {
        "name": "host-1", "ipv4": "10.0.0.1", "ipv6": None, "as_number": None,
        "rr_cluster_id": None,
        "peers": [{"address": "10.0.1.254", "as_number": 65001, "node": "host-1",
                   "password": "********"},
                  {"address": "fd00::fe", "as_number": 65001, "node": "host-1",
                   "password": "********"}], **NOTHING_HELD}
    assert out["diff"]["after"] == {}
    assert "s3cret" not in str(out)
    with client(url) as c:
        left = {(p.address, p.node) for p in c.list_bgp_peers()}
    assert left == ({("10.0.2.254", "host-2"), ("10.0.0.254", None)} if not check else
                    {("10.0.1.254", "host-1"), ("fd00::fe", "host-1"),
                     ("10.0.2.254", "host-2"), ("10.0.0.254", None)})


def test_absent_diff_of_a_node_without_peers(url) -> None:
    ok(node, {"name": "host-1", "ipv4": "10.0.0.1", "datastore": url})
    out = ok(node, {"name": "host-1", "state": "absent", "datastore": url})
    assert out["diff"] == {"before": {"name": "host-1", "ipv4": "10.0.0.1", "ipv6": None,
                                      "as_number": None, "rr_cluster_id": None, "peers": [],
                                      **NOTHING_HELD},
                           "after": {}}
    assert ok(node, {"name": "host-1", "state": "absent",
                     "datastore": url})["diff"] == {"before": {}, "after": {}}
