"""The node image: a debootstrapped Debian with systemd, dockerd and what a Calico host
needs, imported with ``docker import`` and cached by its tag, a hash of its recipe."""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile

from .docker import LABEL, Docker
from .errors import LabError
from .shell import install_packages, quote, tail

IMAGE_REPO = "calico-lab-node"
CACHE_DIR = "/var/cache/calico-lab"
SUITE = "bookworm"
IMAGE_RECIPE_VERSION = "1"

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


def ensure_image(docker: Docker) -> str:
    """The node image's tag, building it first when no image carries it."""
    tag = image_tag()
    if docker.run("image", "inspect", tag, check=False, step="image").returncode == 0:
        docker.shell.progress(f"{tag} is cached")
        return tag
    build_image(docker, tag)
    return tag


def build_image(docker: Docker, tag: str) -> None:
    """debootstrap, set the root up, ``docker import`` it as ``tag`` (and ``:latest``)."""
    shell = docker.shell
    if os.geteuid() != 0:
        raise LabError("image", "building the node image needs root (debootstrap)")
    if shutil.which("debootstrap") is None:
        install_packages(["debootstrap"], shell, "image")
    mirror = apt_mirror()
    os.makedirs(CACHE_DIR, exist_ok=True)
    root = tempfile.mkdtemp(prefix="rootfs-", dir=CACHE_DIR)
    log_path = os.path.join(CACHE_DIR, "build.log")
    with open(log_path, "w") as log:
        log.write(f"building {tag} from {mirror}\n")
    shell.progress(f"building {tag}: debootstrap {SUITE} from {mirror} (a few minutes; "
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
            shell.progress("debootstrap: " + phase)
        elif line.startswith(("E:", "W: Failure")):
            shell.progress(line)

    try:
        shell.stream(["debootstrap", "--variant=minbase", "--include=" + ",".join(PACKAGES),
                      SUITE, root, mirror], "image", log_path=log_path, on_line=on_line,
                     timeout=1800)
        shell.progress("setting up the root (services, machine id, apt cache)")
        shell.stream(["chroot", root, "/bin/sh", "-c", IMAGE_SETUP], "image",
                     log_path=log_path, timeout=300)
        shell.progress(f"docker import → {tag}")
        import_root(docker, root, tag)
    finally:
        _remove_tree(root)
    docker.run("tag", tag, f"{IMAGE_REPO}:latest", step="image")
    prune_images(docker, keep=tag)


def prune_images(docker: Docker, keep: str) -> None:
    """Remove node images of older recipes (about 500 MB each) that no container uses."""
    tags = docker.run("images", IMAGE_REPO, "--format", "{{.Repository}}:{{.Tag}}",
                      step="image").stdout.split()
    for old in tags:
        if old not in (keep, f"{IMAGE_REPO}:latest"):
            if docker.run("rmi", old, check=False, step="image").returncode == 0:
                docker.shell.progress(f"removed the older image {old}")


def import_root(docker: Docker, root: str, tag: str) -> None:
    """``tar -C ROOT -c . | docker import -c CMD … - TAG``."""
    tar = subprocess.Popen(["tar", "-C", root, "--numeric-owner", "-c", "."],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    argv = ["docker", "import", "-c", 'CMD ["/lib/systemd/systemd"]',
            "-c", "ENV container=docker", "-c", f"LABEL {LABEL}=node-image", "-", tag]
    try:
        imp = subprocess.Popen(argv, stdin=tar.stdout, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, env=docker.env())
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
        raise LabError("image", f"`{quote(argv)}` exited {imp.returncode}: "
                       + tail(err.decode(errors="replace")))
    if tar.returncode != 0:
        raise LabError("image", f"tar of {root} exited {tar.returncode}: {tail(tar_err)}")


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
