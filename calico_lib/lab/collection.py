"""Where the lab finds the Ansible collection calico.docker (playbooks/site.yml, the roles
and modules) and calico_lib's sources, which the node role builds the hosts' wheelhouse from.

A checkout is the collection (ansible_collections/calico/docker links back to its root)
and holds the sources. An installed wheel has no checkout beside it: it ships a copy of
the collection inside this package (``BUNDLE_DIR``: the files ``BUNDLED`` names, copied
at build time by ``_build.py``), and the wheelhouse is built from the installed package's
own files instead (:func:`stage_library_source`).

Standard library only and no relative imports: the wheel build loads this file on its own,
before any dependency is installed.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

#: what the wheel ships of the collection, relative to its root: what site.yml and the
#: lab's other playbooks need (the roles also read the systemd units in calico_lib/data),
#: and the node role's wheel source (pyproject.toml, LICENSE, README.md: build_wheelhouse.py's
#: SOURCES but calico_lib, which is installed anyway)
BUNDLED = ("galaxy.yml", "meta", "plugins", "roles", "playbooks", "inventory/example",
           "calico_lib/data", "ansible.cfg", "pyproject.toml", "LICENSE", "README.md",
           "COLLECTION.md")
#: the copy's place in this package; the folder above ansible_collections goes on
#: ANSIBLE_COLLECTIONS_PATH
BUNDLE_DIR = "collection/ansible_collections/calico/docker"
#: build_wheelhouse.py's sources besides calico_lib
WHEEL_SOURCES = ("pyproject.toml", "LICENSE", "README.md")

_PACKAGE = Path(__file__).resolve().parent  # calico_lib/lab
_LIBRARY = _PACKAGE.parent  # calico_lib


@dataclass(frozen=True)
class Collection:
    """One copy of calico.docker that the lab can deploy with."""

    #: holds playbooks/site.yml, roles/, ansible.cfg (the playbooks run from here)
    root: str
    #: holds ansible_collections/calico/docker, for ANSIBLE_COLLECTIONS_PATH (None: the
    #: root is not laid out so; ansible.cfg and Ansible's defaults decide)
    collections_path: str | None
    #: the copy shipped in the wheel (not a checkout)
    installed: bool

    @property
    def has_library(self) -> bool:
        """Whether calico_lib's sources (a wheel can be built from the root) are here."""
        return os.path.isfile(os.path.join(self.root, "pyproject.toml")) and \
            os.path.isfile(os.path.join(self.root, "calico_lib", "__init__.py"))


def find_collection() -> Collection | None:
    """$CALICO_LAB_REPO (a checkout or an installed collection), else the checkout this
    package runs from, else the copy installed with it; None when there is none."""
    override = os.environ.get("CALICO_LAB_REPO")
    if override and is_collection(override):
        return _collection(Path(override), installed=False)
    checkout = _LIBRARY.parent
    if is_collection(checkout) and (checkout / "pyproject.toml").is_file():
        return _collection(checkout, installed=False)
    bundled = _PACKAGE / BUNDLE_DIR
    if is_collection(bundled):
        return _collection(bundled, installed=True)
    return None


def is_collection(path: str | os.PathLike[str]) -> bool:
    return os.path.isfile(os.path.join(path, "playbooks", "site.yml"))


def _collection(root: Path, installed: bool) -> Collection:
    root = root.resolve()
    if (root / "ansible_collections" / "calico" / "docker").is_dir():
        path: Path | None = root  # a checkout: the link back to itself
    elif root.parts[-3:] == ("ansible_collections", "calico", "docker"):
        path = root.parents[2]  # an installed collection, or the wheel's copy
    else:
        path = None
    return Collection(str(root), str(path) if path else None, installed)


def stage_library_source(collection: Collection, dest: str) -> str:
    """A source folder for roles/node/files/build_wheelhouse.py made of installed files:
    the collection copy's pyproject.toml, LICENSE and README.md, and this calico_lib package
    (links: the build copies what they point at). Made afresh; returns ``dest``."""
    shutil.rmtree(dest, ignore_errors=True)
    os.makedirs(dest)
    for name in WHEEL_SOURCES:
        os.symlink(os.path.join(collection.root, name), os.path.join(dest, name))
    os.symlink(_LIBRARY, os.path.join(dest, "calico_lib"))
    return dest
