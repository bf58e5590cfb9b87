"""This project as `pip install` ships it: built into an sdist and a wheel, and the wheel
installed into a fresh virtualenv, for tests that run it outside the checkout
(tests/test_packaging.py, tests/test_lab.py).

    installed = build_and_install(tmp_path)
    subprocess.run([installed.bin / "calicoctl", ...], cwd=somewhere_else)

Offline: ``python -m build --no-isolation`` uses this environment's build backend (the test
extra installs it), from a snapshot of the checkout in ``tmp_path`` (the checkout is not
written to, so two test runs side by side do not meet in its egg-info). The virtualenv gets
the wheel alone (``--no-deps --no-index``) and finds the dependencies in this environment's
site-packages through a ``.pth`` line, after its own. That line adds a folder to sys.path
without running the ``.pth`` files in it, so this environment's editable install of the
checkout stays out, and ``import calico_lib`` is the wheel's.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

#: what the sdist does not need (the top level of the checkout only), and never anywhere
SKIP_TOP = {".venv", ".git", ".ci", "build", "dist", ".pytest_cache", ".ruff_cache",
            ".hypothesis", "ansible_collections", "tests", "molecule", "bench", "docs",
            "scripts"}
SKIP_ANYWHERE = {"__pycache__"}


@dataclass(frozen=True)
class Installed:
    sdist: Path
    wheel: Path
    venv: Path

    @property
    def bin(self) -> Path:
        return self.venv / "bin"

    @property
    def python(self) -> Path:
        return self.bin / "python"

    @property
    def site_packages(self) -> Path:
        return Path(run([str(self.python), "-c", "import sysconfig; "
                         "print(sysconfig.get_path('purelib'))"]).strip())


def run(argv: list[str], cwd: Path | None = None, env: dict[str, str] | None = None,
        timeout: float = 600) -> str:
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} exited {proc.returncode}:\n"
                             f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc.stdout


def _ignore(folder: str, names: list[str]) -> set[str]:
    top = Path(folder) == REPO
    return {n for n in names if n in SKIP_ANYWHERE or n.endswith((".pyc", ".egg-info"))
            or (top and n in SKIP_TOP)}


def build(dest: Path) -> tuple[Path, Path]:
    """The sdist and the wheel built from it, as a release makes them."""
    source = dest / "source"
    shutil.copytree(REPO, source, ignore=_ignore, symlinks=True)
    out = dest / "dist"
    run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(source)],
        cwd=dest)
    [sdist] = out.glob("*.tar.gz")
    [wheel] = out.glob("*.whl")
    return sdist, wheel


def install(wheel: Path, venv: Path) -> None:
    """A fresh virtualenv with the wheel; its dependencies from this environment."""
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install",
         "-q", "--no-deps", "--no-index", "--disable-pip-version-check", str(wheel)])
    site = Path(run([str(venv / "bin" / "python"), "-c",
                     "import sysconfig; print(sysconfig.get_path('purelib'))"]).strip())
    ours = dict.fromkeys([sysconfig.get_path("purelib"), sysconfig.get_path("platlib")])
    (site / "zz-test-dependencies.pth").write_text("".join(f"{p}\n" for p in ours))


def build_and_install(dest: Path) -> Installed:
    sdist, wheel = build(dest)
    venv = dest / "venv"
    install(wheel, venv)
    return Installed(sdist, wheel, venv)


def outside_env(**extra: str) -> dict[str, str]:
    """The environment for the installed commands: no pointer back to the checkout."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("CALICO_LAB_REPO", "PYTHONPATH", "VIRTUAL_ENV")}
    env.update(extra)
    return env
