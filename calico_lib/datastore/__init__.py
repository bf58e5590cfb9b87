"""Datastores: one contract (``Datastore``), two backends (SQLite file, etcd v3)."""

from __future__ import annotations

import argparse
import datetime
import os
import re
import ssl
from dataclasses import dataclass
from typing import Any

from ..errors import ValidationError
from .base import Compare, Datastore, Delete, Event, KeyValue, Op, Put, Watch

DEFAULT_URL = "sqlite:////var/lib/calico/calico.db"
CONFIG_FILE = "/etc/calico/calico.conf"

__all__ = ["Compare", "Datastore", "Delete", "Event", "KeyValue", "Op", "Put", "Watch",
           "DEFAULT_URL", "EtcdTLS", "Settings", "open_datastore", "resolve", "resolve_url"]

URL_HELP = ("use sqlite:////absolute/path.db, etcd://host:port[,host:port...] or "
            "etcds://host:port[,host:port...] (TLS)")
#: the settings calico.conf may hold, and the environment variable of each
SETTINGS = {"datastore": "CALICO_DATASTORE", "etcd_ca": "CALICO_ETCD_CA",
            "etcd_cert": "CALICO_ETCD_CERT", "etcd_key": "CALICO_ETCD_KEY",
            "etcd_user": "CALICO_ETCD_USER", "etcd_password_file": "CALICO_ETCD_PASSWORD_FILE"}


@dataclass(frozen=True)
class EtcdTLS:
    """The files of a TLS connection to etcd: the CA that signed etcd's certificate, and
    this client's certificate and key (etcd with --client-cert-auth requires them)."""

    ca: str
    cert: str | None = None
    key: str | None = None


@dataclass(frozen=True)
class Settings:
    """Where the datastore is and how to reach it, each setting resolved on its own: the
    given value, else its environment variable, else calico.conf, else the default."""

    url: str
    etcd_ca: str | None = None
    etcd_cert: str | None = None
    etcd_key: str | None = None
    #: etcd authentication (roles per kind of writer): the user, and a file holding its
    #: password on the first line
    etcd_user: str | None = None
    etcd_password_file: str | None = None


def add_arguments(parser: Any) -> None:
    """The datastore options every command takes (calicoctl, calico-agent,
    calico-docker-plugin): ``--datastore`` and the TLS files of etcd."""
    parser.add_argument("--datastore", metavar="URL", default=argparse.SUPPRESS,
                        help="sqlite:////path.db, etcd://host:port[,host:port] or "
                             "etcds://host:port[,...] (TLS); default: $CALICO_DATASTORE, "
                             "datastore in /etc/calico/calico.conf, " + DEFAULT_URL)
    for name, what, meta in (("ca", "the CA that signed etcd's certificate", "PATH"),
                             ("cert", "this client's certificate", "PATH"),
                             ("key", "its private key", "PATH"),
                             ("user", "etcd user (with authentication on)", "NAME"),
                             ("password-file", "a file with that user's password", "PATH")):
        env = "CALICO_ETCD_" + name.upper().replace("-", "_")
        parser.add_argument(f"--etcd-{name}", metavar=meta, default=argparse.SUPPRESS,
                            help=f"etcds://: {what} (default: ${env}, "
                                 f"etcd_{name.replace('-', '_')} in calico.conf)")


TLS_OPTIONS = ("etcd_ca", "etcd_cert", "etcd_key", "etcd_user", "etcd_password_file")


def options(args: Any) -> dict[str, str | None]:
    """``open_datastore``'s keyword arguments from parsed ``add_arguments`` options."""
    out = {"url": getattr(args, "datastore", None)}
    out.update({name: getattr(args, name, None) for name in TLS_OPTIONS})
    return out


def read_config(config_file: str = CONFIG_FILE) -> dict[str, str]:
    """calico.conf's ``key = value`` lines (``#`` starts a comment); {} when it is absent."""
    found: dict[str, str] = {}
    try:
        with open(config_file, encoding="utf-8") as handle:
            for line in handle:
                key, sep, value = line.split("#", 1)[0].partition("=")
                if sep and key.strip().lower() in SETTINGS and value.strip():
                    found[key.strip().lower()] = value.strip()
    except FileNotFoundError:
        pass
    return found


def resolve(url: str | None = None, etcd_ca: str | None = None,
            etcd_cert: str | None = None, etcd_key: str | None = None,
            etcd_user: str | None = None, etcd_password_file: str | None = None,
            config_file: str = CONFIG_FILE) -> Settings:
    """Every datastore setting: the argument, else $CALICO_DATASTORE / $CALICO_ETCD_CA /
    $CALICO_ETCD_CERT / $CALICO_ETCD_KEY / $CALICO_ETCD_USER / $CALICO_ETCD_PASSWORD_FILE,
    else calico.conf's ``datastore``, ``etcd_ca``, ``etcd_cert``, ``etcd_key``,
    ``etcd_user``, ``etcd_password_file``, else the default (the SQLite file, no TLS)."""
    given = {"datastore": url, "etcd_ca": etcd_ca, "etcd_cert": etcd_cert,
             "etcd_key": etcd_key, "etcd_user": etcd_user,
             "etcd_password_file": etcd_password_file}
    conf: dict[str, str] | None = None
    out: dict[str, str | None] = {}
    for name, env in SETTINGS.items():
        value = given[name] or os.environ.get(env) or None
        if value is None:
            conf = read_config(config_file) if conf is None else conf
            value = conf.get(name)
        out[name] = value
    return Settings(out["datastore"] or DEFAULT_URL, out["etcd_ca"], out["etcd_cert"],
                    out["etcd_key"], out["etcd_user"], out["etcd_password_file"])


def resolve_url(url: str | None = None, config_file: str = CONFIG_FILE) -> str:
    """The datastore URL alone (see ``resolve``)."""
    return resolve(url, config_file=config_file).url


def open_datastore(url: str | None = None, create: bool = True, etcd_ca: str | None = None,
                   etcd_cert: str | None = None, etcd_key: str | None = None,
                   etcd_user: str | None = None, etcd_password_file: str | None = None
                   ) -> Datastore:
    """Open the datastore named by ``url`` (each setting resolved with ``resolve``).

    ``create=False`` is for readers (listings, checks, check mode): an embedded store that
    does not exist is then an error naming its path instead of a new empty file.
    """
    settings = resolve(url, etcd_ca, etcd_cert, etcd_key, etcd_user, etcd_password_file)
    url = settings.url
    _printable("datastore", url)
    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///"):]
        if not path or path.endswith("/") or not os.path.isabs(path):
            raise ValidationError("datastore", f"{url!r} names no absolute file path; "
                                               f"{URL_HELP}")
        from .sqlite import SqliteDatastore

        return SqliteDatastore(path, create=create)
    for scheme, tls in (("etcd://", False), ("etcds://", True)):
        if url.startswith(scheme):
            endpoints = _endpoints(url, url[len(scheme):])
            files = _tls_files(settings, scheme) if tls else _no_tls_files(settings)
            user, password = _credentials(settings)
            from .etcd import EtcdDatastore

            return EtcdDatastore(endpoints, url, tls=files, user=user, password=password)
    raise ValidationError("datastore", f"{url!r} is not supported; {URL_HELP}")


def _printable(field: str, value: str) -> None:
    if not value.isprintable():
        raise ValidationError(field, f"{value!r} holds control characters")


def _endpoints(url: str, rest: str) -> list[tuple[str, int]]:
    endpoints = []
    for item in rest.rstrip("/").split(","):
        match = re.fullmatch(r"\[?([A-Za-z0-9.:_-]+?)\]?:(\d{1,5})", item.strip())
        if not match or not 0 < int(match.group(2)) < 65536:
            raise ValidationError("datastore", f"{url!r} has a bad endpoint {item!r}; "
                                               f"{URL_HELP}")
        endpoints.append((match.group(1), int(match.group(2))))
    return endpoints


def _credentials(settings: Settings) -> tuple[str | None, str | None]:
    """The etcd user and its password (the first line of etcd_password_file, which must be
    readable by its owner only)."""
    user, path = settings.etcd_user, settings.etcd_password_file
    if not user and not path:
        return None, None
    if not user or not path:
        missing = "etcd_user" if path else "etcd_password_file"
        raise ValidationError(missing, "missing; etcd authentication needs a user and its "
                                       "password file")
    _printable("etcd_user", user)
    _printable("etcd_password_file", path)
    try:
        with open(path, encoding="utf-8") as handle:
            mode = os.fstat(handle.fileno()).st_mode
            lines = handle.read().splitlines()
    except FileNotFoundError:
        raise ValidationError("etcd_password_file", f"{path}: no such file") from None
    except OSError as exc:
        raise ValidationError("etcd_password_file", f"{path}: {exc.strerror}") from None
    if mode & 0o077:
        raise ValidationError("etcd_password_file", f"{path} is readable by other users; "
                                                    "make it 0600")
    if not lines or not lines[0]:
        raise ValidationError("etcd_password_file", f"{path} is empty; put the password on "
                                                    "its first line")
    return user, lines[0]


def _no_tls_files(settings: Settings) -> None:
    given = [n for n in ("etcd_ca", "etcd_cert", "etcd_key") if getattr(settings, n)]
    if given:
        raise ValidationError(given[0], f"{settings.url} is plain HTTP but TLS files are set; "
                                        "use etcds://host:port for etcd over TLS")


def _tls_files(settings: Settings, scheme: str) -> EtcdTLS:
    """The TLS files, each checked now so that a wrong one is named before any request."""
    ca, cert, key = settings.etcd_ca, settings.etcd_cert, settings.etcd_key
    if not ca:
        raise ValidationError("etcd_ca", f"missing; {scheme} needs the CA that signed etcd's "
                                         "certificate (--etcd-ca, $CALICO_ETCD_CA or etcd_ca "
                                         "in calico.conf)")
    if bool(cert) != bool(key):
        missing = "etcd_key" if cert else "etcd_cert"
        raise ValidationError(missing, "missing; a client certificate needs its key and the "
                                       "key its certificate")
    for name, path in (("etcd_ca", ca), ("etcd_cert", cert), ("etcd_key", key)):
        if path is None:
            continue
        _printable(name, path)
        if not os.path.isfile(path):
            raise ValidationError(name, f"{path}: no such file")
        if not os.access(path, os.R_OK):
            raise ValidationError(name, f"{path}: not readable by this user")
    context = ssl.create_default_context()
    try:
        context.load_verify_locations(cafile=ca)
    except (ssl.SSLError, ValueError):
        raise ValidationError("etcd_ca", f"{ca}: not a PEM certificate") from None
    if cert and key:
        try:
            context.load_cert_chain(cert, key)
        except ssl.SSLError as exc:
            why = ("does not match etcd_key " + key if "KEY_VALUES_MISMATCH" in str(exc)
                   else "or its key is not PEM")
            raise ValidationError("etcd_cert", f"{cert} {why}") from None
        _valid_now(cert)
    return EtcdTLS(ca, cert, key)


def _valid_now(path: str) -> None:
    """A client certificate out of its validity period fails here, by name, rather than as
    an anonymous refusal by etcd."""
    from cryptography import x509

    with open(path, "rb") as handle:
        cert = x509.load_pem_x509_certificate(handle.read())
    now = datetime.datetime.now(datetime.UTC)
    if cert.not_valid_after_utc < now:
        raise ValidationError("etcd_cert", f"{path} expired on "
                                           f"{cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC; "
                                           "have it reissued")
    if cert.not_valid_before_utc > now:
        raise ValidationError("etcd_cert", f"{path} is not valid before "
                                           f"{cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC")
