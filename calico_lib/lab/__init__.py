"""The local multi-host lab: ``calicoctl lab up`` / ``calicoctl lab down``.

Lab "hosts" are containers, the way kind makes Kubernetes nodes: each node container runs
systemd as PID 1 and its own dockerd (Docker in Docker), and they share one user-defined
Docker network, the fabric. Ansible reaches them through community.docker's ``docker``
connection, so ``playbooks/site.yml`` deploys to them exactly as to real hosts.

    calico-lab-1 … calico-lab-N   node containers (fixed names, see ARCHITECTURE.md)
    calico-lab-fabric             their network: 172.31.250.0/24 (+ fd7a:ca1:1ab::/64)
    calico-lab-node:<hash>        the node image; <hash> is a content hash of its recipe
    /var/lib/calico-lab           state: lab.json, inventory.yml, deploy.log, and pki/ (the
                                  CA and certificates of the lab's etcd, which runs with TLS
                                  and client certificates as everywhere, and in
                                  pki/.passwords/ the etcd users' passwords: every node is
                                  its own etcd user calico-host.<node>, the policy host
                                  also has calico-operator's and root's)

With ``--fabric``, the outside world of a real site too (see :mod:`.outside`):

    calico-lab-tor                a top-of-rack router (BIRD 2, AS 65000, deployed by the
                                  ``tor`` role of site.yml): on the fabric (.2) and on
    calico-lab-outside-net        the outside network, 198.19.250.0/24 (+ 2001:db8:1ab::/64),
                                  where
    calico-lab-outside            the outside host (.100) reaches the pools only through the
                                  ToR, which learns the pools' blocks from the nodes (global
                                  BGP peer) and advertises the outside network to them

With ``--racks R`` (implies ``--fabric``), Calico's "AS per rack" on an L3 fabric:

    calico-lab-fabric-1 … -R      one network per rack, each holding an equal part of the
                                  fabric subnets (2 racks: 172.31.250.0/25 and .128/25);
                                  the nodes split in order between them
    calico-lab-tor-1 … -R         a ToR per rack (.2 of its rack's subnet) in AS 65000 + R,
                                  the AS of its rack's nodes: it reflects their routes (the
                                  mesh is off), and peers with the other ToRs over the
                                  outside network; the nodes reach the other racks' nodes
                                  through it (a static underlay route)

``up`` runs these steps, each announced on one line and timed; a failure raises
:class:`LabError` naming the step and the reason (the last lines of the failing command):

    1. docker       the machine's own dockerd (started when it is not running)
    2. image        built once with debootstrap + ``docker import``, then reused by its tag
    3. leftovers    lab containers that do not fit (another image, address, stopped) removed
    4. fabric       the Docker network, one per rack (recreated when its subnets or IPv6
                    setting differ; those of another rack count removed)
    5. nodes        ``docker run`` of the missing node containers
       outside      (``--fabric``) the outside network, the ToR and the outside host
    6. boot         ``systemctl is-system-running`` says running (or degraded) in every node
                    (and the ToR)
    7. workload image  a ``busybox`` image (static busybox only) in every node's dockerd
    8. inventory    the Ansible inventory for the nodes, in the state dir
    9. deploy       ``ansible-playbook playbooks/site.yml`` (skipped with ``deploy=False``)

Healthy nodes of an earlier run are kept, so ``up`` after a failed run resumes: the playbook
is idempotent. ``down`` removes every container (with its volumes), the network and the state
whatever state they are in (the ToR, the outside host and their network too); it never
touches containers or networks the lab did not make (they carry the label ``io.calico.lab``).
``up`` without ``--fabric`` removes an earlier run's ToR, outside host and network.

The playbooks and roles come from the checkout this package runs from, else from the copy
of the collection installed with it (see :mod:`.collection`), so ``pip install`` and then
``calicoctl lab up`` works anywhere.

Modules, one concern each: ``shell`` (step lines, long commands), ``docker`` (the daemon
and its CLI), ``image`` (the node image), ``nodes`` (node containers and the fabric),
``outside`` (the ToR, the outside host and their network), ``inventory`` (the Ansible
inventory and the lab's variables), ``state`` (lab.json),
``collection`` (where the playbooks are), ``deploy`` (ansible-playbook), ``core`` (the
``Lab`` and its steps), ``command`` (``calicoctl lab``).
"""

from __future__ import annotations

from .collection import Collection, find_collection
from .command import cli
from .core import Lab
from .docker import DOCKER_SOCKET, LABEL
from .errors import LabError
from .image import PACKAGES, apt_mirror, image_tag
from .inventory import RR_CLUSTER_ID, lab_variables
from .nodes import NODE_RUN_FLAGS, PREFIX, SUBNET4, SUBNET6, WORKLOAD_IMAGE, NodeSpec
from .outside import TOR_AS, FabricLayout, outside_subnets
from .state import STATE_DIR, read_state

__all__ = [
    "DOCKER_SOCKET", "LABEL", "NODE_RUN_FLAGS", "PACKAGES", "PREFIX", "RR_CLUSTER_ID",
    "STATE_DIR", "SUBNET4", "SUBNET6", "TOR_AS", "WORKLOAD_IMAGE", "Collection",
    "FabricLayout", "Lab", "LabError", "NodeSpec", "apt_mirror", "cli", "find_collection",
    "image_tag", "lab_variables", "outside_subnets", "read_state",
]
