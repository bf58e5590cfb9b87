"""calico-agent as a daemon, in a network namespace, on both datastores: it follows the
datastore (watch), repairs tampering on its periodic resync, and stops cleanly."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import calico_lib
from calico_lib import Endpoint, IPPool
from tests import processes
from tests.etcd_server import EtcdServer

REPO = Path(__file__).resolve().parent.parent


def sh(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout


def wait_for(what: str, predicate: Callable[[], bool], timeout: float = 10.0) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if predicate():
            return time.monotonic() - start
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@pytest.fixture(params=["sqlite", pytest.param("etcd", marks=pytest.mark.etcd)])
def agent_datastore(request, host, tmp_path) -> Iterator[str]:
    """A datastore the agent in the namespace can reach: a file, or etcd on the uplink."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/calico.db"
        return
    with EtcdServer(host=host["outside"]) as server:
        yield server.url


def start_agent(host: dict[str, str], url: str, log: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.Popen(
        ["ip", "netns", "exec", host["ns"], sys.executable, "-m", "calico_lib.agent",
         "--datastore", url, "--hostname", "agent-host", "--lock-file", host["lock"],
         "--resync-interval", "2", "--debounce", "0.05"],
        env=env, stdout=subprocess.DEVNULL, stderr=log.open("w"))


def routes(ns: str) -> str:
    return sh("ip", "-n", ns, "route", "show", "proto", "80")


@pytest.mark.netns
def test_agent_follows_datastore_and_repairs(host, agent_datastore, tmp_path) -> None:
    datastore_url = agent_datastore
    with calico_lib.connect(datastore_url) as client:
        client.add_pool(IPPool("10.77.0.0/16"))
        client.add_profile("web")
        log = tmp_path / "agent.log"
        agent = start_agent(host, datastore_url, log)
        try:
            wait_for("the first reconcile", lambda: "revision" in log.read_text())
            assert "10.77.0.5" not in routes(host["ns"])

            client.add_endpoint(Endpoint("ep1", "agent-host", host["veth"],
                                         ipv4_nets=["10.77.0.5"], profiles=["web"]),
                                assign_addresses=True)
            took = wait_for("the endpoint's route", lambda: "10.77.0.5" in routes(host["ns"]))
            assert took < 5.0  # a watch, not the 2 s resync, brings it (loose bound)
            chain = f"cali-to-{host['veth']}"
            before = sh("ip", "netns", "exec", host["ns"], "iptables", "-S", chain)

            # Tampering: a rule deleted by hand comes back with the periodic resync.
            sh("ip", "netns", "exec", host["ns"], "iptables", "-D", chain, "1")
            assert sh("ip", "netns", "exec", host["ns"], "iptables", "-S", chain) != before
            wait_for("the resync to restore the chain", lambda: sh(
                "ip", "netns", "exec", host["ns"], "iptables", "-S", chain) == before)
            sh("ip", "-n", host["ns"], "route", "del", "10.77.0.5/32")
            wait_for("the resync to restore the route",
                     lambda: "10.77.0.5" in routes(host["ns"]))

            client.remove_endpoint("agent-host", "ep1", release_addresses=True)
            wait_for("the route to go", lambda: "10.77.0.5" not in routes(host["ns"]))
            wait_for("a resync that finds nothing to do", lambda: log.read_text().rstrip()
                     .splitlines()[-1].split(": ", 1)[-1].startswith("no change"))
        finally:
            code = processes.stop(agent)
        assert code == 0, log.read_text()


@pytest.mark.netns
def test_agent_once_reports_bad_datastore(host) -> None:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run(
        ["ip", "netns", "exec", host["ns"], sys.executable, "-m", "calico_lib.agent",
         "--once", "--datastore", "etcd://127.0.0.1:1", "--hostname", "h",
         "--lock-file", host["lock"]], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert "etcd unreachable" in proc.stderr and proc.stderr.count("\n") == 1


def test_agent_retries_a_datastore_that_does_not_answer_every_2_s() -> None:
    """(fault campaign) After a 30 s etcd outage the agent's back-off had grown to 16 s:
    the host caught up that long after etcd was back. A datastore error is retried every
    2 s; other failures still back off to 30 s."""
    from calico_lib.agent import Agent
    from calico_lib.errors import CalicoError, DatastoreUnavailable

    agent = Agent.__new__(Agent)
    agent.stopping = False
    failures: list[Exception] = [DatastoreUnavailable("etcd: no endpoint answers")] * 6 + \
        [CalicoError("ipsets: restore failed")] * 6
    sleeps: list[float] = []

    def reconcile_once(verify: bool = True) -> int:
        if failures:
            raise failures.pop(0)
        agent.stopping = True
        return 1

    agent.reconcile_once = reconcile_once  # type: ignore[method-assign]
    agent._sleep = sleeps.append  # type: ignore[method-assign]
    agent._wait_for_change = lambda revision: "change"  # type: ignore[method-assign]
    agent.run()
    assert sleeps == [1, 2, 2, 2, 2, 2, 2, 4, 8, 16, 30, 30]
