#!/usr/bin/env bash
# The app's container image without a Docker engine: Debian's buildah builds the Dockerfile (as root), podman runs it.
#
#   bash scripts/image.sh build    # base (pulled, or made from Debian packages) + the Dockerfile; prints time and size
#   bash scripts/image.sh smoke    # runs the built image and checks it (uid, read-only root, health, sign-in, SIGTERM)
#   bash scripts/image.sh all      # build + smoke (what CI runs, through tests/test_image.py)
#   bash scripts/image.sh base     # only the base image; prints its name
#   bash scripts/image.sh lock     # regenerates requirements-image.lock (hashes) from requirements.lock
#
# Variables: LFOPS_IMAGE (default localhost/lfops:dev), PYTHON_IMAGE (a base to use as it is, e.g. a registry image
# pinned by digest; default: pull the Dockerfile's base, else make one locally), LFOPS_IMAGE_CACHE.
# See docs/cluster.md ("The app's image") and /work/shared/notes/container-build.md for what works on this host.
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE=${LFOPS_IMAGE:-localhost/lfops:dev}
CACHE=${LFOPS_IMAGE_CACHE:-$HOME/.cache/lfops-image}
# The production base (the Dockerfile's default): pinned by the digest of its multi-architecture index.
REGISTRY_BASE=$(sed -n 's/^ARG PYTHON_IMAGE=//p' Dockerfile)
# A base made from Debian packages when no registry can be reached. Bump BASE_REVISION when base_rootfs changes.
DEBIAN_SUITE=bookworm
BASE_PACKAGES="python3.11 python3.11-venv git tini ca-certificates"
BASE_REVISION=1
BASE_KEY=$(printf '%s|%s|%s' "$DEBIAN_SUITE" "$BASE_PACKAGES" "$BASE_REVISION" | sha256sum | cut -c1-12)
LOCAL_BASE="localhost/lfops-base:$DEBIAN_SUITE-py3.11-$BASE_KEY"

# overlay storage, chroot isolation, host network: what works as root on this kind of host (no Docker, no crun)
STORAGE=(--storage-driver overlay)
PODMAN=(podman "${STORAGE[@]}" --runtime /usr/sbin/runc --cgroup-manager cgroupfs --events-backend file)
BUILDAH=(buildah "${STORAGE[@]}")

log() { printf '[image.sh] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"

need_tools() {
  local missing=() cmd
  for cmd in buildah podman runc debootstrap; do command -v "$cmd" >/dev/null 2>&1 || missing+=("$cmd"); done
  [[ -x /usr/sbin/runc ]] || missing+=(runc)
  [[ ${#missing[@]} -eq 0 ]] && return 0
  log "installing Debian packages for: ${missing[*]}"
  $SUDO apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    buildah podman runc debootstrap uidmap conmon >&2
}

have_image() { "${BUILDAH[@]}" inspect --type image "$1" >/dev/null 2>&1; }

debian_mirror() {  # the mirror apt is configured with on this machine
  local uri
  uri=$(grep -rhoE '^(URIs:|deb) +https?://[^ ]+/debian/?( |$)' /etc/apt/sources.list /etc/apt/sources.list.d/ \
    2>/dev/null | head -1 | awk '{print $2}')
  echo "${uri:-http://deb.debian.org/debian}"
}

base_rootfs() {  # base_rootfs DIR: Debian minbase + Python 3.11, git and tini, laid out like python:3.11-slim
  local root=$1 mirror
  mirror=$(debian_mirror)
  rm -rf "$root"; mkdir -p "$root"
  log "debootstrap $DEBIAN_SUITE from $mirror"
  debootstrap --variant=minbase --include=ca-certificates "$DEBIAN_SUITE" "$root" "$mirror" >"$CACHE/debootstrap.log" 2>&1 \
    || { tail -20 "$CACHE/debootstrap.log" >&2; die "debootstrap failed (log: $CACHE/debootstrap.log)"; }
  # python3.11-venv in --include fails on a virtual dependency: install it (and the rest) afterwards
  chroot "$root" apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive chroot "$root" apt-get install -y -qq --no-install-recommends $BASE_PACKAGES >&2
  chroot "$root" apt-get clean
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/log/*.log
  ln -sf /usr/bin/python3.11 "$root/usr/local/bin/python"
  ln -sf /usr/bin/python3.11 "$root/usr/local/bin/python3"
}

cmd_base() {  # prints the base image to build on
  need_tools
  if [[ -n "${PYTHON_IMAGE:-}" ]]; then
    echo "$PYTHON_IMAGE"; return 0
  fi
  if have_image "$REGISTRY_BASE" || timeout 60 "${BUILDAH[@]}" pull -q "docker.io/library/${REGISTRY_BASE}" >/dev/null 2>&1; then
    echo "$REGISTRY_BASE"; return 0
  fi
  if have_image "$LOCAL_BASE"; then
    log "registry unreachable: using the cached local base $LOCAL_BASE"
    echo "$LOCAL_BASE"; return 0
  fi
  log "registry unreachable: making $LOCAL_BASE from Debian packages"
  mkdir -p "$CACHE"
  exec 7>"$CACHE/.base.lock"; flock 7
  local t0=$SECONDS root="$CACHE/rootfs-$BASE_KEY" ctr mnt
  base_rootfs "$root"
  ctr=$("${BUILDAH[@]}" from scratch)
  mnt=$("${BUILDAH[@]}" mount "$ctr")
  cp -a "$root"/. "$mnt"/
  "${BUILDAH[@]}" umount "$ctr" >/dev/null
  "${BUILDAH[@]}" config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin --env LANG=C.UTF-8 \
    --label "org.lfops.base-key=$BASE_KEY" --cmd python "$ctr"
  "${BUILDAH[@]}" commit -q --rm "$ctr" "$LOCAL_BASE" >/dev/null
  rm -rf "$root"
  log "base $LOCAL_BASE made in $((SECONDS - t0))s"
  echo "$LOCAL_BASE"
}

pip_cert() {  # a CA bundle for pip inside the build, when this machine's pip uses its own (a TLS-intercepting proxy)
  local cert=${PIP_CERT:-}
  [[ -n "$cert" ]] || cert=$(pip config get global.cert 2>/dev/null || true)
  [[ -n "$cert" && -s "$cert" ]] && echo "$cert"
  return 0
}

image_size() { "${PODMAN[@]}" image inspect --format '{{.Size}}' "$1"; }

cmd_build() {
  need_tools
  local base cert args t0 size
  base=$(cmd_base)
  args=(--build-arg "PYTHON_IMAGE=$base")
  cert=$(pip_cert)
  [[ -n "$cert" ]] && args+=(--secret "id=pip_cert,src=$cert")
  [[ "$base" == localhost/* ]] && args+=(--pull-never)
  # a wheelhouse on this machine, kept between builds: the build installs from it without the index (pip checks every
  # hash all the same); when this machine cannot fetch the exact files (another Python), the build uses the index
  mkdir -p "$CACHE/wheels"
  if [[ -x .venv/bin/python ]] && .venv/bin/python -m pip download -q --no-deps --require-hashes \
      -d "$CACHE/wheels" -r requirements-image.lock >&2; then
    args+=(-v "$CACHE/wheels:/wheels:ro")
  else
    log "no local wheelhouse: the build downloads from the index"
  fi
  log "building $IMAGE on $base"
  t0=$SECONDS
  # --format docker keeps HEALTHCHECK (OCI drops it); --layers reuses the dependency layer while the lock is unchanged
  "${BUILDAH[@]}" bud --isolation chroot --network host --format docker --layers "${args[@]}" -t "$IMAGE" . >&2
  size=$(image_size "$IMAGE")
  printf 'image %s: built in %ss, size %s bytes (%s MB)\n' "$IMAGE" "$((SECONDS - t0))" "$size" "$((size / 1000000))"
}

# ---- smoke test ------------------------------------------------------------------------------------------------
SMOKE=lfops-smoke-$$
SMOKE_DIR=""
smoke_cleanup() {
  "${PODMAN[@]}" rm -f -t 0 "$SMOKE" >/dev/null 2>&1 || true
  [[ -n "$SMOKE_DIR" ]] && rm -rf "$SMOKE_DIR"
  return 0
}
ok() { printf 'ok   %s\n' "$*"; }
fail() { printf 'FAIL %s\n' "$*"; "${PODMAN[@]}" logs "$SMOKE" 2>&1 | tail -30 || true; exit 1; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

cmd_smoke() {
  need_tools
  have_image "$IMAGE" || die "no image $IMAGE: run '$0 build' first"
  trap smoke_cleanup EXIT
  SMOKE_DIR=$(mktemp -d)
  local ws="$SMOKE_DIR/workspace" secrets="$SMOKE_DIR/secrets" port admin_pw out health code t0 t1 status
  mkdir -p "$ws" "$secrets"
  chown 10001:10001 "$ws"
  admin_pw="smoke-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
  printf '%s' "$admin_pw" >"$secrets/LFOPS_ADMIN_PASSWORD"
  chmod 0444 "$secrets/LFOPS_ADMIN_PASSWORD"
  port=$(free_port)
  # as a locked-down cluster runs it: read-only root (podman puts tmpfs on /tmp and /run), no capabilities,
  # no privilege escalation, the workspace a volume, the first admin's password a mounted secret file
  local run=("${PODMAN[@]}" run --network host --no-healthcheck --read-only --cap-drop ALL --security-opt no-new-privileges
    --ulimit nofile=4096:4096 --ulimit nproc=4096:4096
    -v "$ws:/workspace" -v "$secrets/LFOPS_ADMIN_PASSWORD:/run/secrets/LFOPS_ADMIN_PASSWORD:ro")

  # 1. `lfops init` in a fresh container: the admin from the secret, no password printed
  out=$("${run[@]}" --rm "$IMAGE" init --no-demo-users 2>&1) || { echo "$out"; fail "lfops init"; }
  grep -q "admin" <<<"$out" || { echo "$out"; fail "lfops init did not create the admin"; }
  grep -qF "$admin_pw" <<<"$out" && fail "lfops init printed the admin's password"
  ok "lfops init: admin created from /run/secrets/LFOPS_ADMIN_PASSWORD, no password printed"

  # 2. the WebUI (the image's entrypoint), answering its health endpoint
  t0=$SECONDS
  "${run[@]}" -d --name "$SMOKE" "$IMAGE" webui --host 127.0.0.1 --port "$port" >/dev/null
  health=""
  for _ in $(seq 180); do
    code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/healthz" || true)
    if [[ "$code" == 200 ]]; then health=/healthz; break; fi
    if [[ "$code" == 404 ]] && curl -sf -o /dev/null "http://127.0.0.1:$port/"; then
      health="/ (TODO: /healthz is not served by this build yet)"; break
    fi
    [[ "$("${PODMAN[@]}" inspect --format '{{.State.Running}}' "$SMOKE")" == true ]] || fail "the WebUI exited"
    sleep 1
  done
  [[ -n "$health" ]] || fail "no answer on port $port within 180s"
  ok "WebUI answered $health after $((SECONDS - t0))s"
  if [[ "$health" == /healthz ]]; then
    code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/readyz" || true)
    [[ "$code" == 200 ]] || fail "/readyz answered $code"
    ok "/readyz answered 200"
  fi

  # 3. who runs it, on what
  [[ "$("${PODMAN[@]}" exec "$SMOKE" id -u)" == 10001 ]] || fail "not uid 10001"
  [[ "$("${PODMAN[@]}" inspect --format '{{.HostConfig.ReadonlyRootfs}}' "$SMOKE")" == true ]] || fail "root fs writable"
  "${PODMAN[@]}" exec "$SMOKE" sh -c 'touch /opt/lfops/x' 2>/dev/null && fail "could write to /opt/lfops"
  "${PODMAN[@]}" exec "$SMOKE" python -c 'import torch; assert not torch.cuda.is_available(); torch.ones(2) @ torch.ones(2)' \
    || fail "torch does not run on CPU"
  ok "uid 10001, read-only root filesystem, torch $("${PODMAN[@]}" exec "$SMOKE" python -c 'import torch; print(torch.__version__)') on CPU"
  "${PODMAN[@]}" logs "$SMOKE" 2>&1 | grep -qF "$admin_pw" && fail "the admin's password is in the log"
  ok "no password in the container log"

  # 4. sign-in through the CLI inside the image: the admin adds two users; one saves a config, the other merges it
  local alice_pw=alice-$RANDOM$RANDOM rita_pw=rita-$RANDOM$RANDOM
  as() { local user=$1 pw=$2; shift 2; "${PODMAN[@]}" exec -i -e LFOPS_USER="$user" -e LFOPS_PASSWORD="$pw" "$SMOKE" "$@"; }
  as admin "$admin_pw" lfops user add alice --role analyst --password-stdin <<<"$alice_pw" >/dev/null || fail "user add alice"
  as admin "$admin_pw" lfops user add rita --role reviewer --password-stdin <<<"$rita_pw" >/dev/null || fail "user add rita"
  as admin wrong lfops review list >/dev/null 2>&1 && fail "a wrong password signed in"
  as alice "$alice_pw" sh -c 'git clone -q /workspace/origin.git /tmp/c && sed "s/lora_rank: 8/lora_rank: 16/" /tmp/c/configs/example.yaml >/tmp/rank16.yaml' \
    || fail "reading the seeded config"
  as alice "$alice_pw" lfops save /tmp/rank16.yaml --name rank16 -m "LoRA rank 16" >/dev/null || fail "alice: save"
  as alice "$alice_pw" lfops review approve 1 >/dev/null 2>&1 && fail "an analyst approved"
  as rita "$rita_pw" lfops review approve 1 -c "looks good" >/dev/null || fail "rita: approve"
  as rita "$rita_pw" lfops review merge 1 >/dev/null || fail "rita: merge"
  out=$(as rita "$rita_pw" lfops log)
  grep -q "Approved-by: rita" <<<"$out" || { echo "$out"; fail "no Approved-by trailer on main"; }
  ok "CLI: admin added users; alice saved, rita approved and merged change request 1 (Approved-by: rita on main)"

  # 5. SIGTERM: podman stop sends it and waits up to 30 s before SIGKILL
  t1=$(date +%s.%N)
  "${PODMAN[@]}" stop -t 30 "$SMOKE" >/dev/null
  t1=$(python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$t1" "$(date +%s.%N)")
  status=$("${PODMAN[@]}" inspect --format '{{.State.ExitCode}}' "$SMOKE")
  [[ "$status" == 0 || "$status" == 143 ]] || fail "exit code $status after SIGTERM"
  python3 -c "import sys; sys.exit(float(sys.argv[1]) >= 10)" "$t1" || fail "took ${t1}s to stop on SIGTERM"
  ok "stopped on SIGTERM in ${t1}s, exit code $status"
  local size
  size=$(image_size "$IMAGE")
  printf 'smoke passed: image %s, %s MB\n' "$IMAGE" "$((size / 1000000))"
}

# ---- lock ------------------------------------------------------------------------------------------------------
# Left out of the app image: test tools, and what torch needs only on a GPU (triton: kernels for torch.compile;
# cuda-bindings: CUDA's Python API). The CUDA runtime libraries stay: PyPI's torch links them (see docs/cluster.md).
LOCK_EXCLUDE="triton cuda-bindings cuda-pathfinder"
SETUPTOOLS="setuptools==80.9.0"  # torch wants <82, building lfops >=68

cmd_lock() {
  local venv=.venv/bin/python wheels="$CACHE/wheels" list
  [[ -x "$venv" ]] || die "no .venv (bash scripts/bootstrap.sh)"
  mkdir -p "$wheels"
  list=$(mktemp)
  # the run-time closure of the installed lfops (no extras), at the versions of requirements.lock
  "$venv" - "$LOCK_EXCLUDE" >"$list" <<'PY'
import re
import sys
from importlib import metadata

from packaging.requirements import Requirement

def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()

exclude = set(sys.argv[1].split())
dists = {norm(d.metadata["Name"]): d for d in metadata.distributions()}
seen: dict[str, frozenset] = {}
todo = [("lfops", frozenset())]
while todo:
    name, extras = todo.pop()
    key = norm(name)
    if key in exclude or (key in seen and extras <= seen[key]):
        continue
    seen[key] = seen.get(key, frozenset()) | extras
    for raw in dists[key].requires or []:
        req = Requirement(raw)
        envs = [{"extra": e} for e in (seen[key] or {""})]
        if req.marker is None or any(req.marker.evaluate(env) for env in envs):
            todo.append((req.name, frozenset(req.extras)))
seen.pop("lfops")
for key in sorted(seen):
    if key != "setuptools":
        print(f"{dists[key].metadata['Name']}=={dists[key].version}")
PY
  echo "$SETUPTOOLS" >>"$list"
  # the files this platform (linux x86_64, CPython 3.11) installs, downloaded once into the cache and hashed
  "$venv" -m pip download --no-deps --disable-pip-version-check -q -d "$wheels" -r "$list" >&2
  "$venv" - "$list" "$wheels" >requirements-image.lock <<'PY'
import hashlib
import sys
from pathlib import Path

from packaging.utils import canonicalize_name, parse_sdist_filename, parse_wheel_filename

wanted = {}
for line in Path(sys.argv[1]).read_text().split():
    name, _, version = line.partition("==")
    wanted[(canonicalize_name(name), version)] = line
hashes: dict[str, list[str]] = {}
for f in sorted(Path(sys.argv[2]).iterdir()):
    if f.name.endswith(".whl"):
        name, version, *_ = parse_wheel_filename(f.name)
    elif f.name.endswith((".tar.gz", ".zip")):
        name, version = parse_sdist_filename(f.name)
    else:
        continue
    line = wanted.get((name, str(version)))
    if line:
        hashes.setdefault(line, []).append(hashlib.sha256(f.read_bytes()).hexdigest())
missing = sorted(set(wanted.values()) - set(hashes))
if missing:
    sys.exit(f"no downloaded file for: {missing}")
print("# The app image's dependencies: generated by `bash scripts/image.sh lock` from requirements.lock (do not edit).")
print("# Installed with pip --require-hashes --no-deps: this is the whole closure. Left out: test tools, triton and")
print("# cuda-bindings (GPU-only); see docs/cluster.md. The dev venv keeps requirements.lock.")
for line in sorted(hashes, key=str.lower):
    print(f"{line} \\\n    " + " \\\n    ".join(f"--hash=sha256:{h}" for h in sorted(hashes[line])))
PY
  rm -f "$list"
  log "wrote requirements-image.lock ($(grep -c '==' requirements-image.lock) packages)"
}

case "${1:-}" in
  base) cmd_base ;;
  build) cmd_build ;;
  smoke) cmd_smoke ;;
  all) cmd_build; cmd_smoke ;;
  lock) cmd_lock ;;
  *) echo "usage: $0 {build|smoke|all|base|lock}" >&2; exit 2 ;;
esac
