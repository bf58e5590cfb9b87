"""The ansible-test sanity ignore files (tests/sanity/ignore-X.Y.txt; ``scripts/ansible-test.sh
sanity`` runs the tests): one entry a line, each naming an existing file and a test, with its
reason."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: path, test[:code], then "# reason"
ENTRY_RE = re.compile(r"(?P<path>\S+) (?P<test>[a-z0-9-]+(?::[a-z0-9-]+)?) # (?P<reason>\S.*)")


def test_every_ignore_names_a_file_a_test_and_a_reason() -> None:
    files = sorted((REPO / "tests" / "sanity").glob("ignore-*.txt"))
    assert files, "no tests/sanity/ignore-*.txt"
    for path in files:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            where = f"{path.name}:{number}"
            match = ENTRY_RE.fullmatch(line)
            assert match, f"{where}: {line!r} is not 'PATH TEST[:CODE] # REASON'"
            assert (REPO / match["path"]).is_file(), f"{where}: no file {match['path']}"
