#!/bin/sh
# ansible-test units of the calico.docker collection (run by `make lint`): the modules' unit
# tests, tests/unit/plugins/modules/, as ansible-test runs them for a collection.
#
# As scripts/sanity.sh does, the collection's content is copied into a temporary
# ansible_collections/calico/docker/ (ansible-test only works in such a folder): galaxy.yml,
# meta/, plugins/, roles/, playbooks/, changelogs/, README.md, COLLECTION.md, LICENSE and
# tests/unit/. The same tests also run under the project's pytest from the checkout
# (`make test`); those that need the project's test infrastructure (root network
# namespaces, a real etcd, ansible-playbook runs) are project tests under tests/.
#
# Offline: ansible-test runs here (--local) with the project virtualenv's python3.11, which
# has everything the tests import: ansible-core, pytest and pytest-xdist (ansible-test runs
# pytest with -n), PyYAML, and calico_lib (installed editable by `make deps`). No
# requirements are installed (no --requirements; there is no tests/unit/requirements.txt).
# ansible-test's HOME is $CALICO_SANITY_HOME, as for sanity (default
# ~/.cache/calico-docker-ansible-test).
# Usage: scripts/units.sh [ansible-test units arguments, e.g. -v or a test file]
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
venv_bin="$root/.venv/bin"
ansible_test="$venv_bin/ansible-test"
[ -x "$ansible_test" ] || { echo "units: $ansible_test missing (run make deps)" >&2; exit 1; }
for module in pytest xdist calico_lib yaml; do
    "$venv_bin/python" -c "import $module" 2>/dev/null || {
        echo "units: the virtualenv's python cannot import $module (run make deps;" \
             "ansible-test units needs pytest-xdist)" >&2
        exit 1
    }
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT INT TERM
dest="$work/ansible_collections/calico/docker"
mkdir -p "$dest/tests"
cd "$root"
cp -a galaxy.yml meta plugins roles playbooks changelogs README.md COLLECTION.md LICENSE "$dest/"
cp -a tests/unit "$dest/tests/"
find "$dest" \( -name __pycache__ -o -name '*.pyc' \) -prune -exec rm -rf {} +

home=${CALICO_SANITY_HOME:-$HOME/.cache/calico-docker-ansible-test}
mkdir -p "$home"
cd "$dest"
# the virtualenv's python3.11 and ansible-core first on PATH
HOME="$home" PATH="$venv_bin:$PATH" "$ansible_test" units --local --python 3.11 --color no "$@"
