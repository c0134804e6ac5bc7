#!/usr/bin/env bash
# Build, start and stop a real Kubernetes control plane (etcd + kube-apiserver +
# kube-controller-manager + kube-scheduler + kwok) on this machine, from Go modules only.
# See k8s/dev/README.md.
set -euo pipefail

K8S_VERSION=${LFOPS_K8S_VERSION:-1.36.5}
ETCD_VERSION=${LFOPS_ETCD_VERSION:-3.6.16}
KWOK_VERSION=${LFOPS_KWOK_VERSION:-0.8.0}
CLUSTER_NAME=${LFOPS_K8S_CLUSTER:-lfops}

CACHE_ROOT=${LFOPS_K8S_CACHE:-$HOME/.cache/lfops-k8s}
KEY="v${K8S_VERSION}-v${ETCD_VERSION}-v${KWOK_VERSION}"
BIN_DIR="$CACHE_ROOT/$KEY/bin"
SRC_DIR="$CACHE_ROOT/$KEY/src"
K8S_HOME=${LFOPS_K8S_HOME:-$HOME/.lfops-k8s}
KUBECONFIG_PATH="$K8S_HOME/kubeconfig"
# kwokctl keeps its state (pki, pids, logs, etcd data) under KWOK_WORKDIR/clusters/<name>.
export KWOK_WORKDIR="$K8S_HOME/kwok"

GO=${GO:-$(command -v go || echo /usr/local/go/bin/go)}
[[ -x "$GO" ]] || GO=/usr/local/go/bin/go

KUBE_CMDS=(kube-apiserver kube-controller-manager kube-scheduler kubectl)
ALL_BINS=("${KUBE_CMDS[@]}" etcd kwok kwokctl)

log() { printf '[cluster.sh] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

have_all_bins() {
  local b
  for b in "${ALL_BINS[@]}"; do [[ -x "$BIN_DIR/$b" ]] || return 1; done
}

go_env() {
  export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod
  # Never let the go command reach anything but the module proxy.
  export GOPROXY=${GOPROXY:-https://proxy.golang.org}
}

build_kube() {
  local minor=${K8S_VERSION#*.}; minor=${minor%%.*}
  local staging_ver="v0.${K8S_VERSION#*.}"
  local dir="$SRC_DIR/kube"
  rm -rf "$dir"; mkdir -p "$dir"
  (
    cd "$dir"
    "$GO" mod init lfops.local/kubebuild >/dev/null 2>&1
    "$GO" mod edit -go=1.26.0 -require="k8s.io/kubernetes@v${K8S_VERSION}"
    # k8s.io/kubernetes requires its staging modules at v0.0.0 with replace => ./staging/...;
    # replace each of them with its published release.
    local modfile
    modfile=$("$GO" mod download -json "k8s.io/kubernetes@v${K8S_VERSION}" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
    [[ -f "$modfile" ]] || die "cannot download k8s.io/kubernetes@v${K8S_VERSION}"
    local m
    for m in $(awk '$1 ~ /^k8s\.io\// && $2 == "v0.0.0" {print $1}' "$modfile" | sort -u); do
      "$GO" mod edit -replace="$m=$m@$staging_ver"
    done
    local pkgs=() c
    for c in "${KUBE_CMDS[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$c@v${K8S_VERSION}"); done
    "$GO" get "${pkgs[@]}"
    local ld="-s -w"
    ld+=" -X k8s.io/component-base/version.gitVersion=v${K8S_VERSION}"
    ld+=" -X k8s.io/component-base/version.gitMajor=1"
    ld+=" -X k8s.io/component-base/version.gitMinor=${minor}"
    ld+=" -X k8s.io/component-base/version.gitTreeState=clean"
    ld+=" -X k8s.io/component-base/version.buildDate=1970-01-01T00:00:00Z"
    ld+=" -X k8s.io/client-go/pkg/version.gitVersion=v${K8S_VERSION}"
    ld+=" -X k8s.io/client-go/pkg/version.gitMajor=1"
    ld+=" -X k8s.io/client-go/pkg/version.gitMinor=${minor}"
    pkgs=(); for c in "${KUBE_CMDS[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$c"); done
    "$GO" build -trimpath -ldflags "$ld" -o "$BIN_DIR/" "${pkgs[@]}"
  )
}

build_etcd() {
  local dir="$SRC_DIR/etcd"
  rm -rf "$dir"; mkdir -p "$dir"
  (
    cd "$dir"
    # server/v3's go.mod has replace directives, so `go install ...@v` is refused; use a wrapper module.
    "$GO" mod init lfops.local/etcdbuild >/dev/null 2>&1
    "$GO" mod edit -go=1.26.0
    "$GO" get "go.etcd.io/etcd/server/v3@v${ETCD_VERSION}"
    "$GO" build -trimpath -ldflags "-s -w" -o "$BIN_DIR/etcd" go.etcd.io/etcd/server/v3
  )
}

build_kwok() {
  GOBIN="$BIN_DIR" "$GO" install -trimpath -ldflags "-s -w -X sigs.k8s.io/kwok/pkg/consts.KubeVersion=${K8S_VERSION}" \
    "sigs.k8s.io/kwok/cmd/kwok@v${KWOK_VERSION}" "sigs.k8s.io/kwok/cmd/kwokctl@v${KWOK_VERSION}"
}

cmd_build() {
  if have_all_bins; then
    log "binaries already built in $BIN_DIR"
    return 0
  fi
  go_env
  mkdir -p "$BIN_DIR" "$SRC_DIR"
  log "building into $BIN_DIR (Go: $("$GO" version))"
  local t0=$SECONDS
  for b in kube-apiserver kube-controller-manager kube-scheduler kubectl; do
    [[ -x "$BIN_DIR/$b" ]] || { log "building kubernetes v${K8S_VERSION}"; build_kube; break; }
  done
  [[ -x "$BIN_DIR/etcd" ]] || { log "building etcd v${ETCD_VERSION}"; build_etcd; }
  [[ -x "$BIN_DIR/kwok" && -x "$BIN_DIR/kwokctl" ]] || { log "building kwok v${KWOK_VERSION}"; build_kwok; }
  have_all_bins || die "build finished but binaries are missing in $BIN_DIR"
  log "build done in $((SECONDS - t0))s"
}

case "${1:-}" in
  build) cmd_build ;;
  *) echo "usage: $0 {build|start|stop|status|kubeconfig}" >&2; exit 2 ;;
esac
