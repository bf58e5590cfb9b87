"""A deployed ``calicoctl lab`` for one test (tests/test_lab_restart.py,
tests/test_readme_lab.py): brought up, and taken down afterwards even when the test failed."""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from calico_lib.lab import Lab, LabError


@contextmanager
def deployed_lab(tmp_path: Path, **settings: Any) -> Iterator[Lab]:
    """A ``Lab(**settings)`` with its state under ``tmp_path``, up; a lab that does not come
    up fails the test with the end of its progress output."""
    out = io.StringIO()
    the_lab = Lab(state_dir=str(tmp_path / "state"), out=out, **settings)
    try:
        try:
            the_lab.up()
        except LabError as exc:
            pytest.fail(f"{exc}\nprogress:\n{out.getvalue()[-3000:]}", pytrace=False)
        yield the_lab
    finally:
        try:
            the_lab.down()
        except LabError as exc:
            print(f"taking the lab down: {exc}")
