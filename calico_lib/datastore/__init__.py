"""Datastores: one contract (``Datastore``), two backends (SQLite file, etcd v3)."""

from __future__ import annotations

import os
import re

from ..errors import ValidationError
from .base import Compare, Datastore, Delete, Event, KeyValue, Op, Put, Watch

DEFAULT_URL = "sqlite:////var/lib/calico/calico.db"
CONFIG_FILE = "/etc/calico/calico.conf"

__all__ = ["Compare", "Datastore", "Delete", "Event", "KeyValue", "Op", "Put", "Watch",
           "DEFAULT_URL", "open_datastore", "resolve_url"]

URL_HELP = "use sqlite:////absolute/path.db or etcd://host:port[,host:port...]"


def resolve_url(url: str | None = None, config_file: str = CONFIG_FILE) -> str:
    """The datastore URL: ``url``, else $CALICO_DATASTORE, else calico.conf, else the default.

    calico.conf holds ``datastore = URL`` (``#`` starts a comment).
    """
    if url:
        return url
    if os.environ.get("CALICO_DATASTORE"):
        return os.environ["CALICO_DATASTORE"]
    try:
        with open(config_file, encoding="utf-8") as handle:
            for line in handle:
                key, sep, value = line.split("#", 1)[0].partition("=")
                if sep and key.strip().lower() == "datastore" and value.strip():
                    return value.strip()
    except FileNotFoundError:
        pass
    return DEFAULT_URL


def open_datastore(url: str | None = None, create: bool = True) -> Datastore:
    """Open the datastore named by ``url`` (resolved with ``resolve_url``).

    ``create=False`` is for readers (listings, checks, check mode): an embedded store that
    does not exist is then an error naming its path instead of a new empty file.
    """
    url = resolve_url(url)
    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///"):]
        if not path or path.endswith("/") or not os.path.isabs(path):
            raise ValidationError("datastore", f"{url!r} names no absolute file path; "
                                               f"{URL_HELP}")
        from .sqlite import SqliteDatastore

        return SqliteDatastore(path, create=create)
    if url.startswith("etcd://"):
        endpoints = []
        for item in url[len("etcd://"):].rstrip("/").split(","):
            match = re.fullmatch(r"\[?([A-Za-z0-9.:_-]+?)\]?:(\d{1,5})", item.strip())
            if not match or not 0 < int(match.group(2)) < 65536:
                raise ValidationError("datastore", f"{url!r} has a bad endpoint {item!r}; "
                                                   f"{URL_HELP}")
            endpoints.append((match.group(1), int(match.group(2))))
        from .etcd import EtcdDatastore

        return EtcdDatastore(endpoints, url)
    raise ValidationError("datastore", f"{url!r} is not supported; {URL_HELP}")
