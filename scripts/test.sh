#!/usr/bin/env bash
# The whole test suite on a fresh machine: venv + pinned deps, services (PostgreSQL, Chromium, Kubernetes), ruff, pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
eval "$(bash scripts/services.sh)"
export LFOPS_REQUIRE_SERVICES=1  # a missing service fails the run instead of skipping tests
.venv/bin/ruff check .
exec .venv/bin/python -m pytest "$@"
