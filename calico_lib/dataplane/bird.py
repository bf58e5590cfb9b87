"""Install a BIRD config safely and read BIRD's sessions back.

A new config is written to a temporary file beside the real one, checked with
`bird -p -c`, moved into place atomically and loaded with `birdc configure`. A config BIRD
rejects is never installed. When BIRD is not running, the config is installed for its next
start and the report says so; the rest of the dataplane is unaffected.
"""

from __future__ import annotations

import grp
import os
import re
import tempfile
from dataclasses import dataclass, field

from .runner import CommandError, run

DEFAULT_CONFIG = "/etc/bird/bird.conf"
DEFAULT_SOCKET = "/run/bird/bird.ctl"
BIRD_GROUP = "bird"


class BirdConfigError(CommandError):
    """BIRD refused the rendered configuration (it was not installed)."""


@dataclass
class BirdReport:
    written: bool = False
    reloaded: bool = False
    note: str = ""

    @property
    def changed(self) -> bool:
        return self.written

    def summary(self) -> str:
        if not self.written:
            return self.note or "bird config unchanged"
        return "bird config written" + (", reloaded" if self.reloaded else "") + \
            (f" ({self.note})" if self.note else "")


def apply_bird(text: str | None, config: str = DEFAULT_CONFIG, socket: str = DEFAULT_SOCKET,
               check_mode: bool = False) -> BirdReport:
    """Install ``text`` as BIRD's config if it differs, and make BIRD load it."""
    if text is None:
        return BirdReport(note="this host is not a node with an IPv4 address: no BGP")
    previous: str | None = None
    try:
        with open(config, encoding="utf-8") as handle:
            previous = handle.read()
        if previous == text:
            return BirdReport()
    except FileNotFoundError:
        pass
    if check_mode:
        return BirdReport(written=True, note="check mode")
    directory = os.path.dirname(os.path.abspath(config))
    os.makedirs(directory, exist_ok=True)
    temp = _write_temp(text, directory)
    try:
        try:
            run(["bird", "-p", "-c", temp])
        except CommandError as exc:
            raise BirdConfigError(exc.argv, exc.returncode, exc.output) from None
        _install(temp, config, directory)
    finally:
        if os.path.exists(temp):
            os.unlink(temp)
    report = BirdReport(written=True)
    if not os.path.exists(socket):
        report.note = f"BIRD is not running (no socket {socket}); it loads the config at start"
        return report
    try:
        out = run(["birdc", "-s", socket, "configure"], timeout=30)
    except CommandError as exc:
        said = [line.strip() for line in exc.output.splitlines()
                if line.strip() and not re.match(r"BIRD [\d.]+ ready\.$", line.strip())]
        if exc.returncode is None or not any("ready." in line for line in
                                             exc.output.splitlines()):
            # no answer (stale socket, BIRD hung): the config waits for BIRD's next start
            report.note = f"BIRD did not answer: {said[-1] if said else exc}"
            return report
        # BIRD answered and refused: put the config it runs back, so the next reconcile
        # tries again, and report the reason BIRD gave
        if previous is None:
            os.unlink(config)
        else:
            apply_previous = _write_temp(previous, directory)
            try:
                _install(apply_previous, config, directory)
            finally:
                if os.path.exists(apply_previous):
                    os.unlink(apply_previous)
        raise BirdConfigError(["birdc", "-s", socket, "configure"], exc.returncode,
                              said[-1] if said else exc.output) from None
    if "Reconfigured" in out or "Reconfiguration in progress" in out:
        report.reloaded = True
    else:
        lines = [line for line in out.splitlines() if line.strip()]
        report.note = f"birdc configure said: {lines[-1] if lines else 'nothing'}"
    return report


def _write_temp(text: str, directory: str) -> str:
    fd, temp = tempfile.mkstemp(prefix=".bird.conf.", dir=directory)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    return temp


def _install(temp: str, config: str, directory: str) -> None:
    """Move ``temp`` over ``config`` as root:bird 0640 whatever the file it replaces had:
    it may hold MD5 passwords, and Debian's BIRD (user bird) must still read it at `birdc
    configure`. Without a bird group the folder's group is used; not running as root,
    the file stays this user's."""
    try:
        group = grp.getgrnam(BIRD_GROUP).gr_gid
    except KeyError:
        group = os.stat(directory).st_gid
    try:
        os.chown(temp, 0, group)
    except PermissionError:
        pass  # not root: the file stays ours
    os.chmod(temp, 0o640)
    os.replace(temp, config)


@dataclass
class BgpSession:
    name: str
    kind: str  # mesh, global or node
    peer: str
    state: str
    since: str
    info: str
    details: dict[str, str] = field(default_factory=dict)
    #: to a peer off this host's subnet, through routers (the config's description says so)
    multihop: bool = False

    @property
    def established(self) -> bool:
        return self.info.startswith("Established")


KIND_OF = {"Mesh": "mesh", "Global": "global", "Node": "node"}


def bgp_sessions(socket: str = DEFAULT_SOCKET) -> list[BgpSession]:
    """This host's Calico BGP sessions as BIRD reports them (`show protocols all`)."""
    out = run(["birdc", "-s", socket, "show", "protocols", "all"], timeout=15)
    sessions: list[BgpSession] = []
    current: BgpSession | None = None
    for line in out.splitlines():
        words = line.split()
        if len(words) >= 5 and words[1] == "BGP" and not line[0].isspace():
            name, state, rest = words[0], words[3], words[4:]
            since = rest.pop(0)
            if rest and re.match(r"\d\d:\d\d", rest[0]):  # "2026-11-28 13:40:03"
                since += " " + rest.pop(0)
            prefix = name.split("_", 1)[0]
            current = None
            if prefix in KIND_OF:
                current = BgpSession(name, KIND_OF[prefix], "", state, since, " ".join(rest))
                sessions.append(current)
            continue
        if current is None:
            continue
        match = re.match(r"^\s+Neighbor address:\s+(\S+)", line)
        if match:
            current.peer = match.group(1)
        match = re.match(r"^\s+BGP state:\s+(\S+)", line)
        if match:
            current.details["bgp_state"] = match.group(1)
        match = re.match(r"^\s+Description:\s+(.*\S)", line)
        if match:
            current.multihop = match.group(1).endswith(", multihop")
    return sessions
