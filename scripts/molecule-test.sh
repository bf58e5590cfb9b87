#!/bin/sh
# Run the molecule scenario (molecule/default) from the repository root: make sure the lab's
# node image exists (built once with debootstrap, then cached by its tag), then
# `molecule test`. Extra arguments go to molecule (e.g. --destroy=never).
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
export ANSIBLE_COLLECTIONS_PATH="$root${ANSIBLE_COLLECTIONS_PATH:+:$ANSIBLE_COLLECTIONS_PATH}"
export ANSIBLE_FORCE_COLOR="${ANSIBLE_FORCE_COLOR:-0}"
export PY_COLORS="${PY_COLORS:-0}"

status=0
molecule test "$@" || status=$?
exit "$status"
