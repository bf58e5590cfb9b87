"""What `pip install .` ships: every package of calico_lib, its templates and unit file."""

from __future__ import annotations

import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_every_code_folder_is_a_package() -> None:
    # pyproject sets namespaces = false: a folder without __init__.py is left out of wheels.
    for folder in [REPO / "calico_lib", *(REPO / "calico_lib").rglob("*")]:
        if folder.is_dir() and folder.name != "__pycache__" and any(folder.glob("*.py")):
            assert (folder / "__init__.py").exists(), f"{folder} has no __init__.py"


def test_data_files_are_declared() -> None:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["calico_lib"]
    root = REPO / "calico_lib"
    shipped = {p for pattern in patterns for p in root.glob(pattern)}
    data = [p for p in root.rglob("*") if p.is_file() and p.suffix not in (".py", ".pyc")
            and "__pycache__" not in p.parts]
    assert data, "expected templates and the agent's unit file"
    assert set(data) <= shipped, sorted(str(p) for p in set(data) - shipped)
    scripts = config["project"]["scripts"]
    assert scripts["calicoctl"] == "calico_lib.cli:main"
    assert scripts["calico-agent"] == "calico_lib.agent:main"
