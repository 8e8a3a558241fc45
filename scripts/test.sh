#!/usr/bin/env bash
# Runs the test suite against the real local services (Redis, PostgreSQL), starting them if they are down.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/services.sh
bash scripts/fetch_ohif.sh
exec .venv/bin/python -m pytest "$@"
