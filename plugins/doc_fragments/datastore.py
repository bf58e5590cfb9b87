# Copyright: Calico for Docker contributors
# Apache License 2.0 (see LICENSE)

from __future__ import annotations


class ModuleDocFragment:
    """The datastore option every calico.docker module that reads or writes intent takes."""

    DOCUMENTATION = r"""
options:
  datastore:
    description:
      - URL of the Calico datastore, resolved like C(calicoctl --datastore).
      - C(sqlite:////absolute/path.db) names the embedded one-host store;
        C(etcd://host:port[,host:port...]) names an etcd v3 cluster.
      - When not given, the environment variable E(CALICO_DATASTORE) is used, else the
        C(datastore = URL) line of C(/etc/calico/calico.conf), else
        C(sqlite:////var/lib/calico/calico.db).
    type: str
requirements:
  - The C(calico_lib) Python package on the managed host. The C(calico.docker.node)
    role installs it into C(/opt/calico/venv); point C(ansible_python_interpreter) at
    C(/opt/calico/venv/bin/python).
"""
