#!/bin/sh
# ansible-test of the calico.docker collection, offline (run by `make lint`):
#   scripts/ansible-test.sh sanity [args]       every sanity test ansible-test has for a
#                                               collection (24), ignores in tests/sanity/
#   scripts/ansible-test.sh units [args]        the modules' unit tests, tests/unit/
#   scripts/ansible-test.sh integration [args]  tests/integration/targets/ (on SQLite)
#
# ansible-test only works inside a folder laid out as ansible_collections/<ns>/<name>/, so
# the collection's Ansible content is copied into a temporary one: galaxy.yml, meta/,
# plugins/, roles/, playbooks/, changelogs/, README.md, COLLECTION.md, LICENSE and the
# collection's tests (tests/sanity, tests/unit, tests/integration), as the tarball has them.
# The Python library calico_lib is not Ansible content: ruff and pytest check it.
#
# ansible-test runs here (--local) with the project virtualenv's python3.11: units and
# integration import only what it has (ansible-core, pytest, pytest-xdist since ansible-test
# runs pytest with -n, calico_lib installed editable by `make deps`); nothing is installed
# for them (no --requirements). Each sanity test that needs packages runs in a virtualenv of
# its own with ansible-test's pinned requirements, kept under $CALICO_SANITY_HOME (default
# ~/.cache/calico-docker-ansible-test, ansible-test's HOME while it runs): only the first run
# downloads them, with pip from the package index. ansible-test would download its pip
# bootstrap script (get-pip.py) from a host of its own; scripts/ansible-test-get-pip.py
# stands in for it (ensurepip, then pip from the index). Only Python 3.11 is tested; what
# cannot be done here is in the README ("The Ansible collection"): other Python versions,
# and --docker (its image would come from a container registry).
set -eu
command=${1:-}
case "$command" in
    sanity|units|integration) shift ;;
    *) echo "usage: scripts/ansible-test.sh sanity|units|integration [ansible-test arguments]" >&2
       exit 2 ;;
esac
root=$(cd "$(dirname "$0")/.." && pwd)
venv_bin="$root/.venv/bin"
ansible_test="$venv_bin/ansible-test"
[ -x "$ansible_test" ] || { echo "$command: $ansible_test missing (run make deps)" >&2; exit 1; }
for module in calico_lib yaml pytest xdist; do
    "$venv_bin/python" -c "import $module" 2>/dev/null || {
        echo "$command: the virtualenv's python cannot import $module (run make deps)" >&2
        exit 1
    }
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT INT TERM
dest="$work/ansible_collections/calico/docker"
mkdir -p "$dest/tests"
cd "$root"
cp -a galaxy.yml meta plugins roles playbooks changelogs README.md COLLECTION.md LICENSE "$dest/"
cp -a tests/sanity tests/unit tests/integration "$dest/tests/"
find "$dest" \( -name __pycache__ -o -name '*.pyc' \) -prune -exec rm -rf {} +

home=${CALICO_SANITY_HOME:-$HOME/.cache/calico-docker-ansible-test}
if [ "$command" = sanity ]; then
    # ansible-test's pip bootstrap, from its cache (the version its virtualenvs pin)
    pip_version=$("$venv_bin/python" -c '
from types import SimpleNamespace
from ansible_test._internal.python_requirements import get_venv_packages
print(get_venv_packages(SimpleNamespace(version="3.11"))["pip"])')
    cache="$home/.ansible/test/cache"
    mkdir -p "$cache"
    cp "$root/scripts/ansible-test-get-pip.py" "$cache/get_pip_$(echo "$pip_version" | tr . _).py"
fi
mkdir -p "$home"

cd "$dest"
# the virtualenv's python3.11 and ansible-core first on PATH
HOME="$home" PATH="$venv_bin:$PATH" "$ansible_test" "$command" --local --python 3.11 \
    --color no "$@"
