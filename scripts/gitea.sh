#!/usr/bin/env bash
# Build, start and stop a real Gitea on 127.0.0.1 for the forge tests, from Go modules only.
# See docs/forge.md ("A real Gitea for the tests") for the version pin, the wrapper-module build and app.ini.
#
#   scripts/gitea.sh build    # once per version; a no-op when the binary is cached
#   scripts/gitea.sh start    # idempotent; prints `export LFOPS_TEST_GITEA_...` lines
#   scripts/gitea.sh env      # prints the export lines of the running server
#   scripts/gitea.sh status   # exit 0 when /api/v1/version answers
#   scripts/gitea.sh stop     # stops the server and removes its state (users, repos, token)
#   scripts/gitea.sh bin      # the path of the cached binary
set -euo pipefail

GITEA_VERSION=${LFOPS_GITEA_VERSION:-1.26.4}
CACHE_ROOT=${LFOPS_GITEA_CACHE:-$HOME/.cache/lfops-gitea}
KEY="v${GITEA_VERSION}"
BUILD_DIR="$CACHE_ROOT/$KEY"            # gitea binary + templates/ options/ public/ (STATIC_ROOT_PATH)
GITEA_BIN="$BUILD_DIR/gitea"
GITEA_HOME=${LFOPS_GITEA_HOME:-$HOME/.lfops-gitea}
APP_INI="$GITEA_HOME/app.ini"
ADMIN_USER=${LFOPS_GITEA_ADMIN:-lfops-admin}

GO=${GO:-$(command -v go || echo /usr/local/go/bin/go)}
[[ -x "$GO" ]] || GO=/usr/local/go/bin/go

log() { printf '[gitea.sh] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

have_build() {
  [[ -x "$GITEA_BIN" && -d "$BUILD_DIR/templates" && -d "$BUILD_DIR/options" && -d "$BUILD_DIR/public" ]]
}

go_env() {
  # the SQLite driver of this Gitea version is the CGO one (mattn/go-sqlite3)
  export GOTOOLCHAIN=local CGO_ENABLED=1 GOFLAGS=-mod=mod
  # Never let the go command reach anything but the module proxy.
  export GOPROXY=${GOPROXY:-https://proxy.golang.org}
}

cmd_build() {
  if have_build; then
    log "gitea v${GITEA_VERSION} already built in $BUILD_DIR"
    return 0
  fi
  go_env
  mkdir -p "$BUILD_DIR"
  # one build at a time per version
  exec 8>"$BUILD_DIR/.build.lock"
  flock 8
  if have_build; then
    log "gitea v${GITEA_VERSION} already built in $BUILD_DIR"
    return 0
  fi
  log "building gitea v${GITEA_VERSION} into $BUILD_DIR (Go: $("$GO" version); about 5-6 min on 2 cores)"
  local t0=$SECONDS src="$BUILD_DIR/src" tags="sqlite sqlite_unlock_notify"
  rm -rf "$src"; mkdir -p "$src"
  (
    cd "$src"
    # Gitea's go.mod has replace directives, which Go ignores in a dependency: `go install ...@v` is
    # refused. Build from a wrapper module that carries the same go line and replace lines.
    local info modfile moddir gover
    info=$("$GO" mod download -json "code.gitea.io/gitea@v${GITEA_VERSION}")
    modfile=$(sed -n 's/.*"GoMod": "\(.*\)".*/\1/p' <<<"$info")
    moddir=$(sed -n 's/.*"Dir": "\(.*\)".*/\1/p' <<<"$info")
    [[ -f "$modfile" && -d "$moddir" ]] || die "cannot download code.gitea.io/gitea@v${GITEA_VERSION}"
    gover=$(awk '$1 == "go" {print $2; exit}' "$modfile")
    "$GO" mod init lfops.local/giteabuild >/dev/null 2>&1
    "$GO" mod edit -go="$gover"
    local r
    while read -r r; do
      [[ -n "$r" ]] && "$GO" mod edit -replace="$r"
    done < <("$GO" mod edit -json "$modfile" | python3 -c '
import json, sys
for r in json.load(sys.stdin).get("Replace") or []:
    old, new = r["Old"], r["New"]
    lhs = old["Path"] + ("@" + old["Version"] if old.get("Version") else "")
    rhs = new["Path"] + ("@" + new["Version"] if new.get("Version") else "")
    print(lhs + "=" + rhs)')
    "$GO" get -tags "$tags" "code.gitea.io/gitea@v${GITEA_VERSION}"
    # no `bindata` tag: it needs generated frontend assets that the module zip lacks
    "$GO" build -trimpath -tags "$tags" -ldflags "-s -w -X main.Version=${GITEA_VERSION}" \
      -o "$BUILD_DIR/gitea.partial" code.gitea.io/gitea
    # without bindata Gitea reads these from STATIC_ROOT_PATH; copy them so the cached build
    # survives a cleaned module cache
    local d
    for d in templates options public; do
      rm -rf "$BUILD_DIR/$d.partial"
      cp -r "$moddir/$d" "$BUILD_DIR/$d.partial"
      chmod -R u+w "$BUILD_DIR/$d.partial"
      rm -rf "$BUILD_DIR/$d"; mv "$BUILD_DIR/$d.partial" "$BUILD_DIR/$d"
    done
  )
  mv -f "$BUILD_DIR/gitea.partial" "$GITEA_BIN"
  rm -rf "$src"
  have_build || die "build finished but $BUILD_DIR is incomplete"
  log "build done in $((SECONDS - t0))s"
}


# ---------------------------------------------------------------------------------------------
# start / stop / status / env
# ---------------------------------------------------------------------------------------------
# State (all of it, removed by stop): app.ini, data/ (sqlite, repositories), log/, gitea.log, pid, port, and
# credentials (mode 600: the admin password and the token made at this start; never anywhere in Git).
PID_FILE="$GITEA_HOME/gitea.pid"
CRED_FILE="$GITEA_HOME/credentials"
PORT_FILE="$GITEA_HOME/port"

gitea() { "$GITEA_BIN" --config "$APP_INI" --work-path "$GITEA_HOME" "$@" 8>&- 9>&-; }

port() { cat "$PORT_FILE" 2>/dev/null; }
url() { echo "http://127.0.0.1:$(port)"; }

api_ready() {
  [[ -f "$PORT_FILE" ]] || return 1
  curl -fsS --max-time 5 "$(url)/api/v1/version" >/dev/null 2>&1
}

# the pid in PID_FILE, if that process is a gitea running on our app.ini
our_pid() {
  local pid
  pid=$(cat "$PID_FILE" 2>/dev/null) || return 1
  [[ -n "$pid" && -r "/proc/$pid/cmdline" ]] || return 1
  { tr '\0' ' ' <"/proc/$pid/cmdline"; } 2>/dev/null | grep -qF -- "$APP_INI" || return 1
  echo "$pid"
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

random_secret() { python3 -c 'import secrets; print(secrets.token_urlsafe(24))'; }

write_app_ini() {
  local port=$1 secret_key internal_token run_user
  secret_key=$("$GITEA_BIN" generate secret SECRET_KEY 2>/dev/null | tail -1)
  internal_token=$("$GITEA_BIN" generate secret INTERNAL_TOKEN 2>/dev/null | tail -1)
  run_user=$(id -un)
  umask 077
  cat >"$APP_INI" <<INI
APP_NAME = lfops test forge
RUN_MODE = prod
RUN_USER = ${run_user}
WORK_PATH = ${GITEA_HOME}
; Gitea refuses to run as root without this; this instance is a local test server
I_AM_BEING_UNSAFE_RUNNING_AS_ROOT = true

[server]
PROTOCOL = http
HTTP_ADDR = 127.0.0.1
HTTP_PORT = ${port}
DOMAIN = 127.0.0.1
ROOT_URL = http://127.0.0.1:${port}/
DISABLE_SSH = true
START_SSH_SERVER = false
OFFLINE_MODE = true
LFS_START_SERVER = false
STATIC_ROOT_PATH = ${BUILD_DIR}
APP_DATA_PATH = ${GITEA_HOME}/data

[database]
DB_TYPE = sqlite3
PATH = ${GITEA_HOME}/data/gitea.db
SQLITE_JOURNAL_MODE = WAL

[repository]
ROOT = ${GITEA_HOME}/data/repositories
DEFAULT_BRANCH = main

[security]
INSTALL_LOCK = true
SECRET_KEY = ${secret_key}
INTERNAL_TOKEN = ${internal_token}

[service]
DISABLE_REGISTRATION = true
REQUIRE_SIGNIN_VIEW = false
DEFAULT_KEEP_EMAIL_PRIVATE = true

[webhook]
; the default ("external") never delivers to 127.0.0.1, where the tests listen
ALLOWED_HOST_LIST = loopback
DELIVER_TIMEOUT = 5

[mailer]
ENABLED = false

[actions]
ENABLED = false

[cron.update_checker]
ENABLED = false

[log]
MODE = file
LEVEL = Warn
ROOT_PATH = ${GITEA_HOME}/log
INI
}

print_env() {
  [[ -f "$CRED_FILE" ]] || die "no credentials in $CRED_FILE: run '$0 start'"
  local ADMIN_PASSWORD ADMIN_TOKEN
  source "$CRED_FILE"
  echo "export LFOPS_TEST_GITEA_URL='$(url)' LFOPS_TEST_GITEA_ADMIN='$ADMIN_USER'" \
    "LFOPS_TEST_GITEA_PASSWORD='$ADMIN_PASSWORD' LFOPS_TEST_GITEA_TOKEN='$ADMIN_TOKEN'"
}

cmd_start() {
  have_build || die "gitea not built in $BUILD_DIR: run '$0 build' first"
  mkdir -p "$GITEA_HOME"
  exec 9>"$GITEA_HOME/.lock"
  flock 9
  local t0=$SECONDS
  if our_pid >/dev/null && api_ready && [[ -f "$CRED_FILE" ]]; then
    log "gitea already running at $(url)"
    print_env
    return 0
  fi
  if [[ -f "$APP_INI" || -f "$PID_FILE" ]]; then
    log "removing stale gitea state in $GITEA_HOME"
    stop_locked
  fi
  local port=${LFOPS_GITEA_PORT:-}
  [[ -n "$port" ]] || port=$(free_port)
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    die "port $port (LFOPS_GITEA_PORT) is already in use"
  fi
  echo "$port" >"$PORT_FILE"
  mkdir -p "$GITEA_HOME/data" "$GITEA_HOME/log"
  write_app_ini "$port"
  gitea migrate >"$GITEA_HOME/migrate.log" 2>&1 || { cat "$GITEA_HOME/migrate.log" >&2; die "gitea migrate failed"; }
  local password token
  password=$(random_secret)
  gitea admin user create --username "$ADMIN_USER" --password "$password" --email "$ADMIN_USER@lfops.invalid" \
    --admin --must-change-password=false >"$GITEA_HOME/admin.log" 2>&1 \
    || { cat "$GITEA_HOME/admin.log" >&2; die "cannot create the admin user"; }
  # as root, gitea prints a warning on stdout first: the token is the last line
  token=$(gitea admin user generate-access-token --username "$ADMIN_USER" --token-name "lfops-tests-$(date +%s)" \
    --scopes all --raw 2>>"$GITEA_HOME/admin.log" | tail -1)
  [[ "$token" =~ ^[0-9a-f]{40}$ ]] || die "cannot create an access token (see $GITEA_HOME/admin.log)"
  (umask 077; printf 'ADMIN_PASSWORD=%q\nADMIN_TOKEN=%q\n' "$password" "$token" >"$CRED_FILE")
  # own session, no terminal, no inherited stdout: `eval "$(gitea.sh start)"` must not wait for the server
  setsid "$GITEA_BIN" --config "$APP_INI" --work-path "$GITEA_HOME" web \
    </dev/null >"$GITEA_HOME/gitea.log" 2>&1 8>&- 9>&- &
  echo $! >"$PID_FILE"
  local deadline=$((SECONDS + 60))
  until api_ready; do
    if ! our_pid >/dev/null; then
      tail -20 "$GITEA_HOME/gitea.log" >&2
      die "gitea exited while starting (log: $GITEA_HOME/gitea.log)"
    fi
    (( SECONDS < deadline )) || die "timed out after 60s waiting for $(url)/api/v1/version"
    sleep 0.3
  done
  log "gitea v${GITEA_VERSION} ready at $(url) in $((SECONDS - t0))s (state in $GITEA_HOME)"
  print_env
}

stop_locked() {
  local pid i
  if pid=$(our_pid); then
    kill "$pid" 2>/dev/null || true
    for i in $(seq 20); do [[ -d "/proc/$pid" ]] || break; sleep 0.25; done
    if [[ -d "/proc/$pid" ]]; then
      log "gitea ($pid) did not stop on SIGTERM; killing it"
      kill -9 "$pid" 2>/dev/null || true
    fi
  fi
  rm -rf "$GITEA_HOME/data" "$GITEA_HOME/log" "$APP_INI" "$PID_FILE" "$CRED_FILE" "$PORT_FILE" \
    "$GITEA_HOME"/*.log
}

cmd_stop() {
  mkdir -p "$GITEA_HOME"
  exec 9>"$GITEA_HOME/.lock"
  flock 9
  stop_locked
  log "gitea stopped"
}

cmd_status() {
  if our_pid >/dev/null && api_ready; then
    echo "ready at $(url)"
  else
    echo "not ready"
    return 1
  fi
}

case "${1:-}" in
  build) cmd_build ;;
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  env) api_ready || die "gitea is not running: run '$0 start'"; print_env ;;
  bin) echo "$GITEA_BIN" ;;
  *) echo "usage: $0 {build|start|stop|status|env|bin}" >&2; exit 2 ;;
esac
