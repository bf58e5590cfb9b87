"""Run real ``ansible-playbook`` against test hosts: localhost, and network namespaces as hosts.

The ansible commands are the ones beside ``sys.executable`` (the virtualenv running pytest or
the benchmark), with the repository's ansible.cfg (so ``calico.docker`` is this checkout).

A namespace "host" is an inventory host with ``ansible_connection: local`` whose
``ansible_python_interpreter`` is a small wrapper, ``exec ip netns exec NS python "$@"``: every
module (facts, sysctl, the calico.docker modules) runs inside the namespace, with this
checkout's calico_lib, and every path the roles write is in a temporary folder.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
SITE = REPO / "playbooks" / "site.yml"

RECAP_RE = re.compile(
    r"^(?P<host>\S+)\s*:\s*ok=(?P<ok>\d+)\s+changed=(?P<changed>\d+)\s+"
    r"unreachable=(?P<unreachable>\d+)\s+failed=(?P<failed>\d+)\s+skipped=(?P<skipped>\d+)\s+"
    r"rescued=(?P<rescued>\d+)\s+ignored=(?P<ignored>\d+)", re.MULTILINE)


def ansible_command(name: str) -> str:
    """``ansible-playbook`` (etc.) of the Python running us, else the one on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"{name} is not installed beside {sys.executable} nor on PATH "
                                "(install the test extra: pip install -e '.[test]')")
    return found


def ansible_env(workdir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("ANSIBLE_", "CALICO_"))}
    env.update({
        "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
        "ANSIBLE_STDOUT_CALLBACK": "default",
        "ANSIBLE_RETRY_FILES_ENABLED": "0",
        "ANSIBLE_LOCAL_TEMP": str(workdir / "ansible-local"),
        "ANSIBLE_HOME": str(workdir / "ansible-home"),
        "ANSIBLE_DEPRECATION_WARNINGS": "0",
        # the modules import this checkout's calico_lib, installed or not
        "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH"))
                                      if p),
        "PATH": os.pathsep.join([str(Path(sys.executable).parent),
                                 os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")]),
    })
    return env


@dataclass
class Run:
    argv: list[str]
    returncode: int
    output: str
    seconds: float

    @property
    def recap(self) -> dict[str, dict[str, int]]:
        """PLAY RECAP: host -> counts (ok, changed, unreachable, failed, ...)."""
        tail = self.output.rsplit("PLAY RECAP", 1)
        if len(tail) != 2:
            raise AssertionError(f"no PLAY RECAP in the output of {' '.join(self.argv)}:\n"
                                 f"{self.output[-6000:]}")
        return {m["host"]: {k: int(v) for k, v in m.groupdict().items() if k != "host"}
                for m in RECAP_RE.finditer(tail[1])}

    def changed(self) -> int:
        return sum(counts["changed"] for counts in self.recap.values())

    def check(self) -> Run:
        """Assert the run succeeded on every host; returns self."""
        recap = self.recap if self.returncode == 0 else {}
        bad = {h: c for h, c in recap.items() if c["failed"] or c["unreachable"]}
        if self.returncode != 0 or bad or not recap:
            raise AssertionError(f"{' '.join(self.argv)} exited {self.returncode}:\n"
                                 f"{self.output[-12000:]}")
        return self


def playbook(play: Path | str, inventory: Path | str, *args: str, workdir: Path,
             timeout: float = 600) -> Run:
    import time

    argv = [ansible_command("ansible-playbook"), "-i", str(inventory), str(play), *args]
    start = time.perf_counter()
    proc = subprocess.run(argv, cwd=REPO, env=ansible_env(workdir), capture_output=True,
                          text=True, timeout=timeout, check=False)
    return Run(argv, proc.returncode, proc.stdout + proc.stderr, time.perf_counter() - start)


def write_inventory(path: Path, hosts: dict[str, dict], group_vars: dict | None = None,
                    groups: dict[str, dict[str, dict]] | None = None) -> Path:
    """A YAML (JSON) inventory with ``hosts`` in the group ``calico_nodes`` (where site.yml's
    Calico plays run), and more ``groups`` (name -> hosts and their variables) beside it."""
    children = {"calico_nodes": {"hosts": hosts}}
    children |= {name: {"hosts": members} for name, members in (groups or {}).items()}
    path.write_text(json.dumps({"all": {"children": children, "vars": group_vars or {}}},
                               indent=2))
    return path


def netns_python(ns: str, path: Path) -> Path:
    """A wrapper interpreter that runs this Python inside network namespace ``ns``."""
    ip = shutil.which("ip") or "/sbin/ip"
    path.write_text(f'#!/bin/sh\nexec {ip} netns exec {ns} {sys.executable} "$@"\n')
    path.chmod(0o755)
    return path


def netns_host_vars(name: str, ns: str, workdir: Path, url: str) -> dict[str, object]:
    """Inventory variables of a namespace host running site.yml's node, policy and docker
    roles without systemd, packages or the venv install, every file in ``workdir/name``."""
    root = workdir / name
    root.mkdir(parents=True, exist_ok=True)
    python = str(netns_python(ns, workdir / f"python-{name}"))
    return {
        "ansible_connection": "local",
        "ansible_python_interpreter": python,
        "ansible_become": False,
        "calico_node_name": name,
        "calico_node_python": python,
        "calico_node_datastore": url,
        "calico_node_manage_packages": False,
        "calico_node_install_calico_lib": False,
        "calico_node_calicoctl_link": "",  # the namespace hosts share this machine's /usr/local
        "calico_node_manage_services": False,
        "calico_node_config_file": str(root / "calico.conf"),
        "calico_node_sysctl_file": str(root / "sysctl.conf"),
        "calico_node_bird_config": str(root / "bird.conf"),
        "calico_node_bird_socket": str(root / "bird.ctl"),
        "calico_node_lock_file": str(root / "dataplane.lock"),
        "calico_node_tmpfiles_file": str(root / "tmpfiles.conf"),
        "calico_node_systemd_dir": str(root),
        "calico_node_agent_env_file": str(root / "calico-agent.env"),
        "calico_policy_python": python,
        "calico_policy_datastore": url,
        "calico_docker_manage_packages": False,
        "calico_docker_manage_services": False,
        "calico_docker_systemd_dir": str(root),
        "calico_docker_plugin_env_file": str(root / "calico-docker-plugin.env"),
    }
