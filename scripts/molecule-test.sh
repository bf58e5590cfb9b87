#!/bin/sh
# Run the molecule scenario (molecule/default) from the repository root: make sure the lab's
# node image exists (built once with debootstrap, then cached by its tag), then
# `molecule test`. Extra arguments go to molecule (e.g. --destroy=never).
# The scenario deploys calico.docker as an operator installs it: the tarball
# `ansible-galaxy collection build` makes, installed offline (with the dependencies its
# metadata declares, the `ansible` package's copies standing in for Galaxy) into a folder
# of its own, the only calico.docker Ansible sees; converge runs calico.docker.site.
# Exits with molecule's exit code.
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

# the Python with calico_lib, ansible and molecule: $PYTHON, .venv, or python3 on PATH
if [ -z "${PYTHON:-}" ]; then
    if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
bindir=$(dirname "$("$PYTHON" -c 'import sys; print(sys.executable)')")
export PATH="$bindir:$PATH"

# the node image; its tag (calico-lab-node:<hash>) is the last line printed
image=$("$PYTHON" -m calico_lib.cli lab image | tail -n 1)
echo "node image: $image"

export CALICO_MOLECULE_IMAGE="$image"
export ANSIBLE_CONFIG="$root/ansible.cfg"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT INT TERM
ansible-galaxy collection build "$root" --output-path "$work" >/dev/null
"$PYTHON" - "$work" <<'PY'
import json, pathlib, sys, sysconfig, tarfile
work = pathlib.Path(sys.argv[1])
[tarball] = work.glob("calico-docker-*.tar.gz")
with tarfile.open(tarball) as tar:
    deps = json.load(tar.extractfile("MANIFEST.json"))["collection_info"]["dependencies"]
bundled = pathlib.Path(sysconfig.get_paths()["purelib"]) / "ansible_collections"
wanted = [{"name": str(tarball), "type": "file"}] + [
    {"name": str(bundled.joinpath(*fqcn.split("."))), "type": "dir"} for fqcn in deps]
(work / "requirements.yml").write_text(json.dumps({"collections": wanted}))
PY
# without the sys.path scan the `ansible` package's copies are copied, not skipped
ANSIBLE_COLLECTIONS_PATH="$work/collections" ANSIBLE_COLLECTIONS_SCAN_SYS_PATH=false \
    ansible-galaxy collection install --offline -r "$work/requirements.yml" \
    -p "$work/collections" >/dev/null
echo "calico.docker installed from its tarball into $work/collections"
# first: calico.docker and its dependencies from there; molecule's own playbooks find
# community.docker among the `ansible` package's collections
export ANSIBLE_COLLECTIONS_PATH="$work/collections"
export ANSIBLE_FORCE_COLOR="${ANSIBLE_FORCE_COLOR:-0}"
export PY_COLORS="${PY_COLORS:-0}"

status=0
molecule test "$@" || status=$?
exit "$status"
