"""What `pip install .` ships: every package of calico_lib, its templates and unit file, and
the Ansible collection that `calicoctl lab` deploys with from an installed wheel."""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from pathlib import Path
from typing import Any

import pytest

from calico_lib.lab.collection import BUNDLE_DIR
from tests import wheel_install

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


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


# ------------------------------------------------------------------------------ the wheel


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> wheel_install.Installed:
    """The sdist, the wheel built from it, and a virtualenv with the wheel (no checkout)."""
    return wheel_install.build_and_install(tmp_path_factory.mktemp("wheel"))


def installed_python(installed: wheel_install.Installed, code: str, cwd: Path,
                     *argv: str) -> Any:
    """Run ``code`` with the installed package, outside the checkout; its JSON output."""
    out = wheel_install.run([str(installed.python), "-c", code, *argv], cwd=cwd,
                            env=wheel_install.outside_env())
    return json.loads(out)


@pytest.mark.slow
def test_the_wheel_carries_the_ansible_collection(installed: wheel_install.Installed) -> None:
    bundle = "calico_lib/lab/" + BUNDLE_DIR
    with zipfile.ZipFile(installed.wheel) as wheel:
        names = set(wheel.namelist())
    for path in ("playbooks/site.yml", "playbooks/demo-policy.yml",
                 "playbooks/demo-outside.yml", "roles/tor/tasks/main.yml", "galaxy.yml",
                 "meta/runtime.yml", "ansible.cfg", "roles/node/tasks/main.yml",
                 "roles/node/files/build_wheelhouse.py", "plugins/modules/ip_pool.py",
                 "plugins/module_utils/calico.py", "inventory/example/hosts.yml",
                 "pyproject.toml", "LICENSE", "README.md",
                 # the roles read the units from the collection's calico_lib
                 "calico_lib/data/calico-agent.service",
                 "calico_lib/data/calico-docker-plugin.service"):
        assert f"{bundle}/{path}" in names, path
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    # the library itself once: not in the copy
    assert not [n for n in names if n.startswith(f"{bundle}/calico_lib/")
                and not n.startswith(f"{bundle}/calico_lib/data/")]
    assert "calico_lib/lab/core.py" in names and "calico_lib/lab.py" not in names
    # the sdist has the collection's sources, so a wheel built from it has the copy
    with tarfile.open(installed.sdist) as sdist:
        members = {n.split("/", 1)[1] for n in sdist.getnames() if "/" in n}
    assert {"MANIFEST.in", "galaxy.yml", "playbooks/site.yml",
            "roles/node/files/build_wheelhouse.py"} <= members


@pytest.mark.slow
def test_the_installed_lab_finds_its_collection_outside_a_checkout(
        installed: wheel_install.Installed, tmp_path: Path) -> None:
    found = installed_python(installed, (
        "import json, calico_lib\n"
        "from calico_lib.lab import find_collection\n"
        "c = find_collection()\n"
        "print(json.dumps({'library': calico_lib.__file__, 'root': c.root, "
        "'path': c.collections_path, 'installed': c.installed, "
        "'has_library': c.has_library}))\n"), tmp_path)
    site = installed.site_packages.resolve()
    assert Path(found["library"]).is_relative_to(site), "the wheel's calico_lib, not the checkout"
    root = Path(found["root"])
    assert root.is_relative_to(site) and found["installed"] and not found["has_library"]
    assert Path(found["path"]) / "ansible_collections" / "calico" / "docker" == root
    for path in ("playbooks/site.yml", "roles/node/tasks/main.yml", "roles/etcd",
                 "roles/pki", "roles/policy", "roles/docker", "plugins/modules/profile.py"):
        assert (root / path).exists(), path
    # what the roles read beyond themselves (role_path ~ '/../../FILE') is in the copy too
    wanted = {match for text in (p.read_text() for p in (root / "roles").rglob("*")
                                 if p.is_file() and p.suffix in (".yml", ".j2"))
              for match in re.findall(r"role_path ~ '/\.\./\.\./([^']+)'", text)}
    assert wanted, "expected the units the roles read from calico_lib/data"
    assert not [path for path in wanted if not (root / path).is_file()]


@pytest.mark.slow
def test_the_hosts_wheel_builds_from_the_installed_files(
        installed: wheel_install.Installed, tmp_path: Path, monkeypatch) -> None:
    """From a wheel install the node role's wheelhouse is built from the installed package's
    files (the lab stages them as calico_node_wheelhouse_source): build_wheelhouse.py's build of
    them, without the download of the dependencies."""
    staged = installed_python(installed, (
        "import json, sys\n"
        "from calico_lib.lab.collection import find_collection, stage_library_source\n"
        "c = find_collection()\n"
        "print(json.dumps({'source': stage_library_source(c, sys.argv[1]), 'root': c.root}))\n"
        ), tmp_path, str(tmp_path / "source"))
    script = Path(staged["root"]) / "roles/node/files/build_wheelhouse.py"
    spec = importlib.util.spec_from_file_location("build_wheelhouse", script)
    assert spec and spec.loader
    builder = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(builder)
    source = Path(staged["source"])
    files = builder.source_files(source)
    assert source / "calico_lib" / "cli.py" in files and source / "pyproject.toml" in files
    real_run = builder.run
    monkeypatch.setattr(builder, "run", lambda argv, cwd=None: None if "download" in argv
                        else real_run(argv, cwd))
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "315532800")  # build() sets it
    target = tmp_path / "wheels"
    args = argparse.Namespace(pip_args=["--no-build-isolation"], arch="x86_64",
                              glibc="2.36", python_version="3.11")
    builder.build(source, files, "0.1.0+gtest", target, args)
    [wheel] = target.glob("calico_docker-0.1.0+gtest-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    assert {"calico_lib/cli.py", "calico_lib/lab/core.py", "calico_lib/agent.py"} <= names
    assert not [n for n in names if "__pycache__" in n]


@pytest.mark.ansible
def test_the_installed_collection_resolves_for_ansible(
        installed: wheel_install.Installed, tmp_path: Path) -> None:
    """The playbooks parse with the environment the lab deploys with: calico.docker's roles
    and modules come from the installed copy."""
    env = installed_python(installed, (
        "import json, os\n"
        "from calico_lib.lab.collection import find_collection\n"
        "from calico_lib.lab.deploy import ansible_env\n"
        "c = find_collection()\n"
        "print(json.dumps({'root': c.root, 'env': ansible_env(c, dict(os.environ))}))\n"),
        tmp_path)
    for playbook in ("playbooks/site.yml", "playbooks/demo-policy.yml",
                     "playbooks/demo-outside.yml"):
        proc = subprocess.run([str(BIN / "ansible-playbook"), "--syntax-check", "-i",
                               "localhost,", playbook], cwd=env["root"], env=env["env"],
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stdout + proc.stderr
