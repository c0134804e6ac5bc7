#!/usr/bin/env bash
# Install and start what the test suite talks to: PostgreSQL, Debian's Chromium, a real Kubernetes control plane and
# a real Gitea.
# Prints `export ...` lines for the test run. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"
as_postgres() { if [ -z "$SUDO" ]; then runuser -u postgres -- "$@"; else sudo -u postgres "$@"; fi; }
apt_updated=""
need_pkg() {  # need_pkg COMMAND PACKAGE...
  command -v "$1" >/dev/null 2>&1 && return 0
  [ -n "$apt_updated" ] || { $SUDO apt-get update -qq >&2; apt_updated=1; }
  shift
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@" >&2
}

# PostgreSQL (Debian 12 ships 15)
if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
  [ -n "$apt_updated" ] || { $SUDO apt-get update -qq >&2; apt_updated=1; }
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq postgresql >&2
fi
ver=$(ls /usr/lib/postgresql | sort -V | tail -1)
$SUDO pg_ctlcluster "$ver" main start >&2 2>/dev/null || true
for _ in $(seq 30); do as_postgres psql -qAtc "select 1" >/dev/null 2>&1 && break; sleep 1; done
as_postgres psql -qAt >/dev/null <<'SQL'
DO $$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'lfops_test') THEN
    CREATE ROLE lfops_test LOGIN CREATEDB PASSWORD 'lfops_test';
  END IF;
END $$;
-- DROP DATABASE ... WITH (FORCE) must be able to end an autovacuum worker that happens to be in the test database
GRANT pg_signal_backend TO lfops_test;
SQL
echo "export LFOPS_TEST_PG_URL='postgresql+psycopg://lfops_test:lfops_test@127.0.0.1:5432/postgres'"

# Chromium for the browser tests (never `playwright install`: nothing can be downloaded from there)
need_pkg chromium chromium
echo "export LFOPS_CHROMIUM=/usr/bin/chromium"

# Kubernetes control plane built from Go modules (cached by version)
if [ -x k8s/dev/cluster.sh ] || [ -f k8s/dev/cluster.sh ]; then
  # with metrics-server (kwok simulates the pods' usage), so that the HPA test scales replicas for real
  LFOPS_K8S_METRICS=1 bash k8s/dev/cluster.sh build >&2
  bash k8s/dev/cluster.sh status >/dev/null 2>&1 || bash k8s/dev/cluster.sh start >&2
  echo "export LFOPS_TEST_KUBECONFIG='$(bash k8s/dev/cluster.sh kubeconfig)'"
fi

# A real Gitea built from Go modules (cached by version) for the forge tests; `start` prints the export lines
if [ -f scripts/gitea.sh ]; then
  bash scripts/gitea.sh build >&2
  bash scripts/gitea.sh start
fi
