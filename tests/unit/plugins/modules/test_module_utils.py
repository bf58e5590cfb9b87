"""The glue: datastore resolution like the CLI, and one clear message without calico_lib."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from ansible_collections.calico.docker.plugins.module_utils import calico, messages
from ansible_collections.calico.docker.plugins.modules import ip_pool
from ansible_collections.calico.docker.tests.unit.plugins.modules.helpers import (
    client,
    collections_path,
    ok,
)

# Runs a module with calico_lib unimportable and the real exit_json/fail_json.
NO_LIB = """
import json, sys
sys.modules["calico_lib"] = None
module, args = sys.argv[1], json.loads(sys.argv[2])
import importlib
main = importlib.import_module("ansible_collections.calico.docker.plugins.modules." + module).main
try:
    from ansible.module_utils.testing import patch_module_args
except ImportError:  # older ansible-core
    from ansible.module_utils import basic
    basic._ANSIBLE_ARGS = json.dumps({"ANSIBLE_MODULE_ARGS": args}).encode()
    main()
else:
    with patch_module_args(args):
        main()
"""


def run_without_lib(module: str, args: dict) -> dict:
    where = str(collections_path())
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (where, os.environ.get("PYTHONPATH")) if p))
    proc = subprocess.run([sys.executable, "-c", NO_LIB, module, json.dumps(args)],
                          capture_output=True, text=True, cwd=where, env=env, timeout=60,
                          check=False)
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    return json.loads(proc.stdout)


@pytest.mark.slow  # seconds: left out of make test-fast
def test_missing_calico_lib_fails_with_one_clear_message() -> None:
    for module, args in (("ip_pool", {"cidr": "10.65.0.0/16"}), ("profile", {"name": "x"}),
                         ("node", {"name": "x"}), ("bgp_peer", {"address": "10.0.0.1",
                                                                "as_number": 1}),
                         ("bgp_config", {}), ("dataplane", {}), ("bird_config", {}),
                         ("calico_info", {})):
        out = run_without_lib(module, args)
        assert out["failed"] is True
        assert out["msg"] == calico.MISSING_CALICO_LIB
    assert "calico.docker.node role" in calico.MISSING_CALICO_LIB
    assert "/opt/calico/venv/bin/python" in calico.MISSING_CALICO_LIB


def test_docker_network_needs_no_calico_lib(tmp_path) -> None:
    out = run_without_lib("docker_network", {"name": "x",
                                             "docker_host": f"unix://{tmp_path}/none.sock"})
    assert out["msg"].startswith("docker_host: cannot reach Docker")


def test_datastore_from_the_environment(url, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("CALICO_DATASTORE", url)
    assert ok(ip_pool, {"cidr": "10.65.0.0/16"})["changed"] is True
    with client(url) as c:
        assert [p.cidr for p in c.list_pools()] == ["10.65.0.0/16"]


def test_datastore_option_beats_the_environment(url, tmp_path, monkeypatch) -> None:
    other = "sqlite:///" + str(tmp_path / "other.db")
    monkeypatch.setenv("CALICO_DATASTORE", other)
    ok(ip_pool, {"cidr": "10.65.0.0/16", "datastore": url})
    with client(other) as c:
        assert c.list_pools() == []
    with client(url) as c:
        assert len(c.list_pools()) == 1


def test_hostname_resolution_is_the_agents(monkeypatch) -> None:
    from calico_lib.hostname import resolve_hostname as agents

    for env in (None, "from-env"):
        if env is None:
            monkeypatch.delenv("CALICO_HOSTNAME", raising=False)
        else:
            monkeypatch.setenv("CALICO_HOSTNAME", env)
        for given in (None, "given-host"):
            assert calico.resolve_hostname(given) == agents(given)


def test_check_mode_and_info_never_create_a_store(tmp_path) -> None:
    """Before: check mode, and the calico_info module that "changes nothing, ever", created
    the SQLite file and its folders at whatever path they were given."""
    from ansible_collections.calico.docker.plugins.modules import calico_info
    from ansible_collections.calico.docker.tests.unit.plugins.modules.helpers import failed

    url = f"sqlite:///{tmp_path}/new/calico.db"
    out = ok(ip_pool, {"cidr": "10.65.0.0/16", "datastore": url}, check=True)
    assert out["changed"] is True  # compared against an empty store ...
    assert "no such file" in failed(calico_info, {"datastore": url, "hostname": "h1"})
    assert not (tmp_path / "new").exists()  # ... and nothing was made
    ok(ip_pool, {"cidr": "10.65.0.0/16", "datastore": url})  # a real run creates it
    assert (tmp_path / "new" / "calico.db").exists()


def test_docker_network_checks_names_without_calico_lib(tmp_path) -> None:
    """Without calico_lib, the profile-name rule and the quoting are the module_utils' own
    copies (kept equal to the model's below)."""
    out = run_without_lib("docker_network", {"name": "web\nname",
                                             "docker_host": f"unix://{tmp_path}/none.sock"})
    assert out["failed"] is True
    assert out["msg"] == ("name: 'web\\nname' is not allowed; use letters, digits, '_', '.', "
                          "'-', starting with a letter or digit, at most 128 characters")


def test_messages_fallbacks_are_the_models() -> None:
    from calico_lib import model

    assert messages.FALLBACK_NAME_RE.pattern == model.NAME_RE.pattern
    assert messages.FALLBACK_SHOW_MAX == model.SHOW_MAX
    assert messages.NAME_RE is model.NAME_RE and messages.show is model.show
    for value in ("web", "web\n", "x" * 300, "\ud800", 5, None, ["a\u2028b"], "w\u0435b"):
        assert messages.fallback_show(value) == model.show(value)
    try:
        model.validate_name("name", "web name")
    except model.ValidationError as exc:
        assert messages.name_problem("name", "web name") == str(exc)
    assert messages.name_problem("name", "web") is None


@pytest.mark.parametrize("message, expected", [
    ("value of state must be one of: present, absent, got: present\n",
     "value of state must be one of: present, absent, got: present\\n"),
    ("a\u2028b\x1b[2J\u200b", "a\\u2028b\\x1b[2J\\u200b"),
    ("fine: one line", "fine: one line"),
    ("x" * 2000, "x" * (messages.MAX_MESSAGE - 3) + "..."),
])
def test_one_line(message, expected) -> None:
    assert messages.one_line(message) == expected
