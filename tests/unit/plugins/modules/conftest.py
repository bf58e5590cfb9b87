"""The collection's module unit tests: their fixtures (in ``helpers.py``) and markers.

They run under the project's pytest (from the checkout: pyproject.toml registers the markers
and tests/conftest.py enforces them) and under ``ansible-test units``
(``scripts/ansible-test.sh units``, in a collection tree where neither is there: the markers
these tests use are registered here, since ansible-test runs pytest with --strict-markers).
"""

from __future__ import annotations

import pytest

try:
    from ansible_collections.calico.docker.tests.unit.plugins.modules import helpers
except ImportError as exc:  # pragma: no cover - a setup problem, said plainly
    raise ImportError("the module unit tests need ansible-core and calico_lib in this "
                      f"Python (run `make deps`): {exc}") from exc

# the fixtures of every test here (helpers.py defines them, for the project's tests too)
module_exits = helpers.module_exits
no_ambient_settings = helpers.no_ambient_settings
url = helpers.url

#: the project's markers (pyproject.toml) that these tests use
MARKERS = {
    "slow": "long-running (left out of `make test-fast`)",
}


def pytest_configure(config: pytest.Config) -> None:
    known = {line.split(":")[0].strip() for line in config.getini("markers")}
    for name, text in MARKERS.items():
        if name not in known:
            config.addinivalue_line("markers", f"{name}: {text}")
