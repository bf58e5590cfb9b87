"""``calicoctl diags`` (issue 14): one archive of a host's diagnostics, secrets masked.

The real tests run ``python -m calico_lib.cli diags`` inside a host network namespace
(``tests.netns``) whose dataplane the agent programmed from a SQLite datastore in
``tmp_path``, with BIRD running there on the agent's config, which holds a BGP password;
then they open the archive. A second case has no BIRD and a datastore that does not
exist: the archive is still written and says what failed. BIRD is killed by its pid file
and the namespaces deleted even when a test fails.

The masking functions and the "nothing works" path are tested without root (a fake
command runner).

Needs root, iproute2, iptables, ipset and bird2 for the namespace tests.
"""

from __future__ import annotations

import datetime
import gzip
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

import calico_lib
from calico_lib import BGPPeer, Endpoint, IPPool, Node
from calico_lib.dataplane.runner import CommandError
from calico_lib.diags import (
    MASK,
    collect,
    mask_bird_config,
    mask_calico_conf,
    scrub,
)
from calico_lib.model import BGPConfig
from calico_lib.render.bird import render_bird
from calico_lib.snapshot import Snapshot
from tests import netns
from tests.netns import OUTSIDE4, REPO_ROOT, Lab

POOL4 = "10.65.0.0/16"
POOL6 = "fd00:65::/64"
PASSWORD = "diags-md5-s3cret"  # noqa: S105 - a test password, asserted to never leak
MASKED_LINE = re.compile(r'\s*password "\*{8}";')


# ------------------------------------------------------------------------------ masking


def test_mask_bird_config_of_the_renderer(tmp_path: Path) -> None:
    """Passwords as render/bird.py writes them: every password line is exactly masked,
    the rest is untouched, and the result is still a config BIRD accepts."""
    snap = Snapshot(hostname="host1", pools=(IPPool(POOL4),), bgp=BGPConfig(),
                    nodes={"host1": Node("host1", "198.18.0.2"),
                           "host2": Node("host2", "198.18.0.3")},
                    peers=(BGPPeer(OUTSIDE4, 65000, password=PASSWORD),
                           BGPPeer("198.18.0.253", 65001, password="other-pw")))
    text = render_bird(snap)
    assert text is not None and f'password "{PASSWORD}";' in text
    masked, found = mask_bird_config(text)
    assert found == {PASSWORD, "other-pw"}
    assert PASSWORD not in masked and "other-pw" not in masked
    lines = [line for line in masked.splitlines() if "password" in line]
    assert len(lines) == 2 and all(MASKED_LINE.fullmatch(line) for line in lines), lines
    # nothing but the password lines changed
    assert [a for a, b in zip(text.splitlines(), masked.splitlines(), strict=True)
            if a != b] == [line for line in text.splitlines() if "password" in line]
    if shutil.which("bird"):
        # a masked config still parses: it can be loaded to reproduce a problem
        path = tmp_path / "bird.conf"
        path.write_text(masked)
        proc = subprocess.run(["bird", "-p", "-c", str(path)], capture_output=True,
                              text=True, timeout=30)
        assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize(("text", "secrets"), [
    ('  password "a b;c{d}";\n', {"a b;c{d}"}),                 # anything up to the quote
    ('\tPASSWORD   "x"  ;\n', {"x"}),                            # case, spacing
    ('  password "k1" { id 1; };\n  password "k2";\n', {"k1", "k2"}),  # OSPF-style keys
    ('define secret = "from-define";\nprotocol bgp p { password secret; }\n',
     {"from-define"}),                                           # a constant's name
    ('# password "in-a-comment"\n', {"in-a-comment"}),
])
def test_mask_bird_config_forms(text: str, secrets: set[str]) -> None:
    masked, found = mask_bird_config(text)
    assert found == secrets
    for secret in secrets:
        assert secret not in masked
    assert f'"{MASK}"' in masked


def test_mask_bird_config_leaves_other_words() -> None:
    assert mask_bird_config('x_password "kept";\n') == ('x_password "kept";\n', set())
    assert mask_bird_config('neighbor 1.2.3.4 as 65000;\n') == (
        'neighbor 1.2.3.4 as 65000;\n', set())


def test_mask_calico_conf() -> None:
    text = ("# the etcd password is hunter2\n"
            "datastore = etcds://calico:pw-in-url@10.0.0.1:2379  # comment\n"
            "etcd_ca = /etc/calico/pki/ca.pem\n"
            "etcd_key = /etc/calico/pki/key.pem\n"
            "etcd_user = calico-host.h1\n"
            "etcd_password_file = /etc/calico/etcd-password\n"
            "etcd_password = hunter2\n"
            "api_token=tok3n\n")
    masked = mask_calico_conf(text)
    for secret in ("hunter2", "pw-in-url", "tok3n", "comment"):
        assert secret not in masked
    lines = masked.splitlines()
    assert "datastore = etcds://calico:********@10.0.0.1:2379" in lines
    assert "etcd_key = /etc/calico/pki/key.pem" in lines        # a path, not its contents
    assert "etcd_password_file = /etc/calico/etcd-password" in lines
    assert re.fullmatch(r"etcd_password = \*{8}", lines[-2])
    assert re.fullmatch(r"api_token= \*{8}", lines[-1])


def test_scrub_masks_every_occurrence_longest_first() -> None:
    assert scrub("a s3cret b s3cret-long c", {"s3cret", "s3cret-long"}) == \
        f"a {MASK} b {MASK} c"
    assert scrub("etcd://u:p@h:1", ()) == f"etcd://u:{MASK}@h:1"


# ------------------------------------------------------------------------------ no root


def _members(path: str | Path) -> dict[str, str]:
    """Archive member name (below the one top folder) -> text; asserts that one folder."""
    with tarfile.open(path, "r:gz") as tar:
        members = tar.getmembers()
        tops = {m.name.split("/", 1)[0] for m in members}
        assert len(tops) == 1, tops
        out = {}
        for member in members:
            handle = tar.extractfile(member)
            assert handle is not None
            out[member.name.split("/", 1)[1]] = handle.read().decode()
    return out


def test_nothing_works_still_writes_the_archive(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Every command failing (a tool missing, one timing out), no datastore, no BIRD
    config: the archive is written, every failure named; secrets from the environment
    are masked in what the tools printed."""
    calls: list[list[str]] = []

    def run(argv: list[str], **kwargs: object) -> str:
        calls.append(argv)
        assert kwargs.get("merge_stderr") is True
        if argv[0] == "ipset":
            raise CommandError(argv, None, "")
        if argv[0] == "journalctl":
            return f"agent said {PASSWORD}\n"
        raise CommandError(argv, 127, f"{argv[0]}: command not found")

    missing = tmp_path / "missing" / "calico.db"
    monkeypatch.setenv("CALICO_BGP_PASSWORD", PASSWORD)
    result = collect(output=str(tmp_path), hostname="h/1", now=datetime.datetime(2030, 1, 2),
                     bird_socket=str(tmp_path / "bird.ctl"),
                     bird_config=str(tmp_path / "bird.conf"),
                     datastore_options={"url": f"sqlite:///{missing}"},
                     calico_conf=str(tmp_path / "calico.conf"), run=run)
    # a directory as --archive: the default name inside it (the host name made safe)
    assert result.path == str(tmp_path / "calico-diags-h_1-20300102T000000Z.tar.gz")
    assert result.folder == "calico-diags-h_1-20300102T000000Z"
    assert not missing.exists() and not missing.parent.exists()
    parts = _members(result.path)
    assert set(result.parts) == set(parts)
    failed = {f.part for f in result.failures}
    assert {"datastore/snapshot.json", "iptables-save.txt", "ipset-list.txt", "routes.txt",
            "bird-status.txt", "bird.conf", "versions.txt"} <= failed
    assert "ipset list failed (timed out)" in parts["errors.txt"]
    assert "iptables-save -c failed (exit 127): iptables-save: command not found" in \
        parts["errors.txt"]
    assert "bird.conf" in parts["errors.txt"] and "calico.db" in parts["errors.txt"]
    assert "INCOMPLETE" in parts["MANIFEST.txt"]
    assert "calico.conf: left out" in parts["MANIFEST.txt"]
    assert parts["logs/calico-agent.log"].endswith(f"agent said {MASK}\n")
    assert PASSWORD not in "".join(parts.values())
    assert ["iptables-save", "-c"] in calls and ["ip6tables-save", "-c"] in calls


def test_cli_refuses_what_it_cannot_write(tmp_path: Path) -> None:
    env = _env()
    proc = _calicoctl(env, tmp_path, "diags", "--archive",
                      str(tmp_path / "no-such-dir" / "x.tar.gz"))
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.startswith("calicoctl: cannot write the archive") and \
        proc.stderr.count("\n") == 1
    proc = _calicoctl(env, tmp_path, "diags", "--log-lines", "0")
    assert proc.returncode == 2 and "--log-lines" in proc.stderr
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------ real hosts


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("CALICO_") and k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [REPO_ROOT, env.get("PYTHONPATH")]))
    return env


def _calicoctl(env: dict[str, str], cwd: Path, *args: str, ns: str | None = None
               ) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "calico_lib.cli", *args]
    if ns:
        argv = ["ip", "netns", "exec", ns, *argv]
    return subprocess.run(argv, capture_output=True, text=True, timeout=300, env=env,
                          cwd=cwd)


@pytest.fixture
def lab(lab: Lab) -> Lab:
    """The shared lab (tests/conftest.py), where BIRD is installed too."""
    netns.require("bird", "birdc")
    return lab


@pytest.mark.netns
def test_diags_of_a_programmed_host_with_bird(lab: Lab, tmp_path: Path) -> None:
    url = "sqlite:///" + str((tmp_path / "calico.db").resolve())
    host = lab.host("host1")
    with calico_lib.connect(url) as client:
        client.add_pool(IPPool(POOL4))
        client.add_pool(IPPool(POOL6))
        client.add_profile("web")
        client.add_node(Node(host.name, host.ipv4, host.ipv6))
        client.add_bgp_peer(BGPPeer(OUTSIDE4, 65000, password=PASSWORD))
        ctr = lab.container(host, "ctr", ipv4=["10.65.1.10"], ipv6=["fd00:65::1:10"])
        client.add_endpoint(Endpoint(id=ctr.id, host=host.name, interface=ctr.interface,
                                     mac=ctr.mac, ipv4_nets=ctr.ipv4, ipv6_nets=ctr.ipv6,
                                     profiles=["web"]), assign_addresses=True)
        other = Endpoint(id="f" * 32, host="host2", interface="califffffffffff",
                         ipv4_nets=["10.65.2.10"], profiles=["web"])
        client.add_endpoint(other, assign_addresses=True)
    conf, sock = Path(lab.workdir) / "bird.conf", Path(lab.workdir) / "bird.ctl"
    lab.agent(host, url, None, "--bird-config", str(conf), "--bird-socket", str(sock))
    assert f'password "{PASSWORD}"' in conf.read_text()
    lab.start_bird(host.ns, conf, sock)

    archive = tmp_path / "out" / "host1.tar.gz"
    archive.parent.mkdir()
    proc = _calicoctl(_env(), tmp_path, "diags", "--datastore", url, "--hostname", host.name,
                      "--bird-socket", str(sock), "--bird-config", str(conf),
                      "--log-lines", "100", "--archive", str(archive), "-o", "json",
                      ns=host.ns)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["path"] == str(archive) and archive.exists()
    assert oct(archive.stat().st_mode & 0o777) == "0o600"
    parts = _members(archive)
    assert set(report["parts"]) == set(parts)
    failed = {f["part"] for f in report["failures"]}
    assert not failed & {"iptables-save.txt", "ip6tables-save.txt", "ipset-list.txt",
                         "routes.txt", "links.txt", "bird-status.txt", "bird.conf",
                         "datastore/snapshot.json", "datastore/ipam-check.json"}, report

    # the dataplane the agent programmed, with counters
    for name in ("iptables-save.txt", "ip6tables-save.txt"):
        assert ":cali-FORWARD" in parts[name], parts[name]
        assert re.search(r"^\[\d+:\d+\] -A cali-", parts[name], re.M), parts[name]
    assert re.search(r"^Name: cali4-", parts["ipset-list.txt"], re.M), parts["ipset-list.txt"]
    routes = parts["routes.txt"]
    assert f"10.65.1.10 dev {ctr.interface}" in routes, routes
    assert f"fd00:65::1:10 dev {ctr.interface}" in routes, routes
    assert "blackhole 10.65.1.0/26" in routes, routes  # the host's block
    assert ctr.interface in parts["links.txt"]

    # this host's datastore view
    snap = json.loads(parts["datastore/snapshot.json"])
    assert [e["id"] for e in snap["local_endpoints"]] == [ctr.id]
    assert [e["id"] for e in snap["remote_endpoints"]] == [other.id]
    assert [p["address"] for p in snap["peers"]] == [OUTSIDE4]
    assert snap["peers"][0]["password"] == MASK
    assert set(snap["blocks"]) == {"10.65.1.0/26", "fd00:65::1:0/122"}
    assert json.loads(parts["datastore/ipam-check.json"])["ok"] is True
    assert json.loads(parts["datastore/settings.json"])["url"] == url

    # BIRD: running, its config with the peer and the password masked
    assert "Daemon is up and running" in parts["bird-status.txt"], parts["bird-status.txt"]
    assert "Global_" in parts["bird-status.txt"]
    bird_conf = parts["bird.conf"]
    assert f"neighbor {OUTSIDE4} as 65000;" in bird_conf
    password_lines = [line for line in bird_conf.splitlines() if "password" in line]
    assert password_lines and all(MASKED_LINE.fullmatch(x) for x in password_lines)

    versions = parts["versions.txt"]
    assert f"calico_lib {calico_lib.__version__}" in versions
    for what in ("$ uname -a", "iptables v", "ipset v", "BIRD version", "$ docker version"):
        assert what in versions, versions
    assert {"logs/calico-agent.log", "logs/calico-docker-plugin.log", "MANIFEST.txt",
            "errors.txt"} <= set(parts)

    # the password nowhere: not in any file, name or tar header
    assert PASSWORD.encode() not in gzip.decompress(archive.read_bytes())


@pytest.mark.netns
def test_diags_without_bird_and_datastore(lab: Lab, tmp_path: Path) -> None:
    host = lab.host("host1")
    missing = tmp_path / "absent" / "calico.db"
    proc = _calicoctl(_env(), tmp_path, "diags", "--datastore", f"sqlite:///{missing}",
                      "--hostname", host.name,
                      "--bird-socket", str(Path(lab.workdir) / "bird.ctl"),
                      "--bird-config", str(Path(lab.workdir) / "bird.conf"), ns=host.ns)
    assert proc.returncode == 0, proc.stderr
    path = Path(proc.stdout.strip())
    assert proc.stdout.count("\n") == 1 and path.parent == tmp_path
    assert re.fullmatch(r"calico-diags-host1-\d{8}T\d{6}Z\.tar\.gz", path.name), path
    assert not missing.parent.exists()  # diags never creates a datastore
    parts = _members(path)
    errors = parts["errors.txt"]
    assert "datastore/snapshot.json: datastore not readable" in errors and str(missing) in errors
    assert re.search(r"bird-status\.txt: birdc -s \S+ show status failed", errors), errors
    assert "bird.conf: cannot read" in errors
    assert "not collected: bird-status.txt" in proc.stderr
    # the rest is there
    assert "$ iptables-save -c" in parts["iptables-save.txt"]
    assert "iptables-save" not in errors and "ipset" not in errors
    assert "198.18.0.0/24" in parts["routes.txt"]
    assert "calico_lib" in parts["versions.txt"]
    manifest = parts["MANIFEST.txt"]
    assert "routes.txt: ok" in manifest and "bird-status.txt: INCOMPLETE" in manifest
