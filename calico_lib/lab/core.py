"""The Lab: one lab's layout (node names, fabric subnets, state dir, Docker daemon) and the
steps of ``up`` and ``down``, each done by the module of its concern."""

from __future__ import annotations

import ipaddress
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import IO, Any

from .deploy import deploy as deploy_playbook
from .docker import Docker
from .errors import LabError
from .image import ensure_image, image_tag
from .inventory import inventory as inventory_data
from .inventory import lab_pools, write_inventory
from .nodes import (
    BOOT_TIMEOUT,
    MAX_RACKS,
    PREFIX,
    SUBNET4,
    SUBNET6,
    WORKLOAD_IMAGE,
    Cluster,
    NodeSpec,
)
from .outside import FabricLayout, Outside
from .shell import Shell
from .state import default_state_dir
from .state import write_state as write_state_file


class Lab:
    """The lab on this machine's dockerd. ``prefix`` and ``subnet4``/``subnet6`` exist so a
    test can make a second lab beside a user's; the CLI uses the fixed defaults unless the
    CALICO_LAB_* environment says otherwise (see :mod:`.command`). ``fabric`` adds the
    outside world (:mod:`.outside`): a ToR and an outside host on the outside network
    (``outside_subnet4``/``outside_subnet6``, derived from the fabric's when not given)."""

    def __init__(self, nodes: int = 3, ipv6: bool = False, *, prefix: str = PREFIX,
                 subnet4: str = SUBNET4, subnet6: str = SUBNET6,
                 state_dir: str | None = None, out: IO[str] | None = None,
                 docker_host: str | None = None, route_reflectors: int = 0,
                 fabric: bool = False, outside_subnet4: str | None = None,
                 outside_subnet6: str | None = None, racks: int = 1) -> None:
        if nodes < 1 or nodes > 50:
            raise LabError("arguments", f"--nodes must be between 1 and 50, not {nodes}")
        if not 0 <= route_reflectors <= nodes:
            raise LabError("arguments", f"--route-reflectors must be between 0 and the node "
                                        f"count ({nodes}), not {route_reflectors}")
        if not 1 <= racks <= min(nodes, MAX_RACKS):
            raise LabError("arguments", f"--racks must be between 1 and the node count "
                                        f"({nodes}, at most {MAX_RACKS}), not {racks}")
        if racks > 1 and route_reflectors:
            raise LabError("arguments", "--racks and --route-reflectors do not go together: "
                                        "in racks, each rack's ToR reflects its nodes' routes")
        self.count = nodes
        #: the first this many nodes are route reflectors and the mesh is off
        self.route_reflectors = route_reflectors
        self.ipv6 = ipv6
        self.prefix = prefix
        self.state_dir = state_dir or default_state_dir(prefix)
        self.shell = Shell(out or sys.stdout)
        self.daemon = Docker(docker_host, self.shell)
        try:
            self.cluster = Cluster(self.daemon, prefix, subnet4, subnet6, ipv6, racks)
        except ValueError as exc:  # CALICO_LAB_SUBNET4/6 are user input
            raise LabError("arguments", f"fabric subnet: {exc}") from None
        #: whether the lab has the ToRs and the outside host (racks need their ToRs)
        self.fabric = fabric or racks > 1
        try:  # CALICO_LAB_OUTSIDE_SUBNET4/6 are user input too
            layout = FabricLayout.make(prefix, subnet4, subnet6, ipv6, self.cluster.racks,
                                       outside_subnet4, outside_subnet6)
        except ValueError as exc:
            if self.fabric:
                raise LabError("arguments", f"outside subnet: {exc}") from None
            layout = None  # no outside world to make (or remove) then
        pools = [p["cidr"] for p in lab_pools(ipv6, fabric=True)]
        self.outside = Outside(self.daemon, prefix, layout, self.cluster.subnets(), pools,
                               self.cluster.racks) if layout is not None else None

    # -------------------------------------------------------------------- layout

    @property
    def out(self) -> IO[str]:
        return self.shell.out

    @property
    def docker_host(self) -> str:
        return self.daemon.host

    @property
    def network(self) -> str:
        return self.cluster.network

    @property
    def subnet4(self) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
        return self.cluster.subnet4

    @property
    def subnet6(self) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
        return self.cluster.subnet6

    def node_specs(self, count: int | None = None) -> list[NodeSpec]:
        return self.cluster.specs(count or self.count)

    @property
    def fabric_layout(self) -> FabricLayout | None:
        """The ToR's, the outside host's and the outside network's names and addresses
        (None without ``fabric``)."""
        return self.outside.layout if self.fabric and self.outside is not None else None

    def outside_command(self) -> list[str]:
        """The outside host's command: its routes to the pools and the fabric, the ToR."""
        if self.outside is None:
            raise LabError("arguments", "no outside world in this lab")
        return self.outside.outside_command

    @property
    def inventory_path(self) -> str:
        return os.path.join(self.state_dir, "inventory.yml")

    @property
    def pki_dir(self) -> str:
        return os.path.join(self.state_dir, "pki")

    @property
    def state_path(self) -> str:
        return os.path.join(self.state_dir, "lab.json")

    # -------------------------------------------------------------------- for scripts

    def say(self, text: str) -> None:
        self.shell.say(text)

    def progress(self, text: str) -> None:
        self.shell.progress(text)

    def step(self, name: str, what: str) -> AbstractContextManager[None]:
        return self.shell.step(name, what)

    def docker_env(self) -> dict[str, str]:
        return self.daemon.env()

    def docker(self, *args: str, step: str = "docker", check: bool = True,
               timeout: float = 120.0, input_bytes: bytes | None = None,
               stdin: IO[bytes] | None = None) -> subprocess.CompletedProcess[str]:
        """Run the docker CLI against the lab's daemon; a failure names ``step``."""
        return self.daemon.run(*args, step=step, check=check, timeout=timeout,
                               input_bytes=input_bytes, stdin=stdin)

    def node_exec(self, node: str, *argv: str, step: str = "exec", check: bool = True,
                  timeout: float = 60.0, input_bytes: bytes | None = None
                  ) -> subprocess.CompletedProcess[str]:
        """``docker exec [-i] NODE ARGV`` against the lab's daemon."""
        return self.daemon.exec(node, *argv, step=step, check=check, timeout=timeout,
                                input_bytes=input_bytes)

    def wait_booted(self, names: Sequence[str], timeout: float = BOOT_TIMEOUT) -> None:
        """Until systemd says running (or degraded) in every node named."""
        self.cluster.wait_booted(names, timeout)

    def inventory(self, specs: Sequence[NodeSpec]) -> dict[str, Any]:
        """The lab's inventory as data (written as YAML)."""
        return inventory_data(specs, docker_host=self.docker_host, pki_dir=self.pki_dir,
                              ipv6=self.ipv6, route_reflectors=self.route_reflectors,
                              fabric=self.fabric_layout)

    def deploy(self, playbook: str = "playbooks/site.yml", extra: Sequence[str] = (),
               log_name: str = "deploy.log", step: str = "deploy") -> None:
        """``ansible-playbook -i INVENTORY playbook`` (relative to the collection), with a
        line per task and the full output in the state dir's ``log_name``."""
        deploy_playbook(self.shell, inventory_path=self.inventory_path,
                        state_dir=self.state_dir, base_env=self.docker_env(),
                        playbook=playbook, extra=extra, log_name=log_name, step=step)

    # -------------------------------------------------------------------- up

    def up(self, deploy: bool = True) -> None:
        """Bring the lab up (see the package doc for the steps)."""
        started = time.monotonic()
        shell, cluster = self.shell, self.cluster
        layout = self.fabric_layout
        shell.step_total = (9 if deploy else 8) + (1 if layout else 0)
        with shell.step("docker", "Docker daemon"):
            self.daemon.ensure_running()
        with shell.step("image", "node image"):
            tag = ensure_image(self.daemon)
        specs = self.node_specs()
        with shell.step("leftovers", "leftovers of earlier runs"):
            # the ToR is on the fabric: it goes first when the fabric is made anew
            fabric_ok = cluster.fabric_ok()
            outside_keep: set[str] = set()
            if self.outside is not None:
                outside_keep = self.outside.clear_leftovers(tag, fabric_ok,
                                                            wanted=layout is not None)
            keep = cluster.clear_leftovers(tag, specs)
        with shell.step("fabric", "fabric network " + ", ".join(
                r.network for r in cluster.racks)):
            cluster.ensure_fabric()
        with shell.step("nodes", f"{self.count} node containers"):
            for spec in specs:
                if spec.name in keep:
                    shell.progress(f"{spec.name}: kept (running, {spec.ip4})")
                    continue
                cluster.start_node(spec, tag)
        booting = [s.name for s in specs]
        if layout is not None and self.outside is not None:
            tors = [t.name for t in layout.tors]
            with shell.step("outside", f"the outside world: ToR {', '.join(tors)}, outside "
                            f"host {layout.outside} on {layout.network}"):
                self.outside.ensure_network()
                for tor in layout.tors:
                    if tor.name in outside_keep:
                        shell.progress(f"{tor.name}: kept (running, {tor.fabric4})")
                    else:
                        self.outside.start_tor(tor, tag)
                if layout.outside in outside_keep:
                    shell.progress(f"{layout.outside}: kept (running, {layout.outside4})")
                else:
                    self.outside.start_outside(tag)
                self.outside.wait_serving()
            booting += tors
        with shell.step("boot", "systemd boot in every node"
                        + (" and ToR" if layout else "")):
            cluster.wait_booted(booting)
        with shell.step("workload image", f"workload image '{WORKLOAD_IMAGE}' in every node"):
            for spec in specs:
                cluster.load_workload_image(spec.name)
        with shell.step("inventory", "Ansible inventory"):
            self.write_state(tag, specs)
            write_inventory(self.inventory_path, self.inventory(specs))
            shell.progress(f"wrote {self.inventory_path}")
        if deploy:
            with shell.step("deploy", "deploy with playbooks/site.yml"):
                self.deploy()
        shell.say(f"lab is up in {time.monotonic() - started:.0f}s: "
                  + ", ".join(f"{s.name} ({s.ip4}{', ' + s.ip6 if s.ip6 else ''}"
                              + (f"; rack {s.rack}" if len(cluster.racks) > 1 else "") + ")"
                              for s in specs))
        if layout is not None:
            shell.say("    outside world: " + ", ".join(
                          f"{t.name} (AS {t.as_number}; {t.network} {t.fabric4})"
                          for t in layout.tors)
                      + f", {layout.outside} ({layout.outside4}"
                      + (f", {layout.outside6}" if layout.outside6 else "")
                      + f") on {layout.network} ({', '.join(layout.subnets)})")
        shell.say(f"    try: docker exec -it {specs[0].name} bash     "
                  f"inventory: {self.inventory_path}")

    def write_state(self, image: str, specs: Sequence[NodeSpec]) -> None:
        write_state_file(self.state_path, {
            "prefix": self.prefix, "network": self.network, "image": image,
            "ipv6": self.ipv6, "subnet4": str(self.subnet4),
            "subnet6": str(self.subnet6) if self.ipv6 else None,
            "docker_host": self.docker_host,
            "inventory": self.inventory_path,
            "route_reflectors": self.route_reflectors,
            "racks": [{"index": r.index, "network": r.network, "subnet4": str(r.subnet4),
                       "subnet6": str(r.subnet6) if self.ipv6 else None}
                      for r in self.cluster.racks],
            "nodes": [{"name": s.name, "ip4": s.ip4, "ip6": s.ip6, "rack": s.rack}
                      for s in specs],
            # lab up --fabric: the ToR, the outside host and their network (else null)
            "fabric": self.fabric_layout.state() if self.fabric_layout else None})

    def image(self) -> str:
        """``calicoctl lab image``: the Docker daemon, then the node image; its tag."""
        self.shell.step_total = 2
        with self.shell.step("docker", "Docker daemon"):
            self.daemon.ensure_running()
        with self.shell.step("image", "node image"):
            return ensure_image(self.daemon)

    # -------------------------------------------------------------------- down

    def down(self) -> None:
        """Remove every lab container (and its volumes), the fabric and the state; the node
        image stays cached. Idempotent."""
        started = time.monotonic()
        shell = self.shell
        shell.step_total = 3
        with shell.step("docker", "Docker daemon"):
            docker_up = self.daemon.answers()
            if not docker_up:
                shell.progress(f"no Docker daemon at {self.docker_host}: no containers or "
                               "networks to remove")
        with shell.step("remove", "node containers and fabric network (and the ToR, the "
                        "outside host and their network)"):
            if docker_up:
                if self.outside is not None:  # the ToR first: it is on the fabric
                    self.outside.remove()
                self.cluster.remove()
        with shell.step("state", f"state in {self.state_dir}"):
            if os.path.isdir(self.state_dir):
                shutil.rmtree(self.state_dir)
                shell.progress(f"removed {self.state_dir}")
            else:
                shell.progress("no state")
        shell.say(f"lab is down ({time.monotonic() - started:.0f}s); the node image stays "
                  f"cached as {image_tag()}")
