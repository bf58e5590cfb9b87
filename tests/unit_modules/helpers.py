"""Run a module's main() with arguments and catch exit_json / fail_json.

    out = ok(ip_pool, {"cidr": "10.65.0.0/16", "datastore": url})   # the exit_json result
    msg = failed(ip_pool, {"cidr": "nope", "datastore": url})       # the fail_json message

``conftest.py`` patches ``AnsibleModule.exit_json`` / ``fail_json`` to raise these exceptions.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from ansible.module_utils import basic

import calico_lib

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
