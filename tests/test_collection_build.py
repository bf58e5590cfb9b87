"""`ansible-galaxy collection build` makes a tarball that installs and works."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.ansible

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def test_collection_builds_installs_and_documents(tmp_path: Path) -> None:
    env = dict(os.environ, ANSIBLE_HOME=str(tmp_path / "home"))
    build = subprocess.run([str(BIN / "ansible-galaxy"), "collection", "build", str(REPO),
                            "--output-path", str(tmp_path)], capture_output=True, text=True,
                           env=env, timeout=300)
    assert build.returncode == 0, build.stderr
    [tarball] = tmp_path.glob("calico-docker-*.tar.gz")
    with tarfile.open(tarball) as tar:
        names = tar.getnames()
    assert "plugins/modules/ip_pool.py" in names and "roles/node/tasks/main.yml" in names
    assert "calico_lib/reconcile.py" in names  # the managed hosts' copy of the library
    assert not [n for n in names if n.startswith(("tests/", ".git/", "ansible_collections"))]

    installed = tmp_path / "collections"
    install = subprocess.run([str(BIN / "ansible-galaxy"), "collection", "install",
                              str(tarball), "-p", str(installed), "--force"],
                             capture_output=True,
                             text=True, env=env, timeout=300)
    assert install.returncode == 0, install.stderr
    assert (installed / "ansible_collections/calico/docker/plugins/modules/profile.py").exists()
    doc = subprocess.run([str(BIN / "ansible-doc"), "calico.docker.ip_pool"],
                         capture_output=True, text=True, timeout=120,
                         env=dict(env, ANSIBLE_COLLECTIONS_PATH=str(installed)),
                         cwd=tmp_path)
    assert doc.returncode == 0, doc.stderr
    assert "block_size" in doc.stdout
