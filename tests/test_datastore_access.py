"""Least privilege in etcd (the secure-datastore issue): with authentication on, a host's
credentials write only its own records and the shared IPAM ones; operators write
everything; without credentials nothing is read. A real etcd with TLS, client-certificate
authentication and etcd's users and roles."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

import calico_lib
from calico_lib import Endpoint, IPPool, Node, keys
from calico_lib.datastore import open_datastore
from calico_lib.datastore.access import (
    OPERATOR_USER,
    Access,
    host_user,
    wanted_roles,
)
from calico_lib.errors import DatastoreError, ValidationError
from tests.etcd_server import EtcdServer

pytestmark = pytest.mark.etcd

PASSWORDS = {OPERATOR_USER: "op-secret", host_user("h1"): "h1-secret",
             host_user("h2"): "h2-secret"}
ROOT_PASSWORD = "root-secret"


@pytest.fixture(scope="module")
def etcd(tmp_path_factory) -> Iterator[EtcdServer]:
    with EtcdServer(tls=True) as server:
        server.anonymous = server.pki.issue("")  # etcd's gateway refuses a common name
        root = open_datastore(server.url, etcd_ca=server.pki.ca,
                              etcd_cert=server.anonymous.cert, etcd_key=server.anonymous.key)
        plan = Access(root, ROOT_PASSWORD).apply(wanted_roles(["h1", "h2"]), PASSWORDS)
        assert plan.enable and plan.changed
        server.workdir = tmp_path_factory.mktemp("credentials")
        yield server


def connect(etcd: EtcdServer, user: str | None) -> calico_lib.Client:
    options = {"etcd_ca": etcd.pki.ca, "etcd_cert": etcd.anonymous.cert,
               "etcd_key": etcd.anonymous.key}
    if user is not None:
        path = Path(etcd.workdir) / user
        path.write_text(PASSWORDS.get(user, ROOT_PASSWORD) + "\n")
        path.chmod(0o600)
        options.update(etcd_user=user, etcd_password_file=str(path))
    return calico_lib.connect(etcd.url, **options)


def test_operator_writes_everything(etcd: EtcdServer) -> None:
    with connect(etcd, OPERATOR_USER) as client:
        client.add_pool(IPPool("10.90.0.0/16"))
        client.add_profile("web")
        assert [p.cidr for p in client.list_pools()] == ["10.90.0.0/16"]


def test_a_host_writes_only_its_own_records(etcd: EtcdServer) -> None:
    with connect(etcd, OPERATOR_USER) as operator:
        if not operator.list_pools():
            operator.add_pool(IPPool("10.90.0.0/16"))
    with connect(etcd, host_user("h1")) as h1:
        h1.put_node(Node("h1", ipv4="10.0.0.1"))
        addrs = h1.ipam.auto_assign("h1", "ep1", num_ipv4=1)  # blocks, handles, affinity
        h1.add_endpoint(Endpoint("ep1", "h1", "caliep1", ipv4_nets=addrs.ipv4))
        assert [e.id for e in h1.list_endpoints()] == ["ep1"]
        assert [p.cidr for p in h1.list_pools()] == ["10.90.0.0/16"]  # reads policy
        before = [kv.key for kv in h1.store.list(keys.ROOT)]
        for write in (lambda: h1.add_endpoint(Endpoint("ep9", "h2", "caliep9")),
                      lambda: h1.put_node(Node("h2", ipv4="10.0.0.2")),
                      lambda: h1.add_profile("sneaky"),
                      lambda: h1.add_pool(IPPool("10.91.0.0/16"))):
            with pytest.raises(DatastoreError) as info:
                write()
            assert "permission denied: user calico-host.h1" in str(info.value)
            assert "\n" not in str(info.value)
        assert [kv.key for kv in h1.store.list(keys.ROOT)] == before


def test_every_user_reads_the_revision_and_the_operator_removes_a_pool(
        etcd: EtcdServer) -> None:
    """A transaction that writes nothing asks for the store's revision: with authentication
    on that read must stay inside what every user may read (remove_pool's last pass ends
    so, and failed with "permission denied" once)."""
    for user in (OPERATOR_USER, host_user("h1")):
        with connect(etcd, user) as client:
            assert client.store.revision() > 0
    with connect(etcd, OPERATOR_USER) as operator:
        operator.add_pool(IPPool("10.92.0.0/16"))
        operator.remove_pool("10.92.0.0/16")
        assert "10.92.0.0/16" not in [p.cidr for p in operator.list_pools()]


def test_without_credentials_nothing_is_read(etcd: EtcdServer) -> None:
    with connect(etcd, None) as anonymous:
        with pytest.raises(DatastoreError, match="authentication is on"):
            anonymous.list_pools()
    with pytest.raises(DatastoreError, match="authentication failed"):
        with calico_lib.connect(etcd.url, etcd_ca=etcd.pki.ca, etcd_cert=etcd.anonymous.cert,
                                etcd_key=etcd.anonymous.key, etcd_user=host_user("h1"),
                                etcd_password_file=_file(etcd, "wrong", "not-it")) as client:
            client.list_pools()


def test_apply_again_changes_nothing_and_follows_the_hosts(etcd: EtcdServer) -> None:
    root = open_datastore(etcd.url, etcd_ca=etcd.pki.ca, etcd_cert=etcd.anonymous.cert,
                          etcd_key=etcd.anonymous.key)
    access = Access(root, ROOT_PASSWORD)
    assert not access.plan(wanted_roles(["h1", "h2"]), PASSWORDS).changed
    # h2 leaves, h3 comes, h1's password is rotated
    passwords = {**PASSWORDS, host_user("h1"): "h1-rotated", host_user("h3"): "h3-secret"}
    plan = access.apply(wanted_roles(["h1", "h3"]), passwords)
    assert plan.users_added == [host_user("h3")]
    assert plan.passwords_set == [host_user("h1")]
    assert plan.users_removed == [host_user("h2")]
    assert not access.plan(wanted_roles(["h1", "h3"]), passwords).changed
    access.apply(wanted_roles(["h1", "h2"]), PASSWORDS)  # back, for the other tests


def test_password_file_must_be_private(etcd: EtcdServer, tmp_path: Path) -> None:
    path = tmp_path / "pw"
    path.write_text("x\n")
    path.chmod(0o644)
    with pytest.raises(ValidationError, match="etcd_password_file: .* readable by other"):
        calico_lib.connect(etcd.url, etcd_ca=etcd.pki.ca, etcd_user="u",
                           etcd_password_file=str(path))
    with pytest.raises(ValidationError, match="etcd_password_file: missing"):
        calico_lib.connect(etcd.url, etcd_ca=etcd.pki.ca, etcd_user="u")


def _file(etcd: EtcdServer, name: str, text: str) -> str:
    path = Path(etcd.workdir) / name
    path.write_text(text + "\n")
    os.chmod(path, 0o600)
    return str(path)

