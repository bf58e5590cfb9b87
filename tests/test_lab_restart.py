"""A lab node restarted with live workloads (the lifecycle issue's "done means").

A deployed two-node lab of its own, beside any other, in two racks (``--racks 2``, Calico's
"AS per rack" on an L3 fabric): ``calico-rstest-1`` (etcd) on ``calico-rstest-fabric-1``
(172.31.254.0/25) behind ``calico-rstest-tor-1`` (AS 65001), ``calico-rstest-2`` on
``calico-rstest-fabric-2`` (172.31.254.128/25) behind ``calico-rstest-tor-2`` (AS 65002),
the mesh off: each node's only BGP session is with its ToR, and the two ToRs peer with
each other, so every route between the nodes crosses both ToRs (and the restarted node's
routes must come back through them). State in a temporary folder, deployed with
playbooks/site.yml and the roles' defaults. Node 2 runs containers
with ``--restart always`` and without, on the lab's networks and on two ``--subnet``
networks that share one pool (rs-old, rs-new; the lab's pool without NAT). Then ``docker
restart calico-rstest-2``, and:

  1. no stale endpoints: every endpoint record of each node is a container its Docker lists;
  2. ``calicoctl ipam check`` (which cross-checks endpoints and allocations) is clean;
  3. the ``--restart always`` containers came back and are reachable from node 1's members
     of their networks, and still dropped from members of other networks;
  4. a new container can never inherit a dead container's group membership: a container on
     rs-new asking for the address a dead rs-old container had is refused while that
     endpoint's record exists, and once it gets it, rs-old's members cannot reach it and
     the address is in rs-new's set only, on both nodes.

Needs root and docker.io (the lab starts dockerd when it is not running); the node image is
the lab's (built once). About 4 minutes: most of it is the deploy.
"""

from __future__ import annotations

import json
import shlex
import time
from collections.abc import Iterator

import pytest

from calico_lib.lab import Lab
from calico_lib.lab.inventory import POOL4_ROUTED
from calico_lib.render import names
from tests import faultcheck
from tests.faultcheck import Probe
from tests.labs import deployed_lab

pytestmark = [pytest.mark.lab, pytest.mark.ansible]  # `lab up` deploys with site.yml

PREFIX = "calico-rstest"
SUBNET4 = "172.31.254.0/24"
SUBNET6 = "fd7a:ca1:1ae::/64"
PYTHON = "/opt/calico/venv/bin/python"
CALICOCTL = "/opt/calico/venv/bin/calicoctl"
#: the lab's pool without NAT (its network edge's): the ToRs accept only the inventory's
#: pools, as a real site's routers would
SHARED_POOL = POOL4_ROUTED
DEAD_ADDRESS = "10.201.7.10"
SERVE = "httpd -p 80 -h /www; trap 'exit 0' TERM; while true; do sleep 1; done"
NODE1, NODE2 = f"{PREFIX}-1", f"{PREFIX}-2"
#: (name, node, network, --restart always, extra docker run flags)
WORKLOADS = [
    ("always-fe", NODE2, "frontend", True, ()),
    ("always-old", NODE2, "rs-old", True, ()),
    ("gone-fe", NODE2, "frontend", False, ()),
    ("gone-old", NODE2, "rs-old", False, ("--ip", DEAD_ADDRESS)),
    ("peer-fe", NODE1, "frontend", False, ()),
    ("peer-be", NODE1, "backend", False, ()),
    ("peer-old", NODE1, "rs-old", False, ()),
    ("peer-new", NODE1, "rs-new", False, ()),
]


@pytest.fixture
def lab(tmp_path) -> Iterator[Lab]:
    with deployed_lab(tmp_path, nodes=2, prefix=PREFIX, subnet4=SUBNET4, subnet6=SUBNET6,
                      racks=2) as the_lab:
        yield the_lab


def sh(lab: Lab, node: str, script: str, timeout: float = 120) -> tuple[int, str]:
    proc = lab.node_exec(node, "sh", "-c", script, check=False, timeout=timeout)
    return proc.returncode, proc.stdout + proc.stderr


def facts(lab: Lab) -> dict[str, dict]:
    found = {}
    for node in (NODE1, NODE2):
        args = faultcheck.probe_args(node, "/run/calico/dataplane.lock", ipam=node == NODE1,
                                     grace=90, bird_socket="/run/bird/bird.ctl")
        proc = lab.node_exec(node, PYTHON, "-c", faultcheck.HOST_PROBE, args, check=False,
                             timeout=60)
        try:
            found[node] = json.loads(proc.stdout)
        except ValueError:
            found[node] = {"errors": [f"probe: {proc.stderr.strip()[-300:]}"]}
    return found


def address(found: dict[str, dict], name: str) -> str | None:
    return next((e["ipv4"] for f in found.values() for e in f.get("docker", [])
                 if e["container"] == name), None)


def probe(lab: Lab, probes: list[Probe]) -> dict[str, bool]:
    results: dict[str, bool] = {}
    for p in probes:
        script = f"docker exec {p.src} sh -c {shlex.quote(faultcheck.probe_script([p]))}"
        results.update(faultcheck.parse_probe_output(sh(lab, p.host, script)[1]))
    return results


def wait_right(lab: Lab, what: str, timeout: float = 90) -> faultcheck.Verdict:
    """Until both nodes' dataplane is right and their records clean."""
    # each node routes the other's containers through its own ToR (rack 1's is .2, rack
    # 2's .130): the routes crossed both ToRs
    fabric: dict[str, str | dict[str, str]] = {NODE1: {NODE2: "172.31.254.130"},
                                               NODE2: {NODE1: "172.31.254.2"}}
    started = time.monotonic()
    while True:
        found = facts(lab)
        v = faultcheck.verdict(found, fabric, hosts=[NODE1, NODE2])
        if v.converged and v.clean:
            print(f"{what}: right after {time.monotonic() - started:.1f} s")
            return v
        if time.monotonic() - started > timeout:
            pytest.fail(f"{what}: not right within {timeout} s:\n{v.problems()}",
                        pytrace=False)
        time.sleep(1)


@pytest.mark.slow
def test_node_restart_with_live_workloads(lab: Lab) -> None:
    for node in (NODE1, NODE2):
        for net in ("rs-old", "rs-new"):
            code, out = sh(lab, node, "docker network create -d calico --ipam-driver "
                                      f"calico-ipam --subnet {SHARED_POOL} {net}")
            assert code == 0, out
    for name, node, net, always, extra in WORKLOADS:
        flags = " ".join(("--restart always" if always else "", *extra))
        code, out = sh(lab, node, f"docker run -d --name {name} --net {net} {flags} busybox "
                                  f"sh -c {shlex.quote(SERVE)}")
        assert code == 0, out
    wait_right(lab, "before the restart")
    before = facts(lab)
    assert address(before, "gone-old") == DEAD_ADDRESS
    dead_endpoint = next(e["id"] for e in before[NODE2]["docker"]
                         if e["container"] == "gone-old")

    lab.docker("restart", NODE2, timeout=180)
    restarted = time.monotonic()
    lab.wait_booted([NODE2])
    # 4, first half: from the boot on, a container on rs-new asks for the dead rs-old
    # container's address; it is refused ("already assigned") while the dead endpoint's
    # record holds it, and given once the record is gone, never to two at once
    refusals = 0
    while True:
        code, out = sh(lab, NODE2, "docker run -d --name new-x --net rs-new --ip "
                                   f"{DEAD_ADDRESS} busybox sh -c {shlex.quote(SERVE)}")
        if code == 0:
            break
        assert "already assigned" in out, out
        refusals += 1
        sh(lab, NODE2, "docker rm -f new-x")
        assert time.monotonic() - restarted < 120, f"{DEAD_ADDRESS} never became free"
        time.sleep(1)
    print(f"{DEAD_ADDRESS} given to new-x {time.monotonic() - restarted:.1f} s after the "
          f"restart ({refusals} refusals before)")
    after = wait_right(lab, "after the restart")
    print(f"right {time.monotonic() - restarted:.1f} s after `docker restart`")

    # 1. no stale endpoints (and nothing leaked, no duplicate, no orphan veth)
    assert after.stale == [] and after.leaked == [] and after.duplicates == []
    found = facts(lab)
    assert dead_endpoint not in {r["id"] for r in found[NODE2]["endpoints"]}
    # 2. ipam check with the endpoint cross-check
    code, out = sh(lab, NODE1, f"{CALICOCTL} ipam check")
    assert code == 0 and "IPAM is consistent" in out, out
    # 3. the --restart always containers are back, reachable and still firewalled
    running = {e["container"] for f in found.values() for e in f.get("docker", [])}
    assert {"always-fe", "always-old"} <= running and not {"gone-fe", "gone-old"} & running
    fe, old = address(found, "always-fe"), address(found, "always-old")
    assert fe and old
    expected = []
    for src, dst, ok in (("peer-fe", fe, True), ("peer-old", old, True),
                         ("peer-be", fe, False), ("peer-new", old, False),
                         ("peer-old", fe, False), ("peer-fe", old, False)):
        for kind in ("icmp", "tcp/80"):
            expected.append(Probe(f"p{len(expected)}", NODE1, src, dst, kind, ok))
    # 4, second half: the address carries nothing of its old group
    for kind, src, ok in (("tcp/80", "peer-new", True), ("icmp", "peer-new", True),
                          ("tcp/80", "peer-old", False), ("icmp", "peer-old", False)):
        expected.append(Probe(f"p{len(expected)}", NODE1, src, DEAD_ADDRESS, kind, ok))
    results = probe(lab, expected)
    wrong = [p for p in expected if results.get(p.key) != p.expected]
    assert not wrong, wrong
    for node in (NODE1, NODE2):
        sets = found[node]["sets"]
        assert DEAD_ADDRESS not in sets.get(names.tag_set("rs-old", 4), []), node
        assert DEAD_ADDRESS in sets.get(names.tag_set("rs-new", 4), []), node
