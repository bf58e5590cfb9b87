"""This host's name, by the rule every command uses (ARCHITECTURE.md): ``--hostname``, else
$CALICO_HOSTNAME, else the system host name.

Its own module, importing nothing of the library: the Ansible modules and ``calicoctl
diags`` use it without loading the agent and the dataplane code behind it.
"""

from __future__ import annotations

import os
import socket


def resolve_hostname(hostname: str | None) -> str:
    return hostname or os.environ.get("CALICO_HOSTNAME") or socket.gethostname()
