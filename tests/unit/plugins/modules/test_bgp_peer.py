from __future__ import annotations

import pytest

from ansible_collections.calico.docker.plugins.modules import bgp_peer, node
from ansible_collections.calico.docker.tests.unit.plugins.modules.helpers import client, failed, ok

TOR = "10.0.0.254"


@pytest.mark.parametrize("args, field", [
    ({"address": "nowhere", "as_number": 65000}, "address"),
    ({"address": TOR, "as_number": 0}, "as_number"),
    ({"address": TOR}, "as_number"),  # required with state=present
    ({"address": TOR, "as_number": 65000, "node": "bad node!"}, "node"),
    ({"address": TOR, "as_number": 65000, "password": "has space"}, "password"),
    ({"address": TOR, "as_number": 65000, "node": "ghost"}, "node ghost"),
])
def test_bad_arguments_name_the_field(url, args, field) -> None:
    msg = failed(bgp_peer, dict(args, datastore=url))
    assert field in msg
    with client(url) as c:
        assert c.list_bgp_peers() == []


def test_global_peer_create_then_no_change(url) -> None:
    args = {"address": TOR, "as_number": 65000, "datastore": url}
    first = ok(bgp_peer, args)
    assert first["changed"] is True
    assert first["diff"] == {"before": {}, "after": {"address": TOR, "as_number": 65000,
                                                     "node": None}}
    assert ok(bgp_peer, args)["changed"] is False
    with client(url) as c:
        assert [p.address for p in c.list_bgp_peers()] == [TOR]


def test_change_is_one_replace_and_password_is_never_shown(url) -> None:
    ok(bgp_peer, {"address": TOR, "as_number": 65000, "password": "s3cret-one",
                  "datastore": url})
    out = ok(bgp_peer, {"address": TOR, "as_number": 65001, "password": "s3cret-two",
                        "datastore": url})
    assert out["changed"] is True
    assert "s3cret" not in repr(out)
    assert out["diff"]["before"]["password"] == "********"
    assert out["diff"]["after"]["password"].startswith("********")
    assert out["diff"]["after"]["as_number"] == 65001
    with client(url) as c:
        (peer,) = c.list_bgp_peers()
        assert (peer.as_number, peer.password) == (65001, "s3cret-two")
    assert ok(bgp_peer, {"address": TOR, "as_number": 65001, "password": "s3cret-two",
                         "datastore": url})["changed"] is False


def test_node_peer_is_separate_from_the_global_one(url) -> None:
    ok(node, {"name": "host-1", "ipv4": "10.0.0.1", "datastore": url})
    ok(bgp_peer, {"address": TOR, "as_number": 65000, "datastore": url})
    out = ok(bgp_peer, {"address": TOR, "as_number": 65002, "node": "host-1",
                        "datastore": url})
    assert out["changed"] is True and out["peer"]["node"] == "host-1"
    ok(bgp_peer, {"address": TOR, "state": "absent", "datastore": url})
    with client(url) as c:
        assert [(p.address, p.node) for p in c.list_bgp_peers()] == [(TOR, "host-1")]


def test_check_mode_reports_and_writes_nothing(url) -> None:
    out = ok(bgp_peer, {"address": "fd00::fe", "as_number": 65000, "datastore": url},
             check=True)
    assert out["changed"] is True and out["diff"]["after"]["address"] == "fd00::fe"
    with client(url) as c:
        assert c.list_bgp_peers() == []
    ok(bgp_peer, {"address": "fd00::fe", "as_number": 65000, "datastore": url})
    assert ok(bgp_peer, {"address": "fd00::fe", "as_number": 1, "datastore": url},
              check=True)["changed"] is True
    assert ok(bgp_peer, {"address": "fd00::fe", "state": "absent", "datastore": url},
              check=True)["changed"] is True
    with client(url) as c:
        assert [p.as_number for p in c.list_bgp_peers()] == [65000]


def test_check_mode_fails_like_the_real_run_on_a_node_not_registered(url) -> None:
    """Issue 20: check mode predicts the real run, so a node's own peer whose node is not in
    the datastore fails in both with one message (no longer a warning and "changed")."""
    args = {"address": TOR, "as_number": 65000, "node": "host-9", "datastore": url}
    msg = "node host-9: not found; add the node first"
    assert failed(bgp_peer, args, check=True) == msg
    assert failed(bgp_peer, args) == msg
    with client(url) as c:
        assert c.list_bgp_peers() == []
    # registered, the same task passes in both
    ok(node, {"name": "host-9", "ipv4": "10.0.0.9", "datastore": url})
    assert ok(bgp_peer, args, check=True)["changed"] is True
    assert ok(bgp_peer, args)["changed"] is True


@pytest.mark.parametrize("address", ["10.0.0.1/24", "10.0.0.0/24", "10.0.0.1/32",
                                     "fd00::1/64", "fd00::/64", "fd00::1/128"])
@pytest.mark.parametrize("check", [True, False])
def test_a_cidr_is_not_a_peer_address(url, address, check) -> None:
    """A CIDR was silently cut to its address (``10.0.0.0/24`` became a peer 10.0.0.0): it
    is refused naming ``address``, whatever the state, in check mode and for real."""
    existing = address.split("/")[0]
    ok(bgp_peer, {"address": existing, "as_number": 65000, "datastore": url})
    for state in ("present", "absent"):
        msg = failed(bgp_peer, {"address": address, "as_number": 65001, "state": state,
                                "datastore": url}, check=check)
        assert msg == (f"address: {address} is not allowed; use the peer's address without "
                       "a prefix length, such as 10.0.0.254 or fd00::fe"), msg
    with client(url) as c:
        assert [(p.address, p.as_number) for p in c.list_bgp_peers()] == [(existing, 65000)]


def test_absent(url) -> None:
    ok(bgp_peer, {"address": TOR, "as_number": 65000, "datastore": url})
    out = ok(bgp_peer, {"address": TOR, "state": "absent", "datastore": url})
    assert out["changed"] is True and out["diff"]["after"] == {}
    assert ok(bgp_peer, {"address": TOR, "state": "absent", "datastore": url})["changed"] is False
    with client(url) as c:
        assert c.list_bgp_peers() == []


def test_what_a_peer_may_send(url) -> None:
    args = {"address": TOR, "as_number": 65000, "accept_default_route": True,
            "accept_nets": ["198.51.100.0/24"], "datastore": url}
    assert ok(bgp_peer, args)["changed"] is True
    assert ok(bgp_peer, args)["changed"] is False
    with client(url) as c:
        [peer] = c.list_bgp_peers()
    assert peer.accept_default_route and peer.accept_nets == ["198.51.100.0/24"]
    assert "accept_nets" in failed(bgp_peer, {**args, "accept_nets": ["0.0.0.0/0"]})
