"""The wheel's copy of the Ansible collection, so ``calicoctl lab`` works from an installed
package: setuptools' build_py (pyproject.toml's [tool.setuptools.cmdclass]) copies what
``collection.BUNDLED`` names from the project root into ``calico_lib/lab/collection/
ansible_collections/calico/docker`` of the build. The sdist carries those files
(MANIFEST.in), so a wheel built from it has the copy too.

Loaded by setuptools on its own (not as part of calico_lib, whose dependencies are not in
the build environment), so it imports nothing from the package.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path
from types import ModuleType

from setuptools.command.build_py import build_py
from setuptools.errors import SetupError

_HERE = Path(__file__).resolve().parent
ROOT = _HERE.parents[1]  # the project root: calico_lib/lab/_build.py


def _layout() -> ModuleType:
    """collection.py, loaded by path (its BUNDLED and BUNDLE_DIR are the one list)."""
    name = "_calico_lab_collection_layout"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, _HERE / "collection.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up
        spec.loader.exec_module(module)
    return sys.modules[name]


class BuildPy(build_py):
    """build_py, then the collection copy."""

    def run(self) -> None:
        super().run()
        if self.editable_mode:
            return  # an editable install runs from the checkout, which is the collection
        if not (ROOT / "galaxy.yml").is_file():
            # a wheel built from installed files (the node role's wheelhouse from a wheel
            # install): the copy is there already, as package data
            return
        layout = _layout()
        missing = [name for name in layout.BUNDLED if not (ROOT / name).exists()]
        if missing:
            raise SetupError(f"the wheel ships the Ansible collection, but {', '.join(missing)}"
                             f" is missing in {ROOT} (an sdist needs them in MANIFEST.in)")
        target = Path(self.build_lib) / "calico_lib" / "lab" / layout.BUNDLE_DIR
        shutil.rmtree(target, ignore_errors=True)  # nothing stale from an earlier build
        for name in layout.BUNDLED:
            source, dest = ROOT / name, target / name
            if source.is_dir():
                shutil.copytree(source, dest,
                                ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            else:
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, dest)
