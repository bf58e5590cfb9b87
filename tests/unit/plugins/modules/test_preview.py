"""Check mode of the modules that write policy: the change is made on a draft of the
datastore, the result says what each host's dataplane would do, nothing is written."""

from __future__ import annotations

import pytest

import calico_lib
from ansible_collections.calico.docker.plugins.modules import (
    bgp_config,
    bgp_peer,
    ip_pool,
    node,
    profile,
)
from ansible_collections.calico.docker.tests.unit.plugins.modules.helpers import (
    client,
    failed,
    ok,
    three_hosts,
)

FRONTEND_ON_80 = {"action": "allow", "protocol": "tcp", "src_tag": "frontend",
                  "dst_ports": [80]}


@pytest.fixture
def cluster(url) -> str:
    """Three hosts; a frontend container on h1 and a backend one on h2."""
    with client(url) as c:
        three_hosts(c)
    return url


def stored(url: str) -> dict[str, str]:
    with client(url) as c:
        return {kv.key: kv.value for kv in c.store.list(calico_lib.keys.ROOT)}


def test_a_rule_previewed_per_host_and_nothing_written(cluster) -> None:
    before = stored(cluster)
    rules = [{"action": "allow", "src_tag": "backend"}, FRONTEND_ON_80]
    out = ok(profile, {"name": "backend", "inbound_rules": rules, "datastore": cluster},
             check=True)
    assert out["changed"] is True
    plan = out["dataplane"]
    assert plan["summary"] == "1 host: +4 rules, -0; ipset members +2, -0; 2 hosts unaffected"
    assert list(plan["hosts"]) == ["h2"]
    v4 = next(t for t in plan["hosts"]["h2"]["iptables"] if t["ip_version"] == 4)
    assert any(line.startswith("-A cali-pi-backend -p tcp -m set --match-set "
                               "cali4-t-frontend src") and "--dports 80" in line
               for line in v4["added"]), v4
    # the diff shows the object's before/after and, below, the hosts' lines
    prepared = out["diff"]["prepared"]
    assert prepared.startswith("dataplane: 1 host: +4 rules, -0; ipset members +2, -0; 2 hosts "
                               "unaffected\nh2:\n")
    assert "    + -A cali-pi-backend -p tcp" in prepared
    assert out["diff"]["after"]["inbound_rules"][1]["dst_ports"] == [80]
    assert stored(cluster) == before
    # the real run writes what was previewed, and then there is nothing left to preview
    ok(profile, {"name": "backend", "inbound_rules": rules, "datastore": cluster})
    again = ok(profile, {"name": "backend", "inbound_rules": rules, "datastore": cluster},
               check=True)
    assert again["changed"] is False
    assert again["dataplane"] == {"summary": "no host changes; 3 hosts unaffected",
                                  "hosts": {}}


def test_without_diff_mode_the_plan_is_returned_but_not_drawn(cluster) -> None:
    out = ok(profile, {"name": "backend", "inbound_rules": [FRONTEND_ON_80],
                       "datastore": cluster}, check=True, diff=False)
    assert "prepared" not in out["diff"] and out["dataplane"]["hosts"]


def test_a_real_run_returns_no_plan(cluster) -> None:
    out = ok(profile, {"name": "backend", "inbound_rules": [FRONTEND_ON_80],
                       "datastore": cluster})
    assert "dataplane" not in out and "prepared" not in out["diff"]


def test_check_mode_refuses_what_the_real_run_refuses(cluster) -> None:
    """Validation that needs the datastore runs in check mode too (it used to pass)."""
    before = stored(cluster)
    msg = failed(ip_pool, {"cidr": "10.65.128.0/17", "datastore": cluster}, check=True)
    assert msg.startswith("cidr: 10.65.128.0/17 overlaps"), msg
    msg = failed(profile, {"name": "backend", "state": "absent", "datastore": cluster},
                 check=True)
    assert msg.startswith("name: profile backend is used by endpoint(s)"), msg
    assert stored(cluster) == before


def test_pools_show_sets_and_bird(cluster) -> None:
    with client(cluster) as c:
        c.ipam.auto_assign("h1", "fe1", num_ipv4=1)
    out = ok(ip_pool, {"cidr": "10.66.0.0/16", "nat_outgoing": True, "datastore": cluster},
             check=True)
    h1 = out["dataplane"]["hosts"]["h1"]
    assert h1["ipsets"]["cali4-masq-pools"] == {"added": ["10.66.0.0/16"], "removed": [],
                                                "set": "members"}
    assert "10.66.0.0/16" in h1["bird"]
    assert "ipset cali4-masq-pools: +10.66.0.0/16" in out["diff"]["prepared"]


def test_bgp_modules_show_bird_lines_without_passwords(cluster) -> None:
    before = stored(cluster)
    out = ok(bgp_peer, {"address": "198.18.0.254", "as_number": 65001,
                        "password": "s3cret-pass", "datastore": cluster}, check=True)
    assert out["dataplane"]["summary"] == ("3 hosts: +0 rules, -0; ipset members +3, -0; "
                                           "BIRD configuration on 3 hosts")
    assert "protocol bgp Global_198_18_0_254" in out["diff"]["prepared"]
    assert "s3cret" not in str(out)
    out = ok(bgp_config, {"as_number": 64600, "datastore": cluster}, check=True)
    assert "+  neighbor 198.18.0.1 as 64600;" in out["dataplane"]["hosts"]["h3"]["bird"]
    out = ok(node, {"name": "h3", "ipv4": "198.18.0.33", "datastore": cluster}, check=True)
    # the other hosts' mesh sessions move to the new address; h3's own config keeps its peers
    assert set(out["dataplane"]["hosts"]) >= {"h1", "h2"}
    assert "198_18_0_33" in out["dataplane"]["hosts"]["h1"]["bird"]
    assert stored(cluster) == before
