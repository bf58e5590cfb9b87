"""``calicoctl diags``: one archive with everything needed to debug this host.

It is run on a bad day, so nothing that fails stops it: a missing tool, a dead BIRD or a
datastore that does not answer is written down (in the part itself, ``errors.txt`` and
``MANIFEST.txt``) and the rest is still collected. Only failing to write the archive
itself is an error.

The archive holds one folder ``calico-diags-<host>-<UTC time>/`` with text files: this
host's view of the datastore (the snapshot its agent renders from, and ``ipam check``),
iptables/ip6tables (with counters), ipsets, routes, links, BIRD's status and config,
the agent's, plugin's and BIRD's logs, and versions.

Secrets never go in: BIRD passwords are masked in ``bird.conf`` (and every BGP password
the datastore or ``bird.conf`` holds is masked wherever else it appears), calico.conf is
copied without comments and with password-like values masked, URLs lose their
``user:password@``, and TLS keys and password files are named by path only.
Every external command goes through ``dataplane.runner.run`` (time-outs, one-line errors).
"""

from __future__ import annotations

import datetime
import io
import json
import os
import platform
import re
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import __version__, datastore
from .dataplane import runner
from .dataplane.bird import DEFAULT_CONFIG as BIRD_CONFIG
from .dataplane.bird import DEFAULT_SOCKET as BIRD_SOCKET
from .errors import CalicoError, ValidationError
from .hostname import resolve_hostname
from .model import show

MASK = "********"
DEFAULT_LOG_LINES = 5000
#: the systemd units whose journal goes into logs/ (BIRD's is ``bird`` on Debian)
LOG_UNITS = ("calico-agent", "calico-docker-plugin", "bird")

#: a BIRD ``password`` statement's value: a quoted string (BIRD strings have no escapes)
#: or a constant's name; the keyword must stand alone (not ``x_password``)
BIRD_PASSWORD = re.compile(r'(?<![\w-])(password\s+)("[^"]*"|[^\s;{}"]+)', re.IGNORECASE)
#: calico.conf keys whose values are secrets (``*_file`` keys hold paths: kept)
SECRET_KEY = re.compile(r"[\w.-]*(password|passwd|secret|token|credential)[\w.-]*",
                        re.IGNORECASE)
#: ``scheme://user:password@`` in a URL
URL_PASSWORD = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^/@\s:]*:)[^@/\s]*@", re.IGNORECASE)

Runner = Callable[..., str]


@dataclass
class Failure:
    """What could not be collected (``part``: the file it belongs in) and why."""

    part: str
    error: str

    def __str__(self) -> str:
        return f"{self.part}: {self.error}"


@dataclass
class Result:
    path: str
    folder: str  # the archive's one top-level folder
    parts: list[str]  # the files in it
    failures: list[Failure] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "folder": self.folder, "parts": self.parts,
                "failures": [{"part": f.part, "error": f.error} for f in self.failures]}


# ------------------------------------------------------------------------------ masking


def mask_bird_config(text: str) -> tuple[str, set[str]]:
    """``text`` with every password masked, and the passwords found (to be masked
    wherever else they appear). A password given as a constant's name also gets the
    constant's ``define`` masked."""
    found: set[str] = set()
    names: set[str] = set()

    def one(match: re.Match[str]) -> str:
        value = match.group(2)
        if value.startswith('"'):
            found.add(value[1:-1] if value.endswith('"') and len(value) > 1 else value[1:])
        else:
            names.add(value)
        return f'{match.group(1)}"{MASK}"'

    masked = BIRD_PASSWORD.sub(one, text)
    for name in names:
        define = re.compile(rf"(?<![\w-])(define\s+{re.escape(name)}\s*=\s*)([^;]*)",
                            re.IGNORECASE)
        for match in define.finditer(masked):
            found.add(match.group(2).strip().strip('"'))
        masked = define.sub(lambda m: f'{m.group(1)}"{MASK}"', masked)
    return masked, {f for f in found if f and f != MASK}


def mask_calico_conf(text: str) -> str:
    """calico.conf without comments (they may hold anything), password-like values
    masked and URLs without credentials; paths (``etcd_key``, ``*_file``) are kept."""
    out = []
    for line in text.splitlines():
        content = line.split("#", 1)[0].rstrip()
        if not content.strip():
            continue
        key, sep, value = content.partition("=")
        name = key.strip()
        if sep and SECRET_KEY.fullmatch(name) and not name.lower().endswith("_file"):
            content = f"{key}= {MASK}" if value.strip() else content
        out.append(mask_urls(content))
    return "\n".join(out) + ("\n" if out else "")


def mask_urls(text: str) -> str:
    """``scheme://user:secret@host`` as ``scheme://user:********@host``."""
    return URL_PASSWORD.sub(lambda m: f"{m.group(1)}{MASK}@", text)


def scrub(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every occurrence of every secret masked (longest first, so a
    secret inside another is not left half-visible)."""
    for secret in sorted(set(secrets), key=len, reverse=True):
        if secret:
            text = text.replace(secret, MASK)
    return mask_urls(text)


# ------------------------------------------------------------------------------ collecting


class _Collector:
    def __init__(self, run: Runner) -> None:
        self.run = run
        self.parts: dict[str, str] = {}
        self.failures: list[Failure] = []
        self.notes: dict[str, str] = {}  # parts left out on purpose, and why
        self.secrets: set[str] = set()

    def add(self, name: str, text: str) -> None:
        self.parts[name] = text

    def fail(self, name: str, error: str) -> None:
        self.failures.append(Failure(name, " ".join(error.split())))

    def command(self, part: str, argv: Sequence[str], timeout: float = 30.0) -> str:
        """``$ argv`` and what it printed, or why it failed (noted as a failure)."""
        head = "$ " + " ".join(argv)
        try:
            out = self.run(list(argv), timeout=timeout, merge_stderr=True)
        except runner.CommandError as exc:
            status = "timed out" if exc.returncode is None else f"exit {exc.returncode}"
            why = _telling_line(exc.output)
            error = f"{' '.join(argv)} failed ({status})" + (f": {why}" if why else "")
            self.fail(part, error)
            said = exc.output.rstrip()
            return f"{head}\n!! FAILED: {error}\n" + (f"{said}\n" if said else "")
        except Exception as exc:  # noqa: BLE001 - one broken tool must not stop the rest
            self.fail(part, f"{argv[0]}: {exc}")
            return f"{head}\n!! FAILED: {argv[0]}: {exc}\n"
        return f"{head}\n{out.rstrip()}\n"

    def commands(self, part: str, commands: Sequence[Sequence[str]],
                 timeout: float = 30.0) -> None:
        self.add(part, "\n".join(self.command(part, argv, timeout) for argv in commands))

    def guarded(self, part: str, build: Callable[[], str | None]) -> None:
        """Add what ``build`` returns (None: it added its parts itself); any error is
        noted instead (diags must survive a bug or a broken module in one part)."""
        try:
            text = build()
        except Exception as exc:  # noqa: BLE001 - see the docstring
            message = str(exc) if isinstance(exc, CalicoError) else \
                f"{type(exc).__name__}: {exc}"
            self.fail(part, message)
            self.add(part, f"!! FAILED: {message}\n")
            return
        if text is not None:
            self.add(part, text)


_TELLING = re.compile(r"error|cannot|can't|unable|fail|not found|denied|no such|refused",
                      re.IGNORECASE)


def _telling_line(output: str) -> str:
    """The line of a failed tool's output that says why (``docker version`` prints its
    client's details first, its error last), else the first."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    return next((line for line in lines if _TELLING.search(line)), lines[0] if lines else "")


def collect(output: str | None = None, hostname: str | None = None,
            bird_socket: str = BIRD_SOCKET, bird_config: str = BIRD_CONFIG,
            log_lines: int = DEFAULT_LOG_LINES,
            datastore_options: Mapping[str, str | None] | None = None,
            calico_conf: str = datastore.CONFIG_FILE, run: Runner | None = None,
            now: datetime.datetime | None = None) -> Result:
    """Collect this host's diagnostics into one ``.tar.gz`` and return where it is and what
    could not be collected. ``output`` defaults to ``calico-diags-<host>-<UTC time>.tar.gz``
    in the current directory (or in ``output`` when that is a directory);
    ``datastore_options`` are ``open_datastore``'s keyword arguments
    (``datastore.options(args)``); ``run`` is the command runner (a fake in tests).
    Raises ``CalicoError`` only when the archive cannot be written."""
    host = resolve_hostname(hostname)
    if log_lines < 1:
        raise ValidationError("log_lines", f"{log_lines} is not allowed; use 1 or more")
    stamp = (now or datetime.datetime.now(datetime.UTC)).strftime("%Y%m%dT%H%M%SZ")
    top = f"calico-diags-{re.sub(r'[^A-Za-z0-9._-]', '_', host)[:64]}-{stamp}"
    path = os.path.abspath(output or f"{top}.tar.gz")
    if os.path.isdir(path):  # a directory to put it in
        path = os.path.join(path, f"{top}.tar.gz")
    _check_writable(path)  # before minutes of collecting, not after

    col = _Collector(run or (lambda *a, **k: runner.run(*a, **k)))
    col.secrets.update(_env_secrets())
    options = dict(datastore_options or {})
    col.guarded("datastore/settings.json", lambda: _datastore(col, host, options))
    col.guarded("calico.conf", lambda: _calico_conf(col, calico_conf))
    col.commands("iptables-save.txt", [["iptables-save", "-c"]], timeout=120)
    col.commands("ip6tables-save.txt", [["ip6tables-save", "-c"]], timeout=120)
    col.commands("ipset-list.txt", [["ipset", "list"]], timeout=120)
    col.commands("routes.txt", [["ip", "-d", "route", "show", "table", "all"],
                                ["ip", "-6", "-d", "route", "show", "table", "all"],
                                ["ip", "rule", "show"], ["ip", "-6", "rule", "show"]])
    col.commands("links.txt", [["ip", "-d", "link", "show"], ["ip", "address", "show"]])
    col.commands("bird-status.txt", [["birdc", "-s", bird_socket, *what] for what in (
        ("show", "status"), ("show", "protocols", "all"), ("show", "route"))])
    col.guarded("bird.conf", lambda: _bird_conf(col, bird_config))
    for unit in LOG_UNITS:
        col.commands(f"logs/{unit}.log", [["journalctl", "-u", unit, "--no-pager", "-n",
                                           str(log_lines), "-o", "short-iso"]], timeout=60)
    col.add("versions.txt", _versions(col))
    return _write(col, path, top, host, stamp)


def _env_secrets() -> set[str]:
    # calicoctl bgp peer add reads it: it may be set in the shell running diags
    value = os.environ.get("CALICO_BGP_PASSWORD")
    return {value} if value else set()


def _check_writable(path: str) -> None:
    directory = os.path.dirname(path)
    if not os.path.isdir(directory):
        raise CalicoError(f"cannot write the archive {show(path)}: {show(directory)} is not "
                          "a directory")
    if not os.access(directory, os.W_OK):
        raise CalicoError(f"cannot write the archive {show(path)}: {show(directory)} is not "
                          "writable")


def _datastore(col: _Collector, host: str, options: dict[str, Any]) -> None:
    """datastore/: where it is, this host's snapshot and ``ipam check``, opened read-only
    (``create=False``: diags never makes an empty store)."""
    settings = datastore.resolve(**options)
    col.add("datastore/settings.json", _json({
        "url": mask_urls(settings.url), "hostname": host, "etcd_ca": settings.etcd_ca,
        "etcd_cert": settings.etcd_cert, "etcd_key": settings.etcd_key,
        "etcd_user": settings.etcd_user, "etcd_password_file": settings.etcd_password_file}))
    if settings.etcd_password_file:
        col.secrets.update(_first_line(settings.etcd_password_file))
    try:
        store = datastore.open_datastore(**options, create=False)
    except Exception as exc:  # noqa: BLE001 - noted; the rest is still collected
        _store_failed(col, exc, "datastore/snapshot.json", "datastore/ipam-check.json")
        return
    try:
        try:
            # every BGP password of the cluster, read raw (an unreadable peer record's
            # too), to be masked wherever it appears
            _peer_secrets(col, store)
        except Exception as exc:  # noqa: BLE001 - the snapshot read below says more
            col.fail("datastore/snapshot.json", f"BGP peers not readable: {exc}")
        col.guarded("datastore/snapshot.json", lambda: _snapshot(store, host))
        col.guarded("datastore/ipam-check.json", lambda: _ipam_check(store))
    finally:
        try:
            store.close()
        except Exception:  # noqa: BLE001, S110 - closing a broken connection: nothing to do
            pass


def _store_failed(col: _Collector, exc: Exception, *parts: str) -> None:
    message = str(exc) if isinstance(exc, CalicoError) else f"{type(exc).__name__}: {exc}"
    for part in parts:
        col.fail(part, f"datastore not readable: {message}")
        col.add(part, f"!! FAILED: datastore not readable: {message}\n")


def _peer_secrets(col: _Collector, store: datastore.Datastore) -> None:
    from . import keys
    from .records import json_object

    ranges, _ = store.read([keys.GLOBAL_PEERS, keys.NODE_PEERS])
    for kv in (kv for kvs in ranges for kv in kvs):
        password = json_object(kv).get("password")
        if isinstance(password, str):
            col.secrets.add(password)


def _snapshot(store: datastore.Datastore, host: str) -> str:
    from .snapshot import load_snapshot  # here: a broken import fails this part only

    snap = load_snapshot(store, host)
    peers = []
    for peer in snap.peers:
        data = peer.to_dict()
        if data.get("password"):
            data["password"] = MASK
        peers.append(data)
    return _json({
        "hostname": snap.hostname, "revision": snap.revision,
        "nodes": [n.to_dict() for n in snap.nodes.values()],
        "pools": [p.to_dict() for p in snap.pools],
        "profiles": [p.to_dict() for p in snap.profiles.values()],
        "local_endpoints": [e.to_dict() for e in snap.local_endpoints],
        "remote_endpoints": [e.to_dict() for e in snap.endpoints if e.host != host],
        "bgp_config": snap.bgp.to_dict(), "peers": peers,
        "agent_config": snap.config.to_dict(), "blocks": list(snap.blocks),
        "unreadable": [{"key": u.key, "reason": u.reason} for u in snap.unreadable]})


def _ipam_check(store: datastore.Datastore) -> str:
    from .ipam import IPAM
    from .ipam_check import audit

    found = audit(IPAM(store))  # reads only; repairs are never run here
    return _json({"ok": found.ok, "problems": [vars(p) for p in found.problems]})


def _calico_conf(col: _Collector, path: str) -> None:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            text = handle.read()
    except FileNotFoundError:
        col.notes["calico.conf"] = f"{path} does not exist (not an error)"
        return
    col.add("calico.conf", mask_calico_conf(text))


def _bird_conf(col: _Collector, path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            text = handle.read()
    except OSError as exc:
        raise CalicoError(f"cannot read {path}: {exc.strerror}") from None
    masked, found = mask_bird_config(text)
    col.secrets.update(found)
    return masked


def _first_line(path: str) -> set[str]:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            line = handle.readline().rstrip("\r\n")
    except OSError:
        return set()
    return {line} if line else set()


def _versions(col: _Collector) -> str:
    lines = [f"calico_lib {__version__}", f"python {sys.version.split()[0]} "
             f"({sys.executable})", f"platform {platform.platform()}", ""]
    commands = [["uname", "-a"], ["iptables", "--version"], ["ip6tables", "--version"],
                ["ipset", "--version"], ["ip", "-V"], ["bird", "--version"],
                ["docker", "version"]]  # the running BIRD's version: bird-status.txt
    return "\n".join(lines) + "\n".join(col.command("versions.txt", argv, timeout=15)
                                        for argv in commands)


def _json(data: Any) -> str:
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


# ------------------------------------------------------------------------------ writing


def _manifest(col: _Collector, host: str, stamp: str) -> str:
    failed: dict[str, list[str]] = {}
    for failure in col.failures:
        failed.setdefault(failure.part, []).append(failure.error)
    lines = [f"calicoctl diags of host {host} at {stamp} (calico_lib {__version__})", ""]
    for name in col.parts:
        errors = failed.get(name)
        lines.append(f"{name}: " + (f"INCOMPLETE: {'; '.join(errors)}" if errors else "ok"))
    lines += [f"{name}: left out: {why}" for name, why in col.notes.items()]
    lines += [f"{name}: FAILED: {'; '.join(errors)}" for name, errors in failed.items()
              if name not in col.parts]
    return "\n".join(lines) + "\n"


def _write(col: _Collector, path: str, top: str, host: str, stamp: str) -> Result:
    col.add("errors.txt", "".join(f"{f}\n" for f in col.failures) or "nothing failed\n")
    col.add("MANIFEST.txt", _manifest(col, host, stamp))
    directory = os.path.dirname(path)
    fd, temp = tempfile.mkstemp(prefix=".calico-diags-", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as raw, tarfile.open(fileobj=raw, mode="w:gz") as tar:
            mtime = time.time()
            for name, text in col.parts.items():
                data = scrub(text, col.secrets).encode("utf-8", errors="replace")
                info = tarfile.TarInfo(f"{top}/{name}")
                info.size, info.mtime, info.mode = len(data), mtime, 0o600
                tar.addfile(info, io.BytesIO(data))
        os.replace(temp, path)  # mkstemp made it 0600: the archive shows the host's insides
    except OSError as exc:
        try:
            os.unlink(temp)
        except OSError:
            pass
        raise CalicoError(f"cannot write the archive {show(path)}: "
                          f"{exc.strerror or exc}") from None
    return Result(path, top, list(col.parts), list(col.failures))
