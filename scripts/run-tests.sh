#!/bin/sh
# The whole test suite (`make test`). With arguments: pytest with them, alone
# (`make test PYTEST_ARGS="-k bgp"`).
#
# Without: two parts side by side, since each mostly waits (daemons starting, BGP timers,
# lab nodes booting) and one after the other they take too long:
#   A. on this machine's dockerd: the lab's node image (built once, cached by its tag), the
#      tests marked `lab` and the longest site.yml runs over TLS (in namespaces of their
#      own), then the molecule scenario (scripts/molecule-test.sh). Its output is printed,
#      whole, when it ends.
#   B. everything else: network namespaces, real etcd and BIRD, dockerd in a namespace (all
#      the tests with a namespaced dockerd stay here: they share /run/docker/plugins).
# They share no names: A's nodes and Docker networks have their own prefixes and subnets,
# every test's namespaces a random tag. The image step starts dockerd before either needs
# it, so no test stops it under the other. Exits 1 when either part failed.
set -u
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
py=.venv/bin/python

if [ "$#" -gt 0 ]; then
    exec "$py" -m pytest -q "$@"
fi

# part A's pytest tests: those marked `lab`, and these single tests (part B runs the rest)
tests_a="tests/test_playbooks.py::test_site_over_tls_with_a_user_per_host
tests/test_playbooks.py::test_site_over_tls_with_etcd_auth_off
tests/test_playbooks.py::test_etcd_role_three_members_over_tls"

log=$(mktemp)
(
    set -e
    "$py" -m calico_lib.cli lab image
    failed=0
    "$py" -m pytest -q -p no:cacheprovider --durations=10 -m lab || failed=1
    # shellcheck disable=SC2086 # a word list
    "$py" -m pytest -q -p no:cacheprovider --durations=10 $tests_a || failed=1
    [ "$failed" -eq 0 ]
    sh scripts/molecule-test.sh
) >"$log" 2>&1 &
host_part=$!
# Ctrl-C or a kill ends both parts (each cleans up what it made)
trap 'kill "$host_part" 2>/dev/null; wait "$host_part"; rm -f "$log"; exit 130' INT TERM

status=0
set --
for t in $tests_a; do set -- "$@" "--deselect=$t"; done
"$py" -m pytest -q --durations=15 -m "not lab" "$@" || status=1

echo "==> waiting for the lab tests and the molecule scenario (on this machine's dockerd)"
wait "$host_part" || status=1
cat "$log"
rm -f "$log"
trap - INT TERM
if [ "$status" -ne 0 ]; then
    echo "make test: FAILED (see above: pytest, then the lab tests and molecule)"
fi
exit "$status"
