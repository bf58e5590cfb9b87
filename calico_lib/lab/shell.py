"""Output and commands: numbered, timed step lines, progress lines inside a step, and long
commands streamed with a heartbeat and a log file."""

from __future__ import annotations

import os
import queue
import re
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import IO

from .errors import LabError


class Shell:
    """Where the lab's lines go (``out``) and how its long commands run."""

    def __init__(self, out: IO[str]) -> None:
        self.out = out
        #: progress lines printed so far (a heartbeat stays quiet after one)
        self.said = 0
        self.step_no = 0
        #: shown as ``[n/total]`` when set
        self.step_total = 0

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def progress(self, text: str) -> None:
        """A progress line inside a step."""
        self.said += 1
        self.say("    " + text)

    @contextmanager
    def step(self, name: str, what: str) -> Iterator[None]:
        """Announce and time one step; any failure in it becomes a LabError naming it."""
        self.step_no += 1
        total = f"/{self.step_total}" if self.step_total else ""
        self.say(f"==> [{self.step_no}{total}] {what}")
        start = time.monotonic()
        try:
            yield
        except LabError:
            raise
        except (OSError, subprocess.SubprocessError, ValueError, KeyError) as exc:
            raise LabError(name, f"{type(exc).__name__}: {exc}") from exc
        self.say(f"    done in {time.monotonic() - start:.1f}s")

    def stream(self, argv: Sequence[str], step: str, *, env: dict[str, str] | None = None,
               cwd: str | None = None, log_path: str | None = None,
               on_line: Callable[[str], None] | None = None, heartbeat: float = 20.0,
               timeout: float | None = None, stdin: IO[bytes] | None = None) -> None:
        """Run a long command, feeding its output lines to ``on_line`` (and a log file) and
        printing a heartbeat when it is quiet; a non-zero exit raises LabError with the last
        lines of its output."""
        log = open(log_path, "a") if log_path else None  # noqa: SIM115
        kept: deque[str] = deque(maxlen=25)
        start = time.monotonic()
        try:
            proc = subprocess.Popen(list(argv), stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, stdin=stdin, env=env, cwd=cwd,
                                    text=True, errors="replace", bufsize=1)
        except FileNotFoundError as exc:
            if log:
                log.close()
            raise LabError(step, f"{argv[0]} is not installed ({exc})") from None
        lines: queue.Queue[str | None] = queue.Queue()

        def reader() -> None:
            assert proc.stdout is not None
            for raw in proc.stdout:
                lines.put(raw.rstrip("\n"))
            lines.put(None)

        thread = threading.Thread(target=reader, daemon=True)
        thread.start()
        last_output = time.monotonic()
        last_line = ""
        try:
            while True:
                try:
                    line = lines.get(timeout=1.0)
                except queue.Empty:
                    now = time.monotonic()
                    if timeout and now - start > timeout:
                        proc.kill()
                        raise LabError(step, f"`{quote(argv)}` did not finish in "
                                       f"{timeout:.0f}s; last output:\n"
                                       + "\n".join(kept)) from None
                    if now - last_output >= heartbeat:
                        last_output = now
                        self.say(f"    ... {now - start:.0f}s"
                                 + (f", last: {last_line[:100]}" if last_line else ""))
                    continue
                if line is None:
                    break
                if log:
                    log.write(line + "\n")
                    log.flush()
                if line.strip():
                    kept.append(line)
                    last_line = line.strip()
                if on_line:
                    before = self.said
                    on_line(line)
                    if self.said != before:
                        last_output = time.monotonic()
            code = proc.wait()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            if log:
                log.close()
        if code != 0:
            where = f" (full log: {log_path})" if log_path else ""
            raise LabError(step, f"`{quote(argv[:3])} …` exited {code}{where}; last "
                           "output:\n" + "\n".join("      " + t for t in kept))


def install_packages(packages: Sequence[str], shell: Shell, step: str) -> None:
    """apt-get install what is missing (root only)."""
    if os.geteuid() != 0:
        raise LabError(step, f"{', '.join(packages)} missing; install them as root")
    shell.progress(f"installing {' '.join(packages)} with apt-get")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    shell.stream(["apt-get", "update", "-q"], step, env=env, timeout=600)
    shell.stream(["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages],
                 step, env=env, timeout=1200)


def write_atomic(path: str, text: str) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as handle:
        handle.write(text)
    os.replace(tmp, path)


def quote(argv: Sequence[str]) -> str:
    return " ".join(a if re.fullmatch(r"[\w@%+=:,./-]+", a) else repr(a) for a in argv)


def tail(text: str, lines: int = 8) -> str:
    kept = [line for line in text.strip().splitlines() if line.strip()][-lines:]
    return "\n".join(kept) if kept else "(no output)"


def file_tail(path: str, lines: int = 15) -> str:
    try:
        with open(path, errors="replace") as handle:
            return tail(handle.read()[-20000:], lines)
    except OSError:
        return "(no log)"
