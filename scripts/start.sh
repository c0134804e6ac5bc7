#!/usr/bin/env bash
# Start lfops on the embedded defaults: SQLite, a local bare Git repo, the local runner, a tiny demo model.
# First start creates the workspace (./.lfops) and prints the demo users' passwords once.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/lfops webui "$@"
