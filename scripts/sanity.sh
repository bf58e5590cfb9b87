#!/bin/sh
# ansible-test sanity of the calico.docker collection (run by `make lint`).
#
# ansible-test only works inside a folder laid out as ansible_collections/<ns>/<name>/, so
# the collection's Ansible content is copied into a temporary one: galaxy.yml, meta/,
# plugins/, roles/, playbooks/, changelogs/, the collection's tests as the tarball has them
# (tests/sanity/, the ignore file; tests/unit/, the modules' unit tests; tests/integration/,
# the integration targets), README.md, LICENSE. The Python library calico_lib is not Ansible
# content: ruff and pytest check it.
#
# ansible-test runs here (--local), in the project virtualenv; each sanity test that needs
# packages runs in a virtualenv of its own with ansible-test's pinned requirements, which it
# keeps under $CALICO_SANITY_HOME (default ~/.cache/calico-docker-ansible-test, its HOME
# while it runs): only the first run downloads them, with pip from the package index.
# ansible-test would download its pip bootstrap script (get-pip.py) from a host of its own;
# scripts/ansible-test-get-pip.py stands in for it (ensurepip, then pip from the index).
# Only Python 3.11 (the virtualenv's) is tested.
# Every sanity test ansible-test has for a collection runs (24); what cannot be done here is
# in the README ("The Ansible collection"): other Python versions, and --docker (its image
# would come from a container registry).
# Usage: scripts/sanity.sh [ansible-test sanity arguments, e.g. --test validate-modules]
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
venv_bin="$root/.venv/bin"
ansible_test="$venv_bin/ansible-test"
[ -x "$ansible_test" ] || { echo "sanity: $ansible_test missing (run make deps)" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT INT TERM
dest="$work/ansible_collections/calico/docker"
mkdir -p "$dest/tests"
cd "$root"
cp -a galaxy.yml meta plugins roles playbooks changelogs README.md COLLECTION.md LICENSE "$dest/"
cp -a tests/sanity tests/unit tests/integration "$dest/tests/"
find "$dest" \( -name __pycache__ -o -name '*.pyc' \) -prune -exec rm -rf {} +

# ansible-test's pip bootstrap, from its cache (the version its virtualenvs pin)
home=${CALICO_SANITY_HOME:-$HOME/.cache/calico-docker-ansible-test}
pip_version=$("$venv_bin/python" -c '
from types import SimpleNamespace
from ansible_test._internal.python_requirements import get_venv_packages
print(get_venv_packages(SimpleNamespace(version="3.11"))["pip"])')
cache="$home/.ansible/test/cache"
mkdir -p "$cache"
cp "$root/scripts/ansible-test-get-pip.py" "$cache/get_pip_$(echo "$pip_version" | tr . _).py"

cd "$dest"
# the virtualenv's python3.11 and ansible-core first on PATH
HOME="$home" PATH="$venv_bin:$PATH" "$ansible_test" sanity --local --python 3.11 --color no "$@"
