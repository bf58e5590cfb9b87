"""Integrity: bad records never stop a host, names are validated exactly, the embedded store
is private, a failing part of the dataplane does not stop the rest (the integrity issue).

Each test here failed on the code before the fix it names.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

import calico_lib
from calico_lib import Endpoint, IPPool, Node, Profile, Rule, keys
from calico_lib.errors import ValidationError
from calico_lib.reconcile import Dataplane, DataplaneError
from calico_lib.snapshot import load_snapshot
from tests import processes
from tests.test_agent import REPO, routes, sh, start_agent, wait_for
from tests.test_cli import assert_error, run_calicoctl

BAD_RECORDS = {
    "bad JSON": "{not json",
    "unknown field": '{"id": "x", "host": "other", "interface": "calix", "future": 1}',
    "wrong type": '["a list"]',
    "deep nesting": "[" * 100_000 + "]" * 100_000,
}


# ------------------------------------------------------------------ one bad record


@pytest.mark.parametrize("value", BAD_RECORDS.values(), ids=BAD_RECORDS.keys())
def test_snapshot_skips_a_record_it_cannot_read(datastore_url: str, value: str) -> None:
    with calico_lib.connect(datastore_url) as client:
        client.add_pool(IPPool("10.70.0.0/16"))
        client.add_profile("web")
        client.add_endpoint(Endpoint("good", "h1", "caligood", ipv4_nets=["10.70.0.1"],
                                     profiles=["web"]))
        client.store.put(keys.endpoint("other", "bad"), value)
        client.store.put(keys.profile("broken"), value)
        snap = load_snapshot(client.store, "h1")
        assert [e.id for e in snap.endpoints] == ["good"]
        assert set(snap.profiles) == {"web"}
        assert {u.key for u in snap.unreadable} == {keys.endpoint("other", "bad"),
                                                    keys.profile("broken")}
        for item in snap.unreadable:
            assert "\n" not in str(item)
        # listings skip it too, and `datastore check` names it
        assert [e.id for e in client.list_endpoints()] == ["good"]
        assert {u.key for u in client.check_records()} == {u.key for u in snap.unreadable}


def test_record_under_another_hosts_key_is_not_rendered(datastore_url: str) -> None:
    # an endpoint of host h1 written under h2's prefix would make h2 render it as its own
    with calico_lib.connect(datastore_url) as client:
        ep = Endpoint("e1", "h1", "calie1", ipv4_nets=["10.70.0.1"])
        client.store.put(keys.endpoint("h2", "e1"), calico_lib.txn.dumps(ep.to_dict()))
        snap = load_snapshot(client.store, "h2")
        assert snap.endpoints == () and snap.local_endpoints == ()
        assert "belongs under" in str(snap.unreadable[0])


def test_duplicate_kernel_names_and_bgp_addresses_are_left_out(datastore_url: str) -> None:
    with calico_lib.connect(datastore_url) as client:
        for ep_id in ("a", "b"):  # raw writes: the API refuses the second one
            client.store.put(keys.endpoint("h1", ep_id), calico_lib.txn.dumps(
                Endpoint(ep_id, "h1", "calidup").to_dict()))
        for name in ("h1", "n2", "n3"):
            client.store.put(keys.node(name), calico_lib.txn.dumps(
                Node(name, ipv4="10.0.0.9" if name != "h1" else "10.0.0.1").to_dict()))
        snap = load_snapshot(client.store, "h1")
        assert [e.id for e in snap.endpoints] == ["a"]
        assert set(snap.nodes) == {"h1"}  # n2 and n3 both claim 10.0.0.9: neither is peered
        assert len(snap.unreadable) == 3


def test_calicoctl_datastore_check_lists_unreadable_records(datastore_url: str) -> None:
    with calico_lib.connect(datastore_url) as client:
        client.add_profile("web")
        assert run_calicoctl("datastore", "check", "--datastore", datastore_url).code == 0
        client.store.put(keys.profile("x"), '{"name": "x\\n-injected"}')
    result = run_calicoctl("datastore", "check", "--datastore", datastore_url)
    assert result.code == 1
    assert result.out.count("\n") == 1 and keys.profile("x") in result.out


@pytest.mark.netns
def test_agent_keeps_reconciling_past_a_bad_record(host, tmp_path: Path) -> None:
    """Before: the long-running agent exited at the first record it could not read."""
    url = f"sqlite:///{tmp_path}/calico.db"
    log = tmp_path / "agent.log"
    with calico_lib.connect(url) as client:
        client.add_pool(IPPool("10.71.0.0/16"))
        client.add_profile("web")
        agent = start_agent(host, url, log)
        try:
            wait_for("the first reconcile", lambda: "revision" in log.read_text())
            client.store.put(keys.endpoint("other-host", "bad"), "{not json")
            client.add_endpoint(Endpoint("ep1", "agent-host", host["veth"],
                                         ipv4_nets=["10.71.0.5"], profiles=["web"]),
                                assign_addresses=True)
            wait_for("the endpoint's route", lambda: "10.71.0.5" in routes(host["ns"]))
            wait_for("the reconcile's log line",
                     lambda: "unreadable record(s) skipped" in log.read_text())
            assert agent.poll() is None, log.read_text()
            text = log.read_text()
            assert text.count("skipping unreadable record") == 1, text  # logged once
            assert "1 unreadable record(s) skipped" in text
        finally:
            code = processes.stop(agent)
        assert code == 0, log.read_text()


def test_agent_loop_outlives_any_exception(monkeypatch) -> None:
    """Before: only CalicoError was caught; anything else ended the agent silently."""
    from calico_lib import agent as agent_module

    args = agent_module.build_parser().parse_args(
        ["--datastore", "sqlite:////nonexistent-dir/x.db", "--bird-config", "none"])
    monkeypatch.setattr(agent_module, "open_datastore", lambda **kwargs: None)
    agent = agent_module.Agent(args)
    calls: list[str] = []

    def reconcile_once(verify: bool = True) -> int:
        calls.append("call")
        if len(calls) == 1:
            raise RuntimeError("a bug")
        agent.stopping = True
        return 1

    monkeypatch.setattr(agent, "reconcile_once", reconcile_once)
    monkeypatch.setattr(agent, "_sleep", lambda seconds: None)
    agent.run()
    assert calls == ["call", "call"]


# ------------------------------------------------------------------ names


@pytest.mark.parametrize("make, field", [
    (lambda: Profile("web2\n"), "name"),
    (lambda: Profile.with_default_rules("web2\n"), "name"),
    (lambda: Rule(src_tag="x\n"), "src_tag"),
    (lambda: Endpoint("e1", "h1", "cali9\n"), "interface"),
    (lambda: Endpoint("e1\n", "h1", "cali9"), "id"),
    (lambda: Node("n9\n"), "name"),
    (lambda: Profile("web", tags="a,b\n"), "tags"),
    (lambda: Rule(protocol="tcp", dst_ports="80\n"), "dst_ports"),
    (lambda: Rule(src_net="10.0.0.0/8\n"), "src_net"),
    (lambda: Endpoint("e1", "h1", "cali9", mac="ee:ee:ee:ee:ee:ee\n"), "mac"),
    (lambda: Profile("web", labels={"a": "b\n"}), "labels"),
    (lambda: Rule(protocol="\u0661"), "protocol"),  # an Arabic-Indic digit one
    (lambda: Profile("web\u2028x"), "name"),  # a line separator
])
def test_names_with_control_characters_are_refused(make, field: str) -> None:
    with pytest.raises(ValidationError) as info:
        make()
    assert info.value.field == field
    assert "\n" not in str(info.value) and "\u2028" not in str(info.value)


@pytest.mark.parametrize("args, field", [
    (("profile", "add", "web2\n"), "name"),
    (("profile", "rule", "add", "web", "inbound", "allow", "--src-tag", "x\n"), "src_tag"),
    (("endpoint", "add", "--host", "h1", "--interface", "cali9\n", "--profile", "web"),
     "interface"),
    (("node", "add", "n9\n"), "name"),
])
def test_calicoctl_refuses_names_ending_in_a_newline(tmp_path: Path, args, field) -> None:
    url = f"sqlite:///{tmp_path}/calico.db"
    with calico_lib.connect(url) as client:
        client.add_profile("web")
        before = client.store.list(keys.ROOT)
    line = assert_error(run_calicoctl(*args, "--datastore", url), 2, field)
    assert "\\n" in line  # the value is shown escaped, on the one line
    with calico_lib.connect(url) as client:
        assert client.store.list(keys.ROOT) == before


# ------------------------------------------------------------------ smaller ones


def test_two_nodes_cannot_share_a_bgp_address(datastore_url: str) -> None:
    with calico_lib.connect(datastore_url) as client:
        client.add_node(Node("n1", ipv4="10.0.0.1", ipv6="fd00::1"))
        with pytest.raises(ValidationError, match="ipv4: 10.0.0.1 is already node n1's"):
            client.add_node(Node("n2", ipv4="10.0.0.1"))
        with pytest.raises(ValidationError, match="ipv6: fd00::1 is already node n1's"):
            client.put_node(Node("n2", ipv4="10.0.0.2", ipv6="fd00::1"))
        client.put_node(Node("n1", ipv4="10.0.0.3"))  # a node may change its own
        client.add_node(Node("n2", ipv4="10.0.0.1"))  # ... and then the old one is free
        assert sorted(n.name for n in client.list_nodes()) == ["n1", "n2"]


def test_sqlite_store_is_private(tmp_path: Path) -> None:
    path = tmp_path / "calico.db"
    with calico_lib.connect(f"sqlite:///{path}") as client:
        client.add_pool(IPPool("10.72.0.0/16"))
        for suffix in ("", "-wal", "-shm"):
            mode = stat.S_IMODE(os.stat(f"{path}{suffix}").st_mode)
            assert mode == 0o600, (suffix, oct(mode))
    os.chmod(path, 0o644)  # made by an earlier version: narrowed when next opened
    calico_lib.connect(f"sqlite:///{path}").close()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_read_only_use_never_creates_a_store(tmp_path: Path) -> None:
    path = tmp_path / "typo" / "calico.db"
    for args in (("pool", "list"), ("profile", "show", "x"), ("ipam", "check"),
                 ("datastore", "check")):
        assert_error(run_calicoctl(*args, "--datastore", f"sqlite:///{path}"), 1, str(path))
    assert not path.parent.exists()


def test_bgp_password_from_a_file_or_the_environment(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/calico.db"
    secret = tmp_path / "secret"
    secret.write_text("s3cret-pw\n")
    assert run_calicoctl("bgp", "peer", "add", "10.0.0.254", "--as", "65000",
                         "--password-file", str(secret), "--datastore", url).code == 0
    env = dict(os.environ, CALICO_BGP_PASSWORD="env-pw")
    result = subprocess.run([sys.executable, "-m", "calico_lib.cli", "bgp", "peer", "add",
                             "10.0.0.253", "--as", "65000", "--datastore", url], env=env,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    with calico_lib.connect(url) as client:
        peers = {p.address: p.password for p in client.list_bgp_peers()}
    assert peers == {"10.0.0.254": "s3cret-pw", "10.0.0.253": "env-pw"}
    listed = run_calicoctl("bgp", "peer", "list", "--datastore", url)
    assert "pw" not in listed.out
    assert_error(run_calicoctl("bgp", "peer", "add", "10.0.0.252", "--as", "1",
                               "--password", "a", "--password-file", str(secret),
                               "--datastore", url), 2, "password")


def test_profile_in_use_is_not_removed(datastore_url: str) -> None:
    with calico_lib.connect(datastore_url) as client:
        client.add_profile("web")
        client.add_endpoint(Endpoint("e1", "h1", "calie1", profiles=["web"]))
        with pytest.raises(calico_lib.errors.InUseError, match="e1 on h1"):
            client.remove_profile("web")
        assert client.get_profile("web").name == "web"
        client.remove_profile("web", force=True)


def test_agent_config_set_exits_zero(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/calico.db"
    result = run_calicoctl("config", "set", "--default-endpoint-to-host-action", "drop",
                           "--datastore", url)
    assert (result.code, result.out, result.err) == (0, "", "")


# ------------------------------------------------------------------ partial apply


@pytest.mark.netns
def test_ip6tables_failure_does_not_stop_routes_and_ipv4(host, tmp_path: Path,
                                                         monkeypatch) -> None:
    """Before: a failing ip6tables-restore aborted the reconcile before routes and IPv4."""
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "ip6tables-restore").write_text("#!/bin/sh\necho 'line 1 failed' >&2\nexit 1\n")
    (fake / "ip6tables-restore").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}:{os.environ['PATH']}")
    url = f"sqlite:///{tmp_path}/calico.db"
    with calico_lib.connect(url) as client:
        client.add_pool(IPPool("10.73.0.0/16"))
        client.add_pool(IPPool("fd00:73::/64"))
        client.add_profile("web")
        client.add_endpoint(Endpoint("ep1", "agent-host", host["veth"],
                                     ipv4_nets=["10.73.0.5"], ipv6_nets=["fd00:73::5"],
                                     profiles=["web"]))
        snap = load_snapshot(client.store, "agent-host")
    from pyroute2 import netns

    netns.pushns(host["ns"])
    try:
        with pytest.raises(DataplaneError) as info:
            Dataplane().apply(snap)
    finally:
        netns.popns()
    message = str(info.value)
    assert "ip6tables filter" in message and "everything else was applied" in message
    assert "10.73.0.5" in routes(host["ns"]) and "fd00:73::5" in sh(
        "ip", "-n", host["ns"], "-6", "route", "show", "proto", "80")
    assert f"cali-to-{host['veth']}" in sh("ip", "netns", "exec", host["ns"],
                                           "iptables-save", "-t", "filter")
    assert f"cali-to-{host['veth']}" not in sh("ip", "netns", "exec", host["ns"],
                                               "ip6tables-save", "-t", "filter")


@pytest.mark.netns
def test_agent_never_creates_a_missing_store(host, tmp_path: Path) -> None:
    """An agent started on a mistyped path would render an empty policy: it fails (and
    systemd restarts it) until the store exists."""
    path = tmp_path / "typo.db"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run(
        ["ip", "netns", "exec", host["ns"], sys.executable, "-m", "calico_lib.agent",
         "--once", "--datastore", f"sqlite:///{path}", "--hostname", "h",
         "--lock-file", host["lock"], "--bird-config", "none"], env=env,
        capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and str(path) in proc.stderr
    assert not path.exists()
