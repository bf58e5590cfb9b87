"""The dataplane module in a throwaway network namespace: check mode previews the rules and
changes nothing; a real run applies them once and then reports no change; what it returns is
documented. (Needs root and tests.netns: the collection's unit tests,
tests/unit/plugins/modules/, hold what runs without them.)"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from ansible_collections.calico.docker.plugins.modules import dataplane
from ansible_collections.calico.docker.tests.unit.plugins.modules.helpers import (  # noqa: F401
    client,
    module_exits,
    no_ambient_settings,
    ok,
    url,
)
from ansible_collections.calico.docker.tests.unit.plugins.modules.test_return_docs import (
    check,
    module,
)
from calico_lib import Endpoint, IPPool, Profile
from calico_lib.dataplane.runner import run
from tests import netns

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not all(shutil.which(t) for t in ("ip", "iptables-save", "ipset")),
    reason="needs root, ip, iptables and ipset (network namespaces)")


@pytest.fixture
def ns() -> Iterator[str]:
    """A fresh network namespace this test process runs in."""
    with netns.namespace("calt-um") as name, netns.inside(name):
        yield name


@pytest.fixture
def intent(url) -> str:  # noqa: F811 (the fixture)
    with client(url) as c:
        c.add_pool(IPPool("10.66.0.0/16"))
        c.add_profile(Profile.with_default_rules("web"))
        c.add_endpoint(Endpoint("e1", "host-1", "cali0000000e1", ipv4_nets=["10.66.0.1"],
                                profiles=["web"]))
    return url


def cali_state() -> str:
    saved = run(["iptables-save"]) + run(["ip6tables-save"]) + run(["ipset", "save"])
    return "\n".join(line for line in saved.splitlines() if "cali" in line)


@pytest.mark.netns
def test_check_mode_shows_the_rules_and_changes_nothing(ns, intent, tmp_path) -> None:
    args = {"hostname": "host-1", "lock_file": str(tmp_path / "dp.lock"), "datastore": intent}
    out = ok(dataplane, args, check=True)
    assert out["changed"] is True
    text = out["diff"]["prepared"]
    assert "cali-FORWARD" in text
    assert "*filter" in text and "COMMIT" in text
    assert "would be applied" in text
    assert "ipset restore" in text and "cali4-" in text
    assert out["summary"].startswith("revision") and "would change" in out["summary"]
    # the endpoint's interface does not exist here: check mode says so, as the run would
    assert out["routes"]["missing_interfaces"] == ["cali0000000e1"]
    assert any(t["table"] == "filter" and "cali-FORWARD" in t["written"]
               for t in out["tables"])
    assert cali_state() == ""  # nothing was applied


@pytest.mark.netns
def test_apply_then_no_change(ns, intent, tmp_path) -> None:
    args = {"hostname": "host-1", "lock_file": str(tmp_path / "dp.lock"), "datastore": intent}
    first = ok(dataplane, args)
    assert first["changed"] is True
    assert "cali-FORWARD" in cali_state()
    assert first["routes"]["missing_interfaces"] == ["cali0000000e1"]
    second = ok(dataplane, args)
    assert second["changed"] is False
    assert second["diff"]["prepared"] == ""
    assert ok(dataplane, args, check=True)["changed"] is False


@pytest.mark.netns
def test_dataplane_return_is_documented(ns: str, url: str,  # noqa: F811 (the fixture)
                                        tmp_path: Path) -> None:
    with client(url) as c:
        c.add_pool(IPPool("10.66.0.0/16"))
        c.add_profile(Profile.with_default_rules("web"))
        c.add_endpoint(Endpoint("e1", "host-1", "cali0000000e1", ipv4_nets=["10.66.0.1"],
                                profiles=["web"]))
    mod = module("dataplane")
    args = {"hostname": "host-1", "lock_file": str(tmp_path / "dp.lock"), "datastore": url}
    check("dataplane", [ok(mod, args, check=True), ok(mod, args), ok(mod, args)])
