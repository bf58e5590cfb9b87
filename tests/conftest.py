"""Shared fixtures, and the test kinds.

Kinds. A test is marked by what it needs (markers in pyproject.toml, applied per file with
``pytestmark`` or per test): ``netns`` root and network namespaces (iptables, ipset, BIRD),
``etcd`` a real etcd server, ``docker`` a dockerd of its own in a namespace, ``lab`` node
containers on this machine's dockerd, ``ansible`` Ansible's commands (ansible-playbook,
ansible-doc, ansible-galaxy...) or molecule. A test with none of them is pure: no root, no
daemons, milliseconds to seconds (a pure one that takes longer is also marked ``slow``);
``make test-fast`` runs the pure tests that are not slow. The kinds are enforced: while a
test sets up or runs, starting a program a kind it is not marked with needs (``ip``,
``iptables-restore``, ``bird``, ``etcd``, ``dockerd``, ``ansible-playbook``...) or opening
a named network namespace fails it, naming the marker (``_guard``), so a mis-marked test
is caught in every run (a ``docker`` test may also do what ``netns`` needs, a ``lab`` test
what both need).

``datastore_url`` is parametrized over ``sqlite`` and ``etcd`` (the etcd param carries the
``etcd`` marker, so ``-m "not etcd"`` runs the SQLite half alone). SQLite tests get a new file
in ``tmp_path``; etcd tests share the session server, wiped of every key before each test
(revisions keep growing across tests: never assume a test starts at revision 1 on etcd).
``lab`` is a ``tests.netns.Lab`` and ``host`` one host namespace with a link to this machine.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from calico_lib.datastore import Datastore, open_datastore
from tests import netns
from tests.etcd_server import EtcdServer

# ------------------------------------------------------------------------------ test kinds

#: the markers of what a test needs (registered in pyproject.toml); none of them: pure
KINDS = ("netns", "etcd", "docker", "lab", "ansible")
#: a kind that includes others: a DockerLab is a namespace, the lab's nodes run dockerd
_INCLUDES = {"docker": {"netns"}, "lab": {"docker", "netns"}}

#: programs that need a kind, by name
_NEEDS = {
    **dict.fromkeys(("ip", "iptables", "iptables-save", "iptables-restore", "ip6tables",
                     "ip6tables-save", "ip6tables-restore", "ipset", "conntrack", "birdc",
                     "nsenter", "unshare", "ping", "mount", "umount"), "netns"),
    **dict.fromkeys(("etcd", "etcdctl"), "etcd"),
    **dict.fromkeys(("dockerd", "containerd", "docker", "runc"), "docker"),
    **dict.fromkeys(("ansible-playbook", "ansible-doc", "ansible-galaxy", "ansible-lint",
                     "ansible-inventory", "ansible-test", "molecule"), "ansible"),
}
_NETNS_DIRS = ("/run/netns/", "/var/run/netns/")

#: while a test sets up or runs: its node id and kinds; and what it did beyond them
_running: list[tuple[str, set[str]]] = []
_violations: list[str] = []


def _needs(event: str, args: tuple[Any, ...]) -> tuple[str, str] | None:
    """(the kind an audited action needs, what the action was), or None."""
    if event == "open":
        path = args[0]
        if isinstance(path, str) and path.startswith(_NETNS_DIRS):
            return "netns", f"opened {path}"
        return None
    if event not in ("subprocess.Popen", "os.posix_spawn", "os.exec", "os.system"):
        return None
    argv = args[0] if event == "os.system" else args[1]
    try:
        if isinstance(argv, (str, bytes, os.PathLike)):  # a command line, or one program
            text = os.fsdecode(argv)
            words = shlex.split(text) if event == "os.system" else [text]
        else:
            words = [os.fsdecode(a) for a in argv]
    except (TypeError, ValueError):
        return None
    if not words:
        return None
    name = os.path.basename(words[0])
    kind = _NEEDS.get(name)
    if name == "bird" and "-p" not in words:  # `bird -p` only parses a config
        kind = "netns"
    return (kind, f"ran {shlex.join(words)[:200]}") if kind else None


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if not _running:
        return
    found = _needs(event, args)
    if found is None or found[0] in _running[0][1]:
        return
    kind, what = found
    nodeid, kinds = _running[0]
    marked = " ".join(sorted(kinds)) or "none: a pure test"
    message = (f"{nodeid} needs the {kind} marker (it {what}; its kinds: {marked}); "
               "mark it (see tests/conftest.py)")
    _violations.append(message)
    raise PermissionError(message)


sys.addaudithook(_audit)


def kinds_of(item: pytest.Item) -> set[str]:
    """The kinds a test is marked with, and those they include."""
    kinds = {kind for kind in KINDS if item.get_closest_marker(kind)}
    for kind in list(kinds):
        kinds |= _INCLUDES.get(kind, set())
    return kinds


def _guard(item: pytest.Item) -> Iterator[None]:
    """While a test sets up or runs, starting what needs a kind it is not marked with fails
    it, even when the code under test caught the error. (Not while it tears down: the last
    test of a file also tears down the file's fixtures.)"""
    _running[:] = [(item.nodeid, kinds_of(item))]
    _violations.clear()
    try:
        return (yield)
    finally:
        _running.clear()
        if _violations:
            pytest.fail(_violations[0], pytrace=False)


pytest_runtest_setup = pytest.hookimpl(wrapper=True)(_guard)
pytest_runtest_call = pytest.hookimpl(wrapper=True)(_guard)

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


@pytest.fixture
def lab() -> Iterator[netns.Lab]:
    """A ``tests.netns.Lab`` for one test (fails where it cannot run: not root, tools
    missing); everything it made is gone afterwards, BIRDs and namespaces included."""
    netns.require()
    with netns.Lab() as the_lab:
        yield the_lab


def _sh(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout


@pytest.fixture
def host(tmp_path: Path) -> Iterator[dict[str, str]]:
    """A host namespace with one container behind a cali veth, and a link to the test
    machine (198.19.R.1 here, .2 in the namespace) so it can reach a datastore there."""
    netns.require()
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
