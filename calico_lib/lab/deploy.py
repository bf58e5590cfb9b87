"""Deploying to the nodes: ``ansible-playbook -i INVENTORY playbooks/site.yml`` (or another
of the collection's playbooks) from this Python's environment, with one progress line per
task and the full output in a log in the state dir."""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from collections.abc import Sequence

from .collection import Collection, find_collection, stage_library_source
from .errors import LabError
from .shell import Shell

#: where, in the state dir, a wheel install stages calico_lib's sources for the wheelhouse
WHEEL_SOURCE = "wheel-source"


def ansible_playbook(step: str) -> str:
    """The ansible-playbook beside this Python (else on PATH)."""
    ansible = os.path.join(os.path.dirname(sys.executable), "ansible-playbook")
    if not os.path.exists(ansible):
        ansible = shutil.which("ansible-playbook") or ""
    if not ansible:
        raise LabError(step, "ansible-playbook is not installed in this Python's "
                       "environment (make deps installs it into .venv)")
    return ansible


def ansible_env(collection: Collection, base: dict[str, str]) -> dict[str, str]:
    """``base`` with the collection's ansible.cfg, calico.docker found in this collection
    first, plain output, and this Python's scripts on PATH."""
    env = dict(base)
    env.update({"ANSIBLE_CONFIG": os.path.join(collection.root, "ansible.cfg"),
                "ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_NOCOLOR": "1",
                "ANSIBLE_PIPELINING": "1", "ANSIBLE_RETRY_FILES_ENABLED": "0",
                "PYTHONUNBUFFERED": "1"})
    if collection.collections_path:
        # ansible.cfg's `collections_path = .` fits a checkout only; this fits both
        env["ANSIBLE_COLLECTIONS_PATH"] = os.pathsep.join(
            p for p in (collection.collections_path, base.get("ANSIBLE_COLLECTIONS_PATH"))
            if p)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    return env


def deploy(shell: Shell, *, inventory_path: str, state_dir: str, base_env: dict[str, str],
           playbook: str = "playbooks/site.yml", extra: Sequence[str] = (),
           log_name: str = "deploy.log", step: str = "deploy") -> None:
    """Run ``playbook`` (relative to the collection) against the lab's inventory."""
    collection = find_collection()
    if collection is None:
        raise LabError(step, "the Ansible collection (playbooks/site.yml) was not found: "
                       "reinstall calico-docker, or set CALICO_LAB_REPO to a checkout")
    ansible = ansible_playbook(step)
    extra = list(extra)
    if not collection.has_library:
        # no source tree (a wheel install): the node role builds the hosts' wheel from the
        # installed package's files
        source = stage_library_source(collection, os.path.join(state_dir, WHEEL_SOURCE))
        extra += ["-e", json.dumps({"calico_node_wheelhouse_source": source})]
    log_path = os.path.join(state_dir, log_name)
    env = ansible_env(collection, base_env)
    shown = os.path.relpath(ansible)
    shell.progress(f"{ansible if shown.startswith('..') else shown} -i "
                   f"{inventory_path} {playbook} (log: {log_path})")
    run_playbook(shell, ansible, playbook, collection.root, env, log_path, inventory_path,
                 extra, step)


def run_playbook(shell: Shell, ansible: str, playbook: str, root: str, env: dict[str, str],
                 log_path: str, inventory_path: str, extra: Sequence[str] = (),
                 step: str = "deploy") -> None:
    """Run a playbook with one progress line per task; a failure names the failed
    task(s), host(s) and message(s)."""
    seen = {"tasks": 0, "recap": False, "task": ""}
    failures: dict[tuple[str, str], list[str]] = {}  # (task, message): hosts

    def on_line(line: str) -> None:
        if line.startswith("PLAY RECAP"):
            seen["recap"] = True
            shell.progress("recap:")
            return
        if seen["recap"]:
            if line.strip():
                shell.progress("  " + " ".join(line.split()))
            return
        match = re.match(r"(PLAY|TASK|RUNNING HANDLER) \[(.*)\]", line)
        if match:
            if match.group(1) == "PLAY":
                shell.progress(f"play: {match.group(2)}")
            else:
                seen["tasks"] += 1
                seen["task"] = match.group(2)
                shell.progress(f"  [{seen['tasks']:3d}] {match.group(2)}")
            return
        match = re.match(r"(fatal|failed): \[([^\]]+)\]: (?:UNREACHABLE|FAILED)!? => (.*)",
                         line)
        if match:
            message = match.group(3)
            try:
                message = str(json.loads(message).get("msg", message))
            except (ValueError, AttributeError):
                pass
            failures.setdefault((seen["task"], message[:600]), []).append(match.group(2))
            shell.progress(f"        FAILED on {match.group(2)}: {message[:600]}")
        elif line.startswith(("ERROR!", "[ERROR]")) and not seen["task"]:
            failures.setdefault(("", line), [])
            shell.progress("    " + line)

    with open(log_path, "w") as log:
        log.write(f"# {ansible} -i {inventory_path} {playbook}\n")
    try:
        shell.stream([ansible, "-i", inventory_path, playbook, *extra], step,
                     env=env, cwd=root, log_path=log_path, on_line=on_line, timeout=3600)
    except LabError as exc:
        if not failures:
            raise
        texts = [(f"task '{task}' failed on {', '.join(hosts)}: " if task else "")
                 + message for (task, message), hosts in list(failures.items())[:5]]
        raise LabError(step, f"{playbook}: " + "; ".join(texts)
                       + f" (full log: {log_path})") from exc
