"""The pure parts of bench/throughput.py: iperf3's JSON, percentiles, ratios and verdicts,
Docker's rules, and the policy snapshot whose only rule letting the pair talk comes last.
No root, no namespaces."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from calico_lib.render.policy import render_policy


def _load() -> ModuleType:
    path = Path(__file__).resolve().parent.parent / "bench" / "throughput.py"
    spec = importlib.util.spec_from_file_location("bench_throughput", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


tp = _load()


def test_iperf_gbps_reads_sum_received() -> None:
    report = {"end": {"sum_sent": {"bits_per_second": 9.9e9},
                      "sum_received": {"bits_per_second": 12.5e9}}}
    assert tp.iperf_gbps(report) == pytest.approx(12.5)


@pytest.mark.parametrize("report, message", [
    ({"error": "unable to connect to server: Connection refused"}, "Connection refused"),
    ({"start": {}}, "no end.sum_received"),
    ({"end": {"sum_received": {"bits_per_second": 0}}}, "received 0"),
])
def test_iperf_gbps_refuses_failed_runs(report: dict, message: str) -> None:
    with pytest.raises(tp.BenchError, match=message):
        tp.iperf_gbps(report)


def test_percentile_is_nearest_rank() -> None:
    values = list(range(1, 101))
    assert tp.percentile(values, 99) == 99
    assert tp.percentile(values, 100) == 100
    assert tp.percentile(values, 50) == 50
    assert tp.percentile([7.0], 99) == 7.0
    assert tp.percentile([3, 1, 2], 1) == 1
    with pytest.raises(ValueError):
        tp.percentile([], 50)


def test_latency_figures_in_microseconds() -> None:
    rr = [20_000] * 98 + [90_000, 100_000]
    figures = tp.latency_figures(rr, [150_000, 250_000, 200_000])
    assert figures == {"rr50": 20.0, "rr99": 90.0, "crr50": 200.0}


def test_speed_ratio_is_above_one_when_better() -> None:
    assert tp.speed_ratio("tcp1", 19.0, 20.0) == pytest.approx(0.95)
    assert tp.speed_ratio("rr50", 25.0, 20.0) == pytest.approx(0.8)  # slower round trips
    assert tp.speed_ratio("rr50", 20.0, 25.0) == pytest.approx(1.25)


def test_verdict_says_by_how_much() -> None:
    assert tp.verdict(0.97, 0.95) == "PASS by 2.1%"
    assert tp.verdict(0.95, 0.95) == "PASS by 0.0%"
    assert tp.verdict(1.0, 1.05) == "MISS by 4.8%"


def test_docker_rules_publish_ports_as_docker_run_p() -> None:
    v4 = tp.docker_rules(4, [(15201, 5201)])
    assert ":FORWARD DROP [0:0]" in v4
    assert ("-A DOCKER ! -i docker0 -p tcp -m tcp --dport 15201 -j DNAT "
            "--to-destination 172.17.0.2:5201") in v4
    assert "-A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE" in v4
    assert ("-A DOCKER -d 172.17.0.2/32 ! -i docker0 -o docker0 -p tcp -m tcp --dport 5201 "
            "-j ACCEPT") in v4
    v6 = tp.docker_rules(6, [(15201, 5201)])
    assert "--to-destination [fd00:17::2]:5201" in v6
    assert "-A POSTROUTING -s fd00:17::/64 ! -o docker0 -j MASQUERADE" in v6
    assert "DNAT" not in tp.docker_rules(4, [])  # the client's host publishes nothing
    assert v4.count("COMMIT") == 2


def _could_allow_pair(rule: tp.Rule) -> bool:
    """Could this rule allow TCP to a bench port from a pool address?"""
    if rule.action != "allow" or rule.protocol not in (None, "tcp"):
        return False
    if rule.src_net or rule.icmp_type is not None:
        return False  # nets are 172.16/12 and fd00:172::/32, never the pool
    ports = rule.dst_ports
    return ports is None or tp.IPERF_PORT in ports or tp.ECHO_PORT in ports


def test_only_the_pair_profile_lets_the_pair_talk() -> None:
    snapshot = tp.cluster_snapshot("host-a", 40, 10, 500, seed=3)
    pair_profile = snapshot.profiles[tp.PAIR_PROFILE]
    assert [r for r in pair_profile.inbound_rules if _could_allow_pair(r)]
    others = [p for name, p in snapshot.profiles.items() if name != tp.PAIR_PROFILE]
    assert sum(len(p.inbound_rules) + len(p.outbound_rules) for p in others) == 500
    assert not [r for p in others for r in p.inbound_rules + p.outbound_rules
                if _could_allow_pair(r)]
    # the pair comes last of the endpoints and tries every profile first
    first, second = snapshot.endpoints[-2:]
    assert (first.interface, second.interface) == tp.PAIR_INTERFACES
    assert first.profiles[-1] == tp.PAIR_PROFILE and len(first.profiles) == 11
    assert [e.interface for e in snapshot.local_endpoints][-1] == tp.PAIR_INTERFACES[0]


def test_a_new_flow_walks_every_profile_before_the_pairs_rule() -> None:
    snapshot = tp.cluster_snapshot("host-b", 40, 10, 500, seed=3)
    policy = render_policy(snapshot)
    chains = policy.table(4, "filter").chains
    inbound_rules = sum(len(chains[f"cali-pi-prof-{i:03d}"]) for i in range(10))
    walked = tp.rules_walked(policy, tp.PAIR_INTERFACES[1], 4, outbound=False)
    assert walked > inbound_rules + 5  # + the dispatch tree's nodes, the endpoint chain, ...
    assert tp.rules_walked(policy, tp.PAIR_INTERFACES[1], 6, outbound=False) > 20
