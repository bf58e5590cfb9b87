"""`ansible-galaxy collection build` makes a tarball that installs and works.

The tarball holds the collection and nothing else of the project (galaxy.yml's
build_ignore), declares the collections the roles use (galaxy.yml's dependencies), installs
offline with local copies of them, and its playbook parses against that installation alone.
The collection's README (COLLECTION.md) lists every module and role.
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import tomllib
import zipfile
from pathlib import Path

import pytest
import yaml

from tests import wheel_install

pytestmark = pytest.mark.ansible

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
#: the collections the `ansible` package (the test extra) installs beside ansible-core
BUNDLED = Path(sysconfig.get_paths()["purelib"]) / "ansible_collections"

#: everything at the top of the tarball: the collection's own folders, its README, the
#: project README it links to, the changelog, the license, and calico_lib with
#: pyproject.toml (the node role builds the managed hosts' wheel from them)
TOP_LEVEL = {"MANIFEST.json", "FILES.json", "COLLECTION.md", "README.md", "CHANGELOG.md",
             "LICENSE", "pyproject.toml", "calico_lib", "changelogs", "inventory", "meta",
             "playbooks", "plugins", "roles", "tests"}
#: the collection's own tests, the only ones in the tarball: the modules' unit tests
#: (ansible-test units), the integration targets and the sanity ignores
COLLECTION_TESTS = ("tests/unit/", "tests/integration/", "tests/sanity/")
#: what is not the collection, never in the tarball (and every other file of tests/)
LEFT_OUT = ("Makefile", ".ansible-lint", "ansible.cfg", "MANIFEST.in", ".gitignore",
            "scripts/", "bench/", ".ci/", "docs/", "molecule/", ".git/",
            "ansible_collections/", "playbooks/demo-", "changelogs/fragments/",
            "changelogs/.plugin-cache.yaml", "tests/conftest.py", "tests/test_", "tests/golden/",
            "tests/playbooks/", "tests/__init__.py", "tests/netns.py")
SKIP = ("__pycache__", ".venv", ".git", "ansible_collections", ".pytest_cache", ".ruff_cache",
        ".hypothesis", "build", "dist")


def clean_env(home: Path, **extra: str) -> dict[str, str]:
    """Ansible's environment without this checkout's settings (ansible.cfg finds the
    in-tree link ./ansible_collections; callers run away from it, in a temporary folder)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("ANSIBLE_CONFIG", "ANSIBLE_COLLECTIONS_PATH", "ANSIBLE_COLLECTIONS_PATHS",
                        "ANSIBLE_COLLECTIONS_SCAN_SYS_PATH", "PYTHONPATH")}
    env["ANSIBLE_HOME"] = str(home)
    env.update(extra)
    return env


def ansible(tool: str, *args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / tool), *args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=300, check=False)


def build(source: Path, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    proc = ansible("ansible-galaxy", "collection", "build", str(source), "--output-path",
                   str(out), cwd=out, env=clean_env(out / "home"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    [tarball] = out.glob("calico-docker-*.tar.gz")
    return tarball


def files_of(tarball: Path) -> set[str]:
    with tarfile.open(tarball) as tar:
        return {m.name for m in tar.getmembers() if not m.isdir()}


def collection_info(tarball: Path) -> dict:
    with tarfile.open(tarball) as tar:
        handle = tar.extractfile("MANIFEST.json")
        assert handle is not None
        return json.load(handle)["collection_info"]


def repo_files(folder: str) -> set[str]:
    """The checkout's files under ``folder``, as tarball names (no bytecode)."""
    return {str(p.relative_to(REPO)) for p in (REPO / folder).rglob("*")
            if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"}


def bundled_version(fqcn: str) -> str:
    manifest = BUNDLED.joinpath(*fqcn.split("."), "MANIFEST.json")
    assert manifest.is_file(), (f"{fqcn} is not in {BUNDLED}: the `ansible` package (the "
                                "test extra, `make deps`) brings it")
    return json.loads(manifest.read_text())["collection_info"]["version"]


@pytest.fixture(scope="module")
def tarball(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build(REPO, tmp_path_factory.mktemp("build"))


@pytest.fixture(scope="module")
def installed(tarball: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tarball installed offline into a folder of its own with local copies of its
    dependencies (the `ansible` package's, as folders), through a requirements file; the
    folder to put on ANSIBLE_COLLECTIONS_PATH."""
    work = tmp_path_factory.mktemp("install")
    requirements = {"collections": [{"name": str(tarball), "type": "file"}] + [
        {"name": str(BUNDLED.joinpath(*fqcn.split("."))), "type": "dir"}
        for fqcn in collection_info(tarball)["dependencies"]]}
    (work / "requirements.yml").write_text(yaml.safe_dump(requirements))
    path = work / "collections"
    # Without the sys.path scan, the `ansible` package's copies do not count as installed
    # (they would be skipped, not copied), and nothing but `path` is seen.
    env = clean_env(work / "home", ANSIBLE_COLLECTIONS_PATH=str(path),
                    ANSIBLE_COLLECTIONS_SCAN_SYS_PATH="false")
    proc = ansible("ansible-galaxy", "collection", "install", "--offline", "-r",
                   "requirements.yml", "-p", str(path), cwd=work, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return path


def test_collection_builds_installs_and_documents(tarball: Path, tmp_path: Path) -> None:
    names = files_of(tarball)
    assert "plugins/modules/ip_pool.py" in names and "roles/node/tasks/main.yml" in names
    assert "calico_lib/reconcile.py" in names  # the managed hosts' copy of the library
    assert not [n for n in names if n.startswith((".git/", "ansible_collections"))]
    assert "tests/unit/plugins/modules/helpers.py" in names  # ansible-test units' tests ...
    assert not [n for n in names if n.startswith("tests/")
                and not n.startswith(COLLECTION_TESTS)]  # ... and no project test

    env = clean_env(tmp_path / "home")
    installed = tmp_path / "collections"
    install = ansible("ansible-galaxy", "collection", "install", str(tarball), "-p",
                      str(installed), "--force", cwd=tmp_path, env=env)
    assert install.returncode == 0, install.stderr
    assert (installed / "ansible_collections/calico/docker/plugins/modules/profile.py").exists()
    doc = ansible("ansible-doc", "calico.docker.ip_pool", cwd=tmp_path,
                  env=dict(env, ANSIBLE_COLLECTIONS_PATH=str(installed)))
    assert doc.returncode == 0, doc.stderr
    assert "block_size" in doc.stdout


def test_the_tarball_declares_what_the_roles_use(tarball: Path) -> None:
    info = collection_info(tarball)
    deps = info["dependencies"]
    assert "ansible.posix" in deps  # the node and tor roles' sysctls
    # every collection the roles and playbooks name (a module, filter or test by its FQCN;
    # a dotted name counts when it is an installed collection: not item.key and the like)
    named = {match.group(1) for path in [*REPO.glob("roles/**/*"), *REPO.glob("playbooks/*")]
             if path.is_file() and path.suffix in (".yml", ".yaml", ".j2")
             for match in re.finditer(r"\b([a-z_0-9]+\.[a-z_0-9]+)\.[a-z_0-9]+\b",
                                      path.read_text(encoding="utf-8"))}
    used = {name for name in named if BUNDLED.joinpath(*name.split(".")).is_dir()}
    used -= {"ansible.builtin", "calico.docker"}
    assert used == set(deps), (sorted(used), deps)
    # the ranges hold the versions the tests run with
    from ansible.galaxy.dependency_resolution.versioning import meets_requirements
    for fqcn, spec in deps.items():
        assert meets_requirements(bundled_version(fqcn), spec), (fqcn, spec)
    assert info["readme"] == "COLLECTION.md" and info["license"] == ["Apache-2.0"]
    assert info["authors"] and "networking" in info["tags"]


def test_the_tarball_holds_the_collection_and_nothing_else(tarball: Path) -> None:
    names = files_of(tarball)
    assert {n.split("/")[0] for n in names} == TOP_LEVEL
    assert not [n for n in names for prefix in LEFT_OUT if n.startswith(prefix)]
    # the collection's files, all of them
    modules = repo_files("plugins/modules")
    assert {n for n in modules if n.endswith(".py")} and modules <= names
    assert repo_files("plugins") <= names and repo_files("roles") <= names
    assert {"meta/runtime.yml", "playbooks/site.yml", "COLLECTION.md", "LICENSE",
            "changelogs/changelog.yaml", "inventory/example/hosts.yml"} <= names
    assert {n for n in names if n.startswith("playbooks/")} == {"playbooks/site.yml"}
    # the collection's tests, all of them, and nothing else of tests/
    ours = set().union(*(repo_files(folder.rstrip("/")) for folder in COLLECTION_TESTS))
    assert {"tests/unit/plugins/modules/conftest.py", "tests/sanity/ignore-2.19.txt",
            "tests/integration/targets/ip_pool/tasks/main.yml"} <= ours
    assert {n for n in names if n.startswith("tests/")} == ours
    # calico_lib, which the node role builds into the hosts' wheel: all of it but the lab;
    # the lab's _build.py stays (pyproject.toml's build_py: the wheel does not build without)
    library = {n for n in repo_files("calico_lib")
               if not n.startswith("calico_lib/lab/") or n == "calico_lib/lab/_build.py"}
    assert {n for n in names if n.startswith("calico_lib/")} == library
    assert "pyproject.toml" in names


def test_no_secret_and_no_other_inventory_is_packed(tmp_path: Path) -> None:
    """The pki role keeps the CA's key and etcd's passwords beside the inventory
    (calico-pki/), and README.md makes a site's inventory with `cp -r inventory/example
    inventory/prod`: a build in such a tree ships neither."""
    tree = tmp_path / "tree"
    shutil.copytree(REPO, tree, symlinks=True,
                    ignore=lambda _, names: {n for n in names if n in SKIP
                                             or n.endswith((".pyc", ".egg-info"))})
    for name in ("prod", "e", "examples", "staging"):
        shutil.copytree(tree / "inventory/example", tree / "inventory" / name)
    (tree / "inventory/hosts.ini").write_text("[calico_nodes]\nhost1\n")
    for inventory in ("prod", "example"):
        secrets = tree / "inventory" / inventory / "calico-pki" / ".passwords"
        secrets.mkdir(parents=True)
        (secrets.parent / "ca.key").write_text("a key\n")
        (secrets / "root").write_text("a password\n")
    names = files_of(build(tree, tmp_path / "out"))
    assert {n for n in names if n.startswith("inventory/")} == repo_files("inventory/example")
    assert not [n for n in names if "calico-pki" in n]


def test_it_installs_offline_and_site_parses_with_its_dependencies_alone(
        tarball: Path, installed: Path, tmp_path: Path) -> None:
    deps = collection_info(tarball)["dependencies"]
    root = installed / "ansible_collections"
    assert (root / "calico/docker/MANIFEST.json").is_file()
    assert {f"{p.parent.name}.{p.name}" for p in root.glob("*/*")} == {"calico.docker", *deps}

    def syntax_check(path: Path) -> subprocess.CompletedProcess:
        # only `path`: no sys.path scan (the `ansible` package's copies), no ansible.cfg
        env = clean_env(tmp_path / "home", ANSIBLE_COLLECTIONS_PATH=str(path),
                        ANSIBLE_COLLECTIONS_SCAN_SYS_PATH="false")
        return ansible("ansible-playbook", "--syntax-check", "-i", "localhost,",
                       "calico.docker.site", cwd=tmp_path, env=env)

    proc = syntax_check(installed)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert str(root / "calico/docker/playbooks/site.yml") in proc.stdout

    # offline without its dependencies: refused, naming one ...
    alone = tmp_path / "alone"
    env = clean_env(tmp_path / "home", ANSIBLE_COLLECTIONS_PATH=str(alone),
                    ANSIBLE_COLLECTIONS_SCAN_SYS_PATH="false")
    proc = ansible("ansible-galaxy", "collection", "install", "--offline", str(tarball),
                   "-p", str(alone), cwd=tmp_path, env=env)
    assert proc.returncode != 0 and any(d in proc.stderr for d in deps), proc.stderr
    # ... and with --no-deps it installs, but site.yml does not parse without ansible.posix
    proc = ansible("ansible-galaxy", "collection", "install", "--offline", "--no-deps",
                   str(tarball), "-p", str(alone), cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    proc = syntax_check(alone)
    assert proc.returncode != 0 and "ansible.posix.sysctl" in proc.stdout + proc.stderr


def calico_lib_imports(folder: Path) -> dict[str, set[str]]:
    """The calico_lib modules the files under ``folder`` import, each with the names
    taken from it."""
    found: dict[str, set[str]] = {}
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] == "calico_lib":
                        found.setdefault(alias.name, set())
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level \
                    and node.module.split(".")[0] == "calico_lib":
                found.setdefault(node.module, set()).update(a.name for a in node.names)
    return found


@pytest.mark.slow
def test_the_hosts_wheel_from_the_installed_collection_has_what_runs_there(
        installed: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The node role builds the hosts' calico_lib from the installed collection
    (calico_node_wheelhouse_source, the collection root): build_wheelhouse.py's build of it, without
    the download of the dependencies. Without the lab, the wheel still has every calico_lib
    module the modules import on the hosts, and the daemons and calicoctl."""
    root = installed / "ansible_collections/calico/docker"
    script = root / "roles/node/files/build_wheelhouse.py"
    spec = importlib.util.spec_from_file_location("build_wheelhouse_installed", script)
    assert spec and spec.loader
    builder = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(builder)
    real_run = builder.run
    monkeypatch.setattr(builder, "run", lambda argv, cwd=None: None if "download" in argv
                        else real_run(argv, cwd))
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "315532800")  # build() sets it
    args = argparse.Namespace(pip_args=["--no-build-isolation"], arch="x86_64",
                              glibc="2.36", python_version="3.11")
    builder.build(root, builder.source_files(root), "0.1.0+gtest", tmp_path / "wheels", args)
    [wheel] = (tmp_path / "wheels").glob("calico_docker-0.1.0+gtest-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    assert not [n for n in names if n.startswith("calico_lib/lab")]
    assert {"calico_lib/agent.py", "calico_lib/data/calico-agent.service",
            "calico_lib/templates/bird.conf.j2"} <= names

    # what must import on a host: the modules' (and module_utils') calico_lib imports, and
    # the console scripts (the agent and plugin services, calicoctl)
    wanted = calico_lib_imports(root / "plugins")
    assert "calico_lib.reconcile" in wanted
    scripts = tomllib.loads((root / "pyproject.toml").read_text())["project"]["scripts"]
    for target in scripts.values():
        module, attr = target.split(":")
        wanted.setdefault(module, set()).add(attr)
    venv = tmp_path / "venv"
    wheel_install.install(wheel, venv)
    code = (
        "import importlib, importlib.util, json, sys, sysconfig\n"
        "wanted = json.loads(sys.argv[1])\n"
        "files = {}\n"
        "for module, names in wanted.items():\n"
        "    loaded = importlib.import_module(module)\n"
        "    missing = [n for n in names if not hasattr(loaded, n)\n"
        "               and importlib.util.find_spec(f'{module}.{n}') is None]\n"
        "    assert not missing, (module, missing)\n"
        "    files[module] = loaded.__file__\n"
        "print(json.dumps({'site': sysconfig.get_path('purelib'), 'files': files}))\n")
    out = json.loads(wheel_install.run(
        [str(venv / "bin/python"), "-c", code,
         json.dumps({k: sorted(v) for k, v in wanted.items()})],
        cwd=tmp_path, env=wheel_install.outside_env()))
    site = Path(out["site"]).resolve()  # the wheel's calico_lib, not the checkout's
    assert out["files"].keys() == wanted.keys()
    for module, file in out["files"].items():
        assert Path(file).resolve().is_relative_to(site), (module, file)


def test_the_readme_lists_the_content_and_agrees_with_the_metadata() -> None:
    readme = (REPO / "COLLECTION.md").read_text(encoding="utf-8")
    flat = " ".join(readme.split())
    galaxy = yaml.safe_load((REPO / "galaxy.yml").read_text())
    assert galaxy["readme"] == "COLLECTION.md"
    # every module and role, with its one-line description from its documentation
    for path in sorted((REPO / "plugins/modules").glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        [doc] = [node.value.value for node in tree.body if isinstance(node, ast.Assign)
                 and getattr(node.targets[0], "id", None) == "DOCUMENTATION"]
        line = f"`calico.docker.{path.stem}`: {yaml.safe_load(doc)['short_description']}"
        assert line in flat, line
    for role in sorted(p.parent.parent for p in REPO.glob("roles/*/meta/argument_specs.yml")):
        spec = yaml.safe_load((role / "meta/argument_specs.yml").read_text())
        line = (f"`calico.docker.{role.name}`: "
                f"{spec['argument_specs']['main']['short_description']}")
        assert line in flat, line
    # the supported ansible-core and the dependency ranges, as declared
    runtime = yaml.safe_load((REPO / "meta/runtime.yml").read_text())
    assert f'`requires_ansible: "{runtime["requires_ansible"]}"`' in flat
    for fqcn, spec in galaxy["dependencies"].items():
        assert f"| `{fqcn}` | `{spec}` |" in flat, fqcn
    # the links into the project README name its sections
    headings = {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-")
                for h in re.findall(r"(?m)^#+ (.*)$", (REPO / "README.md").read_text())}
    anchors = set(re.findall(r"\(README\.md#([^)]+)\)", readme))
    assert anchors and anchors <= headings, sorted(anchors - headings)
