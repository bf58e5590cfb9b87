"""etcd over TLS with client certificates (the secure-datastore issue): every component
connects with its certificate, nothing connects without one, and each wrong setting is named
in one line before anything is written."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import calico_lib
from calico_lib import IPPool
from calico_lib.datastore import resolve
from calico_lib.errors import CalicoError, DatastoreUnavailable, ValidationError
from tests.etcd_server import EtcdServer
from tests.pki import Pki
from tests.test_cli import _env, assert_error, run_calicoctl

pytestmark = pytest.mark.etcd


@pytest.fixture(scope="module")
def etcd() -> Iterator[EtcdServer]:
    with EtcdServer(tls=True) as server:
        yield server


def tls(server: EtcdServer, pair=None, ca: str | None = None) -> dict[str, str | None]:
    pair = pair or server.client
    return {"etcd_ca": ca or server.pki.ca, "etcd_cert": pair.cert, "etcd_key": pair.key}


def env_for(server: EtcdServer, pair=None) -> dict[str, str]:
    files = tls(server, pair)
    return _env(CALICO_DATASTORE=server.url, CALICO_ETCD_CA=files["etcd_ca"],
                CALICO_ETCD_CERT=files["etcd_cert"], CALICO_ETCD_KEY=files["etcd_key"])


def keys_in(server: EtcdServer) -> list[str]:
    with calico_lib.connect(server.url, **tls(server)) as client:
        return [kv.key for kv in client.store.list("/")]


def test_client_with_a_certificate_reads_and_writes(etcd: EtcdServer) -> None:
    with calico_lib.connect(etcd.url, **tls(etcd)) as client:
        client.add_pool(IPPool("10.80.0.0/16"))
        assert [p.cidr for p in client.list_pools()] == ["10.80.0.0/16"]
        client.remove_pool("10.80.0.0/16")


def test_no_certificate_no_access(etcd: EtcdServer, tmp_path: Path) -> None:
    """Plain HTTP, TLS without a client certificate, a certificate of another CA, an expired
    one, and the wrong CA for the server: each refused with a message naming the cause,
    and nothing written."""
    rogue = Pki(tmp_path / "rogue")
    expired = etcd.pki.issue("expired-host", expired=True)
    before = keys_in(etcd)
    cases = [
        (dict(url=etcd.url.replace("etcds://", "etcd://")), DatastoreUnavailable,
         "use etcds://"),
        (dict(url=etcd.url, etcd_ca=etcd.pki.ca), DatastoreUnavailable,
         "requires a client certificate"),
        (dict(url=etcd.url, **tls(etcd, rogue.issue("calico-operator"))),
         DatastoreUnavailable, "refused this client's certificate"),
        (dict(url=etcd.url, **tls(etcd, expired)), ValidationError, "expired on"),
        (dict(url=etcd.url, **tls(etcd, ca=rogue.ca)), DatastoreUnavailable,
         "not signed by the CA"),
        (dict(url=etcd.url, **{**tls(etcd), "etcd_ca": str(tmp_path / "missing.crt")}),
         ValidationError, "no such file"),
        (dict(url=etcd.url, **{**tls(etcd), "etcd_key": None}), ValidationError,
         "etcd_key: missing"),
        (dict(url=etcd.url, **{**tls(etcd), "etcd_key": rogue.issue("x").key}),
         ValidationError, "does not match"),
    ]
    for kwargs, error, words in cases:
        with pytest.raises(error) as info:
            with calico_lib.connect(**kwargs) as client:
                client.add_pool(IPPool("10.81.0.0/16"))
        text = str(info.value)
        assert words in text and "\n" not in text, (kwargs, text)
    assert keys_in(etcd) == before


def test_tls_against_a_plain_etcd_is_named() -> None:
    with EtcdServer() as plain:
        pki = Pki(Path(plain._tmpdir) / "pki")  # type: ignore[arg-type]
        pair = pki.issue("calico-operator")
        with pytest.raises(DatastoreUnavailable, match="may not speak TLS"):
            with calico_lib.connect(plain.url.replace("etcd://", "etcds://"), etcd_ca=pki.ca,
                                    etcd_cert=pair.cert, etcd_key=pair.key) as client:
                client.list_pools()
        with pytest.raises(ValidationError, match="plain HTTP but TLS files are set"):
            calico_lib.connect(plain.url, etcd_ca=pki.ca)


def test_environment_cannot_replace_the_ca_or_add_a_proxy(etcd: EtcdServer,
                                                         monkeypatch) -> None:
    """requests would take $REQUESTS_CA_BUNDLE over the CA we give it, and $HTTPS_PROXY
    would carry the datastore's traffic elsewhere."""
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("NO_PROXY", "")
    with calico_lib.connect(etcd.url, **tls(etcd)) as client:
        client.list_pools()


def test_settings_come_from_arguments_environment_then_calico_conf(tmp_path: Path,
                                                                   monkeypatch) -> None:
    conf = tmp_path / "calico.conf"
    conf.write_text("# written by the node role\ndatastore = etcds://10.0.0.1:2379\n"
                    "etcd_ca = /etc/calico/pki/ca.crt  # the CA\n"
                    "etcd_cert = /etc/calico/pki/client.crt\n"
                    "etcd_key = /etc/calico/pki/client.key\n")
    for name in ("CALICO_DATASTORE", "CALICO_ETCD_CA", "CALICO_ETCD_CERT", "CALICO_ETCD_KEY"):
        monkeypatch.delenv(name, raising=False)
    settings = resolve(config_file=str(conf))
    assert settings.url == "etcds://10.0.0.1:2379"
    assert (settings.etcd_ca, settings.etcd_cert, settings.etcd_key) == (
        "/etc/calico/pki/ca.crt", "/etc/calico/pki/client.crt", "/etc/calico/pki/client.key")
    monkeypatch.setenv("CALICO_ETCD_CERT", "/env/cert.pem")
    assert resolve(config_file=str(conf)).etcd_cert == "/env/cert.pem"
    assert resolve(etcd_cert="/arg.pem", config_file=str(conf)).etcd_cert == "/arg.pem"
    assert resolve(config_file=str(tmp_path / "absent")).url.startswith("sqlite:")


def test_calicoctl_agent_and_plugin_connect_with_their_certificates(
        etcd: EtcdServer, tmp_path: Path) -> None:
    env = env_for(etcd)
    assert run_calicoctl("pool", "add", "10.82.0.0/16", env=env).code == 0
    listed = run_calicoctl("pool", "list", "-o", "json", env=env)
    assert listed.code == 0 and "10.82.0.0/16" in listed.out
    flags = run_calicoctl("pool", "list", "--datastore", etcd.url, "--etcd-ca", etcd.pki.ca,
                          "--etcd-cert", etcd.client.cert, "--etcd-key", etcd.client.key,
                          env=_env())
    assert flags.code == 0 and "10.82.0.0/16" in flags.out, flags
    # without the certificate: refused, named, nothing written
    bare = {k: v for k, v in env.items() if k not in ("CALICO_ETCD_CERT", "CALICO_ETCD_KEY")}
    assert_error(run_calicoctl("pool", "add", "10.83.0.0/16", env=bare), 1,
                 "client certificate")
    # the plugin opens the store with the files from the environment
    from calico_lib.plugin import server

    with pytest.raises(CalicoError) as info:
        with calico_lib.connect(etcd.url, etcd_ca=etcd.pki.ca) as client:
            client.list_pools()
    assert "client certificate" in str(info.value)
    args = server.build_parser().parse_args(["--etcd-ca", etcd.pki.ca, "--etcd-cert",
                                             etcd.client.cert, "--etcd-key", etcd.client.key,
                                             "--datastore", etcd.url])
    with calico_lib.connect(**calico_lib.datastore.options(args)) as client:
        assert [p.cidr for p in client.list_pools()] == ["10.82.0.0/16"]
        client.remove_pool("10.82.0.0/16")


@pytest.mark.netns
def test_agent_in_a_host_namespace_uses_its_certificate(host, tmp_path: Path) -> None:
    with EtcdServer(host=host["outside"], tls=True) as server:
        with calico_lib.connect(server.url, **tls(server)) as client:
            client.add_pool(IPPool("10.84.0.0/16"))
        base = [sys.executable, "-m", "calico_lib.agent", "--once", "--hostname", "tls-host",
                "--bird-config", "none", "--lock-file", host["lock"], "--datastore",
                server.url, "--etcd-ca", server.pki.ca]
        ns = ["ip", "netns", "exec", host["ns"]]
        agent = subprocess.run(ns + base + ["--etcd-cert", server.client.cert, "--etcd-key",
                                            server.client.key],
                               env=_env(), capture_output=True, text=True, timeout=60)
        assert agent.returncode == 0 and "revision" in agent.stderr, agent.stderr
        refused = subprocess.run(ns + base, env=_env(), capture_output=True, text=True,
                                 timeout=60)
        assert refused.returncode == 1 and "client certificate" in refused.stderr
        assert refused.stderr.count("\n") == 1
