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

``up`` runs these steps, each announced on one line and timed; a failure raises
:class:`LabError` naming the step and the reason (the last lines of the failing command):

    1. docker       the machine's own dockerd (started when it is not running)
    2. image        built once with debootstrap + ``docker import``, then reused by its tag
    3. leftovers    lab containers that do not fit (another image, address, stopped) removed
    4. fabric       the Docker network (recreated when its IPv6 setting differs)
    5. nodes        ``docker run`` of the missing node containers
    6. boot         ``systemctl is-system-running`` says running (or degraded) in every node
    7. workload image  a ``busybox`` image (static busybox only) in every node's dockerd
    8. inventory    the Ansible inventory for the nodes, in the state dir
    9. deploy       ``ansible-playbook playbooks/site.yml`` (skipped with ``deploy=False``)

Healthy nodes of an earlier run are kept, so ``up`` after a failed run resumes: the playbook
is idempotent. ``down`` removes every container (with its volumes), the network and the state
whatever state they are in; it never touches containers or networks the lab did not make
(they carry the label ``io.calico.lab``).
"""

from __future__ import annotations

import glob
import hashlib
import ipaddress
import json
import os
import queue
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO, Any

from .errors import CalicoError

PREFIX = "calico-lab"
IMAGE_REPO = "calico-lab-node"
SUBNET4 = "172.31.250.0/24"
SUBNET6 = "fd7a:ca1:1ab::/64"
STATE_DIR = "/var/lib/calico-lab"
CACHE_DIR = "/var/cache/calico-lab"
DOCKER_SOCKET = "/var/run/docker.sock"
DOCKERD_LOG = "/var/log/calico-lab-dockerd.log"
SUITE = "bookworm"
#: label on everything the lab makes; ``down`` removes only what carries it
LABEL = "io.calico.lab"
#: the workload image every node gets (a static busybox in an otherwise empty root)
WORKLOAD_IMAGE = "busybox"

#: Debian packages of the node image (debootstrap --include)
PACKAGES = (
    "systemd", "systemd-sysv", "dbus", "python3", "python3-venv", "python3-apt", "iproute2",
    "iptables", "ipset", "bird2", "docker.io", "iputils-ping", "procps", "ca-certificates",
    "etcd-server", "etcd-client", "conntrack", "busybox-static",
)

#: run in the debootstrapped root (chroot) before it is imported; part of the image hash
IMAGE_SETUP = r"""
set -eu
# etcd would start on every node: the etcd role enables it where it is wanted
systemctl disable etcd.service >/dev/null 2>&1 || true
# nothing to do for these in a container (no devices, no kernel modules, no consoles)
systemctl mask systemd-udevd.service systemd-udevd-kernel.socket \
    systemd-udevd-control.socket systemd-udev-trigger.service systemd-modules-load.service \
    getty@.service serial-getty@.service console-getty.service \
    sys-kernel-config.mount sys-kernel-debug.mount sys-kernel-tracing.mount \
    systemd-remount-fs.service >/dev/null 2>&1
# the journal must not read the host's kernel log
mkdir -p /etc/systemd/journald.conf.d
printf '[Journal]\nReadKMsg=no\nStorage=volatile\n' > /etc/systemd/journald.conf.d/lab.conf
# each container gets its own machine id at boot
: > /etc/machine-id
rm -f /var/lib/dbus/machine-id
apt-get clean
rm -rf /var/lib/apt/lists/* /var/log/*.log /var/cache/debconf/*-old
mkdir -p /var/lib/apt/lists/partial
# no package lists: an old date makes `apt: update_cache, cache_valid_time` fetch them
touch -d @0 /var/lib/apt/lists
"""

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

BOOT_TIMEOUT = 180.0
IMAGE_RECIPE_VERSION = "1"


class LabError(CalicoError):
    """A lab step failed; ``str()`` names the step and the reason."""

    exit_code = 1

    def __init__(self, step: str, reason: str) -> None:
        super().__init__(f"lab step '{step}' failed: {reason}")
        self.step = step
        self.reason = reason


#: the cluster id of the lab's route reflectors (``--route-reflectors``)
RR_CLUSTER_ID = "10.255.0.1"


@dataclass(frozen=True)
class NodeSpec:
    """One lab node: its name, fabric addresses and index (1-based)."""

    index: int
    name: str
    ip4: str
    ip6: str | None


def image_tag() -> str:
    """``calico-lab-node:<12 hex>``: the content hash of everything that makes the image."""
    recipe = json.dumps({"version": IMAGE_RECIPE_VERSION, "suite": SUITE, "variant": "minbase",
                         "packages": sorted(PACKAGES), "setup": IMAGE_SETUP}, sort_keys=True)
    return f"{IMAGE_REPO}:{hashlib.sha256(recipe.encode()).hexdigest()[:12]}"


def apt_mirror(root: str = "/") -> str:
    """The Debian mirror apt uses on this machine ($CALICO_LAB_MIRROR overrides).

    Reads deb822 ``*.sources`` files and one-line ``sources.list`` entries and takes the
    first ``deb`` source that carries the suite itself (not -updates or -security).
    """
    override = os.environ.get("CALICO_LAB_MIRROR")
    if override:
        return override
    apt = os.path.join(root, "etc/apt")
    candidates: list[tuple[str, list[str]]] = []  # (uri, suites)
    for path in sorted(glob.glob(os.path.join(apt, "sources.list.d/*.sources"))):
        with open(path) as handle:
            text = handle.read()
        for stanza in re.split(r"\n\s*\n", text):
            fields: dict[str, str] = {}
            key = None
            for line in stanza.splitlines():
                if not line.strip() or line.lstrip().startswith("#"):
                    continue
                if line[0].isspace() and key:
                    fields[key] += " " + line.strip()
                    continue
                key, _, value = line.partition(":")
                key = key.strip().lower()
                fields[key] = value.strip()
            if "deb" not in fields.get("types", "").split():
                continue
            if fields.get("enabled", "yes").lower() == "no":
                continue
            for uri in fields.get("uris", "").split():
                candidates.append((uri, fields.get("suites", "").split()))
    for path in [os.path.join(apt, "sources.list"),
                 *sorted(glob.glob(os.path.join(apt, "sources.list.d/*.list")))]:
        try:
            with open(path) as handle:
                lines = handle.read().splitlines()
        except OSError:
            continue
        for line in lines:
            words = line.split("#", 1)[0].split()
            if not words or words[0] != "deb":
                continue
            words = words[1:]
            if words and words[0].startswith("["):
                while words and not words[0].endswith("]"):
                    words = words[1:]
                words = words[1:]
            if len(words) >= 2:
                candidates.append((words[0], [words[1]]))
    for uri, suites in candidates:
        if SUITE in suites:
            return uri
    raise LabError("image", "no Debian mirror for " + SUITE + " in /etc/apt/sources.list or "
                   "/etc/apt/sources.list.d/ (set CALICO_LAB_MIRROR to one)")


def repo_root() -> str | None:
    """The checkout that holds ``playbooks/site.yml`` ($CALICO_LAB_REPO, this package's
    parent directory, or the current directory)."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for candidate in (os.environ.get("CALICO_LAB_REPO"), here, os.getcwd()):
        if candidate and os.path.isfile(os.path.join(candidate, "playbooks", "site.yml")):
            return os.path.abspath(candidate)
    return None


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


# ------------------------------------------------------------------------------ the lab


class Lab:
    """The lab on this machine's dockerd. ``prefix`` and ``subnet4``/``subnet6`` exist so a
    test can make a second lab beside a user's; the CLI uses the fixed defaults."""

    def __init__(self, nodes: int = 3, ipv6: bool = False, *, prefix: str = PREFIX,
                 subnet4: str = SUBNET4, subnet6: str = SUBNET6,
                 state_dir: str | None = None, out: IO[str] | None = None,
                 docker_host: str | None = None, route_reflectors: int = 0) -> None:
        if nodes < 1 or nodes > 50:
            raise LabError("arguments", f"--nodes must be between 1 and 50, not {nodes}")
        if not 0 <= route_reflectors <= nodes:
            raise LabError("arguments", f"--route-reflectors must be between 0 and the node "
                                        f"count ({nodes}), not {route_reflectors}")
        self.count = nodes
        #: the first this many nodes are route reflectors and the mesh is off
        self.route_reflectors = route_reflectors
        self.ipv6 = ipv6
        self.prefix = prefix
        self.network = f"{prefix}-fabric"
        self.subnet4 = ipaddress.ip_network(subnet4)
        self.subnet6 = ipaddress.ip_network(subnet6)
        self.state_dir = state_dir or (STATE_DIR if prefix == PREFIX
                                       else f"{STATE_DIR}-{prefix}")
        self.out = out or sys.stdout
        self.docker_host = docker_host or os.environ.get("CALICO_LAB_DOCKER_HOST") \
            or f"unix://{DOCKER_SOCKET}"
        self._steps: list[str] = []
        self._step_no = 0
        self._step_total = 0

    # -------------------------------------------------------------------- layout

    def node_specs(self, count: int | None = None) -> list[NodeSpec]:
        specs = []
        for i in range(1, (count or self.count) + 1):
            ip4 = str(self.subnet4.network_address + 10 + i)
            ip6 = str(ipaddress.ip_address(f"{self.subnet6.network_address}") +
                      int(str(10 + i), 16)) if self.ipv6 else None
            specs.append(NodeSpec(i, f"{self.prefix}-{i}", ip4, ip6))
        return specs

    @property
    def inventory_path(self) -> str:
        return os.path.join(self.state_dir, "inventory.yml")

    @property
    def pki_dir(self) -> str:
        return os.path.join(self.state_dir, "pki")

    @property
    def state_path(self) -> str:
        return os.path.join(self.state_dir, "lab.json")

    # -------------------------------------------------------------------- output

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    @contextmanager
    def step(self, name: str, what: str) -> Iterator[None]:
        """Announce and time one step; any failure in it becomes a LabError naming it."""
        self._step_no += 1
        total = f"/{self._step_total}" if self._step_total else ""
        self.say(f"==> [{self._step_no}{total}] {what}")
        start = time.monotonic()
        try:
            yield
        except LabError:
            raise
        except (OSError, subprocess.SubprocessError, ValueError, KeyError) as exc:
            raise LabError(name, f"{type(exc).__name__}: {exc}") from exc
        self.say(f"    done in {time.monotonic() - start:.1f}s")

    # -------------------------------------------------------------------- commands

    def docker_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["DOCKER_HOST"] = self.docker_host
        env.pop("DOCKER_CONTEXT", None)
        return env

    def docker(self, *args: str, step: str = "docker", check: bool = True,
               timeout: float = 120.0, input_bytes: bytes | None = None,
               stdin: IO[bytes] | None = None) -> subprocess.CompletedProcess[str]:
        """Run the docker CLI against the lab's daemon; a failure names ``step``."""
        argv = ["docker", *args]
        try:
            if input_bytes is None and stdin is None:
                stdin = subprocess.DEVNULL  # type: ignore[assignment]
            proc = subprocess.run(argv, input=input_bytes, stdin=stdin, capture_output=True,
                                  timeout=timeout, env=self.docker_env(), check=False)
        except subprocess.TimeoutExpired:
            raise LabError(step, f"`{_quote(argv)}` did not finish in {timeout:.0f}s") \
                from None
        except FileNotFoundError:
            raise LabError(step, "the docker client is not installed (apt-get install "
                           "docker.io, or make deps)") from None
        result = subprocess.CompletedProcess(argv, proc.returncode,
                                             proc.stdout.decode(errors="replace"),
                                             proc.stderr.decode(errors="replace"))
        if check and result.returncode != 0:
            raise LabError(step, f"`{_quote(argv)}` exited {result.returncode}: "
                           f"{_tail(result.stderr or result.stdout)}")
        return result

    def node_exec(self, node: str, *argv: str, step: str = "exec", check: bool = True,
                  timeout: float = 60.0, input_bytes: bytes | None = None
                  ) -> subprocess.CompletedProcess[str]:
        """``docker exec [-i] NODE ARGV`` against the lab's daemon."""
        flags = ["-i"] if input_bytes is not None else []
        return self.docker("exec", *flags, node, *argv, step=step, check=check,
                           timeout=timeout, input_bytes=input_bytes)

    def stream(self, argv: Sequence[str], step: str, *, env: dict[str, str] | None = None,
               cwd: str | None = None, log_path: str | None = None,
               on_line: Callable[[str], None] | None = None, heartbeat: float = 20.0,
               timeout: float | None = None, stdin: IO[bytes] | None = None) -> None:
        """Run a long command, feeding its output lines to ``on_line`` (and a log file) and
        printing a heartbeat when it is quiet; a non-zero exit raises LabError with the last
        lines of its output."""
        log = open(log_path, "a") if log_path else None  # noqa: SIM115
        tail: deque[str] = deque(maxlen=25)
        start = time.monotonic()
        try:
            proc = subprocess.Popen(list(argv), stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, stdin=stdin, env=env, cwd=cwd,
                                    text=True, errors="replace", bufsize=1)
        except FileNotFoundError as exc:
            if log:
                log.close()
            raise LabError(step, f"{argv[0]} is not installed ({exc})") from None
        lines: queue.Queue[str | None] = queue.Queue()

        def reader() -> None:
            assert proc.stdout is not None
            for raw in proc.stdout:
                lines.put(raw.rstrip("\n"))
            lines.put(None)

        thread = threading.Thread(target=reader, daemon=True)
        thread.start()
        last_output = time.monotonic()
        last_line = ""
        try:
            while True:
                try:
                    line = lines.get(timeout=1.0)
                except queue.Empty:
                    now = time.monotonic()
                    if timeout and now - start > timeout:
                        proc.kill()
                        raise LabError(step, f"`{_quote(argv)}` did not finish in "
                                       f"{timeout:.0f}s; last output:\n"
                                       + "\n".join(tail)) from None
                    if now - last_output >= heartbeat:
                        last_output = now
                        self.say(f"    ... {now - start:.0f}s"
                                 + (f", last: {last_line[:100]}" if last_line else ""))
                    continue
                if line is None:
                    break
                if log:
                    log.write(line + "\n")
                    log.flush()
                if line.strip():
                    tail.append(line)
                    last_line = line.strip()
                if on_line:
                    before = self._said
                    on_line(line)
                    if self._said != before:
                        last_output = time.monotonic()
            code = proc.wait()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            if log:
                log.close()
        if code != 0:
            where = f" (full log: {log_path})" if log_path else ""
            raise LabError(step, f"`{_quote(argv[:3])} …` exited {code}{where}; last "
                           "output:\n" + "\n".join("      " + t for t in tail))

    _said = 0

    def progress(self, text: str) -> None:
        """A progress line inside a step (counted so heartbeats stay quiet after one)."""
        self._said += 1
        self.say("    " + text)

    # -------------------------------------------------------------------- step 1: docker

    def ensure_docker(self) -> None:
        """A running dockerd on this machine's own socket: started (systemd, or directly in
        the background with a log file) when it does not answer."""
        if self._docker_answers():
            self.progress("dockerd is running")
            return
        if not self.docker_host.startswith("unix://"):
            raise LabError("docker", f"no Docker daemon answers at {self.docker_host}")
        if shutil.which("dockerd") is None:
            install_packages(["docker.io"], self, "docker")
        if shutil.which("docker") is None:
            raise LabError("docker", "no docker client on PATH (apt-get install docker.io)")
        if systemd_runs():
            self.progress("starting docker.service")
            proc = subprocess.run(["systemctl", "start", "docker.service"],
                                  capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                raise LabError("docker", "systemctl start docker.service: "
                               + _tail(proc.stderr or proc.stdout))
        else:
            self.progress(f"no systemd: starting dockerd in the background (log: "
                          f"{DOCKERD_LOG})")
            socket_path = self.docker_host[len("unix://"):]
            argv = [shutil.which("dockerd") or "dockerd"]
            if socket_path != DOCKER_SOCKET:
                argv += ["-H", self.docker_host]
            # through a shell that exits at once: dockerd is nobody's child here (it
            # outlives this command, and a long-running caller keeps no zombie of it)
            with open(DOCKERD_LOG, "ab") as log:
                subprocess.run(["sh", "-c", 'exec "$@" </dev/null &', "sh", *argv],
                               stdout=log, stderr=log, start_new_session=True, check=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self._docker_answers():
                return
            time.sleep(0.5)
        raise LabError("docker", f"dockerd did not answer at {self.docker_host} within "
                       f"60s; see {DOCKERD_LOG}:\n{_file_tail(DOCKERD_LOG)}")

    def _docker_answers(self) -> bool:
        socket_path = self.docker_host[len("unix://"):] \
            if self.docker_host.startswith("unix://") else None
        if socket_path and not os.path.exists(socket_path):
            return False
        try:
            return self.docker("version", "--format", "{{.Server.Version}}",
                               check=False, timeout=15).returncode == 0
        except LabError:
            return False

    # -------------------------------------------------------------------- step 2: image

    def ensure_image(self) -> str:
        """The node image's tag, building it first when no image carries it."""
        tag = image_tag()
        if self.docker("image", "inspect", tag, check=False, step="image").returncode == 0:
            self.progress(f"{tag} is cached")
            return tag
        self.build_image(tag)
        return tag

    def build_image(self, tag: str) -> None:
        if os.geteuid() != 0:
            raise LabError("image", "building the node image needs root (debootstrap)")
        if shutil.which("debootstrap") is None:
            install_packages(["debootstrap"], self, "image")
        mirror = apt_mirror()
        os.makedirs(CACHE_DIR, exist_ok=True)
        root = tempfile.mkdtemp(prefix="rootfs-", dir=CACHE_DIR)
        log_path = os.path.join(CACHE_DIR, "build.log")
        with open(log_path, "w") as log:
            log.write(f"building {tag} from {mirror}\n")
        self.progress(f"building {tag}: debootstrap {SUITE} from {mirror} (a few minutes; "
                      f"log: {log_path})")
        phases = {"Retrieving": "downloading packages", "Extracting": "extracting the base",
                  "Installing": "installing the core", "Unpacking": "installing packages",
                  "Base": "base system installed"}
        seen: set[str] = set()

        def on_line(line: str) -> None:
            match = re.match(r"I: (\w+)", line)
            phase = phases.get(match.group(1)) if match else None
            if phase and phase not in seen:
                seen.add(phase)
                self.progress("debootstrap: " + phase)
            elif line.startswith(("E:", "W: Failure")):
                self.progress(line)

        try:
            self.stream(["debootstrap", "--variant=minbase", "--include=" + ",".join(PACKAGES),
                         SUITE, root, mirror], "image", log_path=log_path, on_line=on_line,
                        timeout=1800)
            self.progress("setting up the root (services, machine id, apt cache)")
            self.stream(["chroot", root, "/bin/sh", "-c", IMAGE_SETUP], "image",
                        log_path=log_path, timeout=300)
            self.progress(f"docker import → {tag}")
            self.import_root(root, tag)
        finally:
            _remove_tree(root)
        self.docker("tag", tag, f"{IMAGE_REPO}:latest", step="image")
        self.prune_images(keep=tag)

    def prune_images(self, keep: str) -> None:
        """Remove node images of older recipes (about 500 MB each) that no container uses."""
        tags = self.docker("images", IMAGE_REPO, "--format", "{{.Repository}}:{{.Tag}}",
                           step="image").stdout.split()
        for old in tags:
            if old not in (keep, f"{IMAGE_REPO}:latest"):
                if self.docker("rmi", old, check=False, step="image").returncode == 0:
                    self.progress(f"removed the older image {old}")

    def import_root(self, root: str, tag: str) -> None:
        """``tar -C ROOT -c . | docker import -c CMD … - TAG``."""
        tar = subprocess.Popen(["tar", "-C", root, "--numeric-owner", "-c", "."],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        argv = ["docker", "import", "-c", 'CMD ["/lib/systemd/systemd"]',
                "-c", "ENV container=docker", "-c", f"LABEL {LABEL}=node-image", "-", tag]
        try:
            imp = subprocess.Popen(argv, stdin=tar.stdout, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, env=self.docker_env())
        finally:
            assert tar.stdout is not None
            tar.stdout.close()  # docker import holds the pipe now
        try:
            _, err = imp.communicate(timeout=900)
        except subprocess.TimeoutExpired:
            imp.kill()
            tar.kill()
            raise LabError("image", "docker import did not finish in 900s") from None
        tar_err = tar.stderr.read().decode(errors="replace") if tar.stderr else ""
        tar.wait()
        if imp.returncode != 0:
            raise LabError("image", f"`{_quote(argv)}` exited {imp.returncode}: "
                           + _tail(err.decode(errors="replace")))
        if tar.returncode != 0:
            raise LabError("image", f"tar of {root} exited {tar.returncode}: {_tail(tar_err)}")

    # -------------------------------------------------------------------- helpers: state

    def lab_containers(self) -> list[dict[str, Any]]:
        """Every container of this lab (by label and name prefix), inspected."""
        names = self.docker("ps", "-a", "--filter", f"label={LABEL}=node", "--format",
                            "{{.Names}}", step="leftovers").stdout.split()
        mine = [n for n in names if re.fullmatch(re.escape(self.prefix) + r"-\d+", n)]
        if not mine:
            return []
        return json.loads(self.docker("inspect", *mine, step="leftovers").stdout)

    def network_info(self) -> dict[str, Any] | None:
        proc = self.docker("network", "inspect", self.network, check=False, step="fabric")
        if proc.returncode != 0:
            return None
        return json.loads(proc.stdout)[0]

    # -------------------------------------------------------------------- up

    def up(self, deploy: bool = True) -> None:
        """Bring the lab up (see the module doc for the steps)."""
        started = time.monotonic()
        self._step_total = 9 if deploy else 8
        with self.step("docker", "Docker daemon"):
            self.ensure_docker()
        with self.step("image", "node image"):
            image = self.ensure_image()
        specs = self.node_specs()
        with self.step("leftovers", "leftovers of earlier runs"):
            keep = self.clear_leftovers(image, specs)
        with self.step("fabric", f"fabric network {self.network}"):
            self.ensure_fabric()
        with self.step("nodes", f"{self.count} node containers"):
            for spec in specs:
                if spec.name in keep:
                    self.progress(f"{spec.name}: kept (running, {spec.ip4})")
                    continue
                self.start_node(spec, image)
        with self.step("boot", "systemd boot in every node"):
            self.wait_booted([s.name for s in specs])
        with self.step("workload image", f"workload image '{WORKLOAD_IMAGE}' in every node"):
            for spec in specs:
                self.load_workload_image(spec.name)
        with self.step("inventory", "Ansible inventory"):
            self.write_state(image, specs)
            self.write_inventory(specs)
            self.progress(f"wrote {self.inventory_path}")
        if deploy:
            with self.step("deploy", "deploy with playbooks/site.yml"):
                self.deploy()
        self.say(f"lab is up in {time.monotonic() - started:.0f}s: "
                 + ", ".join(f"{s.name} ({s.ip4}{', ' + s.ip6 if s.ip6 else ''})"
                             for s in specs))
        self.say(f"    try: docker exec -it {specs[0].name} bash     "
                 f"inventory: {self.inventory_path}")

    def clear_leftovers(self, image: str, specs: Sequence[NodeSpec]) -> set[str]:
        """Remove lab containers that do not fit this run; return the names kept."""
        wanted = {s.name: s for s in specs}
        keep: set[str] = set()
        net = self.network_info()
        fabric_ok = net is not None and self._fabric_fits(net)
        for info in self.lab_containers():
            name = info["Name"].lstrip("/")
            why = self._unfit(info, wanted.get(name), image, fabric_ok)
            if why:
                self.progress(f"removing {name}: {why}")
                self.docker("rm", "-f", "-v", name, step="leftovers", timeout=180)
            else:
                keep.add(name)
        # a container with a node's name that the lab did not make is not ours to remove
        for spec in specs:
            if spec.name in keep:
                continue
            proc = self.docker("inspect", "--format", "{{json .Config.Labels}}", spec.name,
                               check=False, step="leftovers")
            if proc.returncode == 0:
                raise LabError("leftovers", f"a container named {spec.name} exists and was "
                               "not made by the lab; remove or rename it")
        if keep:
            self.progress(f"keeping {len(keep)} healthy node(s): {', '.join(sorted(keep))}")
        else:
            self.progress("nothing to keep" if net is None else "no healthy nodes to keep")
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
        state = self.node_exec(info["Name"].lstrip("/"), "systemctl", "is-system-running",
                               check=False, step="leftovers", timeout=20).stdout.strip()
        if state not in ("running", "degraded", "starting"):
            return f"systemd is {state or 'not answering'}"
        return None

    def _fabric_fits(self, net: dict[str, Any]) -> bool:
        subnets = {c.get("Subnet") for c in net.get("IPAM", {}).get("Config") or []}
        want = {str(self.subnet4)} | ({str(self.subnet6)} if self.ipv6 else set())
        return bool(net.get("EnableIPv6")) == self.ipv6 and subnets == want \
            and net.get("Labels", {}).get(LABEL) == "fabric"

    def ensure_fabric(self) -> None:
        net = self.network_info()
        if net is not None and self._fabric_fits(net):
            self.progress(f"{self.network} exists ({', '.join(self._subnets())})")
            return
        if net is not None:
            if net.get("Labels", {}).get(LABEL) != "fabric":
                raise LabError("fabric", f"a Docker network named {self.network} exists and "
                               "was not made by the lab; remove it")
            self.progress(f"recreating {self.network} (other subnets or IPv6 setting)")
            self._remove_network()
        args = ["network", "create", "--driver", "bridge", "--label", f"{LABEL}=fabric",
                "--subnet", str(self.subnet4),
                "--gateway", str(self.subnet4.network_address + 1)]
        if self.ipv6:
            args += ["--ipv6", "--subnet", str(self.subnet6),
                     "--gateway", str(self.subnet6.network_address + 1)]
        self.docker(*args, self.network, step="fabric")
        self.progress(f"created {self.network} ({', '.join(self._subnets())})")

    def _subnets(self) -> list[str]:
        return [str(self.subnet4)] + ([str(self.subnet6)] if self.ipv6 else [])

    def start_node(self, spec: NodeSpec, image: str) -> None:
        args = ["run", "-d", "--name", spec.name, "--hostname", spec.name,
                "--label", f"{LABEL}=node", "--label", f"{LABEL}.prefix={self.prefix}",
                "--label", f"{LABEL}.spec={NODE_SPEC}",
                *NODE_RUN_FLAGS, "--network", self.network, "--ip", spec.ip4]
        if spec.ip6:
            args += ["--ip6", spec.ip6]
        self.docker(*args, image, step="nodes")
        self.progress(f"{spec.name}: started ({spec.ip4}{', ' + spec.ip6 if spec.ip6 else ''})")

    def wait_booted(self, names: Sequence[str], timeout: float = BOOT_TIMEOUT) -> None:
        """Until ``systemctl is-system-running`` says running or degraded in every node."""
        pending = list(names)
        start = time.monotonic()
        states: dict[str, str] = {}
        last_report = start
        while pending:
            for name in list(pending):
                proc = self.node_exec(name, "systemctl", "is-system-running", check=False,
                                      step="boot", timeout=20)
                state = proc.stdout.strip() or _tail(proc.stderr, 1)
                states[name] = state
                running = self.docker("inspect", "--format", "{{.State.Running}}", name,
                                      check=False, step="boot").stdout.strip()
                if running != "true":
                    logs = self.docker("logs", "--tail", "20", name, check=False,
                                       step="boot")
                    raise LabError("boot", f"{name} stopped while booting; its last output:\n"
                                   + _tail(logs.stdout + logs.stderr, 20))
                if state in ("running", "degraded"):
                    pending.remove(name)
                    note = ""
                    if state == "degraded":
                        failed = self.node_exec(
                            name, "systemctl", "list-units", "--failed", "--plain",
                            "--no-legend", check=False, step="boot").stdout.split("\n")
                        units = [u.split()[0] for u in failed if u.strip()]
                        note = f" (failed units: {', '.join(units) or 'none listed'})"
                    self.progress(f"{name}: {state} after {time.monotonic() - start:.0f}s"
                                  + note)
            if not pending:
                break
            now = time.monotonic()
            if now - start > timeout:
                details = []
                for name in pending:
                    jobs = self.node_exec(name, "systemctl", "list-jobs", "--no-pager",
                                          check=False, step="boot").stdout
                    details.append(f"{name}: {states.get(name)}; jobs:\n{_tail(jobs, 10)}")
                raise LabError("boot", f"not booted within {timeout:.0f}s: "
                               + "\n".join(details))
            if now - last_report > 20:
                last_report = now
                self.progress("waiting: " + ", ".join(f"{n} {states.get(n)}" for n in pending))
            time.sleep(1)

    def load_workload_image(self, node: str) -> None:
        """A ``busybox`` image in the node's dockerd: the node's static busybox and its
        applet links in an otherwise empty root (nothing is pulled)."""
        if self.node_exec(node, "docker", "image", "inspect", WORKLOAD_IMAGE, check=False,
                          step="workload image").returncode == 0:
            self.progress(f"{node}: {WORKLOAD_IMAGE} present")
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
        self.node_exec(node, "sh", "-c", script, step="workload image", timeout=120)
        self.progress(f"{node}: {WORKLOAD_IMAGE} imported")

    # -------------------------------------------------------------------- inventory

    def write_state(self, image: str, specs: Sequence[NodeSpec]) -> None:
        os.makedirs(self.state_dir, exist_ok=True)
        state = {"prefix": self.prefix, "network": self.network, "image": image,
                 "ipv6": self.ipv6, "subnet4": str(self.subnet4),
                 "subnet6": str(self.subnet6) if self.ipv6 else None,
                 "docker_host": self.docker_host,
                 "inventory": self.inventory_path,
                 "route_reflectors": self.route_reflectors,
                 "nodes": [{"name": s.name, "ip4": s.ip4, "ip6": s.ip6} for s in specs]}
        _write_atomic(self.state_path, json.dumps(state, indent=2) + "\n")

    def inventory(self, specs: Sequence[NodeSpec]) -> dict[str, Any]:
        """The lab's inventory as data (written as YAML-compatible JSON)."""
        hosts: dict[str, Any] = {}
        for spec in specs:
            # ansible_host is the container (the docker connection's target); BGP and etcd
            # use the fabric addresses
            host: dict[str, Any] = {"ansible_host": spec.name, "node_bgp_ipv4": spec.ip4,
                                    "etcd_address": spec.ip4}
            if spec.ip6:
                host["node_bgp_ipv6"] = spec.ip6
            if spec.index <= self.route_reflectors:  # one cluster: the reflectors peer
                host["node_rr_cluster_id"] = RR_CLUSTER_ID
            hosts[spec.name] = host
        return {
            "all": {
                "vars": {
                    "ansible_connection": "community.docker.docker",
                    "ansible_docker_extra_args": f"-H {self.docker_host}",
                    "ansible_python_interpreter": "/usr/bin/python3",
                    "ansible_user": "root",
                    # the controller side of etcd's TLS and users (calico.docker.pki): the
                    # CA, every certificate and every etcd user's password (.passwords/),
                    # kept with the lab's state (`down` removes them); etcd's
                    # authentication is on, the roles' default (etcd_auth)
                    "pki_dir": self.pki_dir,
                    **lab_variables(specs, self.ipv6, self.route_reflectors > 0),
                },
                "children": {
                    "etcd": {"hosts": {specs[0].name: {}}},
                    "calico_nodes": {"hosts": hosts},
                },
            }
        }

    def write_inventory(self, specs: Sequence[NodeSpec]) -> None:
        os.makedirs(self.state_dir, exist_ok=True)
        data = self.inventory(specs)
        try:
            import yaml  # ansible's dependency; JSON is YAML too when it is missing

            body = yaml.safe_dump(data, default_flow_style=False, sort_keys=False)
        except ImportError:
            body = json.dumps(data, indent=2) + "\n"
        text = ("# Written by `calicoctl lab up`: the lab's node containers, reached with\n"
                "# community.docker's docker connection. Rewritten on every `lab up`.\n"
                "# ansible-playbook -i THIS_FILE playbooks/site.yml (from the checkout)\n"
                + body)
        _write_atomic(self.inventory_path, text)

    # -------------------------------------------------------------------- deploy

    def deploy(self, playbook: str = "playbooks/site.yml", extra: Sequence[str] = (),
               log_name: str = "deploy.log", step: str = "deploy") -> None:
        """``ansible-playbook -i INVENTORY playbook`` from this Python's environment, with a
        line per task and the full output in the state dir's deploy.log."""
        root = repo_root()
        if root is None:
            raise LabError(step, "playbooks/site.yml not found: run from the project's "
                           "checkout (or set CALICO_LAB_REPO to it)")
        ansible = os.path.join(os.path.dirname(sys.executable), "ansible-playbook")
        if not os.path.exists(ansible):
            ansible = shutil.which("ansible-playbook") or ""
        if not ansible:
            raise LabError(step, "ansible-playbook is not installed in this Python's "
                           "environment (make deps installs it into .venv)")
        log_path = os.path.join(self.state_dir, log_name)
        env = self.docker_env()
        env.update({"ANSIBLE_CONFIG": os.path.join(root, "ansible.cfg"),
                    "ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_NOCOLOR": "1",
                    "ANSIBLE_PIPELINING": "1", "ANSIBLE_RETRY_FILES_ENABLED": "0",
                    "PYTHONUNBUFFERED": "1"})
        env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
        shown = os.path.relpath(ansible)
        self.progress(f"{ansible if shown.startswith('..') else shown} -i "
                      f"{self.inventory_path} {playbook} "
                      f"(log: {log_path})")
        self.run_playbook(ansible, playbook, root, env, log_path, extra, step)

    def run_playbook(self, ansible: str, playbook: str, root: str, env: dict[str, str],
                     log_path: str, extra: Sequence[str] = (), step: str = "deploy") -> None:
        """Run a playbook with one progress line per task; a failure names the failed
        task(s), host(s) and message(s)."""
        seen = {"tasks": 0, "recap": False, "task": ""}
        failures: dict[tuple[str, str], list[str]] = {}  # (task, message): hosts

        def on_line(line: str) -> None:
            if line.startswith("PLAY RECAP"):
                seen["recap"] = True
                self.progress("recap:")
                return
            if seen["recap"]:
                if line.strip():
                    self.progress("  " + " ".join(line.split()))
                return
            match = re.match(r"(PLAY|TASK|RUNNING HANDLER) \[(.*)\]", line)
            if match:
                if match.group(1) == "PLAY":
                    self.progress(f"play: {match.group(2)}")
                else:
                    seen["tasks"] += 1
                    seen["task"] = match.group(2)
                    self.progress(f"  [{seen['tasks']:3d}] {match.group(2)}")
                return
            match = re.match(r"(fatal|failed): \[([^\]]+)\]: (?:UNREACHABLE|FAILED)!? => (.*)",
                             line)
            if match:
                message = match.group(3)
                try:
                    message = str(json.loads(message).get("msg", message))
                except (ValueError, AttributeError):
                    pass
                failures.setdefault((seen["task"], message[:600]), []).append(
                    match.group(2))
                self.progress(f"        FAILED on {match.group(2)}: {message[:600]}")
            elif line.startswith(("ERROR!", "[ERROR]")) and not seen["task"]:
                failures.setdefault(("", line), [])
                self.progress("    " + line)

        with open(log_path, "w") as log:
            log.write(f"# {ansible} -i {self.inventory_path} {playbook}\n")
        try:
            self.stream([ansible, "-i", self.inventory_path, playbook, *extra], step,
                        env=env, cwd=root, log_path=log_path, on_line=on_line, timeout=3600)
        except LabError as exc:
            if not failures:
                raise
            texts = [(f"task '{task}' failed on {', '.join(hosts)}: " if task else "")
                     + message for (task, message), hosts in list(failures.items())[:5]]
            raise LabError(step, f"{playbook}: " + "; ".join(texts)
                           + f" (full log: {log_path})") from exc

    # -------------------------------------------------------------------- down

    def down(self) -> None:
        """Remove every lab container (and its volumes), the fabric and the state; the node
        image stays cached. Idempotent."""
        started = time.monotonic()
        self._step_total = 3
        with self.step("docker", "Docker daemon"):
            if not self._docker_answers():
                self.progress(f"no Docker daemon at {self.docker_host}: no containers or "
                              "networks to remove")
                docker_up = False
            else:
                docker_up = True
        with self.step("remove", "node containers and fabric network"):
            if docker_up:
                containers = self.lab_containers()
                for info in containers:
                    name = info["Name"].lstrip("/")
                    self.docker("rm", "-f", "-v", name, step="remove", timeout=180)
                    self.progress(f"removed {name}")
                if not containers:
                    self.progress("no node containers")
                net = self.network_info()
                if net is None:
                    self.progress(f"no network {self.network}")
                elif net.get("Labels", {}).get(LABEL) != "fabric":
                    self.progress(f"left {self.network} alone: the lab did not make it")
                else:
                    self._remove_network()
                    self.progress(f"removed {self.network}")
        with self.step("state", f"state in {self.state_dir}"):
            if os.path.isdir(self.state_dir):
                shutil.rmtree(self.state_dir)
                self.progress(f"removed {self.state_dir}")
            else:
                self.progress("no state")
        self.say(f"lab is down ({time.monotonic() - started:.0f}s); the node image stays "
                 f"cached as {image_tag()}")

    def _remove_network(self) -> None:
        proc = self.docker("network", "rm", self.network, check=False, step="fabric")
        if proc.returncode != 0 and self.network_info() is not None:
            users = self.network_info() or {}
            names = [c.get("Name") for c in (users.get("Containers") or {}).values()]
            raise LabError("fabric", f"cannot remove {self.network}: {_tail(proc.stderr)}"
                           + (f" (still attached: {', '.join(map(str, names))})"
                              if names else ""))


# ------------------------------------------------------------------------------ variables


POOL4 = "10.200.0.0/16"
POOL6 = "fd00:200::/64"


def lab_variables(specs: Sequence[NodeSpec], ipv6: bool, reflected: bool = False
                  ) -> dict[str, Any]:
    """site.yml's variables for the lab (see inventory/example/group_vars): etcd on the first
    node (over TLS with client certificates, the roles' default), the mesh (or, ``reflected``,
    route reflectors instead), one pool per IP version, networks frontend and backend on
    every node with Calico's default profile rules (members reach each other, nothing else
    gets in)."""
    pools: list[dict[str, Any]] = [{"cidr": POOL4, "nat_outgoing": True}]
    networks: list[dict[str, Any]] = [{"name": "frontend"}, {"name": "backend"}]
    if ipv6:
        pools.append({"cidr": POOL6})
        for network in networks:
            network["ipv6"] = True
    return {
        "policy_pools": pools,
        "policy_bgp": {"as_number": 64512, "node_to_node_mesh": not reflected},
        # the networks' profiles (docker_network: the plugin puts their containers there)
        "policy_profiles": [{"name": n["name"], "default_rules": True, "docker_network": True}
                            for n in networks],
        "docker_calico_networks": networks,
        # metrics on, inside each node (docs/observability.md); off by default elsewhere
        "node_agent_metrics_address": "127.0.0.1:9091",
        "docker_plugin_metrics_address": "127.0.0.1:9092",
    }


# ------------------------------------------------------------------------------ helpers


def install_packages(packages: Sequence[str], lab: Lab, step: str) -> None:
    """apt-get install what is missing (root only)."""
    if os.geteuid() != 0:
        raise LabError(step, f"{', '.join(packages)} missing; install them as root")
    lab.progress(f"installing {' '.join(packages)} with apt-get")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    lab.stream(["apt-get", "update", "-q"], step, env=env, timeout=600)
    lab.stream(["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages],
               step, env=env, timeout=1200)


def read_state(prefix: str = PREFIX, state_dir: str | None = None) -> dict[str, Any]:
    """The state ``lab up`` wrote (nodes, addresses, IPv6, inventory path)."""
    path = os.path.join(state_dir or (STATE_DIR if prefix == PREFIX
                                      else f"{STATE_DIR}-{prefix}"), "lab.json")
    try:
        with open(path) as handle:
            return json.load(handle)
    except FileNotFoundError:
        raise LabError("state", f"no lab state at {path}: run `calicoctl lab up` first") \
            from None


def _write_atomic(path: str, text: str) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as handle:
        handle.write(text)
    os.replace(tmp, path)


def _remove_tree(path: str) -> None:
    """Remove a debootstrap root; unmount anything debootstrap left mounted in it first."""
    try:
        with open("/proc/self/mountinfo") as handle:
            points = [line.split()[4] for line in handle]
    except OSError:
        points = []
    for point in sorted((p for p in points if p == path or p.startswith(path + "/")),
                        key=len, reverse=True):
        subprocess.run(["umount", "-l", point], check=False, capture_output=True)
    shutil.rmtree(path, ignore_errors=True)


def _quote(argv: Sequence[str]) -> str:
    return " ".join(a if re.fullmatch(r"[\w@%+=:,./-]+", a) else repr(a) for a in argv)


def _tail(text: str, lines: int = 8) -> str:
    kept = [line for line in text.strip().splitlines() if line.strip()][-lines:]
    return "\n".join(kept) if kept else "(no output)"


def _file_tail(path: str, lines: int = 15) -> str:
    try:
        with open(path, errors="replace") as handle:
            return _tail(handle.read()[-20000:], lines)
    except OSError:
        return "(no log)"


# ------------------------------------------------------------------------------ CLI


def cli(args: Any) -> int:
    """``calicoctl lab up|down|image`` (args from calico_lib.cli's parser)."""
    command = args.lab_command
    try:
        if command == "up":
            lab = Lab(nodes=args.nodes, ipv6=args.ipv6,
                      route_reflectors=args.route_reflectors)
            lab.up(deploy=not args.skip_deploy)
        elif command == "down":
            Lab().down()
        elif command == "image":
            lab = Lab()
            lab._step_total = 2
            with lab.step("docker", "Docker daemon"):
                lab.ensure_docker()
            with lab.step("image", "node image"):
                tag = lab.ensure_image()
            print(tag)
    except KeyboardInterrupt:
        print(f"calicoctl: lab {command} interrupted; `calicoctl lab up` resumes, "
              "`calicoctl lab down` removes what was made", file=sys.stderr)
        return 130
    return 0
