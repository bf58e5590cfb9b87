#!/usr/bin/python
# Copyright: Calico for Docker contributors
# Apache License 2.0 (see LICENSE)
# ruff: noqa: E402

from __future__ import annotations

DOCUMENTATION = r"""
module: docker_network
short_description: Ensure a Calico Docker network exists with the same settings on every host
version_added: 0.1.0
description:
  - Makes the host's Docker have a network of the C(calico) driver with Calico's IPAM driver
    C(calico-ipam), named O(name), with the pools O(subnet) and the IPv6 flag O(ipv6), like
    C(docker network create -d calico --ipam-driver calico-ipam [--subnet POOL] NAME).
    Its profile in the datastore is named after the network.
  - Talks to Docker's Engine API over its unix socket; the Calico Docker plugin
    (C(calico-docker-plugin)) must be running.
  - A network of that name with other settings (another driver, other pools, another IPv6
    flag) is never changed behind the back of the containers on it; the module fails and
    says what differs, unless O(recreate=true).
options:
  name:
    description:
      - The network's name (and its Calico profile's name), so it follows the profile-name
        rule - letters, digits, C(_), C(.), C(-), starting with a letter or digit, at most 128
        characters. Any other name is refused before Docker is asked (Docker would create a
        network that no container can join).
    type: str
    required: true
  subnet:
    description:
      - Calico pools (their exact CIDRs, see M(calico.docker.ip_pool)) the network's
        containers get addresses from. When not given, any enabled pool of the IP version.
    type: list
    elements: str
    default: []
    aliases: [subnets]
  ipv6:
    description: Give containers IPv6 addresses too.
    type: bool
    default: false
  recreate:
    description:
      - Remove and create the network again when it exists with other settings. Docker
        refuses to remove a network while containers are attached to it.
    type: bool
    default: false
  state:
    description: Whether the network exists.
    type: str
    choices: [present, absent]
    default: present
  docker_host:
    description: Docker's API socket, as C(unix:///path).
    type: str
    default: unix:///var/run/docker.sock
attributes:
  check_mode:
    description: Can run in check mode and return changed status prediction without
      modifying the target.
    support: full
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in
      check mode) when in diff mode.
    support: full
  platform:
    description: Target OS/families that can be operated against.
    support: full
    platforms: posix
notes:
  - Needs no Python library beyond the standard one on the managed host.
  - Creating or removing a network changes no host's firewall by itself (Docker removes only
    networks without containers, and a new one has none yet); its profile's rules reach a
    host with its containers. So check mode has no per-host dataplane section here; preview
    the network's rules with M(calico.docker.profile) in check mode.
seealso:
  - module: calico.docker.ip_pool
  - module: calico.docker.profile
author:
  - Calico for Docker contributors (!UNKNOWN)
"""

EXAMPLES = r"""
- name: A dual-stack network on two pools
  calico.docker.docker_network:
    name: frontend
    subnet: [10.65.0.0/16, fd00:65::/48]
    ipv6: true

- name: A network drawing on any IPv4 pool
  calico.docker.docker_network:
    name: backend

- name: Remove a network (Docker refuses while containers are attached)
  calico.docker.docker_network:
    name: old
    state: absent
"""

RETURN = r"""
network:
  description: The network's settings as Docker has them (null after removal).
  returned: always
  type: dict
  contains:
    id:
      description: Docker's id of the network.
      type: str
      returned: always
    name:
      description: The network's name.
      type: str
      returned: always
    driver:
      description: The network driver (C(calico)).
      type: str
      returned: always
    ipam_driver:
      description: The IPAM driver (C(calico-ipam)).
      type: str
      returned: always
    ipv6:
      description: Whether IPv6 is enabled.
      type: bool
      returned: always
    subnets:
      description: The pools the network was created with (empty for any pool).
      type: list
      elements: str
      returned: always
    containers:
      description: How many containers are attached.
      type: int
      returned: always
  sample: {"id": "3f2a9c...", "name": "frontend", "driver": "calico",
           "ipam_driver": "calico-ipam", "ipv6": true,
           "subnets": ["10.65.0.0/16", "fd00:65::/48"], "containers": 2}
diff:
  description: The settings before and after (an empty dict where there is no network).
  returned: always
  type: dict
  contains:
    before:
      description: The network's settings before the task.
      type: dict
      returned: always
    after:
      description: The network's settings after the task.
      type: dict
      returned: always
"""

import ipaddress

from ansible_collections.calico.docker.plugins.module_utils.docker_api import (
    DEFAULT_DOCKER_HOST,
    DockerAPI,
    DockerError,
)
from ansible_collections.calico.docker.plugins.module_utils.messages import (
    OneLineModule,
    name_problem,
    show,
)

DRIVER = "calico"
IPAM_DRIVER = "calico-ipam"
#: what Docker reports as the subnet of a network created without one on calico-ipam
ANY_POOL = {"0.0.0.0/0", "::/0"}
#: the settings that make two networks the same
COMPARED = ("driver", "ipam_driver", "ipv6", "subnets")


class SettingsError(Exception):
    pass


def _sorted_nets(nets):
    return sorted(nets, key=lambda n: (n.version, n))


def parse_subnets(values, ipv6):
    nets = []
    for value in values:
        try:
            nets.append(ipaddress.ip_network(str(value).strip(), strict=False))
        except ValueError:
            raise SettingsError(f"subnet: {show(value)} is not a CIDR; use a pool's CIDR "
                                "such as 10.65.0.0/16 or fd00:65::/48") from None
    for net in nets:
        if net.version == 6 and not ipv6:
            raise SettingsError(f"subnet: {net} is IPv6; set ipv6: true for an IPv6 pool")
    return [str(n) for n in _sorted_nets(set(nets))]


def settings(network):
    """The compared settings of a network as Docker describes it."""
    ipam = network.get("IPAM") or {}
    nets = set()
    for config in ipam.get("Config") or []:
        subnet = (config or {}).get("Subnet")
        if subnet and subnet not in ANY_POOL:
            nets.add(ipaddress.ip_network(subnet, strict=False))
    return {
        "id": network.get("Id"),
        "name": network.get("Name"),
        "driver": network.get("Driver"),
        "ipam_driver": ipam.get("Driver"),
        "ipv6": bool(network.get("EnableIPv6")),
        "subnets": [str(n) for n in _sorted_nets(nets)],
        "containers": len(network.get("Containers") or {}),
    }


def differences(have, want):
    return [f"{key} is {have[key]!r}, wanted {want[key]!r}" for key in COMPARED
            if have[key] != want[key]]


def ensure(module, docker):
    p = module.params
    if p["state"] == "present":
        # the network's containers join the profile of its name: Docker would create a
        # network under a name no profile can have, and then refuse every container
        problem = name_problem("name", p["name"])
        if problem:
            raise SettingsError(problem)
    current = docker.find_network(p["name"])
    before = settings(current) if current else {}
    if p["state"] == "absent":
        if current is not None and not module.check_mode:
            docker.remove_network(current["Id"])
        return {"changed": current is not None, "network": None,
                "diff": {"before": before, "after": {}}}

    subnets = parse_subnets(p["subnet"], p["ipv6"])
    want = {"id": None, "name": p["name"], "driver": DRIVER, "ipam_driver": IPAM_DRIVER,
            "ipv6": p["ipv6"], "subnets": subnets, "containers": 0}
    if current is not None:
        wrong = differences(before, want)
        if not wrong:
            return {"changed": False, "network": before,
                    "diff": {"before": before, "after": before}}
        if not p["recreate"]:
            raise SettingsError(
                f"name: network {p['name']} exists with other settings ({'; '.join(wrong)}) "
                f"and {before['containers']} container(s) attached; set recreate: true to "
                "remove it and create it again")
    after = dict(want)
    if not module.check_mode:
        if current is not None:
            docker.remove_network(current["Id"])
        created = docker.create_network({
            "Name": p["name"],
            "Driver": DRIVER,
            "EnableIPv6": p["ipv6"],
            "IPAM": {"Driver": IPAM_DRIVER, "Config": [{"Subnet": s} for s in subnets]},
        })
        network = docker.find_network(p["name"])
        after = settings(network) if network else dict(want, id=(created or {}).get("Id"))
    return {"changed": True, "network": after, "diff": {"before": before, "after": after}}


def main():
    module = OneLineModule(
        argument_spec={
            "name": {"type": "str", "required": True},
            "subnet": {"type": "list", "elements": "str", "default": [],
                       "aliases": ["subnets"]},
            "ipv6": {"type": "bool", "default": False},
            "recreate": {"type": "bool", "default": False},
            "state": {"type": "str", "default": "present", "choices": ["present", "absent"]},
            "docker_host": {"type": "str", "default": DEFAULT_DOCKER_HOST},
        },
        supports_check_mode=True,
    )
    try:
        out = ensure(module, DockerAPI(module.params["docker_host"]))
    except (DockerError, SettingsError) as exc:
        module.fail_json(msg=str(exc))
    module.exit_json(**out)


if __name__ == "__main__":
    main()
