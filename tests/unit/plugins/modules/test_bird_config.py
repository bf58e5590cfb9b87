from __future__ import annotations

import shutil

import pytest

from ansible_collections.calico.docker.plugins.modules import bird_config
from ansible_collections.calico.docker.tests.unit.plugins.modules.helpers import (
    call,
    client,
    failed,
    ok,
)
from calico_lib import BGPPeer, IPPool, Node


@pytest.fixture
def intent(url) -> str:
    with client(url) as c:
        c.add_pool(IPPool("10.65.0.0/16"))
        c.add_node(Node("host-1", ipv4="10.0.0.1"))
        c.add_node(Node("host-2", ipv4="10.0.0.2"))
        c.add_bgp_peer(BGPPeer("10.0.0.254", 65000, password="tor-secret"))
    return url


def args(url, tmp_path, **extra):
    return dict({"hostname": "host-1", "path": str(tmp_path / "bird" / "bird.conf"),
                 "socket": str(tmp_path / "no-such.ctl"), "datastore": url}, **extra)


def test_bad_arguments_name_the_field(url, tmp_path) -> None:
    assert "hostname" in failed(bird_config, args(url, tmp_path, hostname=["a", "b"]))
    assert "colour" in failed(bird_config, args(url, tmp_path, colour="red"))


def test_check_mode_shows_the_config_and_writes_nothing(intent, tmp_path) -> None:
    out = ok(bird_config, args(intent, tmp_path), check=True)
    assert out["changed"] is True
    assert out["diff"]["before"] == ""
    after = out["diff"]["after"]
    assert "router id 10.0.0.1;" in after
    assert "protocol bgp Mesh_10_0_0_2" in after and "protocol bgp Global_10_0_0_254" in after
    assert 'password "********";' in after and "tor-secret" not in repr(out)
    assert out["diff"]["after_header"] == str(tmp_path / "bird" / "bird.conf")
    assert out["reloaded"] is False
    assert not (tmp_path / "bird").exists()


@pytest.mark.skipif(shutil.which("bird") is None, reason="needs bird (BIRD 2) to validate")
def test_install_then_no_change(intent, tmp_path) -> None:
    conf = tmp_path / "bird" / "bird.conf"
    first = ok(bird_config, args(intent, tmp_path))
    assert first["changed"] is True
    assert "not running" in first["note"]  # no socket: installed for BIRD's next start
    assert "protocol bgp Mesh_10_0_0_2" in conf.read_text()
    assert 'password "tor-secret";' in conf.read_text()
    second = ok(bird_config, args(intent, tmp_path))
    assert second["changed"] is False
    assert second["diff"]["before"] == second["diff"]["after"]
    with client(intent) as c:
        c.remove_node("host-2")
    third = ok(bird_config, args(intent, tmp_path), check=True)
    assert third["changed"] is True
    assert "Mesh_10_0_0_2" in third["diff"]["before"]
    assert "Mesh_10_0_0_2" not in third["diff"]["after"]
    assert "Mesh_10_0_0_2" in conf.read_text()  # check mode left the file alone


def test_unregistered_host_changes_nothing(intent, tmp_path) -> None:
    out = ok(bird_config, args(intent, tmp_path, hostname="stranger"))
    assert out["changed"] is False
    assert out["note"].startswith("hostname: stranger is not a registered node")
    assert not (tmp_path / "bird").exists()


@pytest.mark.skipif(shutil.which("bird") is None, reason="needs bird (BIRD 2) to validate")
@pytest.mark.parametrize("state", ["none", "current", "stale"])
def test_check_mode_predicts_the_real_run(intent, tmp_path, state) -> None:
    """Issue 20: on two identical hosts (config files), check mode on one and the real run
    on the other report the same ``changed`` and diff; check mode writes nothing."""
    hosts = {"check": tmp_path / "check", "real": tmp_path / "real"}
    for root in hosts.values():
        root.mkdir()
        if state != "none":
            ok(bird_config, args(intent, root))  # installed: current
    if state == "stale":
        with client(intent) as c:
            c.remove_node("host-2")
    conf = hosts["check"] / "bird" / "bird.conf"
    before = conf.read_text() if conf.exists() else None
    preview = call(bird_config, args(intent, hosts["check"]), check=True)
    real = call(bird_config, args(intent, hosts["real"]))
    assert not preview.get("failed") and not real.get("failed"), (preview, real)
    assert real["changed"] is (state != "current")
    # the same but for where each host's file is (the diff's headers name it)
    seen = {name: {k: str(v).replace(str(root), "ROOT")
                   for k, v in (preview if name == "check" else real)["diff"].items()}
            for name, root in hosts.items()}
    assert preview["changed"] is real["changed"]
    assert seen["check"] == seen["real"]
    assert (conf.read_text() if conf.exists() else None) == before
    assert (hosts["real"] / "bird" / "bird.conf").read_text() == real["diff"]["after"].replace(
        'password "********";', 'password "tor-secret";')
