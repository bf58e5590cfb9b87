"""This machine's dockerd as the lab uses it: the docker CLI against one daemon, and the
daemon itself (started when it does not answer)."""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import subprocess
import time
from collections.abc import Sequence
from typing import IO, Any

from .errors import LabError
from .shell import Shell, file_tail, install_packages, quote, tail

DOCKER_SOCKET = "/var/run/docker.sock"
DOCKERD_LOG = "/var/log/calico-lab-dockerd.log"
#: label on everything the lab makes; ``down`` removes only what carries it
LABEL = "io.calico.lab"


class Docker:
    """The docker CLI against the daemon at ``host`` (``unix://…``, ``tcp://…``)."""

    def __init__(self, host: str | None, shell: Shell) -> None:
        self.host = host or os.environ.get("CALICO_LAB_DOCKER_HOST") \
            or f"unix://{DOCKER_SOCKET}"
        self.shell = shell

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["DOCKER_HOST"] = self.host
        env.pop("DOCKER_CONTEXT", None)
        return env

    def run(self, *args: str, step: str = "docker", check: bool = True,
            timeout: float = 120.0, input_bytes: bytes | None = None,
            stdin: IO[bytes] | None = None) -> subprocess.CompletedProcess[str]:
        """Run the docker CLI against the lab's daemon; a failure names ``step``."""
        argv = ["docker", *args]
        try:
            if input_bytes is None and stdin is None:
                stdin = subprocess.DEVNULL  # type: ignore[assignment]
            proc = subprocess.run(argv, input=input_bytes, stdin=stdin, capture_output=True,
                                  timeout=timeout, env=self.env(), check=False)
        except subprocess.TimeoutExpired:
            raise LabError(step, f"`{quote(argv)}` did not finish in {timeout:.0f}s") \
                from None
        except FileNotFoundError:
            raise LabError(step, "the docker client is not installed (apt-get install "
                           "docker.io, or make deps)") from None
        result = subprocess.CompletedProcess(argv, proc.returncode,
                                             proc.stdout.decode(errors="replace"),
                                             proc.stderr.decode(errors="replace"))
        if check and result.returncode != 0:
            raise LabError(step, f"`{quote(argv)}` exited {result.returncode}: "
                           f"{tail(result.stderr or result.stdout)}")
        return result

    def exec(self, node: str, *argv: str, step: str = "exec", check: bool = True,
             timeout: float = 60.0, input_bytes: bytes | None = None
             ) -> subprocess.CompletedProcess[str]:
        """``docker exec [-i] NODE ARGV``."""
        flags = ["-i"] if input_bytes is not None else []
        return self.run("exec", *flags, node, *argv, step=step, check=check,
                        timeout=timeout, input_bytes=input_bytes)

    def network_info(self, name: str, step: str = "docker") -> dict[str, Any] | None:
        """``docker network inspect NAME``, or None when there is no such network."""
        proc = self.run("network", "inspect", name, check=False, step=step)
        return json.loads(proc.stdout)[0] if proc.returncode == 0 else None

    def ensure_network(self, name: str, subnets: Sequence[str], *, kind: str, prefix: str,
                       step: str) -> None:
        """A bridge network ``name`` with ``subnets`` (gateway: host address 1 of each; IPv6
        on when one is IPv6) and the lab's label ``kind``: kept when it fits
        (``network_fits``), made anew when it is the lab's but does not fit; one the lab did
        not make is an error."""
        net = self.network_info(name, step)
        if net is not None and network_fits(net, subnets, kind):
            self.shell.progress(f"{name} exists ({', '.join(subnets)})")
            return
        if net is not None:
            if net.get("Labels", {}).get(LABEL) != kind:
                raise LabError(step, f"a Docker network named {name} exists and was not made "
                               "by the lab; remove it")
            self.shell.progress(f"recreating {name} (other subnets or IPv6 setting)")
            self.remove_network(name, step)
        args = ["network", "create", "--driver", "bridge", "--label", f"{LABEL}={kind}",
                "--label", f"{LABEL}.prefix={prefix}"]
        for subnet in subnets:
            gateway = ipaddress.ip_network(subnet).network_address + 1
            args += ["--subnet", subnet, "--gateway", str(gateway)]
        if any(":" in subnet for subnet in subnets):
            args.append("--ipv6")
        self.run(*args, name, step=step)
        self.shell.progress(f"created {name} ({', '.join(subnets)})")

    def remove_container(self, name: str, step: str) -> None:
        """``docker rm -f -v NAME``: the container and its volumes, whatever its state."""
        self.run("rm", "-f", "-v", name, step=step, timeout=180)

    def remove_network(self, name: str, step: str = "docker") -> None:
        """``docker network rm NAME``; an error names what is still attached."""
        proc = self.run("network", "rm", name, check=False, step=step)
        if proc.returncode != 0:
            users = self.network_info(name, step)
            if users is None:
                return
            names = [c.get("Name") for c in (users.get("Containers") or {}).values()]
            raise LabError(step, f"cannot remove {name}: {tail(proc.stderr)}"
                           + (f" (still attached: {', '.join(map(str, names))})"
                              if names else ""))

    def answers(self) -> bool:
        socket_path = self.host[len("unix://"):] if self.host.startswith("unix://") else None
        if socket_path and not os.path.exists(socket_path):
            return False
        try:
            return self.run("version", "--format", "{{.Server.Version}}",
                            check=False, timeout=15).returncode == 0
        except LabError:
            return False

    def ensure_running(self) -> None:
        """A running dockerd on this machine's own socket: started (systemd, or directly in
        the background with a log file) when it does not answer."""
        shell = self.shell
        if self.answers():
            shell.progress("dockerd is running")
            return
        if not self.host.startswith("unix://"):
            raise LabError("docker", f"no Docker daemon answers at {self.host}")
        if shutil.which("dockerd") is None:
            install_packages(["docker.io"], shell, "docker")
        if shutil.which("docker") is None:
            raise LabError("docker", "no docker client on PATH (apt-get install docker.io)")
        if systemd_runs():
            shell.progress("starting docker.service")
            proc = subprocess.run(["systemctl", "start", "docker.service"],
                                  capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                raise LabError("docker", "systemctl start docker.service: "
                               + tail(proc.stderr or proc.stdout))
        else:
            shell.progress(f"no systemd: starting dockerd in the background (log: "
                           f"{DOCKERD_LOG})")
            socket_path = self.host[len("unix://"):]
            argv = [shutil.which("dockerd") or "dockerd"]
            if socket_path != DOCKER_SOCKET:
                argv += ["-H", self.host]
            # through a shell that exits at once: dockerd is nobody's child here (it
            # outlives this command, and a long-running caller keeps no zombie of it)
            with open(DOCKERD_LOG, "ab") as log:
                subprocess.run(["sh", "-c", 'exec "$@" </dev/null &', "sh", *argv],
                               stdout=log, stderr=log, start_new_session=True, check=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.answers():
                return
            time.sleep(0.5)
        raise LabError("docker", f"dockerd did not answer at {self.host} within "
                       f"60s; see {DOCKERD_LOG}:\n{file_tail(DOCKERD_LOG)}")


def network_fits(net: dict[str, Any], subnets: Sequence[str], kind: str) -> bool:
    """Whether the inspected network ``net`` has exactly ``subnets``, IPv6 on exactly when
    one of them is IPv6, and the lab's label ``kind``."""
    have = {c.get("Subnet") for c in net.get("IPAM", {}).get("Config") or []}
    return bool(net.get("EnableIPv6")) == any(":" in s for s in subnets) \
        and have == set(subnets) and net.get("Labels", {}).get(LABEL) == kind


def systemd_runs() -> bool:
    """Whether this machine's PID 1 is a running systemd (so services are started with it)."""
    try:
        with open("/proc/1/comm") as handle:
            if handle.read().strip() != "systemd":
                return False
    except OSError:
        return False
    if shutil.which("systemctl") is None:
        return False
    state = subprocess.run(["systemctl", "is-system-running"], capture_output=True,
                           text=True, check=False).stdout.strip()
    return state not in ("offline", "")
