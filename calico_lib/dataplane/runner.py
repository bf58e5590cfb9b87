"""The one command runner: iptables-restore, ipset, conntrack, birdc go through here.

Every call has a time-out and fails with ``CommandError``, a one-line message naming the
command, its exit code and the first line of what it printed. Runs of iptables-restore,
ip6tables-restore and ipset, and their failures, are counted here (``metrics.COMMANDS``).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence

from .. import metrics
from ..errors import CalicoError

DEFAULT_TIMEOUT = 30.0


class CommandError(CalicoError):
    def __init__(self, argv: Sequence[str], returncode: int | None, output: str) -> None:
        self.argv = list(argv)
        self.returncode = returncode
        self.output = output
        first = next((line.strip() for line in output.splitlines() if line.strip()), "")
        status = "timed out" if returncode is None else f"exit {returncode}"
        super().__init__(f"{os.path.basename(self.argv[0])} failed ({status})" +
                         (f": {first}" if first else ""))


def timeout_for(text: str) -> float:
    """How long a restore of ``text`` may take: iptables-nft needs minutes for the hundreds
    of thousands of rules of a host with 10,000 containers (a first apply), seconds
    for everyday changes."""
    return DEFAULT_TIMEOUT + text.count("\n") / 1000


def run(argv: Sequence[str], stdin: str | None = None, timeout: float = DEFAULT_TIMEOUT,
        ok_codes: Sequence[int] = (0,), merge_stderr: bool = False) -> str:
    """Run ``argv`` (no shell) and return its standard output.

    ``merge_stderr``: standard error too, interleaved (``bird --version`` and birdc's
    errors go to standard error; a diagnostics report wants what the tool said).
    """
    counters = metrics.COMMANDS.get(os.path.basename(argv[0]))
    if counters is None:
        return _run(argv, stdin, timeout, ok_codes, merge_stderr)
    calls, errors = counters
    calls.inc()
    try:
        return _run(argv, stdin, timeout, ok_codes, merge_stderr)
    except CommandError:
        errors.inc()
        raise


def _run(argv: Sequence[str], stdin: str | None, timeout: float, ok_codes: Sequence[int],
         merge_stderr: bool) -> str:
    try:
        proc = subprocess.run(list(argv), input=stdin, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT if merge_stderr else subprocess.PIPE,
                              text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        out = (exc.stdout if merge_stderr else exc.stderr) or ""
        raise CommandError(argv, None, out if isinstance(out, str) else out.decode()) from None
    except FileNotFoundError:
        raise CommandError(argv, 127, f"{argv[0]}: command not found") from None
    if proc.returncode not in ok_codes:
        raise CommandError(argv, proc.returncode, proc.stderr or proc.stdout)
    return proc.stdout
