"""``policy explain`` and the rule counters' bookkeeping, on a SQLite datastore (no root).

The verdicts are checked against real packets in tests/test_explain_packets.py; here:
the decision path names the right rule, every spec the renderer writes can be walked,
and bad input is named.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import calico_lib
from calico_lib import Endpoint, IPPool, Node, Profile, Rule
from calico_lib.counters import count
from calico_lib.dataplane.iptables import rule_hash
from calico_lib.errors import CalicoError, NotFoundError, ValidationError
from calico_lib.explain import ExplainError, explain, parse_rule
from calico_lib.render import names
from calico_lib.render.policy import profile_chains, render_policy
from calico_lib.snapshot import load_snapshot


@pytest.fixture
def client(tmp_path) -> Iterator[calico_lib.Client]:
    with calico_lib.connect("sqlite:///" + str(tmp_path / "calico.db")) as c:
        c.add_pool(IPPool("10.65.0.0/16", nat_outgoing=True))
        c.add_pool(IPPool("fd00:65::/64"))
        c.add_node(Node("h1", ipv4="198.18.0.2", ipv6="2001:db8::2"))
        c.add_node(Node("h2", ipv4="198.18.0.3"))
        c.add_profile("frontend")
        c.add_profile(Profile(name="backend", tags=["backend"], inbound_rules=[
            Rule(action="log", protocol="tcp"),
            Rule(action="deny", src_net=["10.65.0.9/32"]),
            Rule(action="allow", protocol="tcp", src_tag="frontend",
                 dst_ports=[80, "8000:8080"]),
        ], outbound_rules=[Rule(action="deny", dst_net=["192.0.2.0/24"]),
                           Rule(action="allow")]))
        c.add_endpoint(Endpoint(id="aaaa1111", host="h1", interface="caliaaaa1111",
                                mac="ee:00:00:00:00:01", ipv4_nets=["10.65.0.1"],
                                ipv6_nets=["fd00:65::1"], profiles=["frontend"]))
        c.add_endpoint(Endpoint(id="bbbb2222", host="h2", interface="calibbbb2222",
                                ipv4_nets=["10.65.1.1"], profiles=["backend"]))
        c.add_endpoint(Endpoint(id="cccc3333", host="h1", interface="calicccc3333",
                                ipv4_nets=["10.65.0.9"], profiles=["frontend"]))
        c.add_endpoint(Endpoint(id="dddd4444", host="h1", interface="calidddd4444",
                                ipv4_nets=["10.65.0.4"], profiles=["frontend"],
                                state="inactive"))
        yield c


def stages(found) -> list[tuple[str, str, str, str | None, int | None]]:
    return [(s.host, s.stage, s.verdict, s.profile, s.rule_number) for s in found.steps]


def test_allowed_across_hosts_names_each_rule(client) -> None:
    found = explain(client.store, "aaaa", "bbbb2222", "tcp", 8080)
    assert found.allowed and found.verdict == "allowed"
    assert stages(found) == [
        ("h1", "anti-spoofing", "pass", None, None),
        ("h1", "outbound", "allow", "frontend", 1),
        ("h1", "forward", "accept", None, None),
        ("h2", "inbound", "log", "backend", 1),
        ("h2", "inbound", "allow", "backend", 3),
        ("h2", "forward", "accept", None, None),
    ]
    allow = found.steps[4]
    assert allow.rule == Rule(action="allow", protocol="tcp", src_tag="frontend",
                              dst_ports=[80, "8000:8080"])
    assert allow.chain == names.profile_inbound("backend")
    assert "cali:backend:in:1 " in found.steps[3].text()
    assert "ALLOWED" in found.lines()[0]
    assert found.trace[0] == ("h1", names.FORWARD, 3, f"-i cali+ -j {names.FROM_DISPATCH}")


def test_dropped_by_no_match_and_by_deny(client) -> None:
    found = explain(client.store, "aaaa1111", "10.65.1.1", "tcp", 22)
    assert not found.allowed
    assert stages(found)[-2:] == [("h2", "inbound", "no-match", "backend", None),
                                  ("h2", "endpoint", "drop", None, None)]
    assert "no inbound profile of endpoint bbbb2222" in found.steps[-1].detail
    denied = explain(client.store, "cccc3333", "bbbb2222", "tcp", 80)
    assert not denied.allowed
    assert stages(denied)[-1] == ("h2", "inbound", "deny", "backend", 2)
    egress = explain(client.store, "bbbb2222", "192.0.2.7", "udp", 53)
    assert not egress.allowed
    assert stages(egress)[-1] == ("h2", "outbound", "deny", "backend", 1)


def test_same_host_walks_both_ends_in_one_pass(client) -> None:
    found = explain(client.store, "aaaa1111", "cccc3333")  # a ping
    assert found.allowed and found.packet.protocol == 1 and found.packet.icmp_type == 8
    assert [s.stage for s in found.steps] == ["anti-spoofing", "outbound", "inbound",
                                              "forward"]
    assert {s.host for s in found.steps} == {"h1"}


def test_to_its_own_host(client) -> None:
    dns = explain(client.store, "aaaa1111", "198.18.0.2", "udp", 53)
    assert dns.allowed and dns.steps[-1].stage == "to-host"
    client.set_agent_config(default_endpoint_to_host_action="drop")
    web = explain(client.store, "aaaa1111", "198.18.0.2", "tcp", 80)
    assert not web.allowed
    assert "default_endpoint_to_host_action is drop" in web.steps[-1].detail
    six = explain(client.store, "aaaa1111", "2001:db8::2", "tcp", 80)
    assert not six.allowed and six.packet.version == 6


def test_bgp_to_a_node_is_guarded(client) -> None:
    found = explain(client.store, "aaaa1111", "198.18.0.3", "tcp", 179)
    assert not found.allowed and found.steps[-1].stage == "bgp-guard"


def test_outside_ends(client) -> None:
    inbound = explain(client.store, "203.0.113.5", "bbbb2222", "tcp", 80)
    assert not inbound.allowed and {s.host for s in inbound.steps} == {"h2"}
    out = explain(client.store, "aaaa1111", "203.0.113.5", "tcp", 443)
    assert out.allowed
    assert out.steps[-1].stage == "nat"  # a nat_outgoing pool to the world
    unused = explain(client.store, "aaaa1111", "10.65.3.3", "tcp", 443)
    assert any("no container holds it" in n for n in unused.notes)
    from_node = explain(client.store, "198.18.0.3", "bbbb2222", "tcp", 22)
    assert from_node.allowed and "its own containers" in from_node.notes[0]


def test_an_endpoint_without_rules_is_dropped_by_the_dispatch(client) -> None:
    found = explain(client.store, "aaaa1111", "10.65.0.4", "tcp", 80)
    assert found.allowed  # 10.65.0.4 is inactive: no endpoint holds it, routed away
    found = explain(client.store, "dddd4444", "aaaa1111", "tcp", 80)
    assert not found.allowed and found.steps[-1].stage == "dispatch"


def test_ipv6_is_chosen_by_the_ends(client) -> None:
    found = explain(client.store, "aaaa1111", "fd00:65::7", "tcp", 80)
    assert found.packet.version == 6 and found.packet.src == "fd00:65::1"
    assert explain(client.store, "aaaa1111", "cccc3333", ip_version=4).packet.version == 4


@pytest.mark.parametrize(("args", "kwargs", "field"), [
    (("aaaa1111", "nosuch"), {}, "to"),
    (("zz", "aaaa1111"), {}, "from"),
    (("aaaa1111", "cccc3333", "tcp", 70000), {}, "port"),
    (("aaaa1111", "cccc3333", "tcp"), {}, "port"),
    (("aaaa1111", "cccc3333", "icmp", 80), {}, "port"),
    (("aaaa1111", "cccc3333", "gre"), {}, "protocol"),
    (("aaaa1111", "aaaa1111"), {}, "to"),
    (("203.0.113.1", "203.0.113.2"), {}, "to"),
    (("aaaa1111", "cccc3333"), {"ip_version": 5}, "ip_version"),
    (("cccc3333", "fd00:65::1"), {}, "from"),
])
def test_bad_input_is_named(client, args, kwargs, field) -> None:
    with pytest.raises(CalicoError) as info:
        explain(client.store, *args, **kwargs)
    message = str(info.value)
    assert message.startswith(f"{field}:"), message
    assert isinstance(info.value, (ValidationError, NotFoundError))


def test_an_ambiguous_prefix_is_refused(client) -> None:
    client.add_endpoint(Endpoint(id="aaaa9999", host="h2", interface="caliaaaa9999",
                                 ipv4_nets=["10.65.1.9"], profiles=["frontend"]))
    with pytest.raises(ValidationError, match="names 2 endpoints"):
        explain(client.store, "aaaa", "bbbb2222")


def test_containers_resolve_through_the_callback(client) -> None:
    found = explain(client.store, "web-1", "bbbb2222", dst_port=80,
                    containers=lambda name: ["cccc3333"] if name == "web-1" else [])
    assert found.packet.src == "10.65.0.9"


def test_every_rendered_spec_can_be_walked(client) -> None:
    """A renderer change that writes a match the walk does not know fails here first."""
    client.add_profile(Profile(name="everything", tags=["everything"], inbound_rules=[
        Rule(action="allow", protocol="tcp", src_net=["10.0.0.0/8", "fd00::/8"],
             not_src_net=["10.1.0.0/16"], src_tag="frontend", not_dst_tag="backend",
             dst_ports=list(range(1, 20)) + ["100:200"], not_src_ports=[1, 2]),
        Rule(action="deny", protocol="icmp", icmp_type=8, icmp_code=0,
             not_dst_net=["10.65.0.0/24"]),
        Rule(action="log", protocol="icmpv6", not_icmp_type=128),
        Rule(action="allow", not_protocol="udp", dst_net=["0.0.0.0/0"], ip_version=4),
        Rule(action="allow", protocol=47),
        Rule(action="allow", protocol="tcp", dst_ports=[179]),
    ], outbound_rules=[Rule(action="allow", protocol="tcp", dst_ports=[179])]))
    client.add_endpoint(Endpoint(id="eeee5555", host="h1", interface="calieeee5555",
                                 mac="ee:00:00:00:00:05", ipv4_nets=["10.65.0.5"],
                                 ipv6_nets=["fd00:65::5"], profiles=["everything"]))
    policy = render_policy(load_snapshot(client.store, "h1"))
    specs = [s for t in policy.tables for rules in t.chains.values() for s in rules]
    assert len(specs) > 100
    for spec in specs:
        parse_rule(spec)


def test_unknown_rule_text_is_an_error() -> None:
    with pytest.raises(ExplainError, match="target FOO"):
        parse_rule("-p tcp -j FOO")
    with pytest.raises(ExplainError, match="--hashlimit"):
        parse_rule("-m hashlimit --hashlimit 5 -j DROP")


# --------------------------------------------------------------------------- counters


def counted(chains: dict[str, list[str]], packets: dict[tuple[str, int], int]
            ) -> dict[str, list[tuple[str | None, int, int]]]:
    """Kernel counters for rendered ``chains``: (chain, position) -> packets, 100 bytes each."""
    return {chain: [(rule_hash(spec), packets.get((chain, n), 0),
                     100 * packets.get((chain, n), 0)) for n, spec in enumerate(specs, 1)]
            for chain, specs in chains.items()}


def test_counters_add_up_per_user_rule(client) -> None:
    snapshot = load_snapshot(client.store, "h2")
    table = render_policy(snapshot).table(4, "filter").chains
    inbound = names.profile_inbound("backend")
    rendered = profile_chains(snapshot.profiles["backend"], 4)
    # rule 3 is two lines: the mark and the RETURN that counts the same packets again
    assert rendered.origins[inbound] == (0, 1, 2, 2)
    kernel = {4: counted(table, {(inbound, 1): 7, (inbound, 2): 2, (inbound, 3): 5,
                                 (inbound, 4): 5,
                                 (names.to_endpoint("calibbbb2222"), 4): 3}),
              6: {}}
    found = count(snapshot, "backend", kernel)
    by_rule = {(r.direction, r.number): r.count.packets[4] for r in found.rules}
    assert by_rule == {("inbound", 1): 7, ("inbound", 2): 2, ("inbound", 3): 5,
                       ("outbound", 1): 0, ("outbound", 2): 0}
    drops = {d.direction: d.count.packets[4] for d in found.drops}
    assert drops == {"inbound": 3, "outbound": 0}
    assert found.rules[2].count.bytes[4] == 500
    assert found.to_dict()["rules"][0]["packets"] == {"ipv4": 7, "ipv6": 0}
    # IPv6: the profile's chains are not in this kernel: said, not guessed
    assert any("IPv6" in n and "not in the kernel" in n for n in found.notes)


def test_counters_of_a_chain_that_differs_are_not_guessed(client) -> None:
    snapshot = load_snapshot(client.store, "h2")
    table = dict(render_policy(snapshot).table(4, "filter").chains)
    inbound = names.profile_inbound("backend")
    table[inbound] = table[inbound][1:]  # the kernel lacks the log rule
    found = count(snapshot, "backend", {4: counted(table, {(inbound, 1): 9}), 6: {}})
    assert all(r.count.packets[4] == 0 for r in found.rules)
    assert any(inbound in n and "differ" in n for n in found.notes)
    with pytest.raises(NotFoundError):
        count(snapshot, "nosuch", {})
    unused = count(load_snapshot(client.store, "h1"), "backend", {})
    assert "no active endpoint on h1 uses it" in unused.notes[0]
