"""The lab's state folder: lab.json (what ``up`` made, read by scripts and benchmarks), next
to the inventory, the deploy logs and the pki/ of the lab's etcd."""

from __future__ import annotations

import json
import os
from typing import Any

from .errors import LabError
from .nodes import PREFIX
from .shell import write_atomic

STATE_DIR = "/var/lib/calico-lab"


def default_state_dir(prefix: str = PREFIX) -> str:
    """``/var/lib/calico-lab``, or ``/var/lib/calico-lab-PREFIX`` for another lab."""
    return STATE_DIR if prefix == PREFIX else f"{STATE_DIR}-{prefix}"


def write_state(path: str, state: dict[str, Any]) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    write_atomic(path, json.dumps(state, indent=2) + "\n")


def read_state(prefix: str = PREFIX, state_dir: str | None = None) -> dict[str, Any]:
    """The state ``lab up`` wrote (nodes, addresses, IPv6, inventory path)."""
    path = os.path.join(state_dir or default_state_dir(prefix), "lab.json")
    try:
        with open(path) as handle:
            return json.load(handle)
    except FileNotFoundError:
        raise LabError("state", f"no lab state at {path}: run `calicoctl lab up` first") \
            from None

