"""Run a module's main() with arguments and catch exit_json / fail_json.

    out = ok(ip_pool, {"cidr": "10.65.0.0/16", "datastore": url})   # the exit_json result
    msg = failed(ip_pool, {"cidr": "nope", "datastore": url})       # the fail_json message

The fixtures ``module_exits`` (``AnsibleModule.exit_json`` / ``fail_json`` raise these
exceptions), ``no_ambient_settings`` and ``url`` are defined here; ``conftest.py`` takes them
for the collection's unit tests, and a project test that runs modules imports them:

    from ansible_collections.calico.docker.tests.unit.plugins.modules.helpers import (
        module_exits, no_ambient_settings, url)  # noqa: F401 (fixtures)

These tests run from a checkout (the project's pytest; ``ansible_collections/calico/docker``
is a link to the checkout) and in a collection tree (``ansible-test units``,
``scripts/ansible-test.sh units``): they import the collection and this file by the
collection's name, and need nothing else of the project but calico_lib.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from ansible.module_utils import basic

import calico_lib
from calico_lib import Endpoint, IPPool, Node

#: the collection's root: the checkout, or ansible_collections/calico/docker in a tree
COLLECTION = Path(__file__).resolve().parents[4]


def collections_path() -> Path:
    """The folder to put on ANSIBLE_COLLECTIONS_PATH or PYTHONPATH for this collection: the
    checkout (it holds the link ansible_collections/calico/docker), or the folder above
    ansible_collections/ in a collection tree."""
    if COLLECTION.parents[1].name == "ansible_collections":
        return COLLECTION.parents[2]
    return COLLECTION


try:  # ansible-core >= 2.19
    from ansible.module_utils.testing import patch_module_args
except ImportError:  # older ansible-core: the classic set_module_args
    from ansible.module_utils.common.text.converters import to_bytes

    @contextmanager
    def patch_module_args(args: dict[str, Any] | None = None) -> Iterator[None]:
        saved = basic._ANSIBLE_ARGS
        basic._ANSIBLE_ARGS = to_bytes(json.dumps({"ANSIBLE_MODULE_ARGS": args or {}}))
        try:
            yield
        finally:
            basic._ANSIBLE_ARGS = saved


class AnsibleExitJson(Exception):
    """exit_json was called: the module's result is ``args[0]``."""


class AnsibleFailJson(Exception):
    """fail_json was called: the module's result is ``args[0]``."""


def exit_json(self: Any, **kwargs: Any) -> None:
    kwargs.setdefault("changed", False)
    raise AnsibleExitJson(kwargs)


def fail_json(self: Any, msg: str = "", **kwargs: Any) -> None:
    kwargs.update(failed=True, msg=msg)
    raise AnsibleFailJson(kwargs)


def call(module: Any, args: dict[str, Any], check: bool = False,
         diff: bool = True) -> dict[str, Any]:
    """Run ``module.main()`` with ``args``; the result of exit_json or fail_json."""
    full = dict(args, _ansible_check_mode=check, _ansible_diff=diff)
    with patch_module_args(full):
        with pytest.raises((AnsibleExitJson, AnsibleFailJson)) as info:
            module.main()
    return info.value.args[0]


def ok(module: Any, args: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """The result of a run that must succeed."""
    out = call(module, args, **kwargs)
    assert not out.get("failed"), out
    return out


def failed(module: Any, args: dict[str, Any], **kwargs: Any) -> str:
    """The one-line message of a run that must fail."""
    out = call(module, args, **kwargs)
    assert out.get("failed"), out
    assert "\n" not in out["msg"], out["msg"]
    return out["msg"]


@contextmanager
def client(url: str) -> Iterator[calico_lib.Client]:
    """A client on ``url``, to check what the module stored."""
    with calico_lib.connect(url) as c:
        yield c


@pytest.fixture(autouse=True)
def module_exits(monkeypatch: pytest.MonkeyPatch) -> None:
    """exit_json / fail_json raise instead of printing and exiting."""
    monkeypatch.setattr(basic.AnsibleModule, "exit_json", exit_json)
    monkeypatch.setattr(basic.AnsibleModule, "fail_json", fail_json)


@pytest.fixture(autouse=True)
def no_ambient_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests name their datastore and host; never fall back to this machine's."""
    monkeypatch.delenv("CALICO_DATASTORE", raising=False)
    monkeypatch.delenv("CALICO_HOSTNAME", raising=False)


@pytest.fixture
def url(tmp_path: Path) -> str:
    """A SQLite datastore in tmp_path (created on first use)."""
    return "sqlite:///" + str((tmp_path / "calico.db").resolve())


def three_hosts(c: calico_lib.Client) -> None:
    """Pools, nodes h1-h3, profiles frontend and backend, a frontend container on h1 and a
    backend container on h2 (IPv4 and IPv6); tests/test_preview.py uses it too."""
    c.add_pool(IPPool("10.65.0.0/16"))
    c.add_pool(IPPool("fd00:65::/64"))
    for n, host in enumerate(("h1", "h2", "h3"), 1):
        c.add_node(Node(host, ipv4=f"198.18.0.{n}"))
    c.add_profile("frontend")
    c.add_profile("backend")
    c.add_endpoint(Endpoint("fe1", "h1", "calife1", ipv4_nets=["10.65.0.1"],
                            ipv6_nets=["fd00:65::1"], profiles=["frontend"]))
    c.add_endpoint(Endpoint("be1", "h2", "calibe1", ipv4_nets=["10.65.1.1"],
                            ipv6_nets=["fd00:65::1:1"], profiles=["backend"]))
