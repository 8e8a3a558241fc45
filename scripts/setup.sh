#!/usr/bin/env bash
# Idempotent set-up: Debian tools the tests use (when root), then .venv with pacsnode.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(dcmtk dicom3tools orthanc orthanc-dicomweb chromium systemd)
missing=()
command -v npm >/dev/null || missing+=(npm)  # fetches the OHIF viewer for the viewer tests
for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
    if [[ $(id -u) -eq 0 ]]; then
        echo "setup: installing Debian packages: ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    else
        echo "setup: not root; install these Debian packages yourself: ${missing[*]}" >&2
    fi
fi

PYTHON=${PYTHON:-python3}
if [[ ! -x .venv/bin/python ]]; then
    "$PYTHON" -m venv .venv
fi
stamp=.venv/.pacsnode-setup
if [[ ! -f $stamp || pyproject.toml -nt $stamp ]]; then
    .venv/bin/pip install -q --upgrade pip
    # torch first and pinned: the CPU build; an unpinned torch would pull a CUDA build.
    .venv/bin/pip install -q "torch==2.13.0"
    .venv/bin/pip install -q -e ".[test]"
    touch "$stamp"
fi
echo "setup: ready (.venv/bin/pacsnode)"
