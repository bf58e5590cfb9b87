"""docker_network over TLS against the fake Docker Engine API of the collection's unit tests
(tests/unit/plugins/modules/test_docker_network.py), with a throwaway CA (tests/pki.py):
verified with a client certificate, unverified, refusals that send nothing, DOCKER_* from
the environment, and TLS options that would not be used."""

from __future__ import annotations

import ssl
from typing import Any

import pytest

from ansible_collections.calico.docker.plugins.modules import docker_network
from ansible_collections.calico.docker.tests.unit.plugins.modules.helpers import (  # noqa: F401
    failed,
    module_exits,
    no_ambient_settings,
    ok,
)
from ansible_collections.calico.docker.tests.unit.plugins.modules.test_docker_network import (  # noqa: E501,F401
    FakeDocker,
    docker,
    no_docker_environment,
    serve_engine_tcp,
)


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Any:
    """A throwaway CA (the cryptography library), a server certificate for 127.0.0.1, a
    client one, and a DOCKER_CERT_PATH directory (ca.pem, cert.pem, key.pem)."""
    import shutil
    from types import SimpleNamespace

    from tests.pki import Pki

    root = tmp_path_factory.mktemp("docker-pki")
    ca = Pki(root / "ca", name="docker test CA")
    certs = SimpleNamespace(ca=ca.ca, server=ca.issue("server", sans=["127.0.0.1"],
                                                      server=True),
                            client=ca.issue("client"),
                            misnamed=ca.issue("misnamed", sans=["docker.invalid"],
                                              server=True),
                            rogue=Pki(root / "rogue", name="rogue CA").ca,
                            cert_path=root / "cert-path")
    certs.cert_path.mkdir()
    for src, name in ((ca.ca, "ca.pem"), (certs.client.cert, "cert.pem"),
                      (certs.client.key, "key.pem")):
        shutil.copy(src, certs.cert_path / name)
    return certs


def _server_context(pki: Any, pair: Any = None) -> ssl.SSLContext:
    """Docker's side with --tlsverify: its certificate, and client certificates required."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    pair = pair or pki.server
    context.load_cert_chain(pair.cert, pair.key)
    context.load_verify_locations(pki.ca)
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def test_tls_verified_with_a_client_certificate(pki) -> None:
    fake = FakeDocker()
    with serve_engine_tcp(fake, _server_context(pki)) as host:
        args = {"name": "frontend", "docker_host": host, "validate_certs": True,
                "ca_cert": pki.ca, "client_cert": pki.client.cert,
                "client_key": pki.client.key}
        assert ok(docker_network, args, check=True)["changed"] is True
        assert ok(docker_network, args)["changed"] is True
        assert ok(docker_network, args)["changed"] is False
        # community.docker's aliases
        aliased = {"name": "frontend", "docker_host": host, "tls_verify": True,
                   "ca_path": pki.ca, "cert_path": pki.client.cert,
                   "key_path": pki.client.key}
        assert ok(docker_network, aliased)["changed"] is False
    assert [w[0] for w in fake.writes()] == ["POST"]


def test_tls_without_verification(pki) -> None:
    """tls: true encrypts and does not check the server (here one of another name)."""
    fake = FakeDocker()
    with serve_engine_tcp(fake, _server_context(pki, pki.misnamed)) as host:
        out = ok(docker_network, {"name": "frontend", "docker_host": host, "tls": True,
                                  "client_cert": pki.client.cert,
                                  "client_key": pki.client.key})
    assert out["changed"] is True


@pytest.mark.parametrize("case", ["rogue-ca", "misnamed", "no-client-cert", "plain-http"])
def test_tls_refusals_send_nothing(pki, case) -> None:
    fake = FakeDocker()
    server = pki.misnamed if case == "misnamed" else pki.server
    args: dict[str, Any] = {"name": "frontend", "validate_certs": True,
                            "ca_cert": pki.rogue if case == "rogue-ca" else pki.ca,
                            "client_cert": pki.client.cert, "client_key": pki.client.key}
    if case == "no-client-cert":
        del args["client_cert"], args["client_key"]
    if case == "plain-http":
        args = {"name": "frontend"}
    with serve_engine_tcp(fake, _server_context(pki, server)) as host:
        msg = failed(docker_network, dict(args, docker_host=host))
    assert msg.startswith(f"docker_host: cannot reach Docker at '{host}': "), msg
    if case in ("rogue-ca", "misnamed"):
        assert "CERTIFICATE_VERIFY_FAILED" in msg, msg
    assert fake.requests == []


def test_tls_from_the_environment(pki, monkeypatch) -> None:
    """DOCKER_HOST, DOCKER_TLS_VERIFY and DOCKER_CERT_PATH (ca.pem, cert.pem, key.pem) as
    community.docker reads them."""
    fake = FakeDocker()
    with serve_engine_tcp(fake, _server_context(pki)) as host:
        monkeypatch.setenv("DOCKER_HOST", host)
        monkeypatch.setenv("DOCKER_TLS_VERIFY", "1")
        monkeypatch.setenv("DOCKER_CERT_PATH", str(pki.cert_path))
        assert ok(docker_network, {"name": "frontend"})["changed"] is True
        # the task's options win over the environment
        msg = failed(docker_network, {"name": "frontend", "ca_cert": pki.rogue})
        assert "CERTIFICATE_VERIFY_FAILED" in msg, msg
        monkeypatch.setenv("DOCKER_TLS_VERIFY", "maybe")
        msg = failed(docker_network, {"name": "frontend"})
        assert "validate_certs" in msg, msg
    assert [w[0] for w in fake.writes()] == ["POST"]


@pytest.mark.parametrize("args, start", [
    ({"ca_cert": "CA"}, "ca_cert: is given, but neither tls nor validate_certs is true"),
    ({"client_cert": "CERT", "client_key": "KEY"},
     "client_cert: is given, but neither tls nor validate_certs is true"),
    ({"tls": True, "ca_cert": "CA"}, "ca_cert: checks Docker's certificate"),
    ({"tls": True, "client_cert": "CERT"}, "client_key: is needed with client_cert"),
    ({"validate_certs": True, "client_key": "KEY"}, "client_cert: is needed with client_key"),
    ({"validate_certs": True, "ca_cert": "/nonexistent/ca.pem"},
     "ca_cert: cannot load the CA certificate '/nonexistent/ca.pem'"),
    ({"validate_certs": True, "ca_cert": "CA", "client_cert": "CA", "client_key": "CA"},
     "client_cert: cannot load the client certificate"),
    ({"validate_certs": "sometimes"}, "validate_certs"),
])
def test_tls_options_that_would_not_be_used_are_refused(pki, args, start) -> None:
    """A file given that the connection would not use (plain HTTP, an unchecked
    certificate), a certificate without its key, a file that does not load: refused in
    one line naming the option, before Docker is asked."""
    files = {"CA": pki.ca, "CERT": pki.client.cert, "KEY": pki.client.key}
    args = {k: files.get(v, v) if isinstance(v, str) else v for k, v in args.items()}
    fake = FakeDocker()
    with serve_engine_tcp(fake, _server_context(pki)) as host:
        msg = failed(docker_network, dict(args, name="frontend", docker_host=host))
    assert msg.startswith(start) or (start == "validate_certs" and start in msg), msg
    assert msg.isprintable()
    assert fake.requests == []


def test_tls_options_are_ignored_for_a_unix_socket(docker, pki) -> None:  # noqa: F811 (the fixture)
    """As Docker does: a unix socket is spoken to in plain HTTP."""
    fake, host = docker
    out = ok(docker_network, {"name": "frontend", "docker_host": host,
                              "validate_certs": True, "ca_cert": pki.rogue})
    assert out["changed"] is True
