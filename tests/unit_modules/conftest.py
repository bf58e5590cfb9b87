"""Fixtures of the module unit tests (helpers are in ``helpers.py``)."""

from __future__ import annotations

import pytest

try:
    from ansible.module_utils import basic
except ImportError:  # pragma: no cover - a setup problem, said plainly
    raise ImportError("the module unit tests need ansible-core in this Python "
                      "(run `make deps`)") from None

from tests.unit_modules.helpers import exit_json, fail_json


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
def url(tmp_path) -> str:
    """A SQLite datastore in tmp_path (created on first use)."""
    return "sqlite:///" + str((tmp_path / "calico.db").resolve())
