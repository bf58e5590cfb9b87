# Copyright: Calico for Docker contributors
# Apache License 2.0 (see LICENSE)
"""The little of Docker's Engine API the docker_network module needs, over Docker's unix
socket or TCP (with or without TLS).

Standard library only: it runs with whatever Python the managed host has.

Where Docker is, as community.docker's modules take it: ``docker_host`` is
``unix:///path/to/docker.sock`` (``unix://path`` is the same, as the Docker SDK for Python
reads it), a plain absolute socket path, or ``tcp://host:port``; when the task does not
give it, ``DOCKER_HOST``. Over TCP, ``tls`` encrypts without checking Docker's certificate,
``validate_certs`` encrypts and checks it (against ``ca_cert``, else the system's CAs), and
``client_cert``/``client_key`` authenticate this host; ``DOCKER_TLS``, ``DOCKER_TLS_VERIFY``
and ``DOCKER_CERT_PATH`` (``ca.pem``, ``cert.pem``, ``key.pem``) stand in for options the
task does not give. An empty environment variable counts as unset, as Docker's CLI has it.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import ssl
from urllib.parse import quote, urlsplit

from ansible.module_utils.basic import AnsibleFallbackNotFound

from ansible_collections.calico.docker.plugins.module_utils.messages import one_line, show

DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock"
#: the forms of docker_host, for the refusals
DOCKER_HOST_FORMS = "use unix:///path/to/docker.sock, /path/to/docker.sock or tcp://host:port"
#: the files DOCKER_CERT_PATH holds, as Docker's CLI and community.docker name them
CERT_PATH_FILES = {"ca_cert": "ca.pem", "client_cert": "cert.pem", "client_key": "key.pem"}


class DockerError(Exception):
    """Docker refused a request or cannot be reached; the message is one line."""

    def __init__(self, message, status=None):
        super().__init__(one_line(message))
        self.status = status


def env_fallback_set(*names):
    """An argument_spec ``fallback``: the first of the environment variables ``names`` that
    is set and not empty (Docker's CLI reads an empty one as unset)."""
    for name in names:
        value = os.environ.get(name)
        if value:
            return value
    raise AnsibleFallbackNotFound


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout):
        super().__init__("localhost", timeout=timeout)
        self.socket_path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.socket_path)


def _bad_host(docker_host, why):
    return DockerError(f"docker_host: {show(docker_host)} {why}; {DOCKER_HOST_FORMS}")


def parse_docker_host(docker_host):
    """``("unix", path)`` or ``("tcp", host, port)`` for a docker_host value; DockerError
    (one line naming docker_host) for anything else."""
    if not isinstance(docker_host, str) or not docker_host:
        raise _bad_host(docker_host, "is not an address of Docker")
    if not docker_host.isprintable() or docker_host.strip() != docker_host:
        raise _bad_host(docker_host, "has spaces or control characters around or in it")
    if docker_host.startswith("/"):
        return ("unix", docker_host)
    if docker_host.startswith("unix://"):
        path = docker_host[len("unix://"):]
        if not path.strip("/"):
            raise _bad_host(docker_host, "names no socket")
        # unix://var/run/docker.sock is unix:///var/run/docker.sock, as the Docker SDK for
        # Python (community.docker) reads it: never a path relative to the module's directory
        return ("unix", path if path.startswith("/") else "/" + path)
    scheme = docker_host.split("://", 1)[0] if "://" in docker_host else None
    if scheme is None:
        raise _bad_host(docker_host, "is neither an absolute socket path nor a URL")
    if scheme != "tcp":
        raise _bad_host(docker_host, f"has the scheme {show(scheme)}, which is not supported")
    url = urlsplit(docker_host)
    try:
        host, port = url.hostname, url.port
    except ValueError:
        raise _bad_host(docker_host, "has no valid port") from None
    if not host or " " in host:
        raise _bad_host(docker_host, "names no valid host")
    if not port:
        raise _bad_host(docker_host, "names no port (Docker listens on 2375, or 2376 "
                                     "with TLS)")
    if url.username is not None or url.password is not None or url.path not in ("", "/") \
            or url.query or url.fragment or docker_host.endswith(("?", "#")):
        raise _bad_host(docker_host, "has more than a host and a port")
    return ("tcp", host, port)


def _cert_path_file(option, cert_path):
    """The file of ``option`` in DOCKER_CERT_PATH when it is there, else None (Docker's CLI
    leaves out a file the directory does not have)."""
    if not cert_path:
        return None
    path = os.path.join(cert_path, CERT_PATH_FILES[option])
    return path if os.path.isfile(path) else None


def tls_context(tls=False, validate_certs=False, ca_cert=None, client_cert=None,
                client_key=None, cert_path=None):
    """The ssl.SSLContext a TCP connection to Docker uses, or None for plain HTTP.

    ``ca_cert``, ``client_cert``, ``client_key`` are what the task gives (None: not given);
    ``cert_path`` is DOCKER_CERT_PATH, whose files stand in for those not given. A file
    given that TLS would not use is refused rather than left out: the connection would not
    be what the task asks for (plain HTTP, or an unchecked certificate)."""
    given = [name for name, value in (("ca_cert", ca_cert), ("client_cert", client_cert),
                                      ("client_key", client_key)) if value]
    if not (tls or validate_certs):
        if given:
            raise DockerError(f"{given[0]}: is given, but neither tls nor validate_certs is "
                              "true, so Docker would be spoken to without TLS; set "
                              "validate_certs: true (or tls: true)")
        return None
    if ca_cert and not validate_certs:
        raise DockerError("ca_cert: checks Docker's certificate, which tls: true alone does "
                          "not; set validate_certs: true")
    if bool(client_cert) != bool(client_key):
        missing, other = (("client_key", "client_cert") if client_cert
                          else ("client_cert", "client_key"))
        raise DockerError(f"{missing}: is needed with {other} (the client's certificate "
                          "and its key)")
    client_from = "client_cert"
    if not client_cert:
        client_cert = _cert_path_file("client_cert", cert_path)
        client_key = _cert_path_file("client_key", cert_path)
        if not (client_cert and client_key):
            client_cert = client_key = None
        client_from = "DOCKER_CERT_PATH"
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if validate_certs:
        # PROTOCOL_TLS_CLIENT checks the certificate and the host name by default
        ca_from = "ca_cert"
        if not ca_cert:
            ca_cert, ca_from = _cert_path_file("ca_cert", cert_path), "DOCKER_CERT_PATH"
        if ca_cert:  # that CA only, as Docker's CLI
            try:
                context.load_verify_locations(cafile=ca_cert)
            except (OSError, ssl.SSLError, ValueError) as exc:
                raise DockerError(f"{ca_from}: cannot load the CA certificate "
                                  f"{show(ca_cert)}: {_reason(exc)}") from None
        else:
            context.load_default_certs()
    else:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if client_cert:
        try:
            context.load_cert_chain(client_cert, client_key)
        except (OSError, ssl.SSLError, ValueError) as exc:
            raise DockerError(f"{client_from}: cannot load the client certificate "
                              f"{show(client_cert)} with the key {show(client_key)}: "
                              f"{_reason(exc)}") from None
    return context


def _reason(exc):
    return " ".join(str(exc).split()) or type(exc).__name__


class DockerAPI:
    def __init__(self, docker_host=DEFAULT_DOCKER_HOST, timeout=60.0, ssl_context=None):
        """``ssl_context`` (see tls_context) applies to a tcp:// docker_host only: a unix
        socket is local, and Docker speaks plain HTTP on it."""
        self.docker_host = docker_host
        self.address = parse_docker_host(docker_host)
        self.path = self.address[1] if self.address[0] == "unix" else None
        self.ssl_context = ssl_context if self.address[0] == "tcp" else None
        self.timeout = timeout

    def _connection(self):
        if self.address[0] == "unix":
            return _UnixConnection(self.path, self.timeout)
        host, port = self.address[1], self.address[2]
        if self.ssl_context is not None:
            return http.client.HTTPSConnection(host, port, timeout=self.timeout,
                                               context=self.ssl_context)
        return http.client.HTTPConnection(host, port, timeout=self.timeout)

    def request(self, method, path, body=None):
        """The decoded JSON answer (None when empty); DockerError on an error status."""
        conn = self._connection()
        headers = {"Host": "docker"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        try:
            conn.request(method, path, body=data, headers=headers)
            reply = conn.getresponse()
            raw = reply.read()
        except (OSError, http.client.HTTPException) as exc:
            where = self.path if self.path is not None else self.docker_host
            raise DockerError(f"docker_host: cannot reach Docker at {show(where)}: "
                              f"{_reason(exc)}") from None
        finally:
            conn.close()
        try:
            answer = json.loads(raw) if raw.strip() else None
        except ValueError:
            answer = raw.decode(errors="replace").strip()
        if reply.status >= 400:
            message = answer.get("message") if isinstance(answer, dict) else answer
            raise DockerError(f"Docker: {method} {path.split('?')[0]}: "
                              f"{message or reply.reason} (HTTP {reply.status})", reply.status)
        return answer

    # ---------------------------------------------------------------- networks

    def find_networks(self, name):
        """The full descriptions of every network called exactly ``name`` (Docker's name
        filter matches parts of names too)."""
        filters = quote(json.dumps({"name": {name: True}}))
        return [self.request("GET", f"/networks/{quote(summary['Id'], safe='')}")
                for summary in self.request("GET", f"/networks?filters={filters}") or []
                if summary.get("Name") == name]

    def find_network(self, name):
        """The full description of the network called exactly ``name``, or None."""
        filters = quote(json.dumps({"name": {name: True}}))
        for summary in self.request("GET", f"/networks?filters={filters}") or []:
            if summary.get("Name") == name:
                return self.request("GET", f"/networks/{summary['Id']}")
        return None

    def create_network(self, spec):
        return self.request("POST", "/networks/create", spec)

    def remove_network(self, network_id):
        self.request("DELETE", f"/networks/{network_id}")
