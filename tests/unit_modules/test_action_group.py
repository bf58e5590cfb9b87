"""The action group ``calico`` of meta/runtime.yml: ``module_defaults`` with
``group/calico.docker.calico`` gives every module that talks to the datastore its options
once per play (a real ``ansible-playbook`` run on localhost, an SQLite datastore in tmp_path).
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest
import yaml

import calico_lib
from tests.playbooks.harness import REPO, playbook, write_inventory

MODULES = sorted(p.stem for p in (REPO / "plugins" / "modules").glob("*.py")
                 if not p.name.startswith("_"))


def takes_the_datastore(module: str) -> bool:
    mod = importlib.import_module(f"ansible_collections.calico.docker.plugins.modules.{module}")
    doc = yaml.safe_load(mod.DOCUMENTATION)
    return "calico.docker.datastore" in doc.get("extends_documentation_fragment", [])


def test_the_group_is_every_module_with_the_datastore_options() -> None:
    runtime = yaml.safe_load((REPO / "meta" / "runtime.yml").read_text())
    group = runtime["action_groups"]["calico"]
    assert group == sorted(group)
    assert group == [m for m in MODULES if takes_the_datastore(m)]
    # docker_network has no datastore option: a group default would make it fail
    assert "docker_network" in MODULES and "docker_network" not in group


@pytest.mark.ansible
def test_module_defaults_set_the_datastore_once(tmp_path: Path) -> None:
    db = tmp_path / "calico.db"
    url = "sqlite:///" + str(db.resolve())
    play = [{
        "name": "Calico intent with the datastore set once",
        "hosts": "localhost",
        "gather_facts": False,
        "module_defaults": {"group/calico.docker.calico": {"datastore": url}},
        "tasks": [
            {"name": "A pool", "calico.docker.ip_pool": {"cidr": "10.98.0.0/16"}},
            {"name": "A profile", "calico.docker.profile": {
                "name": "web", "inbound_rules": [{"protocol": "tcp", "dst_ports": [80]}]}},
            {"name": "Read it back", "calico.docker.info": {"hostname": "host-1"},
             "register": "calico"},
            {"name": "Keep what it read", "ansible.builtin.copy": {
                "dest": str(tmp_path / "read.json"), "mode": "0600",
                "content": "{{ {'pools': calico.pools | map(attribute='cidr') | list,"
                           " 'profiles': calico.profiles | map(attribute='name') | list}"
                           " | to_json }}"}},
        ],
    }]
    path = tmp_path / "play.yml"
    path.write_text(yaml.safe_dump(play))
    inventory = write_inventory(tmp_path / "hosts.yml", {"localhost": {
        "ansible_connection": "local", "ansible_python_interpreter": sys.executable}})
    run = playbook(path, inventory, workdir=tmp_path, timeout=300).check()
    assert run.recap["localhost"]["changed"] == 3, run.output  # pool, profile, read.json
    read = json.loads((tmp_path / "read.json").read_text())
    assert read == {"pools": ["10.98.0.0/16"], "profiles": ["web"]}
    with calico_lib.connect(url, create=False) as client:  # in that file, not elsewhere
        assert [p.cidr for p in client.list_pools()] == ["10.98.0.0/16"]
        assert client.get_profile("web").inbound_rules[0].dst_ports == [80]
    assert playbook(path, inventory, workdir=tmp_path, timeout=300).check().changed() == 0
