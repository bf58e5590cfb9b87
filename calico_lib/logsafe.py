"""Log lines that untrusted text cannot forge.

Request paths, endpoint ids, network names and error texts come from Docker users and
workloads. Written raw, a "\\n" in one of them starts what looks like a second log record.
``SafeFormatter`` escapes every control character and line/paragraph separator in a record's
line (a newline becomes the two characters ``\\n``), so one record is one line; a traceback
keeps its lines, each indented, so that only a record can start a line in column 1.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import TextIO

# C0 and C1 controls (str.splitlines() breaks on some of both), DEL, U+2028 and U+2029
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
#: what starts every line of a record after its first (traceback lines)
CONTINUATION = "  "


def _escape_char(match: re.Match[str]) -> str:
    char = match.group()
    if char in _NAMED:
        return _NAMED[char]
    return f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}"


def escape(text: str) -> str:
    """``text`` on one line: control characters and line separators escaped."""
    return _UNSAFE.sub(_escape_char, text)


class SafeFormatter(logging.Formatter):
    """A Formatter whose records cannot forge lines (see the module's docstring)."""

    def format(self, record: logging.LogRecord) -> str:
        record.message = record.getMessage()
        if self.usesTime():
            record.asctime = self.formatTime(record, self.datefmt)
        extra = []
        if record.exc_info:
            extra.append(self.formatException(record.exc_info))
        elif record.exc_text:  # a record formatted elsewhere first
            extra.append(record.exc_text)
        if record.stack_info:
            extra.append(self.formatStack(record.stack_info))
        lines = [escape(self.formatMessage(record))]
        lines += [escape(line) for block in extra for line in block.splitlines()]
        return ("\n" + CONTINUATION).join(lines)


def configure(level: int | str, program: str, stream: TextIO | None = None) -> None:
    """What ``logging.basicConfig`` did for ``program`` (a fixed name: calico-agent,
    calico-docker-plugin), with a SafeFormatter: ``<time> <program> <LEVEL> <message>``
    lines on ``stream`` (stderr). Like basicConfig, it does nothing when the root logger
    already has a handler."""
    handler = logging.StreamHandler(stream or sys.stderr)
    program = program.replace("%", "%%")
    handler.setFormatter(SafeFormatter(f"%(asctime)s {program} %(levelname)s %(message)s"))
    logging.basicConfig(level=level, handlers=[handler])
