from __future__ import annotations

from ansible_collections.calico.docker.plugins.modules import calico_info
from ansible_collections.calico.docker.tests.unit.plugins.modules.helpers import client, failed, ok
from calico_lib import BGPPeer, Endpoint, IPPool, Node, Profile, keys
from calico_lib.snapshot import load_snapshot


def revision(url: str) -> int:
    with client(url) as c:
        return load_snapshot(c.store, "host-1").revision


def test_facts(url, tmp_path) -> None:
    with client(url) as c:
        c.add_pool(IPPool("10.65.0.0/16", nat_outgoing=True))
        c.add_profile("web")
        c.add_node(Node("host-1", ipv4="10.0.0.1"))
        c.add_bgp_peer(BGPPeer("10.0.0.254", 65000, password="tor-secret"))
        c.add_endpoint(Endpoint("e1", "host-1", "cali0000000e1", ipv4_nets=["10.65.0.1"],
                                profiles=["web"]), assign_addresses=True)
        c.add_endpoint(Endpoint("e2", "host-2", "cali0000000e2", profiles=["web"]))
    before = revision(url)
    out = ok(calico_info, {"hostname": "host-1", "bird_socket": str(tmp_path / "bird.ctl"),
                           "datastore": url})
    assert out["changed"] is False
    assert out["hostname"] == "host-1"
    assert [p["cidr"] for p in out["pools"]] == ["10.65.0.0/16"]
    assert [p["name"] for p in out["profiles"]] == ["web"]
    assert [n["name"] for n in out["nodes"]] == ["host-1"]
    assert out["bgp_peers"] == [{"address": "10.0.0.254", "as_number": 65000, "node": None,
                                 "password": "********"}]
    assert "tor-secret" not in repr(out)
    assert out["bgp_config"] == {"as_number": 64512, "node_to_node_mesh": True}
    assert [e["id"] for e in out["endpoints"]] == ["e1"]  # this host's only
    assert out["ipam_ok"] is True and out["ipam_problems"] == []
    assert out["bgp_sessions"] == []
    assert len(out["notes"]) == 1 and "does not exist" in out["notes"][0]
    assert revision(url) == before  # nothing written


def test_ipam_problems_are_reported(url, tmp_path) -> None:
    with client(url) as c:
        c.add_pool(IPPool("10.65.0.0/16"))
        c.ipam.auto_assign("host-1", "h1", num_ipv4=1)
        c.store.delete(keys.pool("10.65.0.0/16"))  # a block is left outside every pool
    out = ok(calico_info, {"hostname": "host-1", "bird_socket": str(tmp_path / "bird.ctl"),
                           "datastore": url}, check=True)
    assert out["ipam_ok"] is False
    assert "outside-pool" in {p["kind"] for p in out["ipam_problems"]}


def test_bad_arguments(url) -> None:
    assert failed(calico_info, {"hostname": "no such host!", "datastore": url}
                  ).startswith("hostname:")
    assert "datastore" in failed(calico_info, {"datastore": "sqlite:///"})


def test_profile_rules_are_returned_as_stored(url) -> None:
    with client(url) as c:
        c.add_profile(Profile("bare"))
    out = ok(calico_info, {"hostname": "host-1", "datastore": url})
    assert out["profiles"][0]["inbound_rules"] == []


def test_explain_flows(url, tmp_path) -> None:
    with client(url) as c:
        c.add_pool(IPPool("10.65.0.0/16"))
        c.add_profile("web")
        c.add_profile(Profile("db", tags=["db"], inbound_rules=[
            {"action": "allow", "protocol": "tcp", "src_tag": "web", "dst_ports": [5432]}]))
        c.add_endpoint(Endpoint("e1", "host-1", "cali0000000e1", ipv4_nets=["10.65.0.1"],
                                profiles=["web"]))
        c.add_endpoint(Endpoint("e2", "host-2", "cali0000000e2", ipv4_nets=["10.65.0.2"],
                                profiles=["db"]))
    out = ok(calico_info, {"hostname": "host-1", "bird_socket": str(tmp_path / "bird.ctl"),
                           "datastore": url, "explain": [
                               {"from": "e1", "to": "e2", "port": 5432},
                               {"from": "10.65.0.1", "to": "10.65.0.2", "protocol": "udp",
                                "port": 5432}]})
    allowed, dropped = out["explanations"]
    assert allowed["verdict"] == "allowed" and allowed["allowed"] is True
    decided = [s for s in allowed["steps"] if s["profile"] == "db"]
    assert decided[0]["rule_number"] == 1 and decided[0]["rule"]["dst_ports"] == [5432]
    assert dropped["verdict"] == "dropped"
    assert dropped["steps"][-1]["stage"] == "endpoint"
    assert failed(calico_info, {"datastore": url, "explain": [{"from": "e1", "to": "e9"}]}
                  ).startswith("to:")
