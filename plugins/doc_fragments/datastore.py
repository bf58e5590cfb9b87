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
        C(etcds://host:port[,host:port...]) an etcd v3 cluster over TLS with client
        certificates (see O(etcd_ca), O(etcd_cert), O(etcd_key)); C(etcd://...) one over
        plain HTTP (only for etcd that no workload can reach).
      - When not given, the environment variable E(CALICO_DATASTORE) is used, else the
        C(datastore = URL) line of C(/etc/calico/calico.conf), else
        C(sqlite:////var/lib/calico/calico.db).
      - "To set it and the other datastore options (O(etcd_ca), O(etcd_cert), O(etcd_key),
        O(etcd_user), O(etcd_password_file)) once for a whole play, use the action group
        C(calico), which holds every module that has them: C(module_defaults) with
        C(group/calico.docker.calico), for example C(module_defaults:
        {group/calico.docker.calico: {datastore: etcds://10.0.0.1:2379, etcd_ca:
        /etc/calico/pki/ca.crt}})."
    type: str
  etcd_ca:
    description:
      - For C(etcds://) datastores, the CA certificate (PEM file on the managed host) that
        signed etcd's server certificate.
      - When not given, E(CALICO_ETCD_CA), else the C(etcd_ca = PATH) line of
        C(/etc/calico/calico.conf).
    type: path
  etcd_cert:
    description:
      - For C(etcds://) datastores, this client's certificate (PEM file on the managed host),
        which etcd (run with C(--client-cert-auth)) requires.
      - When not given, E(CALICO_ETCD_CERT), else the C(etcd_cert = PATH) line of
        C(/etc/calico/calico.conf).
    type: path
  etcd_key:
    description:
      - The private key of O(etcd_cert) (PEM file on the managed host).
      - When not given, E(CALICO_ETCD_KEY), else the C(etcd_key = PATH) line of
        C(/etc/calico/calico.conf).
    type: path
  etcd_user:
    description:
      - The etcd user this host authenticates as when etcd's authentication is on (roles
        per kind of writer, hosts writing only their own records).
      - When not given, E(CALICO_ETCD_USER), else the C(etcd_user = NAME) line of
        C(/etc/calico/calico.conf).
    type: str
  etcd_password_file:
    description:
      - A file on the managed host holding O(etcd_user)'s password on its first line,
        readable by its owner only.
      - When not given, E(CALICO_ETCD_PASSWORD_FILE), else the C(etcd_password_file = PATH)
        line of C(/etc/calico/calico.conf).
    type: path
requirements:
  - The C(calico_lib) Python package on the managed host. The C(calico.docker.node)
    role installs it into C(/opt/calico/venv); point C(ansible_python_interpreter) at
    C(/opt/calico/venv/bin/python).
"""
