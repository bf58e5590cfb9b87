from __future__ import annotations

import pytest

from ansible_collections.calico.docker.plugins.modules import ip_pool
from ansible_collections.calico.docker.tests.unit.plugins.modules.helpers import client, failed, ok

CIDR = "10.65.0.0/16"


@pytest.mark.parametrize("args, field", [
    ({"cidr": "10.65.0.0/33"}, "cidr"),
    ({"cidr": "127.0.0.0/16"}, "cidr"),
    ({"cidr": CIDR, "block_size": 12}, "block_size"),
    ({"cidr": CIDR, "block_size": "big"}, "block_size"),
    ({"cidr": CIDR, "nat_outgoing": "perhaps"}, "nat_outgoing"),
    ({"cidr": CIDR, "state": "gone"}, "state"),
    ({}, "cidr"),
])
def test_bad_arguments_name_the_field(url, args, field) -> None:
    msg = failed(ip_pool, dict(args, datastore=url))
    assert field in msg
    with client(url) as c:
        assert c.list_pools() == []


def test_create_then_no_change(url) -> None:
    args = {"cidr": CIDR, "nat_outgoing": True, "datastore": url}
    first = ok(ip_pool, args)
    assert first["changed"] is True
    assert first["diff"]["before"] == {}
    assert first["diff"]["after"]["cidr"] == CIDR
    assert first["pool"] == {"cidr": CIDR, "block_size": 26, "nat_outgoing": True,
                             "disabled": False}
    second = ok(ip_pool, args)
    assert second["changed"] is False
    assert second["diff"]["before"] == second["diff"]["after"]
    with client(url) as c:
        assert c.get_pool(CIDR).nat_outgoing is True


def test_host_bits_name_the_same_pool(url) -> None:
    ok(ip_pool, {"cidr": CIDR, "datastore": url})
    assert ok(ip_pool, {"cidr": "10.65.1.1/16", "datastore": url})["changed"] is False


def test_flags_change_and_unset_flags_stay(url) -> None:
    ok(ip_pool, {"cidr": CIDR, "nat_outgoing": True, "datastore": url})
    out = ok(ip_pool, {"cidr": CIDR, "disabled": True, "datastore": url})
    assert out["changed"] is True
    assert out["diff"]["before"]["disabled"] is False
    assert out["diff"]["after"] == dict(out["diff"]["before"], disabled=True)
    with client(url) as c:
        pool = c.get_pool(CIDR)
        assert (pool.nat_outgoing, pool.disabled) == (True, True)


def test_block_size_cannot_change(url) -> None:
    ok(ip_pool, {"cidr": CIDR, "block_size": 24, "datastore": url})
    assert ok(ip_pool, {"cidr": CIDR, "block_size": 24, "datastore": url})["changed"] is False
    assert ok(ip_pool, {"cidr": CIDR, "datastore": url})["changed"] is False
    msg = failed(ip_pool, {"cidr": CIDR, "block_size": 26, "datastore": url})
    assert msg.startswith("block_size:")


def test_overlap_is_refused_with_the_library_message(url) -> None:
    ok(ip_pool, {"cidr": CIDR, "datastore": url})
    msg = failed(ip_pool, {"cidr": "10.65.4.0/24", "datastore": url})
    assert msg.startswith("cidr:") and "overlaps" in msg


def test_check_mode_reports_and_writes_nothing(url) -> None:
    out = ok(ip_pool, {"cidr": CIDR, "datastore": url}, check=True)
    assert out["changed"] is True
    assert out["diff"]["after"]["cidr"] == CIDR
    with client(url) as c:
        assert c.list_pools() == []
    ok(ip_pool, {"cidr": CIDR, "datastore": url})
    out = ok(ip_pool, {"cidr": CIDR, "nat_outgoing": True, "datastore": url}, check=True)
    assert out["changed"] is True
    out = ok(ip_pool, {"cidr": CIDR, "state": "absent", "datastore": url}, check=True)
    assert out["changed"] is True
    with client(url) as c:
        assert c.get_pool(CIDR).nat_outgoing is False


def test_absent(url) -> None:
    ok(ip_pool, {"cidr": "fd00:65::/48", "datastore": url})
    out = ok(ip_pool, {"cidr": "fd00:65::/48", "state": "absent", "datastore": url})
    assert out["changed"] is True
    assert out["diff"] == {"before": {"cidr": "fd00:65::/48", "block_size": 122,
                                      "nat_outgoing": False, "disabled": False}, "after": {}}
    assert ok(ip_pool, {"cidr": "fd00:65::/48", "state": "absent",
                        "datastore": url})["changed"] is False
    with client(url) as c:
        assert c.list_pools() == []


def test_absent_refused_while_addresses_are_assigned(url) -> None:
    ok(ip_pool, {"cidr": CIDR, "datastore": url})
    with client(url) as c:
        c.ipam.auto_assign("host-1", "handle-1", num_ipv4=1)
    msg = failed(ip_pool, {"cidr": CIDR, "state": "absent", "datastore": url})
    assert msg.startswith("cidr:") and "assigned" in msg
    with client(url) as c:
        assert c.get_pool(CIDR).disabled is False


def test_check_mode_of_absent_fails_like_the_real_run_while_addresses_are_assigned(url) -> None:
    """Issue 20: check mode predicts the refusal (same message), and writes nothing."""
    ok(ip_pool, {"cidr": CIDR, "datastore": url})
    with client(url) as c:
        c.ipam.auto_assign("host-1", "handle-1", num_ipv4=1)
        blocks = c.ipam.usage()
    args = {"cidr": CIDR, "state": "absent", "datastore": url}
    preview = failed(ip_pool, args, check=True)
    assert preview.startswith(f"cidr: pool {CIDR} still has addresses assigned")
    with client(url) as c:
        assert c.get_pool(CIDR).disabled is False and c.ipam.usage() == blocks
    assert failed(ip_pool, args) == preview


def test_vxlan_mode_is_set_changed_and_idempotent(url) -> None:
    args = {"cidr": CIDR, "vxlan_mode": "cross-subnet", "datastore": url}
    first = ok(ip_pool, args)
    assert first["changed"] is True
    assert first["pool"]["vxlan_mode"] == "cross-subnet"
    assert first["diff"]["after"]["vxlan_mode"] == "cross-subnet"
    assert ok(ip_pool, args)["changed"] is False  # same value: no change

    out = ok(ip_pool, dict(args, vxlan_mode="always"))
    assert out["changed"] is True
    assert out["diff"]["before"]["vxlan_mode"] == "cross-subnet"
    assert out["diff"]["after"] == dict(out["diff"]["before"], vxlan_mode="always")
    with client(url) as c:
        assert c.get_pool(CIDR).vxlan_mode == "always"

    # left out: never (as stored, without the key), and then no change
    out = ok(ip_pool, {"cidr": CIDR, "datastore": url})
    assert out["changed"] is True
    assert out["diff"]["before"]["vxlan_mode"] == "always"
    assert "vxlan_mode" not in out["diff"]["after"]
    assert ok(ip_pool, {"cidr": CIDR, "vxlan_mode": "never",
                        "datastore": url})["changed"] is False
    with client(url) as c:
        assert c.get_pool(CIDR).vxlan_mode == "never"


def test_vxlan_mode_check_mode_reports_and_writes_nothing(url) -> None:
    args = {"cidr": CIDR, "vxlan_mode": "always", "datastore": url}
    out = ok(ip_pool, args, check=True)
    assert out["changed"] is True
    assert out["diff"]["after"]["vxlan_mode"] == "always"
    with client(url) as c:
        assert c.list_pools() == []
    ok(ip_pool, {"cidr": CIDR, "datastore": url})
    out = ok(ip_pool, args, check=True)
    assert out["changed"] is True
    assert "vxlan_mode" not in out["diff"]["before"]
    assert out["diff"]["after"]["vxlan_mode"] == "always"
    with client(url) as c:
        assert c.get_pool(CIDR).vxlan_mode == "never"
    ok(ip_pool, args)
    assert ok(ip_pool, args, check=True)["changed"] is False


@pytest.mark.parametrize("args, words", [
    ({"cidr": "fd00:65::/48", "vxlan_mode": "always"}, ("vxlan_mode:", "IPv4")),
    ({"cidr": CIDR, "vxlan_mode": "sometimes"}, ("vxlan_mode",)),
])
def test_bad_vxlan_mode_is_refused(url, args, words) -> None:
    msg = failed(ip_pool, dict(args, datastore=url))
    assert all(word in msg for word in words), msg
    with client(url) as c:
        assert c.list_pools() == []


def test_vxlan_mode_of_an_existing_ipv6_pool_is_refused(url) -> None:
    ok(ip_pool, {"cidr": "fd00:65::/48", "datastore": url})
    msg = failed(ip_pool, {"cidr": "fd00:65::/48", "vxlan_mode": "cross-subnet",
                           "datastore": url})
    assert msg.startswith("vxlan_mode:")
    with client(url) as c:
        assert c.get_pool("fd00:65::/48").vxlan_mode == "never"
