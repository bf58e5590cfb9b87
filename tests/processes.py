"""Stopping the processes tests and benchmarks start: one way, whatever started them.

    stop(proc)                 # SIGTERM, SIGKILL after 10 s; its exit code
    kill_by_pidfile(pidfile)   # a daemon that went to the background (BIRD), by its pid file
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path


def stop(proc: subprocess.Popen, timeout: float = 10.0) -> int | None:
    """Stop ``proc`` if it still runs: SIGTERM, then SIGKILL after ``timeout`` seconds;
    waits for it either way and returns its exit code."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def kill_by_pidfile(pidfile: Path, timeout: float = 5.0) -> None:
    """SIGTERM the process named by ``pidfile`` (none: nothing to do), SIGKILL it if it is
    still there after ``timeout`` seconds."""
    try:
        pid = int(pidfile.read_text().strip())
        os.kill(pid, signal.SIGTERM)
    except (OSError, ValueError):
        return
    deadline = time.monotonic() + timeout
    while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
        time.sleep(0.02)
    if os.path.exists(f"/proc/{pid}"):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
