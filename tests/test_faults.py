"""The fault campaign, short (bench/faults.py runs the full one on a lab of its own).

One host: ``DockerLab`` (dockerd 20.10 in a network namespace, the plugin serving
/run/docker/plugins) on a throwaway etcd reached over a veth from the namespace, and a
``calico-agent`` daemon in the namespace. Three resident containers (two on one network, one
on another, all serving tcp/80, ``--restart always``) carry the connectivity matrix. Each
fault is followed by check rounds (``tests.faultcheck``) until the host has converged; the
test asserts 0 leaked, 0 duplicate, 0 stale addresses, no orphan interface and a bounded
convergence time (generous: the bench prints the real figures). The plugin syncs with Docker
every second with a 5 s grace here, as in test_docker_e2e.

Faults: kill -9 of the plugin during 30 create/delete cycles; dockerd restarted with running
containers; etcd paused (SIGSTOP) during creates and deletes, with the agent restarted while
it is away; kill -9 of the agent during policy changes.

Needs root, docker.io, busybox-static, etcd, iproute2, iptables, ipset.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import pytest

from calico_lib import Profile, Rule
from tests import dockerlab, faultcheck
from tests.dockerlab import DockerLab, python_env, run
from tests.etcd_server import EtcdServer
from tests.faultcheck import Resident

pytestmark = [pytest.mark.docker, pytest.mark.etcd]

NET_A, NET_B = "fault-a", "fault-b"
SYNC_INTERVAL, SYNC_GRACE = 1.0, 5.0
#: the bound asserted on convergence (the bench's goal is 5 s on a lab's defaults)
CONVERGE_WITHIN = 30.0
SERVE = ("sh", "-c", "trap 'exit 0' TERM; httpd -p 80 -h /www; while true; do sleep 1; done")
IDLE = ("sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done")
RESIDENTS = (Resident("res-a1", "faulthost", NET_A), Resident("res-a2", "faulthost", NET_A),
             Resident("res-b1", "faulthost", NET_B))
#: the policy fault's rule: fault-b may call fault-a on tcp/80
OPEN_80 = Rule(action="allow", protocol="tcp", dst_ports=[80], src_tag=NET_B)


class FaultLab(DockerLab):
    """A DockerLab whose namespace reaches the test machine over a veth (etcd listens on
    the machine's end), with a calico-agent daemon in the namespace."""

    def __init__(self, etcd: EtcdServer, link: tuple[str, str, str]) -> None:
        super().__init__(hostname="faulthost", pools=["10.70.0.0/16"],
                         sync_interval=SYNC_INTERVAL, sync_grace=SYNC_GRACE,
                         datastore_url=etcd.url)
        self.link_name, self.outside, self.inside = link
        self.agent: subprocess.Popen[bytes] | None = None

    def _make_namespace(self) -> None:
        super()._make_namespace()
        run(["ip", "link", "set", f"{self.link_name}p", "netns", self.ns])
        run(["ip", "-n", self.ns, "addr", "add", f"{self.inside}/30", "dev",
             f"{self.link_name}p"])
        run(["ip", "-n", self.ns, "link", "set", f"{self.link_name}p", "up"])

    def start_agent(self) -> None:
        with open(f"{self.workdir}/agent.log", "ab") as log:
            self.agent = subprocess.Popen(
                ["ip", "netns", "exec", self.ns, sys.executable, "-m", "calico_lib.agent",
                 "--datastore", self.datastore_url, "--hostname", self.hostname,
                 "--lock-file", self.lock_file, "--bird-config", "none",
                 "--log-level", "DEBUG"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=python_env(),
                start_new_session=True)

    def kill_agent(self) -> None:
        if self.agent is not None and self.agent.poll() is None:
            self.agent.send_signal(signal.SIGKILL)
            self.agent.wait(10)

    def close(self) -> None:
        try:
            self.kill_agent()
        finally:
            super().close()

    # ------------------------------------------------------------------ the checks

    def facts(self) -> dict[str, dict]:
        args = faultcheck.probe_args(self.hostname, self.lock_file,
                                     datastore=self.datastore_url,
                                     docker_socket=self.docker_socket, ipam=True,
                                     grace=SYNC_GRACE + 2 * SYNC_INTERVAL + 2)
        proc = run(["ip", "netns", "exec", self.ns, sys.executable, "-c",
                    faultcheck.HOST_PROBE, args], timeout=60, env=python_env(), check=False)
        try:
            return {self.hostname: json.loads(proc.stdout)}
        except ValueError:
            return {self.hostname: {"errors": [f"probe: {proc.stderr.strip()[-300:]}"]}}

    def check(self, allowed: tuple[tuple[str, str, str], ...] = ()) -> faultcheck.Verdict:
        facts = self.facts()
        probes = faultcheck.matrix(RESIDENTS, facts, allowed)

        def from_one(src: str) -> dict[str, bool]:
            mine = [p for p in probes if p.src == src]
            out = self.exec(src, "sh", "-c", faultcheck.probe_script(mine), timeout=30)
            return faultcheck.parse_probe_output(out.stdout)
        results: dict[str, bool] = {}
        with ThreadPoolExecutor(max_workers=len(RESIDENTS)) as pool:
            for part in pool.map(from_one, sorted({p.src for p in probes})):
                results.update(part)
        return faultcheck.verdict(facts, {}, results, probes)

    def converge(self, what: str, since: float,
                 allowed: tuple[tuple[str, str, str], ...] = ()) -> float:
        """Check rounds until the host is right and its records clean; the seconds from
        ``since`` (the end of the fault) to the end of the first round that found the
        dataplane right. Fails with what is wrong after CONVERGE_WITHIN + 30 s."""
        converged_at = None
        while True:
            v = self.check(allowed)
            now = time.monotonic()
            if v.converged and converged_at is None:
                converged_at = now
            if v.converged and v.clean:
                break
            if now - since > CONVERGE_WITHIN + 30:
                pytest.fail(f"{what}: not right {now - since:.0f} s after the fault:\n"
                            f"{v.problems()}\n{self.tail('plugin.log', 30)}\n"
                            f"{self.tail('agent.log', 15)}", pytrace=False)
            time.sleep(0.2)
        took = (converged_at or now) - since
        print(f"{what}: converged {took:.1f} s after the fault, clean "
              f"{now - since:.1f} s after")
        assert took <= CONVERGE_WITHIN, f"{what}: converged only after {took:.1f} s"
        return took


@pytest.fixture(scope="module")
def lab() -> Iterator[FaultLab]:
    reason = dockerlab.missing_requirements()
    if reason:
        pytest.fail(reason, pytrace=False)
    tag = uuid.uuid4().hex[:6]
    name = f"calf{tag}"
    block = 4 * random.randrange(1, 60)  # a /30 of its own (conftest's hosts use .0-.249)
    outside, inside = f"198.19.253.{block + 1}", f"198.19.253.{block + 2}"
    run(["ip", "link", "add", name, "type", "veth", "peer", "name", f"{name}p"])
    etcd = None
    the_lab = None
    try:
        run(["ip", "addr", "add", f"{outside}/30", "dev", name])
        run(["ip", "link", "set", name, "up"])
        etcd = EtcdServer(host=outside).start()
        the_lab = FaultLab(etcd, (name, outside, inside))
        the_lab.__enter__()
        the_lab.etcd = etcd  # type: ignore[attr-defined]
        the_lab.start_agent()
        the_lab.network(NET_A)
        the_lab.network(NET_B)
        for r in RESIDENTS:
            the_lab.run(r.name, r.network, "--restart", "always", command=SERVE)
        yield the_lab
    finally:
        if the_lab is not None:
            the_lab.close()
        if etcd is not None:
            etcd.stop()
        subprocess.run(["ip", "link", "del", name], capture_output=True, check=False)


@pytest.fixture(autouse=True)
def extra_containers_go(lab: FaultLab) -> Iterator[None]:
    """Each test leaves only the residents (started again if a fault stopped them)."""
    yield
    keep = {r.name for r in RESIDENTS}
    names = lab.docker("ps", "-a", "--format", "{{.Names}}", check=False).stdout.split()
    if extra := [n for n in names if n not in keep]:
        lab.docker("rm", "-f", *extra, check=False, timeout=120)
    for r in RESIDENTS:
        if r.name not in names:
            lab.run(r.name, r.network, "--restart", "always", command=SERVE)


def background(fn: Callable[[], None]) -> threading.Thread:
    thread = threading.Thread(target=fn, daemon=True)
    thread.start()
    return thread


def test_starts_right(lab: FaultLab) -> None:
    lab.converge("start", time.monotonic())


def test_plugin_killed_during_create_delete_cycles(lab: FaultLab) -> None:
    cycles, failed, kills = 30, [], 0
    done = threading.Event()

    def cycle() -> None:
        try:
            for i in range(cycles):
                name = f"cyc{i}"
                made = lab.run(name, (NET_A, NET_B)[i % 2], command=IDLE, check=False)
                if made.returncode:
                    failed.append(made.stderr.strip())
                lab.docker("rm", "-f", name, check=False, timeout=120)
        finally:
            done.set()

    worker = background(cycle)
    rng = random.Random(7)
    while not done.wait(rng.uniform(0.5, 2.0)):
        lab.kill_plugin(signal.SIGKILL)
        kills += 1
        lab.start_plugin()
    worker.join()
    since = time.monotonic()
    print(f"{cycles} cycles, {kills} kills, {len(failed)} creates failed: {failed[:3]}")
    assert kills >= 5
    lab.converge("plugin kill -9", since)


def test_dockerd_restart_with_running_containers(lab: FaultLab) -> None:
    lab.run("once1", NET_A, command=IDLE)
    lab.run("once2", NET_B, command=IDLE)
    lab.restart_dockerd()
    since = time.monotonic()
    assert "running" not in lab.inspect("once1")["State"]["Status"]
    lab.converge("dockerd restart", since)


def test_etcd_paused_during_create_delete(lab: FaultLab) -> None:
    """Creates fail with a clear error, traffic keeps flowing, the agent restarted while
    etcd is away keeps running, and everything converges after."""
    lab.run("before1", NET_A, command=IDLE)
    lab.run("before2", NET_B, command=IDLE)
    a2 = lab.address("res-a2", NET_A)
    lab.etcd.pause()  # type: ignore[attr-defined]
    paused = time.monotonic()
    try:
        made = lab.run("during", NET_A, command=IDLE, check=False)
        lab.docker("rm", "-f", "before1", "before2", check=False, timeout=120)
        lab.kill_agent()
        lab.start_agent()
        assert lab.ping("res-a1", a2), "existing traffic stops while etcd is away"
        time.sleep(max(0.0, 8 - (time.monotonic() - paused)))
        assert lab.agent is not None and lab.agent.poll() is None, lab.tail("agent.log")
    finally:
        lab.etcd.resume()  # type: ignore[attr-defined]
    since = time.monotonic()
    print(f"create while etcd was paused: {made.stderr.strip()}")
    assert made.returncode != 0
    assert "etcd" in made.stderr or "datastore" in made.stderr, made.stderr
    lab.converge("etcd paused", since)


def test_agent_killed_during_policy_changes(lab: FaultLab) -> None:
    changes, kills = 20, 0
    done = threading.Event()

    def change() -> None:
        try:
            with lab.client() as client:
                base = Profile.with_default_rules(NET_A, docker_network=True)
                for i in range(changes):
                    rules = base.inbound_rules + ([OPEN_80] if i % 2 == 1 else [])
                    client.put_profile(replace(base, inbound_rules=rules))
                    time.sleep(random.uniform(0.05, 0.4))
        finally:
            done.set()

    worker = background(change)
    while not done.wait(random.uniform(0.2, 0.8)):
        lab.kill_agent()
        kills += 1
        lab.start_agent()
    worker.join()
    since = time.monotonic()
    assert kills >= 3
    try:
        lab.converge("agent kill -9", since, allowed=((NET_B, NET_A, "tcp/80"),))
    finally:
        with lab.client() as client:
            client.put_profile(Profile.with_default_rules(NET_A, docker_network=True))
    lab.converge("policy back", time.monotonic())


def test_nothing_crashed(lab: FaultLab) -> None:
    for name in ("plugin.log", "agent.log"):
        text = lab.log(name)
        assert "Traceback" not in text and " crashed" not in text, lab.tail(name, 60)
