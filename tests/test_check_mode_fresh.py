"""``ansible-playbook playbooks/site.yml --check --diff`` on a host nothing was deployed to.

The host is a node container of the lab's image (Debian with systemd and the Debian packages
the roles install, as ``calicoctl lab`` and molecule start them), reached with
community.docker's connection; it is both the etcd member and the only Calico host. A check
run there must succeed (rc 0, no failed task) and say what it cannot preview yet, since
what earlier tasks would install is not there (the virtualenv with calico_lib, the units):
"would install calico_lib into /opt/calico/venv (check mode; not yet present)". And it must
write nothing: not on the host (no /opt/calico, /etc/calico, /etc/etcd, units, sysctl
files) and not on the controller (no PKI folder beside the inventory).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from calico_lib.lab.docker import DOCKER_SOCKET
from calico_lib.lab.nodes import NODE_RUN_FLAGS
from tests.playbooks.harness import REPO, SITE, playbook

pytestmark = [pytest.mark.lab, pytest.mark.ansible, pytest.mark.slow]

#: what a real run writes on the host, and a check run must not
WRITTEN_BY_A_REAL_RUN = [
    "/opt/calico", "/etc/calico", "/etc/etcd", "/var/lib/calico", "/var/lib/etcd/calico",
    "/etc/systemd/system/calico-agent.service",
    "/etc/systemd/system/calico-docker-plugin.service",
    "/etc/sysctl.d/60-calico.conf", "/etc/tmpfiles.d/calico.conf", "/usr/local/bin/calicoctl",
]


def docker(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    env = dict(os.environ, DOCKER_HOST=f"unix://{DOCKER_SOCKET}")
    env.pop("DOCKER_CONTEXT", None)
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout,
                          check=check, env=env)


@pytest.fixture
def fresh_node() -> Iterator[tuple[str, str]]:
    """A booted node container of the lab's image: (its name, its address)."""
    if os.geteuid() != 0:
        pytest.fail("needs root (the machine's dockerd)", pytrace=False)
    # the lab's node image (built once, then cached by its tag; the tag is the last line)
    built = subprocess.run([sys.executable, "-m", "calico_lib.cli", "lab", "image"],
                           capture_output=True, text=True, timeout=1800, cwd=REPO)
    assert built.returncode == 0, built.stdout + built.stderr
    tag = built.stdout.strip().splitlines()[-1]
    name = f"calico-checkmode-{uuid.uuid4().hex[:8]}"
    docker("run", "-d", "--name", name, "--hostname", name, *NODE_RUN_FLAGS, tag)
    try:
        deadline = time.monotonic() + 180
        state = ""
        while time.monotonic() < deadline:
            state = docker("exec", name, "systemctl", "is-system-running",
                           check=False).stdout.strip()
            if state in ("running", "degraded"):
                break
            time.sleep(1)
        assert state in ("running", "degraded"), f"{name} did not boot: {state!r}"
        info = json.loads(docker("inspect", name).stdout)[0]
        address = next(net["IPAddress"] for net in info["NetworkSettings"]["Networks"].values()
                       if net.get("IPAddress"))
        yield name, address
    finally:
        docker("rm", "-f", "-v", name, check=False)


def test_site_check_diff_on_a_fresh_host_succeeds_and_writes_nothing(
        fresh_node: tuple[str, str], tmp_path: Path) -> None:
    name, address = fresh_node
    host = {"ansible_connection": "community.docker.docker",
            "ansible_docker_extra_args": f"-H unix://{DOCKER_SOCKET}",
            "ansible_python_interpreter": "/usr/bin/python3",
            "ansible_become": False,
            "calico_node_bgp_ipv4": address, "calico_etcd_address": address}
    group_vars = {
        "calico_policy_pools": [{"cidr": "10.200.0.0/16", "nat_outgoing": True}],
        "calico_policy_bgp": {"as_number": 64512, "node_to_node_mesh": True},
        "calico_policy_profiles": [{"name": "frontend", "default_rules": True,
                                    "docker_network": True}],
        "calico_docker_networks": [{"name": "frontend"}],
    }
    # in a folder of its own: the PKI role's folder is beside the inventory by default
    (tmp_path / "inventory").mkdir()
    inventory = tmp_path / "inventory" / "hosts.yml"
    inventory.write_text(json.dumps({"all": {
        "children": {"calico_nodes": {"hosts": {name: host}}, "etcd": {"hosts": {name: {}}}},
        "vars": group_vars}}, indent=2))

    run = playbook(SITE, inventory, "--check", "--diff", workdir=tmp_path, timeout=1200)
    run.check()  # rc 0, every host without a failed or unreachable task
    assert run.recap[name]["failed"] == 0, run.output[-6000:]
    # it says what it cannot preview, rather than failing or keeping quiet
    assert "would install calico_lib into /opt/calico/venv (check mode; not yet present)" \
        in run.output, run.output[-6000:]
    assert "would enable and start calico-agent.service (check mode" in run.output
    assert "would install calico-docker-plugin.service" in run.output
    assert "would write 1 pool(s), 1 profile(s), 0 BGP peer(s) and the global BGP settings" \
        in run.output
    # ... and still previews what it can: calico.conf's content, the networks
    assert "datastore = etcds://" + address + ":2379" in run.output, run.output[-6000:]

    # nothing written on the host ...
    present = [path for path in WRITTEN_BY_A_REAL_RUN
               if docker("exec", name, "test", "-e", path, check=False).returncode == 0]
    assert not present, f"a check run wrote {present} on {name}"
    # ... nor on the controller
    assert sorted(p.name for p in (tmp_path / "inventory").iterdir()) == ["hosts.yml"]
