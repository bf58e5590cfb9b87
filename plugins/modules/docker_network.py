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
  - Talks to Docker's Engine API over its unix socket, or over TCP with or without TLS
    (O(docker_host)); the Calico Docker plugin (C(calico-docker-plugin)) must be running.
  - It acts only on its own networks, those of the C(calico) driver with the C(calico-ipam)
    IPAM driver. A network of that name of another driver (or another IPAM driver) is never
    removed nor replaced, not by O(state=absent) and not by O(recreate=true); the module
    fails, naming O(name), and leaves it as it is, in check mode too.
  - A calico network of that name with other settings (other pools, another IPv6 flag) is
    never changed behind the back of the containers on it; the module fails and says what
    differs, unless O(recreate=true).
  - Docker removes no network with containers attached. The module reads the network, and
    with containers on it O(state=absent) or a recreation fails before anything is sent to
    Docker, with the same message in check mode as in the real run.
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
      - Remove and create the network again when it exists as a calico network with other
        settings. Never applies to a network of another driver, which is left as it is
        (the module fails).
      - Docker refuses to remove a network while containers are attached to it, so with
        containers attached the module fails (in check mode too) and removes nothing.
    type: bool
    default: false
  state:
    description:
      - Whether the network exists.
      - V(absent) removes only a calico network (C(calico) driver, C(calico-ipam) IPAM
        driver) without containers attached; a network of that name of another driver
        makes the module fail and is not removed.
    type: str
    choices: [present, absent]
    default: present
  docker_host:
    description:
      - Where Docker's Engine API is, as community.docker's modules take it -
        C(unix:///path/to/docker.sock) (C(unix://var/run/docker.sock) is the same as
        C(unix:///var/run/docker.sock), as the Docker SDK for Python reads it), a plain
        absolute socket path such as C(/var/run/docker.sock), or C(tcp://host:port) (an
        IPv6 host in brackets, C(tcp://[fd00::1]:2376)).
      - Over TCP the connection is plain HTTP unless O(tls) or O(validate_certs) is true.
      - If the value is not specified in the task, the value of the environment variable
        C(DOCKER_HOST) is used instead (an empty one counts as unset). If that is not set
        either, the default value is used. An empty value (or null) in the task counts as
        not specified, as the Docker SDK for Python has it.
      - Anything else (another scheme such as C(ssh://), a relative path, a TCP address
        without a port) is refused in one line naming O(docker_host).
    type: str
    default: unix:///var/run/docker.sock
    aliases: [docker_url]
  tls:
    description:
      - Secure the connection to a C(tcp://) O(docker_host) with TLS without verifying the
        authenticity of the Docker host's certificate. If O(validate_certs) is true as well,
        it takes precedence.
      - If the value is not specified in the task, the value of the environment variable
        C(DOCKER_TLS) is used instead. If it is not set, the default value is used.
      - Ignored for a unix socket, as Docker does.
    type: bool
    default: false
  validate_certs:
    description:
      - Secure the connection to a C(tcp://) O(docker_host) with TLS and verify the Docker
        host's certificate (against O(ca_cert), else the system's CA certificates) and that
        it is issued to the host in O(docker_host).
      - If the value is not specified in the task, the value of the environment variable
        C(DOCKER_TLS_VERIFY) is used instead. If it is not set, the default value is used.
      - Ignored for a unix socket, as Docker does.
    type: bool
    default: false
    aliases: [tls_verify]
  ca_cert:
    description:
      - Path to the CA certificate file the Docker host's certificate is verified against,
        with O(validate_certs=true). With a C(tcp://) O(docker_host) it is refused without
        O(validate_certs=true), which it would have no use without; with a unix socket it
        is ignored.
      - If the value is not specified in the task and the environment variable
        C(DOCKER_CERT_PATH) is set, the file C(ca.pem) in that directory is used (when it
        is there).
      - C(ca_path) is the name newer community.docker releases give this option.
    type: path
    aliases: [ca_path, tls_ca_cert, cacert_path]
  client_cert:
    description:
      - Path to the client's TLS certificate file, to authenticate to Docker with
        O(tls=true) or O(validate_certs=true); needs O(client_key). With a C(tcp://)
        O(docker_host) it is refused when neither is true (Docker would be spoken to
        without TLS); with a unix socket it is ignored.
      - If neither O(client_cert) nor O(client_key) is specified in the task and the
        environment variable C(DOCKER_CERT_PATH) is set, the files C(cert.pem) and
        C(key.pem) in that directory are used (when both are there).
    type: path
    aliases: [tls_client_cert, cert_path]
  client_key:
    description:
      - Path to the client's TLS key file, the key of O(client_cert).
      - If it is not specified in the task, see O(client_cert) for C(DOCKER_CERT_PATH).
    type: path
    aliases: [tls_client_key, key_path]
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
  - Needs no Python library beyond the standard one on the managed host (TLS included).
  - Connect to Docker by giving the options in the task or by the environment variables
    C(DOCKER_HOST), C(DOCKER_TLS), C(DOCKER_TLS_VERIFY) and C(DOCKER_CERT_PATH), as with
    community.docker's modules. Their other options (C(api_version), C(timeout),
    C(tls_hostname), C(use_ssh_client)) are not offered here; the host name checked with
    O(validate_certs=true) is the one in O(docker_host).
  - Docker lists only this host's containers on a network; a network whose containers are
    on other hosts only (a global-scope network) may still be refused by Docker in the real
    run after check mode predicted its removal.
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

- name: A network on a remote Docker over TLS, verifying its certificate
  calico.docker.docker_network:
    name: frontend
    docker_host: tcp://docker1.example.com:2376
    validate_certs: true
    ca_cert: /etc/docker-client/ca.pem
    client_cert: /etc/docker-client/cert.pem
    client_key: /etc/docker-client/key.pem
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
import os

from ansible_collections.calico.docker.plugins.module_utils.docker_api import (
    DEFAULT_DOCKER_HOST,
    DockerAPI,
    DockerError,
    env_fallback_set,
    parse_docker_host,
    tls_context,
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


def differences(have, want, keys=COMPARED):
    return [f"{key} is {have[key]!r}, wanted {want[key]!r}" for key in keys
            if have[key] != want[key]]


def ownership_problem(name, before, doing):
    """None for a network of this module's (the calico driver on calico-ipam); else the
    refusal, one line naming ``name``: another driver's network is never removed."""
    wrong = differences(before, {"driver": DRIVER, "ipam_driver": IPAM_DRIVER},
                        ("driver", "ipam_driver"))
    if not wrong:
        return None
    return (f"name: network {show(name)} is not a calico network ({'; '.join(wrong)}); "
            f"{doing}: this module removes and replaces only networks of the {DRIVER} "
            f"driver on {IPAM_DRIVER}")


def containers_problem(name, before, doing):
    """The refusal to remove a network with containers attached (Docker refuses it), the
    same in check mode as in the real run; None without containers."""
    if not before["containers"]:
        return None
    return (f"name: network {show(name)} has {before['containers']} container(s) attached "
            f"and Docker removes no network with active endpoints; {doing}: disconnect "
            "them first")


def ensure(module, docker):
    p = module.params
    if p["state"] == "present":
        # the network's containers join the profile of its name: Docker would create a
        # network under a name no profile can have, and then refuse every container
        problem = name_problem("name", p["name"])
        if problem:
            raise SettingsError(problem)
    found = docker.find_networks(p["name"])
    if len(found) > 1:
        raise SettingsError(
            f"name: {len(found)} Docker networks are named {show(p['name'])} (ids "
            f"{', '.join(str(n.get('Id'))[:12] for n in found)}); nothing changed: remove "
            "the extra ones by hand")
    current = found[0] if found else None
    before = settings(current) if current else {}
    if p["state"] == "absent":
        if current is not None:
            # checked before anything is sent, so that check mode fails as the real run
            for problem in (ownership_problem(p["name"], before, "nothing deleted"),
                            containers_problem(p["name"], before, "nothing deleted")):
                if problem:
                    raise SettingsError(problem)
            if not module.check_mode:
                docker.remove_network(current["Id"])
        return {"changed": current is not None, "network": None,
                "diff": {"before": before, "after": {}}}

    subnets = parse_subnets(p["subnet"], p["ipv6"])
    want = {"id": None, "name": p["name"], "driver": DRIVER, "ipam_driver": IPAM_DRIVER,
            "ipv6": p["ipv6"], "subnets": subnets, "containers": 0}
    if current is not None:
        problem = ownership_problem(p["name"], before, "nothing deleted or recreated "
                                    "(recreate: true does not apply to it)")
        if problem:
            raise SettingsError(problem)
        wrong = differences(before, want)
        if not wrong:
            return {"changed": False, "network": before,
                    "diff": {"before": before, "after": before}}
        if not p["recreate"]:
            hint = ("set recreate: true to remove it and create it again" if
                    not before["containers"] else "recreate: true removes it and creates it "
                    "again once they are disconnected (Docker removes no network in use)")
            raise SettingsError(
                f"name: network {p['name']} exists with other settings ({'; '.join(wrong)}) "
                f"and {before['containers']} container(s) attached; {hint}")
        problem = containers_problem(p["name"], before, f"not recreated ({'; '.join(wrong)})")
        if problem:
            raise SettingsError(problem)
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


def connect(params):
    """The DockerAPI of the task's docker_host, TLS options and DOCKER_* environment."""
    docker_host = params["docker_host"]
    if not docker_host:  # null (which Ansible makes "") or "": not given, as docker-py has it
        docker_host = os.environ.get("DOCKER_HOST") or DEFAULT_DOCKER_HOST
    context = None
    if parse_docker_host(docker_host)[0] == "tcp":  # a unix socket is plain HTTP, as Docker's
        context = tls_context(
            tls=bool(params["tls"]), validate_certs=bool(params["validate_certs"]),
            ca_cert=params["ca_cert"], client_cert=params["client_cert"],
            client_key=params["client_key"], cert_path=os.environ.get("DOCKER_CERT_PATH"))
    return DockerAPI(docker_host, ssl_context=context)


def main():
    module = OneLineModule(
        argument_spec={
            "name": {"type": "str", "required": True},
            "subnet": {"type": "list", "elements": "str", "default": [],
                       "aliases": ["subnets"]},
            "ipv6": {"type": "bool", "default": False},
            "recreate": {"type": "bool", "default": False},
            "state": {"type": "str", "default": "present", "choices": ["present", "absent"]},
            # community.docker's names, aliases and environment fallbacks
            "docker_host": {"type": "str", "default": DEFAULT_DOCKER_HOST,
                            "aliases": ["docker_url"],
                            "fallback": (env_fallback_set, ["DOCKER_HOST"])},
            "tls": {"type": "bool", "default": False,
                    "fallback": (env_fallback_set, ["DOCKER_TLS"])},
            "validate_certs": {"type": "bool", "default": False, "aliases": ["tls_verify"],
                               "fallback": (env_fallback_set, ["DOCKER_TLS_VERIFY"])},
            "ca_cert": {"type": "path",
                        "aliases": ["ca_path", "tls_ca_cert", "cacert_path"]},
            "client_cert": {"type": "path", "aliases": ["tls_client_cert", "cert_path"]},
            "client_key": {"type": "path", "aliases": ["tls_client_key", "key_path"]},
        },
        supports_check_mode=True,
    )
    try:
        out = ensure(module, connect(module.params))
    except (DockerError, SettingsError) as exc:
        module.fail_json(msg=str(exc))
    module.exit_json(**out)


if __name__ == "__main__":
    main()
