"""meta/runtime.yml in real ``ansible-playbook`` runs on localhost (an SQLite datastore in
tmp_path): ``module_defaults`` with ``group/calico.docker.calico`` gives every module that
talks to the datastore its options once per play, and ``calico.docker.info``, the info
module's old name, still runs it (now calico_info) through its redirect, with a deprecation
warning, in the group too. (The runtime.yml checks that need no Ansible run are the
collection's unit tests: tests/unit/plugins/modules/test_action_group.py.)
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import calico_lib
from tests.playbooks.harness import REPO, ansible_command, ansible_env, playbook, write_inventory


def local_inventory(tmp_path: Path) -> Path:
    return write_inventory(tmp_path / "hosts.yml", {"localhost": {
        "ansible_connection": "local", "ansible_python_interpreter": sys.executable}})


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
            {"name": "Read it back", "calico.docker.calico_info": {"hostname": "host-1"},
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
    inventory = local_inventory(tmp_path)
    run = playbook(path, inventory, workdir=tmp_path, timeout=300).check()
    assert run.recap["localhost"]["changed"] == 3, run.output  # pool, profile, read.json
    read = json.loads((tmp_path / "read.json").read_text())
    assert read == {"pools": ["10.98.0.0/16"], "profiles": ["web"]}
    with calico_lib.connect(url, create=False) as client:  # in that file, not elsewhere
        assert [p.cidr for p in client.list_pools()] == ["10.98.0.0/16"]
        assert client.get_profile("web").inbound_rules[0].dst_ports == [80]
    assert playbook(path, inventory, workdir=tmp_path, timeout=300).check().changed() == 0


@pytest.mark.ansible
def test_the_old_name_info_runs_calico_info_with_a_deprecation_warning(tmp_path: Path) -> None:
    url = "sqlite:///" + str((tmp_path / "calico.db").resolve())
    with calico_lib.connect(url) as client:
        client.add_pool(calico_lib.IPPool("10.97.0.0/16"))
    play = [{
        "name": "A play written before the rename",
        "hosts": "localhost",
        "gather_facts": False,
        "module_defaults": {"group/calico.docker.calico": {"datastore": url}},
        "tasks": [
            {"name": "Read by the old name", "calico.docker.info": {"hostname": "host-1"},
             "register": "calico"},
            {"name": "It read the store the group's defaults name",
             "ansible.builtin.assert": {"that": [
                 "calico.pools | map(attribute='cidr') | list == ['10.97.0.0/16']",
                 "calico is not changed"]}},
        ],
    }]
    path = tmp_path / "play.yml"
    path.write_text(yaml.safe_dump(play))
    env = dict(ansible_env(tmp_path), ANSIBLE_DEPRECATION_WARNINGS="1")
    proc = subprocess.run([ansible_command("ansible-playbook"), "-i",
                           str(local_inventory(tmp_path)), str(path)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
                          check=False)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    flat = " ".join(output.split())
    assert "calico.docker.info" in flat and "calico.docker.calico_info" in flat, output
    assert "DEPRECATION WARNING" in output and "1.0.0" in flat, output


@pytest.mark.ansible
def test_ansible_doc_of_the_old_name_shows_calico_info(tmp_path: Path) -> None:
    env = dict(ansible_env(tmp_path), ANSIBLE_DEPRECATION_WARNINGS="1")
    proc = subprocess.run([ansible_command("ansible-doc"), "--json", "calico.docker.info"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
                          check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    docs = json.loads(proc.stdout)
    [doc] = docs.values()
    assert doc["doc"]["module"] == "calico_info", doc["doc"]
