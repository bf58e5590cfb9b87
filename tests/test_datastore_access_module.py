"""The datastore_access module over a real etcd with TLS: check mode plans only, a run
turns authentication on, a second run changes nothing; what it returns is documented.
(Needs etcd and tests.etcd_server: the collection's unit tests, tests/unit/plugins/modules/,
hold what runs without them.)"""

from __future__ import annotations

from pathlib import Path

import pytest

import calico_lib
from ansible_collections.calico.docker.plugins.modules import datastore_access
from ansible_collections.calico.docker.tests.unit.plugins.modules.helpers import (  # noqa: F401
    module_exits,
    no_ambient_settings,
    ok,
)
from ansible_collections.calico.docker.tests.unit.plugins.modules.test_return_docs import (
    check,
    module,
)
from calico_lib.datastore.access import OPERATOR_USER, host_user
from calico_lib.errors import DatastoreError
from tests.etcd_server import EtcdServer

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
        real = ok(datastore_access, args)
        assert real["changed"] is True
        # check mode predicted exactly this run (issue 20)
        assert (preview["access"], preview.get("diff")) == (real["access"], real.get("diff"))
        again = ok(datastore_access, args, check=True)
        assert again["changed"] is False
        assert ok(datastore_access, args) == again
        with pytest.raises(DatastoreError, match="authentication is on"):
            with calico_lib.connect(server.url, etcd_ca=server.pki.ca,
                                    etcd_cert=anonymous.cert, etcd_key=anonymous.key) as c:
                c.list_pools()


def test_datastore_access_return_is_documented(tmp_path: Path) -> None:
    mod = module("datastore_access")
    with EtcdServer(tls=True) as server:
        anonymous = server.pki.issue("")
        args = {"hosts": ["h1"], "passwords": {OPERATOR_USER: "o", host_user("h1"): "h"},
                "root_password": "r", "datastore": server.url, "etcd_ca": server.pki.ca,
                "etcd_cert": anonymous.cert, "etcd_key": anonymous.key}
        check("datastore_access", [ok(mod, args, check=True), ok(mod, args), ok(mod, args)])
