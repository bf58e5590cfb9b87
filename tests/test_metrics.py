"""Prometheus metrics (issue 14): the real agent and the real plugin, each in a network
namespace, scraped over HTTP; every metric is there and moves when its event happens.

The agent's errors are real kernel refusals, not fakes: a rule of someone else's that
uses a set or a chain of ours keeps the kernel from destroying it (``ipset restore``
and ``iptables-restore`` fail) until that rule goes.

Needs root, iproute2, iptables and ipset.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

import calico_lib
from calico_lib import Endpoint, IPPool
from calico_lib.errors import ValidationError
from calico_lib.metrics import parse_address
from tests.dockerlab import post
from tests.processes import stop

REPO = Path(__file__).resolve().parent.parent
HOSTNAME = "metrics-host"
POOL4, POOL6 = "10.78.0.0/16", "fd00:78::/64"

AGENT_METRICS = [
    "calico_agent_apply_time_seconds_count",
    "calico_agent_apply_time_seconds_sum",
    "calico_agent_iptables_restore_calls_total",
    "calico_agent_iptables_restore_errors_total",
    "calico_agent_ipset_calls_total",
    "calico_agent_ipset_errors_total",
    "calico_agent_iptables_rules",
    "calico_agent_iptables_chains",
    "calico_agent_active_local_endpoints",
    "calico_agent_active_local_profiles",
    "calico_agent_resyncs_started_total",
]
PLUGIN_METRICS = [
    "calico_plugin_request_duration_seconds_count",
    "calico_plugin_request_errors_total",
    "calico_ipam_assignments_total",
    "calico_ipam_assignment_failures_total",
]

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


# ------------------------------------------------------------------------------ helpers


def sh(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout


def in_ns(ns: str, *argv: str) -> str:
    return sh("ip", "netns", "exec", ns, *argv)


def scrape(address: str) -> Samples:
    """Every sample at http://address/metrics: (name, labels) -> value."""
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as reply:
        assert reply.status == 200
        text = reply.read().decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels`` (0 if none)."""
    want = set(labels.items())
    return sum(v for (n, have), v in samples.items() if n == name and want <= have)


def names(samples: Samples) -> set[str]:
    return {name for name, _ in samples}


def wait_for(what: str, predicate: Callable[[], bool], timeout: float = 30.0,
             log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}"
                         + (f"\n{log.read_text()}" if log is not None else ""))


def python_env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(REPO))


# ------------------------------------------------------------------------------ address


@pytest.mark.parametrize("address, problem", [
    ("9091", "has no port"),
    ("127.0.0.1", "has no port"),
    (":9091", "has no port"),
    ("127.0.0.1:", "has no port"),
    ("::1:9091", "put an IPv6 address in brackets"),
    ("[127.0.0.1]:9091", "is not an IPv6 address"),
    ("[nonsense]:9091", "is not an IPv6 address"),
    ("bad host:9091", "is not an IP address or host name"),
    ("127.0.0.1:http", "is not a number from 1 to 65535"),
    ("127.0.0.1:0", "is not a number from 1 to 65535"),
    ("127.0.0.1:65536", "is not a number from 1 to 65535"),
])
def test_a_bad_address_is_refused_naming_the_option(address: str, problem: str) -> None:
    with pytest.raises(ValidationError) as caught:
        parse_address(address)
    message = str(caught.value)
    assert message.startswith("--metrics-address: ") and problem in message
    assert "\n" not in message


def test_good_addresses() -> None:
    assert parse_address("127.0.0.1:9091") == ("127.0.0.1", 9091)
    assert parse_address("[::1]:9092") == ("::1", 9092)
    assert parse_address("localhost:65535") == ("localhost", 65535)


def test_agent_refuses_a_bad_address_in_one_line(tmp_path: Path) -> None:
    """Exit 2 (bad input) before anything else, one line on stderr naming the option."""
    proc = subprocess.run(
        [sys.executable, "-m", "calico_lib.agent", "--once", "--metrics-address", "9091",
         "--datastore", f"sqlite:///{tmp_path}/none.db", "--lock-file",
         str(tmp_path / "lock")], env=python_env(), capture_output=True, text=True,
        timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "--metrics-address" in proc.stderr


# ------------------------------------------------------------------------------ the agent


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/calico.db"


@pytest.mark.netns
def test_agent_metrics_move_with_their_events(host: dict[str, str], url: str,
                                              tmp_path: Path) -> None:
    ns, veth = host["ns"], host["veth"]
    address = f"{host['outside'].rsplit('.', 1)[0]}.2:9091"  # the namespace's uplink
    endpoint = Endpoint("ep1", HOSTNAME, veth, ipv4_nets=["10.78.0.5"], profiles=["web"])
    log = tmp_path / "agent.log"
    with calico_lib.connect(url) as client:
        client.add_pool(IPPool(POOL4))
        client.add_profile("web")
        agent = subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, "-m", "calico_lib.agent",
             "--datastore", url, "--hostname", HOSTNAME, "--lock-file", host["lock"],
             "--bird-config", "none", "--resync-interval", "2", "--debounce", "0.05",
             "--metrics-address", address],
            env=python_env(), stdout=subprocess.DEVNULL, stderr=log.open("w"))
        try:
            def now() -> Samples:
                return scrape(address)

            wait_for("the first apply", lambda: _answers(address)
                     and value(now(), "calico_agent_apply_time_seconds_count") >= 1, log=log)
            first = now()
            missing = [n for n in AGENT_METRICS if n not in names(first)]
            assert not missing, f"not exposed: {missing}"
            assert value(first, "calico_agent_resyncs_started_total") >= 1  # the first apply
            assert value(first, "calico_agent_iptables_restore_calls_total",
                         ip_version="4") >= 1
            assert value(first, "calico_agent_ipset_calls_total") >= 1
            assert value(first, "calico_agent_iptables_chains", ip_version="4",
                         table="filter") >= 1
            assert value(first, "calico_agent_active_local_endpoints") == 0
            assert value(first, "calico_agent_active_local_profiles") == 0
            for name in ("calico_agent_iptables_restore_errors_total",
                         "calico_agent_ipset_errors_total"):
                assert value(first, name) == 0, name

            # An endpoint arrives: an apply, restores, more rules and chains, one active
            # endpoint in one profile.
            client.add_endpoint(endpoint, assign_addresses=True)
            wait_for("the endpoint to be active", lambda: value(
                now(), "calico_agent_active_local_endpoints") == 1, log=log)
            added = now()
            assert value(added, "calico_agent_active_local_profiles") == 1
            for name in ("calico_agent_apply_time_seconds_count",
                         "calico_agent_iptables_restore_calls_total",
                         "calico_agent_ipset_calls_total"):
                assert value(added, name) > value(first, name), name
            for name in ("calico_agent_iptables_rules", "calico_agent_iptables_chains"):
                assert value(added, name, ip_version="4", table="filter") > value(
                    first, name, ip_version="4", table="filter"), name

            # The periodic resync (every 2 s here).
            wait_for("a resync", lambda: value(now(), "calico_agent_resyncs_started_total")
                     > value(added, "calico_agent_resyncs_started_total"), log=log)

            # An ipset error: a rule of someone else's uses the profile's member set, so
            # the kernel refuses to destroy it when the endpoint goes.
            sets = in_ns(ns, "ipset", "list", "-n").split()
            member_set = next(s for s in sets if s.startswith("cali4-t-"))
            foreign = ["INPUT", "-m", "set", "--match-set", member_set, "src", "-j", "ACCEPT"]
            in_ns(ns, "iptables", "-I", *foreign)
            before = now()
            client.remove_endpoint(HOSTNAME, "ep1", release_addresses=True)
            wait_for("an ipset error", lambda: value(now(), "calico_agent_ipset_errors_total")
                     > value(before, "calico_agent_ipset_errors_total"), log=log)
            assert value(now(), "calico_agent_iptables_restore_errors_total") == 0
            in_ns(ns, "iptables", "-D", *foreign)
            wait_for("the set to go", lambda: member_set not in in_ns(
                ns, "ipset", "list", "-n").split(), log=log)
            wait_for("no active endpoint", lambda: value(
                now(), "calico_agent_active_local_endpoints") == 0, log=log)

            # An iptables-restore error: a rule of someone else's jumps to the endpoint's
            # chain, so the kernel refuses to delete the chain when the endpoint goes.
            client.add_endpoint(endpoint, assign_addresses=True)
            chain = f"cali-to-{veth}"
            wait_for("the endpoint's chain", lambda: subprocess.run(
                ["ip", "netns", "exec", ns, "iptables", "-S", chain],
                capture_output=True).returncode == 0, log=log)
            foreign = ["INPUT", "-p", "udp", "--dport", "9", "-j", chain]  # never our scrapes
            in_ns(ns, "iptables", "-I", *foreign)
            before = now()
            client.remove_endpoint(HOSTNAME, "ep1", release_addresses=True)
            wait_for("an iptables-restore error", lambda: value(
                now(), "calico_agent_iptables_restore_errors_total", ip_version="4")
                > value(before, "calico_agent_iptables_restore_errors_total",
                        ip_version="4"), log=log)
            assert value(now(), "calico_agent_iptables_restore_errors_total",
                         ip_version="6") == 0
            in_ns(ns, "iptables", "-D", *foreign)
            wait_for("the chain to go", lambda: subprocess.run(
                ["ip", "netns", "exec", ns, "iptables", "-S", chain],
                capture_output=True).returncode != 0, log=log)
        finally:
            code = stop(agent)
    assert code == 0, log.read_text()


def _answers(address: str) -> bool:
    try:
        scrape(address)
    except OSError:
        return False
    return True


# ------------------------------------------------------------------------------ the plugin


@pytest.fixture
def plugin(host: dict[str, str], url: str, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """calico-docker-plugin in the namespace (no Docker: the sync is off); yields its
    metrics address and socket folder."""
    with calico_lib.connect(url) as client:
        client.add_pool(IPPool(POOL4))
        client.add_pool(IPPool(POOL6))
    address = f"{host['outside'].rsplit('.', 1)[0]}.2:9092"
    sockets = tmp_path / "plugins"
    log = tmp_path / "plugin.log"
    proc = subprocess.Popen(
        ["ip", "netns", "exec", host["ns"], sys.executable, "-m", "calico_lib.plugin.server",
         "--socket-dir", str(sockets), "--datastore", url, "--hostname", HOSTNAME,
         "--docker-socket", str(tmp_path / "no-docker.sock"), "--lock-file", host["lock"],
         "--docker-sync-interval", "0", "--metrics-address", address],
        env=python_env(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=log.open("w"))
    try:
        wait_for("the plugin", lambda: proc.poll() is None and _answers(address) and all(
            (sockets / name).exists() for name in ("calico.sock", "calico-ipam.sock")),
            log=log)
        yield address, sockets
    finally:
        code = stop(proc)
    assert code == 0, log.read_text()


@pytest.mark.netns
def test_plugin_metrics_move_with_their_events(plugin: tuple[str, Path]) -> None:
    address, sockets = plugin
    ipam, net = str(sockets / "calico-ipam.sock"), str(sockets / "calico.sock")
    first = scrape(address)
    missing = [n for n in PLUGIN_METRICS if n not in names(first)]
    assert not missing, f"not exposed: {missing}"
    # every call's series is there before its first request
    assert ("calico_plugin_request_errors_total",
            frozenset({("call", "NetworkDriver.Join")})) in first

    def call(socket: str, path: str, body: object = None) -> tuple[int, object]:
        return post(socket, f"/{path}", body, timeout=30)

    pool = {"AddressSpace": "CalicoLocalAddressSpace", "Pool": "", "SubPool": "",
            "Options": {}, "V6": False}
    assert call(ipam, "IpamDriver.RequestPool", pool)[0] == 200
    assert call(ipam, "IpamDriver.RequestPool", {**pool, "V6": True})[0] == 200
    status, answer = call(ipam, "IpamDriver.RequestAddress",
                          {"PoolID": "calico-v4", "Address": "", "Options": None})
    assert status == 200, answer
    taken = answer["Address"].split("/")[0]  # type: ignore[index]
    status, answer = call(ipam, "IpamDriver.RequestAddress",
                          {"PoolID": "calico-v6", "Address": "", "Options": None})
    assert status == 200, answer
    # the address just assigned, asked for again: refused by IPAM
    status, answer = call(ipam, "IpamDriver.RequestAddress",
                          {"PoolID": "calico-v4", "Address": taken, "Options": None})
    assert status == 500 and "already assigned" in str(answer), answer
    # a network call with nothing in it
    assert call(net, "NetworkDriver.Join", {})[0] == 500

    after = scrape(address)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(first, name, **labels)

    duration = "calico_plugin_request_duration_seconds_count"
    assert moved(duration, call="IpamDriver.RequestPool") == 2
    assert moved(duration, call="IpamDriver.RequestAddress") == 3
    assert moved(duration, call="NetworkDriver.Join") == 1
    assert value(after, "calico_plugin_request_duration_seconds_sum",
                 call="IpamDriver.RequestAddress") > 0
    errors = "calico_plugin_request_errors_total"
    assert moved(errors, call="IpamDriver.RequestAddress") == 1
    assert moved(errors, call="NetworkDriver.Join") == 1
    assert moved(errors, call="IpamDriver.RequestPool") == 0
    assert moved("calico_ipam_assignments_total", ip_version="4") == 1
    assert moved("calico_ipam_assignments_total", ip_version="6") == 1
    assert moved("calico_ipam_assignment_failures_total", ip_version="4") == 1
    assert moved("calico_ipam_assignment_failures_total", ip_version="6") == 0
