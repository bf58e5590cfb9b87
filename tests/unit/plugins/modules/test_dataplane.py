"""The dataplane module without root: a datastore it cannot use fails in one line.

In a throwaway network namespace (root), check mode previews the rules and changes nothing
and a real run applies them once: tests/test_dataplane_module.py."""

from __future__ import annotations

from ansible_collections.calico.docker.plugins.modules import dataplane
from ansible_collections.calico.docker.tests.unit.plugins.modules.helpers import failed


def test_bad_datastore_fails_with_one_line(tmp_path) -> None:
    msg = failed(dataplane, {"hostname": "host-1", "lock_file": str(tmp_path / "dp.lock"),
                             "datastore": "mysql://db"})
    assert msg.startswith("datastore:")
