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

# Optional metrics-server (LFOPS_K8S_METRICS=1): resource metrics from kwok's simulated usage, so that a
# HorizontalPodAutoscaler really scales. Built from the Go module proxy into its own cache directory.
METRICS=${LFOPS_K8S_METRICS:-0}
METRICS_SERVER_VERSION=${LFOPS_METRICS_SERVER_VERSION:-0.8.0}
MS_DIR="$CACHE_ROOT/metrics-server-v${METRICS_SERVER_VERSION}"
# what kwokctl would download; it finds it in its manifest cache instead (made from the module's manifests/base)
MS_MANIFEST_URL="https://github.com/kubernetes-sigs/metrics-server/releases/download/v${METRICS_SERVER_VERSION}/components.yaml"

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
    "$GO" build -trimpath -ldflags "$ld" -o "$TMP_BIN/" "${pkgs[@]}"
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
    "$GO" build -trimpath -ldflags "-s -w" -o "$TMP_BIN/etcd" go.etcd.io/etcd/server/v3
  )
}

KWOK_STAGES=(
  node/fast/node-initialize.yaml
  node/heartbeat-with-lease/node-heartbeat-with-lease.yaml
  pod/fast/pod-ready.yaml
  pod/fast/pod-complete.yaml
  pod/fast/pod-delete.yaml
)

have_stages() {
  local f
  for f in "${KWOK_STAGES[@]}"; do [[ -f "$CACHE_ROOT/$KEY/stages/$(basename "$f")" ]] || return 1; done
}

copy_kwok_stages() {
  # kwokctl's built-in default stages (kustomize/stage/... in the kwok module), needed verbatim
  # because a config that defines any Stage replaces all defaults.
  local dir f
  dir=$("$GO" mod download -json "sigs.k8s.io/kwok@v${KWOK_VERSION}" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
  [[ -d "$dir" ]] || die "cannot download sigs.k8s.io/kwok@v${KWOK_VERSION}"
  mkdir -p "$CACHE_ROOT/$KEY/stages"
  for f in "${KWOK_STAGES[@]}"; do
    install -m 0644 "$dir/kustomize/stage/$f" "$CACHE_ROOT/$KEY/stages/$(basename "$f")"
  done
}

build_kwok() {
  GOBIN="$TMP_BIN" "$GO" install -trimpath -ldflags "-s -w -X sigs.k8s.io/kwok/pkg/consts.KubeVersion=${K8S_VERSION}" \
    "sigs.k8s.io/kwok/cmd/kwok@v${KWOK_VERSION}" "sigs.k8s.io/kwok/cmd/kwokctl@v${KWOK_VERSION}"
}

have_metrics_server() { [[ -x "$MS_DIR/bin/metrics-server" && -s "$MS_DIR/components.yaml" ]]; }

build_metrics_server() {
  have_metrics_server && return 0
  go_env
  mkdir -p "$MS_DIR"
  exec 7>"$MS_DIR/.build.lock"
  flock 7
  have_metrics_server && return 0
  log "building metrics-server v${METRICS_SERVER_VERSION} into $MS_DIR"
  rm -rf "$MS_DIR/bin.partial"
  # its go.mod has no replace directives; --version prints client-go's gitVersion (kwokctl parses it)
  GOBIN="$MS_DIR/bin.partial" "$GO" install -trimpath \
    -ldflags "-s -w -X k8s.io/client-go/pkg/version.gitVersion=v${METRICS_SERVER_VERSION}" \
    "sigs.k8s.io/metrics-server/cmd/metrics-server@v${METRICS_SERVER_VERSION}"
  local dir
  dir=$("$GO" mod download -json "sigs.k8s.io/metrics-server@v${METRICS_SERVER_VERSION}" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
  [[ -d "$dir/manifests/base" ]] || die "no manifests/base in sigs.k8s.io/metrics-server@v${METRICS_SERVER_VERSION}"
  "$BIN_DIR/kubectl" kustomize "$dir/manifests/base" >"$MS_DIR/components.yaml.partial"
  mv -f "$MS_DIR/components.yaml.partial" "$MS_DIR/components.yaml"
  mkdir -p "$MS_DIR/bin"; mv -f "$MS_DIR/bin.partial/metrics-server" "$MS_DIR/bin/metrics-server"
  rm -rf "$MS_DIR/bin.partial"
  exec 7>&-
}

cmd_build() {
  if [[ "$METRICS" == 1 ]] && have_all_bins; then build_metrics_server; fi
  if have_all_bins && have_stages; then
    log "binaries already built in $BIN_DIR"
    return 0
  fi
  go_env
  mkdir -p "$BIN_DIR" "$SRC_DIR"
  # one build at a time per version key
  exec 8>"$CACHE_ROOT/$KEY/.build.lock"
  flock 8
  if have_all_bins && have_stages; then
    log "binaries already built in $BIN_DIR"
    return 0
  fi
  log "building into $BIN_DIR (Go: $("$GO" version))"
  local t0=$SECONDS b
  # binaries land in TMP_BIN first and are moved into BIN_DIR only when complete
  TMP_BIN="$CACHE_ROOT/$KEY/bin.partial"
  rm -rf "$TMP_BIN"; mkdir -p "$TMP_BIN"
  for b in "${KUBE_CMDS[@]}"; do
    if [[ ! -x "$BIN_DIR/$b" ]]; then
      log "building kubernetes v${K8S_VERSION}"; build_kube
      for b in "${KUBE_CMDS[@]}"; do mv -f "$TMP_BIN/$b" "$BIN_DIR/$b"; done
      break
    fi
  done
  if [[ ! -x "$BIN_DIR/etcd" ]]; then
    log "building etcd v${ETCD_VERSION}"; build_etcd; mv -f "$TMP_BIN/etcd" "$BIN_DIR/etcd"
  fi
  if [[ ! -x "$BIN_DIR/kwok" || ! -x "$BIN_DIR/kwokctl" ]]; then
    log "building kwok v${KWOK_VERSION}"; build_kwok
    mv -f "$TMP_BIN/kwok" "$BIN_DIR/kwok"; mv -f "$TMP_BIN/kwokctl" "$BIN_DIR/kwokctl"
  fi
  rm -rf "$TMP_BIN"
  have_stages || copy_kwok_stages
  have_all_bins || die "build finished but binaries are missing in $BIN_DIR"
  if [[ "$METRICS" == 1 ]]; then build_metrics_server; fi
  log "build done in $((SECONDS - t0))s"
}


# ---------------------------------------------------------------------------------------------
# start / stop / status
# ---------------------------------------------------------------------------------------------
CLUSTER_DIR="$KWOK_WORKDIR/clusters/$CLUSTER_NAME"
CONFIG_PATH="$K8S_HOME/kwokctl.yaml"
STAGES_DIR="$CACHE_ROOT/$KEY/stages"

# fds 8/9 hold our flock()s: the daemons kwokctl forks must not inherit them
kwokctl() { PATH="$BIN_DIR:$PATH" "$BIN_DIR/kwokctl" --name "$CLUSTER_NAME" "$@" 8>&- 9>&-; }
kubectl() { "$BIN_DIR/kubectl" --kubeconfig "$KUBECONFIG_PATH" "$@"; }

api_ready() {
  [[ -f "$KUBECONFIG_PATH" && -x "$BIN_DIR/kubectl" ]] || return 1
  kubectl get --raw /readyz --request-timeout=5s >/dev/null 2>&1
}

write_config() {
  local s
  {
    cat <<YAML
apiVersion: config.kwok.x-k8s.io/v1alpha1
kind: KwokctlConfiguration
options:
  runtime: binary
  kubeVersion: v${K8S_VERSION}
  etcdVersion: ${ETCD_VERSION}
  kwokVersion: v${KWOK_VERSION}
  # every binary is local: kwokctl symlinks local paths instead of downloading
  kubeBinaryPrefix: ${BIN_DIR}
  kubeApiserverBinary: ${BIN_DIR}/kube-apiserver
  kubeControllerManagerBinary: ${BIN_DIR}/kube-controller-manager
  kubeSchedulerBinary: ${BIN_DIR}/kube-scheduler
  kubectlBinary: ${BIN_DIR}/kubectl
  etcdBinaryPrefix: ${BIN_DIR}
  etcdBinary: ${BIN_DIR}/etcd
  kwokBinaryPrefix: ${BIN_DIR}
  kwokControllerBinary: ${BIN_DIR}/kwok
  cacheDir: ${K8S_HOME}/cache
  bindAddress: 127.0.0.1
  kubeApiserverPort: ${LFOPS_K8S_APISERVER_PORT:-0}
  securePort: true
  kubeAuthorization: true
  quietPull: true
  components: [etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok-controller]
  enableCRDs: [Logs, ClusterLogs]
YAML
    if [[ "$METRICS" == 1 ]]; then
      # kwok serves /metrics/nodes/<node>/metrics/resource from simulated usage (its default Metric, and
      # usage from the pod annotations kwok.x-k8s.io/usage-cpu and -memory); metrics-server scrapes it
      cat <<YAML
  enableMetricsServer: true
  metricsServerVersion: v${METRICS_SERVER_VERSION}
  metricsServerBinary: ${MS_DIR}/bin/metrics-server
  metricsServerManifests: ["${MS_MANIFEST_URL}"]
YAML
    fi
    # kwokctl only adds its default stages when the config has no Stage at all, so ship them
    # (copied from the kwok module at build time) together with our own.
    for s in node-initialize node-heartbeat-with-lease pod-ready pod-complete pod-delete; do
      printf -- '---\n'; cat "$STAGES_DIR/$s.yaml"; printf '\n'
    done
    cat <<'YAML'
---
# lfops: a pod labelled lfops.test/fail=true goes Running -> Failed (container exit code 1).
# Optional annotations: lfops.test/fail-after (Go duration, default 1s), lfops.test/fail-reason,
# lfops.test/fail-message, lfops.test/fail-exit-code.
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: lfops-pod-fail
spec:
  resourceRef:
    apiGroup: v1
    kind: Pod
  selector:
    matchExpressions:
    - key: '.metadata.labels["lfops.test/fail"]'
      operator: 'In'
      values:
      - 'true'
    - key: '.metadata.deletionTimestamp'
      operator: 'DoesNotExist'
    - key: '.status.phase'
      operator: 'In'
      values:
      - 'Running'
  # beats pod-complete (no weight) deterministically
  weight: 10000
  delay:
    durationMilliseconds: 1000
    durationFrom:
      expressionFrom: '.metadata.annotations["lfops.test/fail-after"]'
  next:
    statusTemplate: |
      {{ $now := Now }}
      {{ $annotations := or .metadata.annotations dict }}
      {{ $reason := or ( index $annotations "lfops.test/fail-reason" ) "Error" }}
      {{ $message := or ( index $annotations "lfops.test/fail-message" ) "container failed (lfops.test/fail)" }}
      {{ $exitCode := or ( index $annotations "lfops.test/fail-exit-code" ) 1 }}
      conditions:
      - lastTransitionTime: {{ $now | Quote }}
        status: "True"
        type: Initialized
      - lastTransitionTime: {{ $now | Quote }}
        status: "False"
        reason: PodFailed
        type: Ready
      - lastTransitionTime: {{ $now | Quote }}
        status: "False"
        reason: PodFailed
        type: ContainersReady
      {{ $root := . }}
      containerStatuses:
      {{ range $index, $item := .spec.containers }}
      {{ $startedAt := $now }}
      {{ range $root.status.containerStatuses }}{{ if eq .name $item.name }}{{ with .state.running }}{{ $startedAt = .startedAt }}{{ end }}{{ end }}{{ end }}
      - image: {{ $item.image | Quote }}
        name: {{ $item.name | Quote }}
        ready: false
        restartCount: 0
        started: false
        state:
          terminated:
            exitCode: {{ $exitCode }}
            finishedAt: {{ $now | Quote }}
            reason: {{ $reason | Quote }}
            message: {{ $message | Quote }}
            startedAt: {{ $startedAt | Quote }}
      {{ end }}
      phase: Failed
---
# lfops: Job pods annotated lfops.test/run-duration=<Go duration> stay Running that long before
# they Succeed (without the annotation kwok's pod-complete makes them Succeed at once).
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: lfops-pod-complete-delayed
spec:
  resourceRef:
    apiGroup: v1
    kind: Pod
  selector:
    matchExpressions:
    - key: '.metadata.annotations["lfops.test/run-duration"]'
      operator: 'Exists'
    - key: '.metadata.labels["lfops.test/fail"]'
      operator: 'NotIn'
      values:
      - 'true'
    - key: '.metadata.deletionTimestamp'
      operator: 'DoesNotExist'
    - key: '.status.phase'
      operator: 'In'
      values:
      - 'Running'
    - key: '.metadata.ownerReferences.[].kind'
      operator: 'In'
      values:
      - 'Job'
  weight: 10000
  delay:
    durationMilliseconds: 0
    durationFrom:
      expressionFrom: '.metadata.annotations["lfops.test/run-duration"]'
  next:
    statusTemplate: |
      {{ $now := Now }}
      conditions:
      - lastTransitionTime: {{ $now | Quote }}
        status: "False"
        reason: PodCompleted
        type: Ready
      - lastTransitionTime: {{ $now | Quote }}
        status: "False"
        reason: PodCompleted
        type: ContainersReady
      {{ $root := . }}
      containerStatuses:
      {{ range $index, $item := .spec.containers }}
      {{ $startedAt := $now }}
      {{ range $root.status.containerStatuses }}{{ if eq .name $item.name }}{{ with .state.running }}{{ $startedAt = .startedAt }}{{ end }}{{ end }}{{ end }}
      - image: {{ $item.image | Quote }}
        name: {{ $item.name | Quote }}
        ready: false
        restartCount: 0
        started: false
        state:
          terminated:
            exitCode: 0
            finishedAt: {{ $now | Quote }}
            reason: Completed
            startedAt: {{ $startedAt | Quote }}
      {{ end }}
      phase: Succeeded
YAML
  } >"$CONFIG_PATH"
}

gpu_nodes_yaml() {
  local i
  for i in 0 1; do
    cat <<YAML
---
apiVersion: v1
kind: Node
metadata:
  name: gpu-node-$i
  annotations:
    kwok.x-k8s.io/node: fake
    node.alpha.kubernetes.io/ttl: "0"
    # where metrics-server reads this node's resource metrics: kwok serves every node on one port
    metrics.k8s.io/resource-metrics-path: /metrics/nodes/gpu-node-$i/metrics/resource
  labels:
    type: kwok
    kubernetes.io/arch: amd64
    kubernetes.io/hostname: gpu-node-$i
    kubernetes.io/os: linux
    kubernetes.io/role: agent
    node-role.kubernetes.io/agent: ""
    nvidia.com/gpu.present: "true"
spec: {}
status:
  allocatable:
    cpu: "32"
    memory: 256Gi
    pods: "110"
    nvidia.com/gpu: "8"
  capacity:
    cpu: "32"
    memory: 256Gi
    pods: "110"
    nvidia.com/gpu: "8"
  nodeInfo:
    architecture: amd64
    bootID: ""
    containerRuntimeVersion: ""
    kernelVersion: ""
    kubeProxyVersion: fake
    kubeletVersion: fake
    machineID: ""
    operatingSystem: linux
    osImage: ""
    systemUUID: ""
  phase: Running
YAML
  done
}

wait_for() { # wait_for <seconds> <description> <command...>
  local timeout=$1 what=$2; shift 2
  local deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    (( SECONDS < deadline )) || die "timed out after ${timeout}s waiting for $what"
    sleep 1
  done
}

nodes_ready() {
  local out
  out=$(kubectl get nodes gpu-node-0 gpu-node-1 \
    -o 'jsonpath={range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}') || return 1
  [[ "$(grep -c '^True$' <<<"$out")" == 2 ]]
}

default_sa_exists() { kubectl -n default get serviceaccount default; }

cmd_start() {
  have_all_bins || die "binaries missing in $BIN_DIR: run '$0 build' first"
  [[ -f "$STAGES_DIR/pod-complete.yaml" ]] || die "kwok stages missing in $STAGES_DIR: run '$0 build' first"
  mkdir -p "$K8S_HOME"
  exec 9>"$K8S_HOME/.lock"
  flock 9
  local t0=$SECONDS
  if [[ -f "$CLUSTER_DIR/kwok.yaml" ]] && api_ready; then
    log "cluster '$CLUSTER_NAME' already running"
  else
    if [[ -d "$CLUSTER_DIR" ]]; then
      log "removing stale cluster state in $CLUSTER_DIR"
      cmd_stop >/dev/null 2>&1 || true
    fi
    local port=${LFOPS_K8S_APISERVER_PORT:-0}
    if [[ "$port" != 0 ]] && (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      die "LFOPS_K8S_APISERVER_PORT=$port is already in use"
    fi
    write_config
    if [[ "$METRICS" == 1 ]]; then
      have_metrics_server || die "metrics-server missing in $MS_DIR: run 'LFOPS_K8S_METRICS=1 $0 build' first"
      local manifest_cache="$K8S_HOME/cache/manifest"
      mkdir -p "$manifest_cache"
      cp "$MS_DIR/components.yaml" "$manifest_cache/$(printf %s "$MS_MANIFEST_URL" | sha256sum | cut -d' ' -f1).yaml"
    fi
    log "creating cluster '$CLUSTER_NAME' (state in $CLUSTER_DIR)"
    # --kubeconfig '' : do not touch ~/.kube/config
    kwokctl -c "$CONFIG_PATH" create cluster --runtime binary --kubeconfig '' \
      --timeout 5m --wait 0s >"$K8S_HOME/kwokctl-create.log" 2>&1 || {
        cat "$K8S_HOME/kwokctl-create.log" >&2
        rm -rf "$K8S_HOME/failed-logs"; cp -r "$CLUSTER_DIR/logs" "$K8S_HOME/failed-logs" 2>/dev/null || true
        cmd_stop >/dev/null 2>&1 || true
        die "kwokctl create cluster failed (component logs kept in $K8S_HOME/failed-logs)"
      }
    kwokctl get kubeconfig >"$KUBECONFIG_PATH.tmp"
    chmod 600 "$KUBECONFIG_PATH.tmp"; mv "$KUBECONFIG_PATH.tmp" "$KUBECONFIG_PATH"
  fi
  wait_for 120 "kube-apiserver /readyz" api_ready
  gpu_nodes_yaml | kubectl apply -f - >/dev/null
  wait_for 120 "gpu nodes Ready" nodes_ready
  # the controller-manager creates the default ServiceAccount; pods are refused without it
  wait_for 120 "ServiceAccount default/default (kube-controller-manager)" default_sa_exists
  log "cluster '$CLUSTER_NAME' ready in $((SECONDS - t0))s"
  echo "$KUBECONFIG_PATH"
}

# PIDs of processes started for this cluster (their command line names the cluster dir).
cluster_pids() {
  local d pid
  for d in /proc/[0-9]*; do
    pid=${d#/proc/}
    [[ "$pid" == "$$" ]] && continue
    if { tr '\0' ' ' <"$d/cmdline"; } 2>/dev/null | grep -qF -- "$CLUSTER_DIR/"; then
      echo "$pid"
    fi
  done
}

cmd_stop() {
  mkdir -p "$K8S_HOME"
  exec 9>"$K8S_HOME/.lock"
  flock 9
  if [[ -x "$BIN_DIR/kwokctl" && -d "$CLUSTER_DIR" ]]; then
    # --kubeconfig: the file kwokctl removes its context from; point it at ours, never ~/.kube/config
    kwokctl delete cluster --kubeconfig "$KUBECONFIG_PATH" >"$K8S_HOME/kwokctl-delete.log" 2>&1 \
      || log "kwokctl delete cluster failed, see $K8S_HOME/kwokctl-delete.log"
  fi
  # kwokctl sends SIGTERM and returns; give the components a moment, then kill what is left
  local pids pid i
  for i in 1 2 3 4 5 6 7 8 9 10; do
    pids=$(cluster_pids)
    [[ -z "$pids" ]] && break
    sleep 0.5
  done
  if [[ -n "$pids" ]]; then
    log "killing leftover processes: $(echo $pids)"
    for pid in $pids; do kill "$pid" 2>/dev/null || true; done
    for i in 1 2 3 4 5 6 7 8 9 10; do
      [[ -z "$(cluster_pids)" ]] && break
      sleep 0.5
    done
    for pid in $(cluster_pids); do kill -9 "$pid" 2>/dev/null || true; done
  fi
  rm -rf "$CLUSTER_DIR"
  rm -f "$KUBECONFIG_PATH"
  log "cluster '$CLUSTER_NAME' stopped"
}

cmd_status() {
  if api_ready; then
    echo "ready"
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
  kubeconfig) echo "$KUBECONFIG_PATH" ;;
  kubectl) shift; [[ -x "$BIN_DIR/kubectl" ]] || die "kubectl not built: run '$0 build'"; exec "$BIN_DIR/kubectl" --kubeconfig "$KUBECONFIG_PATH" "$@" ;;
  bindir) echo "$BIN_DIR" ;;
  *) echo "usage: $0 {build|start|stop|status|kubeconfig|kubectl ARGS...|bindir}" >&2; exit 2 ;;
esac
