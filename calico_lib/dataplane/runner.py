"""The one command runner: iptables-restore, ipset, conntrack, birdc go through here.

Every call has a time-out and fails with ``CommandError``, a one-line message naming the
command, its exit code and the first line of what it printed.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence

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
        ok_codes: Sequence[int] = (0,)) -> str:
    """Run ``argv`` (no shell) and return its standard output."""
    try:
        proc = subprocess.run(list(argv), input=stdin, capture_output=True, text=True,
                              timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        out = exc.stderr or ""
        raise CommandError(argv, None, out if isinstance(out, str) else out.decode()) from None
    except FileNotFoundError:
        raise CommandError(argv, 127, f"{argv[0]}: command not found") from None
    if proc.returncode not in ok_codes:
        raise CommandError(argv, proc.returncode, proc.stderr or proc.stdout)
    return proc.stdout
