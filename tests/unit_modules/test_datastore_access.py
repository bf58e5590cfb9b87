"""The datastore_access module over a real etcd with TLS: check mode plans only, a run
turns authentication on, a second run changes nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

import calico_lib
from ansible_collections.calico.docker.plugins.modules import datastore_access
from calico_lib.datastore.access import OPERATOR_USER, host_user
from calico_lib.errors import DatastoreError
from tests.etcd_server import EtcdServer
from tests.unit_modules.helpers import ok

pytestmark = pytest.mark.etcd


def test_the_ansible_module_plans_in_check_mode_and_is_idempotent(tmp_path: Path) -> None:

    with EtcdServer(tls=True) as server:
        anonymous = server.pki.issue("")
        args = {"hosts": ["h1"], "passwords": {OPERATOR_USER: "o", host_user("h1"): "h"},
                "root_password": "r", "datastore": server.url, "etcd_ca": server.pki.ca,
                "etcd_cert": anonymous.cert, "etcd_key": anonymous.key}
        preview = ok(datastore_access, args, check=True)
        assert preview["changed"] and preview["access"]["auth_enabled_now"]
        with calico_lib.connect(server.url, etcd_ca=server.pki.ca, etcd_cert=anonymous.cert,
                                etcd_key=anonymous.key) as client:
            client.list_pools()  # check mode turned nothing on
        assert ok(datastore_access, args)["changed"] is True
        assert ok(datastore_access, args)["changed"] is False
        with pytest.raises(DatastoreError, match="authentication is on"):
            with calico_lib.connect(server.url, etcd_ca=server.pki.ca,
                                    etcd_cert=anonymous.cert, etcd_key=anonymous.key) as c:
                c.list_pools()
