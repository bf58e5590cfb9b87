#!/usr/bin/env bash
# Idempotent setup for a bare Debian 12 machine (run as root):
#   1. system packages needed by the library and its tests;
#   2. the project virtualenv .venv with the package installed editable.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

PACKAGES=(iptables ipset bird2 etcd-server iperf3 conntrack iputils-ping iproute2 python3-venv make
          docker.io busybox-static debootstrap nftables)

missing=()
for pkg in "${PACKAGES[@]}"; do
    status="$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)"
    [[ "$status" == "install ok installed" ]] || missing+=("$pkg")
done

if ((${#missing[@]})); then
    if [[ "$(id -u)" -ne 0 ]]; then
        echo "install-deps: missing packages (${missing[*]}); run this script as root" >&2
        exit 1
    fi
    echo "install-deps: installing ${missing[*]}"
    apt-get update -q
    # etcd-server may start a system etcd on 2379 where systemd runs; harmless,
    # the tests start their own etcd on free ports.
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

if [[ ! -x .venv/bin/python ]]; then
    echo "install-deps: creating .venv"
    python3 -m venv .venv
fi

# Reinstall only when pyproject.toml changed since the last install
# (-nt is also true when the stamp does not exist yet).
if [[ pyproject.toml -nt .venv/.installed ]]; then
    echo "install-deps: installing calico-docker[test] into .venv"
    .venv/bin/pip install -q -e '.[test]'
    touch .venv/.installed
fi
