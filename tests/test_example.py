"""docs/example.py runs as a user would run it, on both backends, and can be run again."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import netaddr

import calico_lib

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "docs" / "example.py"


def run_example(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if k != "CALICO_DATASTORE"}
    full_env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(ROOT), full_env.get("PYTHONPATH")]))
    full_env.update(env)
    return subprocess.run([sys.executable, str(EXAMPLE), *args], cwd=ROOT, env=full_env,
                          capture_output=True, text=True, timeout=60)


def test_example(datastore_url: str) -> None:
    # First run: the URL from the environment (the script's default); second: from argv.
    first = run_example(CALICO_DATASTORE=datastore_url)
    assert first.returncode == 0, first
    assert first.stderr == "", first
    assert "IPAM is consistent" in first.stdout
    assert "added" in first.stdout

    again = run_example(datastore_url)
    assert again.returncode == 0, again
    assert "already there" in again.stdout and "IPAM is consistent" in again.stdout

    with calico_lib.connect(datastore_url) as client:
        [endpoint] = client.list_endpoints()
        assert (endpoint.id, endpoint.host, endpoint.profiles) == (
            "example-web-1", "host-1", ["web"])
        assert len(endpoint.ipv4_nets) == len(endpoint.ipv6_nets) == 1
        assert netaddr.IPNetwork(endpoint.ipv4_nets[0]) in netaddr.IPNetwork("10.65.0.0/16")
        assert netaddr.IPNetwork(endpoint.ipv6_nets[0]) in netaddr.IPNetwork("fd00:65::/64")
        # Re-running reused the handle's addresses rather than taking new ones.
        assert sorted(client.ipam.handle_addresses("example-web-1")) == sorted(
            endpoint.addresses)
        assert sum(u["allocated"] for u in client.ipam.usage()) == 2

        profile = client.get_profile("web")
        assert [r.to_dict() for r in profile.inbound_rules] == [
            {"action": "allow", "src_tag": "web"},
            {"action": "allow", "protocol": "tcp", "src_net": ["192.0.2.0/24"],
             "dst_ports": [80]}]
        assert [p.cidr for p in client.list_pools()] == ["10.65.0.0/16", "fd00:65::/64"]
        assert [n.name for n in client.list_nodes()] == ["host-1"]
        assert [(p.address, p.node) for p in client.list_bgp_peers()] == [("192.0.2.1", None)]
        assert client.ipam.check() == []
