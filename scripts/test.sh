#!/usr/bin/env bash
# Runs the test suite against the real local services (Redis, PostgreSQL), starting them if they are down.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/services.sh
bash scripts/fetch_ohif.sh
# Test modules run in parallel, a module per worker process (its Orthanc, browser and node fixtures stay in it):
# most tests wait on peers and subprocesses, so the cores are shared well. PACSNODE_TEST_WORKERS=0 runs in one.
exec .venv/bin/python -m pytest -n "${PACSNODE_TEST_WORKERS:-auto}" --dist loadfile "$@"
