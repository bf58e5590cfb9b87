"""meta/runtime.yml: the action group ``calico`` (``module_defaults`` with
``group/calico.docker.calico`` gives every module that talks to the datastore its options
once per play) and the old module names (``plugin_routing``).

Real ``ansible-playbook`` runs of both (the group's defaults, ``calico.docker.info`` through
its redirect): tests/test_module_routing.py.
"""

from __future__ import annotations

import importlib

import yaml
from packaging.version import Version

from ansible_collections.calico.docker.tests.unit.plugins.modules.helpers import COLLECTION

MODULES = sorted(p.stem for p in (COLLECTION / "plugins" / "modules").glob("*.py")
                 if not p.name.startswith("_"))


def runtime() -> dict:
    return yaml.safe_load((COLLECTION / "meta" / "runtime.yml").read_text())


def takes_the_datastore(module: str) -> bool:
    mod = importlib.import_module(f"ansible_collections.calico.docker.plugins.modules.{module}")
    doc = yaml.safe_load(mod.DOCUMENTATION)
    return "calico.docker.datastore" in doc.get("extends_documentation_fragment", [])


def test_the_group_is_every_module_with_the_datastore_options() -> None:
    group = runtime()["action_groups"]["calico"]
    assert group == sorted(group)
    assert group == [m for m in MODULES if takes_the_datastore(m)]
    assert "calico_info" in group and "info" not in group  # by its current name
    # docker_network has no datastore option: a group default would make it fail
    assert "docker_network" in MODULES and "docker_network" not in group


def test_info_is_a_deprecated_redirect_to_calico_info() -> None:
    """The module was renamed calico_info (Ansible's <name>_info for a module that only
    reads); a play that says calico.docker.info keeps working until 1.0.0."""
    assert "calico_info" in MODULES and "info" not in MODULES
    routing = runtime()["plugin_routing"]["modules"]
    assert set(routing) == {"info"}
    info = routing["info"]
    assert info["redirect"] == "calico.docker.calico_info"
    deprecation = info["deprecation"]
    assert Version(str(deprecation["removal_version"])) == Version("1.0.0")
    assert "calico.docker.calico_info" in deprecation["warning_text"]
    # the documented name is the new one
    mod = importlib.import_module("ansible_collections.calico.docker.plugins.modules.calico_info")
    assert yaml.safe_load(mod.DOCUMENTATION)["module"] == "calico_info"
    assert "calico.docker.calico_info:" in mod.EXAMPLES
    assert "calico.docker.info:" not in mod.EXAMPLES
