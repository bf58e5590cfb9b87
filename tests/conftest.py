"""Shared fixtures: one etcd server per session, and a fresh datastore per test on both backends.

``datastore_url`` is parametrized over ``sqlite`` and ``etcd`` (the etcd param carries the
``etcd`` marker, so ``-m "not etcd"`` runs the SQLite half alone). SQLite tests get a new file
in ``tmp_path``; etcd tests share the session server, wiped of every key before each test
(revisions keep growing across tests: never assume a test starts at revision 1 on etcd).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from calico_lib.datastore import Datastore, open_datastore
from tests.etcd_server import EtcdServer

#: etcd's range "\0".."\0": every key
_WIPE_ALL = json.dumps({"key": "AA==", "range_end": "AA=="}).encode()


@pytest.fixture(scope="session")
def etcd_server() -> Iterator[EtcdServer]:
    """One real etcd for the whole session; stopped at the end whatever happens."""
    if shutil.which("etcd") is None:
        pytest.fail("etcd is not installed (not on PATH): run `make deps`", pytrace=False)
    server = EtcdServer()
    try:
        server.start()
    except RuntimeError as exc:
        pytest.fail(f"could not start etcd: {exc} (run `make deps`)", pytrace=False)
    try:
        yield server
    finally:
        server.stop()


def wipe_etcd(server: EtcdServer) -> None:
    """Delete every key in ``server`` (one deleterange over the whole key space)."""
    request = urllib.request.Request(
        f"http://{server.host}:{server.port}/v3/kv/deleterange", data=_WIPE_ALL,
        headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=10) as reply:
        reply.read()


@pytest.fixture(params=["sqlite", pytest.param("etcd", marks=pytest.mark.etcd)])
def datastore_url(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:
    """A URL naming an empty datastore, on each backend in turn."""
    if request.param == "sqlite":
        yield "sqlite:///" + str((tmp_path / "calico.db").resolve())
        return
    server: EtcdServer = request.getfixturevalue("etcd_server")
    wipe_etcd(server)
    yield server.url


@pytest.fixture
def datastore(datastore_url: str) -> Iterator[Datastore]:
    """An open, empty datastore on each backend; closed after the test."""
    store = open_datastore(datastore_url)
    try:
        yield store
    finally:
        store.close()


def _sh(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout


@pytest.fixture
def host(tmp_path: Path) -> Iterator[dict[str, str]]:
    """A host namespace with one container behind a cali veth, and a link to the test
    machine (198.19.R.1 here, .2 in the namespace) so it can reach a datastore there."""
    tag = uuid.uuid4().hex[:6]
    ns, cns, uplink = f"calt-ag-{tag}", f"calt-agc-{tag}", f"calt-up{tag}"
    veth = "cali" + uuid.uuid4().hex[:11]
    subnet = f"198.19.{int(tag, 16) % 250}"
    try:
        _sh("ip", "netns", "add", ns)
        _sh("ip", "netns", "add", cns)
        _sh("ip", "-n", ns, "link", "set", "lo", "up")
        _sh("ip", "-n", ns, "link", "add", veth, "type", "veth", "peer", "name", "eth0",
           "netns", cns)
        _sh("ip", "-n", ns, "link", "set", veth, "up")
        _sh("ip", "link", "add", uplink, "type", "veth", "peer", "name", "eth0", "netns", ns)
        _sh("ip", "addr", "add", f"{subnet}.1/30", "dev", uplink)
        _sh("ip", "link", "set", uplink, "up")
        _sh("ip", "-n", ns, "addr", "add", f"{subnet}.2/30", "dev", "eth0")
        _sh("ip", "-n", ns, "link", "set", "eth0", "up")
        yield {"ns": ns, "veth": veth, "lock": str(tmp_path / "dataplane.lock"),
               "outside": f"{subnet}.1"}
    finally:
        subprocess.run(["ip", "link", "del", uplink], capture_output=True)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        subprocess.run(["ip", "netns", "del", cns], capture_output=True)
