"""The node containers and their fabric: names and addresses, the Docker network (one per rack
with ``--racks``), starting and booting the nodes, the workload image inside them, and
removing all of it.

With one rack the fabric is one network, ``PREFIX-fabric``, holding the whole fabric subnet.
With ``racks`` > 1 each rack is a network of its own, ``PREFIX-fabric-R``, holding the R-th
equal part of the fabric subnets (172.31.250.0/24 → 172.31.250.0/25 and .128/25), and the
nodes are split between them in order (3 nodes, 2 racks: 1 and 2 in rack 1, 3 in rack 2).
A rack's router (its ToR, :mod:`.outside`) is host address 2 of its subnets; a node reaches
the rest of the fabric through it (the fabric's underlay: a route the node container gets
when it starts, as a real host gets it from its network configuration), and the Docker
bridge's gateway (host address 1) stays its default route."""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .docker import LABEL, Docker, network_fits
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
#: a rack's router (its ToR) is this host address of the rack's subnets
RACK_ROUTER_HOST = 2
#: at most this many racks (the fabric subnets split in up to 8 parts)
MAX_RACKS = 8


def node_spec_hash(command: Sequence[str]) -> str:
    """A node container made with other flags or another command is replaced by ``up``."""
    return hashlib.sha256(json.dumps([NODE_RUN_FLAGS, list(command)]).encode()).hexdigest()[:12]


def host_address(net: ipaddress.IPv4Network | ipaddress.IPv6Network, number: int) -> str:
    """Host ``number`` of ``net``; in IPv6 its digits read the same (11 is ::11)."""
    if net.version == 6:
        number = int(str(number), 16)
    if number >= net.num_addresses - 1:
        raise ValueError(f"{net} is too small for host address {number}")
    return str(net.network_address + number)


@dataclass(frozen=True)
class Rack:
    """One rack: its Docker network, its part of the fabric subnets, its router's addresses
    (IPv6 ones None in an IPv4-only lab)."""

    index: int
    network: str
    subnet4: ipaddress.IPv4Network
    subnet6: ipaddress.IPv6Network
    router4: str
    router6: str | None

    def subnets(self, ipv6: bool) -> list[str]:
        return [str(self.subnet4)] + ([str(self.subnet6)] if ipv6 else [])


@dataclass(frozen=True)
class NodeSpec:
    """One lab node: its name, fabric addresses, index (1-based) and rack (1-based)."""

    index: int
    name: str
    ip4: str
    ip6: str | None
    rack: int = 1


class Cluster:
    """The nodes ``PREFIX-1`` … ``PREFIX-N`` on the network ``PREFIX-fabric`` (or, in
    racks, on ``PREFIX-fabric-1`` … ``PREFIX-fabric-R``)."""

    def __init__(self, docker: Docker, prefix: str, subnet4: str, subnet6: str,
                 ipv6: bool, racks: int = 1) -> None:
        """ValueError when a subnet is not one or too small for the racks."""
        self.docker = docker
        self.shell = docker.shell
        self.prefix = prefix
        self.subnet4 = ipaddress.IPv4Network(subnet4)
        self.subnet6 = ipaddress.IPv6Network(subnet6)
        self.ipv6 = ipv6
        self.racks = self._racks(racks)
        #: the first rack's network (the only one without racks)
        self.network = self.racks[0].network

    def _racks(self, count: int) -> list[Rack]:
        if count == 1:
            parts4, parts6 = [self.subnet4], [self.subnet6]
            names = [f"{self.prefix}-fabric"]
        else:
            bits = (count - 1).bit_length()  # 2 racks: halves; 3 or 4: quarters
            if self.subnet4.prefixlen + bits > 27 or self.subnet6.prefixlen + bits > 121:
                raise ValueError(f"{self.subnet4} / {self.subnet6} cannot be split in {count} "
                                 "racks (a rack needs at least a /27 and a /121)")
            parts4 = list(self.subnet4.subnets(prefixlen_diff=bits))[:count]
            parts6 = list(self.subnet6.subnets(prefixlen_diff=bits))[:count]
            names = [f"{self.prefix}-fabric-{r}" for r in range(1, count + 1)]
        return [Rack(r, names[r - 1], parts4[r - 1], parts6[r - 1],
                     host_address(parts4[r - 1], RACK_ROUTER_HOST),
                     host_address(parts6[r - 1], RACK_ROUTER_HOST) if self.ipv6 else None)
                for r in range(1, count + 1)]

    # -------------------------------------------------------------------- layout

    def specs(self, count: int) -> list[NodeSpec]:
        """Node ``i`` is ``PREFIX-i`` at host address ``10 + i`` of its rack's subnets (the
        IPv6 address reads the same digits); racks take the nodes in order."""
        specs = []
        for i in range(1, count + 1):
            rack = self.racks[(i - 1) * len(self.racks) // count]
            try:
                ip4 = host_address(rack.subnet4, 10 + i)
                ip6 = host_address(rack.subnet6, 10 + i) if self.ipv6 else None
            except ValueError as exc:
                raise LabError("arguments", f"{count} nodes in {len(self.racks)} racks: "
                               f"{exc}") from None
            specs.append(NodeSpec(i, f"{self.prefix}-{i}", ip4, ip6, rack.index))
        return specs

    def subnets(self) -> list[str]:
        """The whole fabric's subnets (every rack's)."""
        return [str(self.subnet4)] + ([str(self.subnet6)] if self.ipv6 else [])

    def rack(self, spec: NodeSpec) -> Rack:
        return self.racks[spec.rack - 1]

    def node_command(self, spec: NodeSpec) -> list[str]:
        """The node container's command: in racks, the rest of the fabric through the rack's
        router first (the underlay), then systemd; else the image's (systemd)."""
        if len(self.racks) == 1:
            return []
        rack = self.rack(spec)
        lines = [f"ip route replace {self.subnet4} via {rack.router4}"]
        if rack.router6:  # an IPv6 address may still be settling: a few tries
            lines.append(f"for i in $(seq 50); do ip -6 route replace {self.subnet6} via "
                         f"{rack.router6} && break; sleep 0.1; done")
        lines.append("exec /lib/systemd/systemd")
        return ["sh", "-c", "\n".join(lines)]

    # -------------------------------------------------------------------- what exists

    def containers(self) -> list[dict[str, Any]]:
        """Every container of this lab (by label and name prefix), inspected."""
        names = self.docker.run("ps", "-a", "--filter", f"label={LABEL}=node", "--format",
                                "{{.Names}}", step="leftovers").stdout.split()
        mine = [n for n in names if re.fullmatch(re.escape(self.prefix) + r"-\d+", n)]
        if not mine:
            return []
        return json.loads(self.docker.run("inspect", *mine, step="leftovers").stdout)

    def network_info(self, name: str) -> dict[str, Any] | None:
        return self.docker.network_info(name, step="fabric")

    def fabric_networks(self) -> list[str]:
        """The lab's fabric networks that exist, of any rack count (by label and name)."""
        names = self.docker.run("network", "ls", "--filter", f"label={LABEL}=fabric",
                                "--format", "{{.Name}}", step="fabric").stdout.split()
        pattern = re.escape(f"{self.prefix}-fabric") + r"(-\d+)?"
        return sorted(n for n in names if re.fullmatch(pattern, n))

    def fabric_ok(self) -> bool:
        """Whether every rack's network exists as wanted and no other fabric network does."""
        wanted = {r.network: r for r in self.racks}
        if self.fabric_networks() != sorted(wanted):
            return False
        for rack in self.racks:
            info = self.network_info(rack.network)
            if info is None or not network_fits(info, rack.subnets(self.ipv6), "fabric"):
                return False
        return True

    # -------------------------------------------------------------------- leftovers

    def clear_leftovers(self, image: str, specs: Sequence[NodeSpec]) -> set[str]:
        """Remove lab containers that do not fit this run; return the names kept."""
        wanted = {s.name: s for s in specs}
        keep: set[str] = set()
        fabric_ok = self.fabric_ok()
        for info in self.containers():
            name = info["Name"].lstrip("/")
            why = self._unfit(info, wanted.get(name), image, fabric_ok)
            if why:
                self.shell.progress(f"removing {name}: {why}")
                self.docker.remove_container(name, step="leftovers")
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
            self.shell.progress("no healthy nodes to keep")
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
        if (info["Config"].get("Labels") or {}).get(f"{LABEL}.spec") != \
                node_spec_hash(self.node_command(spec)):
            return "made with other container flags or command"
        network = self.rack(spec).network
        net = info["NetworkSettings"]["Networks"].get(network)
        if net is None:
            return f"not on {network}"
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

    def ensure_fabric(self) -> None:
        """Every rack's network as wanted; fabric networks of another rack count removed."""
        wanted = {r.network for r in self.racks}
        for name in self.fabric_networks():
            if name not in wanted:
                self.shell.progress(f"removing {name}: not a network of this lab's racks")
                self.remove_network(name)
        for rack in self.racks:
            self.docker.ensure_network(rack.network, rack.subnets(self.ipv6),
                                       kind="fabric", prefix=self.prefix, step="fabric")

    def remove_network(self, name: str) -> None:
        self.docker.remove_network(name, step="fabric")

    # -------------------------------------------------------------------- nodes

    def start_node(self, spec: NodeSpec, image: str) -> None:
        command = self.node_command(spec)
        rack = self.rack(spec)
        args = ["run", "-d", "--name", spec.name, "--hostname", spec.name,
                "--label", f"{LABEL}=node", "--label", f"{LABEL}.prefix={self.prefix}",
                "--label", f"{LABEL}.spec={node_spec_hash(command)}",
                *NODE_RUN_FLAGS, "--network", rack.network, "--ip", spec.ip4]
        if spec.ip6:
            args += ["--ip6", spec.ip6]
        self.docker.run(*args, image, *command, step="nodes")
        self.shell.progress(f"{spec.name}: started "
                            f"({spec.ip4}{', ' + spec.ip6 if spec.ip6 else ''}"
                            + (f"; rack {rack.index}, via {rack.router4}"
                               if len(self.racks) > 1 else "") + ")")

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
            self.docker.remove_container(name, step="remove")
            self.shell.progress(f"removed {name}")
        if not containers:
            self.shell.progress("no node containers")
        networks = self.fabric_networks()  # of any rack count
        for name in networks:
            self.remove_network(name)
            self.shell.progress(f"removed {name}")
        if not networks:
            self.shell.progress(f"no network {self.network}")
        for rack in self.racks:
            if rack.network not in networks and self.network_info(rack.network) is not None:
                self.shell.progress(f"left {rack.network} alone: the lab did not make it")
