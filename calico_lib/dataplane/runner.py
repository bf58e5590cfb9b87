"""The one command runner: iptables-restore, ipset, conntrack, birdc go through here.

Every call has a time-out and fails with ``CommandError``, a one-line message naming the
command, its exit code and the first line of what it printed. Runs of iptables-restore,
ip6tables-restore and ipset, and their failures, are counted here (``metrics.COMMANDS``).
"""

from __future__ import annotations

import functools
import os
import subprocess
from collections.abc import Callable, Sequence
from typing import ParamSpec

from .. import metrics
from ..errors import CalicoError

DEFAULT_TIMEOUT = 30.0
P = ParamSpec("P")


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


def _counted(run: Callable[P, str]) -> Callable[P, str]:
    """Count the runs and failures of the commands ``metrics.COMMANDS`` names."""
    @functools.wraps(run)
    def counting(*args: P.args, **kwargs: P.kwargs) -> str:
        argv: Sequence[str] = args[0] if args else kwargs["argv"]  # type: ignore[assignment]
        counters = metrics.COMMANDS.get(os.path.basename(argv[0]))
        if counters is None:
            return run(*args, **kwargs)
        calls, errors = counters
        calls.inc()
        try:
            return run(*args, **kwargs)
        except CommandError:
            errors.inc()
            raise
    return counting


@_counted
def run(argv: Sequence[str], stdin: str | None = None, timeout: float = DEFAULT_TIMEOUT,
        ok_codes: Sequence[int] = (0,), merge_stderr: bool = False) -> str:
    """Run ``argv`` (no shell) and return its standard output.

    ``merge_stderr``: standard error too, interleaved (``bird --version`` and birdc's
    errors go to standard error; a diagnostics report wants what the tool said).
    """
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
