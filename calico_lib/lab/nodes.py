"""The node containers and their fabric: names and addresses, the Docker network, starting
and booting the nodes, the workload image inside them, and removing all of it."""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .docker import LABEL, Docker
from .errors import LabError
from .shell import tail

PREFIX = "calico-lab"
SUBNET4 = "172.31.250.0/24"
SUBNET6 = "fd7a:ca1:1ab::/64"
#: the workload image every node gets (a static busybox in an otherwise empty root)
WORKLOAD_IMAGE = "busybox"
BOOT_TIMEOUT = 180.0

#: capabilities are all but SYS_RESOURCE (not in these kernels' bounding set, so
#: --privileged fails); see TESTBED.md
NODE_RUN_FLAGS = (
    "--cap-add", "ALL", "--cap-drop", "SYS_RESOURCE", "--device-cgroup-rule", "a *:* rwm",
    "--security-opt", "seccomp=unconfined", "--security-opt", "apparmor=unconfined",
    "--security-opt", "systempaths=unconfined",
    "--cgroupns", "host", "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw",
    "--tmpfs", "/run", "--tmpfs", "/run/lock", "-e", "container=docker",
    # systemd's orderly shutdown (docker import cannot set STOPSIGNAL on the image)
    "--stop-signal", "SIGRTMIN+3",
    # the inner dockerd's storage on a real file system (overlay2 cannot nest in overlay)
    "-v", "/var/lib/docker",
    # IPv6 on every interface, as on a real host (Docker turns it off in containers but for
    # eth0, and a cali veth without IPv6 refuses IPv6 routes)
    "--sysctl", "net.ipv6.conf.all.disable_ipv6=0",
    "--sysctl", "net.ipv6.conf.default.disable_ipv6=0",
)
#: a node container made with other flags is replaced by ``up``
NODE_SPEC = hashlib.sha256(json.dumps(NODE_RUN_FLAGS).encode()).hexdigest()[:12]


@dataclass(frozen=True)
class NodeSpec:
    """One lab node: its name, fabric addresses and index (1-based)."""

    index: int
    name: str
    ip4: str
    ip6: str | None


class Cluster:
    """The nodes ``PREFIX-1`` … ``PREFIX-N`` on the network ``PREFIX-fabric``."""

    def __init__(self, docker: Docker, prefix: str, subnet4: str, subnet6: str,
                 ipv6: bool) -> None:
        self.docker = docker
        self.shell = docker.shell
        self.prefix = prefix
        self.network = f"{prefix}-fabric"
        self.subnet4 = ipaddress.ip_network(subnet4)
        self.subnet6 = ipaddress.ip_network(subnet6)
        self.ipv6 = ipv6

    # -------------------------------------------------------------------- layout

    def specs(self, count: int) -> list[NodeSpec]:
        """Node ``i`` is ``PREFIX-i`` at host address ``10 + i`` of each subnet (the IPv6
        address reads the same digits)."""
        specs = []
        for i in range(1, count + 1):
            ip4 = str(self.subnet4.network_address + 10 + i)
            ip6 = str(ipaddress.ip_address(f"{self.subnet6.network_address}") +
                      int(str(10 + i), 16)) if self.ipv6 else None
            specs.append(NodeSpec(i, f"{self.prefix}-{i}", ip4, ip6))
        return specs

    def subnets(self) -> list[str]:
        return [str(self.subnet4)] + ([str(self.subnet6)] if self.ipv6 else [])

    # -------------------------------------------------------------------- what exists

    def containers(self) -> list[dict[str, Any]]:
        """Every container of this lab (by label and name prefix), inspected."""
        names = self.docker.run("ps", "-a", "--filter", f"label={LABEL}=node", "--format",
                                "{{.Names}}", step="leftovers").stdout.split()
        mine = [n for n in names if re.fullmatch(re.escape(self.prefix) + r"-\d+", n)]
        if not mine:
            return []
        return json.loads(self.docker.run("inspect", *mine, step="leftovers").stdout)

    def network_info(self) -> dict[str, Any] | None:
        proc = self.docker.run("network", "inspect", self.network, check=False,
                               step="fabric")
        if proc.returncode != 0:
            return None
        return json.loads(proc.stdout)[0]

    # -------------------------------------------------------------------- leftovers

    def clear_leftovers(self, image: str, specs: Sequence[NodeSpec]) -> set[str]:
        """Remove lab containers that do not fit this run; return the names kept."""
        wanted = {s.name: s for s in specs}
        keep: set[str] = set()
        net = self.network_info()
        fabric_ok = net is not None and self.fabric_fits(net)
        for info in self.containers():
            name = info["Name"].lstrip("/")
            why = self._unfit(info, wanted.get(name), image, fabric_ok)
            if why:
                self.shell.progress(f"removing {name}: {why}")
                self.docker.run("rm", "-f", "-v", name, step="leftovers", timeout=180)
            else:
                keep.add(name)
        # a container with a node's name that the lab did not make is not ours to remove
        for spec in specs:
            if spec.name in keep:
                continue
            proc = self.docker.run("inspect", "--format", "{{json .Config.Labels}}",
                                   spec.name, check=False, step="leftovers")
            if proc.returncode == 0:
                raise LabError("leftovers", f"a container named {spec.name} exists and was "
                               "not made by the lab; remove or rename it")
        if keep:
            self.shell.progress(f"keeping {len(keep)} healthy node(s): "
                                f"{', '.join(sorted(keep))}")
        else:
            self.shell.progress("nothing to keep" if net is None
                                else "no healthy nodes to keep")
        return keep

    def _unfit(self, info: dict[str, Any], spec: NodeSpec | None, image: str,
               fabric_ok: bool) -> str | None:
        if spec is None:
            return "not part of this lab size"
        if not fabric_ok:
            return "the fabric network is being recreated"
        if not info["State"].get("Running"):
            return f"not running ({info['State'].get('Status')})"
        if info["Config"].get("Image") != image:
            return f"made from {info['Config'].get('Image')}, not {image}"
        if (info["Config"].get("Labels") or {}).get(f"{LABEL}.spec") != NODE_SPEC:
            return "made with other container flags"
        net = info["NetworkSettings"]["Networks"].get(self.network)
        if net is None:
            return f"not on {self.network}"
        if net.get("IPAddress") != spec.ip4:
            return f"address {net.get('IPAddress')} instead of {spec.ip4}"
        have6 = net.get("GlobalIPv6Address") or None
        if have6 != spec.ip6:
            return f"IPv6 address {have6 or 'none'} instead of {spec.ip6 or 'none'}"
        state = self.docker.exec(info["Name"].lstrip("/"), "systemctl", "is-system-running",
                                 check=False, step="leftovers", timeout=20).stdout.strip()
        if state not in ("running", "degraded", "starting"):
            return f"systemd is {state or 'not answering'}"
        return None

    # -------------------------------------------------------------------- the fabric

    def fabric_fits(self, net: dict[str, Any]) -> bool:
        """Whether the inspected network ``net`` is this lab's fabric as wanted (subnets, IPv6
        setting, the lab's label); else ``ensure_fabric`` makes it anew."""
        subnets = {c.get("Subnet") for c in net.get("IPAM", {}).get("Config") or []}
        want = {str(self.subnet4)} | ({str(self.subnet6)} if self.ipv6 else set())
        return bool(net.get("EnableIPv6")) == self.ipv6 and subnets == want \
            and net.get("Labels", {}).get(LABEL) == "fabric"

    def ensure_fabric(self) -> None:
        net = self.network_info()
        if net is not None and self.fabric_fits(net):
            self.shell.progress(f"{self.network} exists ({', '.join(self.subnets())})")
            return
        if net is not None:
            if net.get("Labels", {}).get(LABEL) != "fabric":
                raise LabError("fabric", f"a Docker network named {self.network} exists and "
                               "was not made by the lab; remove it")
            self.shell.progress(f"recreating {self.network} (other subnets or IPv6 setting)")
            self.remove_network()
        args = ["network", "create", "--driver", "bridge", "--label", f"{LABEL}=fabric",
                "--subnet", str(self.subnet4),
                "--gateway", str(self.subnet4.network_address + 1)]
        if self.ipv6:
            args += ["--ipv6", "--subnet", str(self.subnet6),
                     "--gateway", str(self.subnet6.network_address + 1)]
        self.docker.run(*args, self.network, step="fabric")
        self.shell.progress(f"created {self.network} ({', '.join(self.subnets())})")

    def remove_network(self) -> None:
        proc = self.docker.run("network", "rm", self.network, check=False, step="fabric")
        if proc.returncode != 0 and self.network_info() is not None:
            users = self.network_info() or {}
            names = [c.get("Name") for c in (users.get("Containers") or {}).values()]
            raise LabError("fabric", f"cannot remove {self.network}: {tail(proc.stderr)}"
                           + (f" (still attached: {', '.join(map(str, names))})"
                              if names else ""))

    # -------------------------------------------------------------------- nodes

    def start_node(self, spec: NodeSpec, image: str) -> None:
        args = ["run", "-d", "--name", spec.name, "--hostname", spec.name,
                "--label", f"{LABEL}=node", "--label", f"{LABEL}.prefix={self.prefix}",
                "--label", f"{LABEL}.spec={NODE_SPEC}",
                *NODE_RUN_FLAGS, "--network", self.network, "--ip", spec.ip4]
        if spec.ip6:
            args += ["--ip6", spec.ip6]
        self.docker.run(*args, image, step="nodes")
        self.shell.progress(f"{spec.name}: started "
                            f"({spec.ip4}{', ' + spec.ip6 if spec.ip6 else ''})")

    def wait_booted(self, names: Sequence[str], timeout: float = BOOT_TIMEOUT) -> None:
        """Until ``systemctl is-system-running`` says running or degraded in every node."""
        pending = list(names)
        start = time.monotonic()
        states: dict[str, str] = {}
        last_report = start
        while pending:
            for name in list(pending):
                proc = self.docker.exec(name, "systemctl", "is-system-running", check=False,
                                        step="boot", timeout=20)
                state = proc.stdout.strip() or tail(proc.stderr, 1)
                states[name] = state
                running = self.docker.run("inspect", "--format", "{{.State.Running}}", name,
                                          check=False, step="boot").stdout.strip()
                if running != "true":
                    logs = self.docker.run("logs", "--tail", "20", name, check=False,
                                           step="boot")
                    raise LabError("boot", f"{name} stopped while booting; its last output:\n"
                                   + tail(logs.stdout + logs.stderr, 20))
                if state in ("running", "degraded"):
                    pending.remove(name)
                    note = ""
                    if state == "degraded":
                        failed = self.docker.exec(
                            name, "systemctl", "list-units", "--failed", "--plain",
                            "--no-legend", check=False, step="boot").stdout.split("\n")
                        units = [u.split()[0] for u in failed if u.strip()]
                        note = f" (failed units: {', '.join(units) or 'none listed'})"
                    self.shell.progress(f"{name}: {state} after "
                                        f"{time.monotonic() - start:.0f}s" + note)
            if not pending:
                break
            now = time.monotonic()
            if now - start > timeout:
                details = []
                for name in pending:
                    jobs = self.docker.exec(name, "systemctl", "list-jobs", "--no-pager",
                                            check=False, step="boot").stdout
                    details.append(f"{name}: {states.get(name)}; jobs:\n{tail(jobs, 10)}")
                raise LabError("boot", f"not booted within {timeout:.0f}s: "
                               + "\n".join(details))
            if now - last_report > 20:
                last_report = now
                self.shell.progress("waiting: " + ", ".join(f"{n} {states.get(n)}"
                                                            for n in pending))
            time.sleep(1)

    def load_workload_image(self, node: str) -> None:
        """A ``busybox`` image in the node's dockerd: the node's static busybox and its
        applet links in an otherwise empty root (nothing is pulled)."""
        if self.docker.exec(node, "docker", "image", "inspect", WORKLOAD_IMAGE, check=False,
                            step="workload image").returncode == 0:
            self.shell.progress(f"{node}: {WORKLOAD_IMAGE} present")
            return
        script = (
            "set -e; d=$(mktemp -d); mkdir -p $d/bin $d/tmp $d/etc $d/www; "
            "cp /bin/busybox $d/bin/busybox; "
            "for a in $($d/bin/busybox --list); do [ -e $d/bin/$a ] || "
            "ln -s busybox $d/bin/$a; done; "
            "echo 'root:x:0:0:root:/:/bin/sh' > $d/etc/passwd; "
            "echo 'hello from calico-lab' > $d/www/index.html; "
            f"tar -C $d -c . | docker import -c 'CMD [\"sh\"]' - {WORKLOAD_IMAGE} >/dev/null; "
            "rm -rf $d")
        self.docker.exec(node, "sh", "-c", script, step="workload image", timeout=120)
        self.shell.progress(f"{node}: {WORKLOAD_IMAGE} imported")

    # -------------------------------------------------------------------- down

    def remove(self) -> None:
        """Every node container (with its volumes) and the fabric, if the lab made it."""
        containers = self.containers()
        for info in containers:
            name = info["Name"].lstrip("/")
            self.docker.run("rm", "-f", "-v", name, step="remove", timeout=180)
            self.shell.progress(f"removed {name}")
        if not containers:
            self.shell.progress("no node containers")
        net = self.network_info()
        if net is None:
            self.shell.progress(f"no network {self.network}")
        elif net.get("Labels", {}).get(LABEL) != "fabric":
            self.shell.progress(f"left {self.network} alone: the lab did not make it")
        else:
            self.remove_network()
            self.shell.progress(f"removed {self.network}")
