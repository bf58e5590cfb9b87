from __future__ import annotations

import pytest

from ansible_collections.calico.docker.plugins.modules import bgp_peer, node
from tests.unit_modules.helpers import client, failed, ok


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
