#!/bin/sh
# ansible-test integration of the calico.docker collection (run by `make lint`): the targets
# in tests/integration/targets/ (ip_pool: a pool created, checked, read back and removed in
# the embedded SQLite datastore of a temporary folder; under a minute).
#
# As scripts/sanity.sh does, the collection's content is copied into a temporary
# ansible_collections/calico/docker/ (ansible-test only works in such a folder): galaxy.yml,
# meta/, plugins/, roles/, playbooks/, changelogs/, README.md, COLLECTION.md, LICENSE and
# tests/integration/.
#
# Offline: ansible-test runs here (--local), on this machine as the managed host, with the
# project virtualenv's python3.11 (ansible-core, and calico_lib, which the modules import,
# installed editable by `make deps`); nothing is installed (no --requirements). ansible-test's
# HOME is $CALICO_SANITY_HOME, as for sanity (default ~/.cache/calico-docker-ansible-test).
# Usage: scripts/integration.sh [ansible-test integration arguments, e.g. -v or a target]
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
venv_bin="$root/.venv/bin"
ansible_test="$venv_bin/ansible-test"
[ -x "$ansible_test" ] || { echo "integration: $ansible_test missing (run make deps)" >&2; exit 1; }
"$venv_bin/python" -c "import calico_lib" 2>/dev/null || {
    echo "integration: the virtualenv's python cannot import calico_lib (run make deps)" >&2
    exit 1
}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT INT TERM
dest="$work/ansible_collections/calico/docker"
mkdir -p "$dest/tests"
cd "$root"
cp -a galaxy.yml meta plugins roles playbooks changelogs README.md COLLECTION.md LICENSE "$dest/"
cp -a tests/integration "$dest/tests/"
find "$dest" \( -name __pycache__ -o -name '*.pyc' \) -prune -exec rm -rf {} +

home=${CALICO_SANITY_HOME:-$HOME/.cache/calico-docker-ansible-test}
mkdir -p "$home"
cd "$dest"
# the virtualenv's python3.11 and ansible-core first on PATH
HOME="$home" PATH="$venv_bin:$PATH" "$ansible_test" integration --local --python 3.11 \
    --color no "$@"
