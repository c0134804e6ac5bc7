#!/usr/bin/env bash
# End-to-end smoke test against a cluster started by k8s/dev/cluster.sh start.
# Checks: GPU Job scheduled on a gpu node and Complete; 16-GPU Job Pending with FailedScheduling;
# pod logs served from a kwok Logs object (also after Succeeded); lfops.test/fail label -> Failed.
# Uses its own namespace (lfops-smoke) and deletes it at the end.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
KUBECONFIG_PATH=$("$HERE/cluster.sh" kubeconfig)
BIN_DIR=$("$HERE/cluster.sh" bindir)
NS=lfops-smoke
k() { "$BIN_DIR/kubectl" --kubeconfig "$KUBECONFIG_PATH" "$@"; }
ok() { printf 'ok   %s\n' "$*"; }
fail() { printf 'FAIL %s\n' "$*" >&2; exit 1; }
wait_until() { # wait_until <seconds> <command...>
  local deadline=$((SECONDS + $1)); shift
  until "$@" >/dev/null 2>&1; do (( SECONDS < deadline )) || return 1; sleep 1; done
}

"$HERE/cluster.sh" status >/dev/null || fail "cluster not ready (run: k8s/dev/cluster.sh start)"
LOGDIR=$(mktemp -d)
trap 'k delete namespace "$NS" --wait=false >/dev/null 2>&1 || true; rm -rf "$LOGDIR"' EXIT
k delete namespace "$NS" --ignore-not-found --wait=true >/dev/null
k create namespace "$NS" >/dev/null
wait_until 60 k -n "$NS" get serviceaccount default || fail "no default ServiceAccount in $NS"

job() { # job <name> <gpus> [extra pod-template metadata as JSON]
  cat <<EOF
{"apiVersion":"batch/v1","kind":"Job","metadata":{"name":"$1","namespace":"$NS"},
 "spec":{"backoffLimit":0,"template":{"metadata":${3:-{\}},
  "spec":{"restartPolicy":"Never","containers":[{"name":"train","image":"lfops/llamafactory:latest",
   "resources":{"limits":{"nvidia.com/gpu":$2}}}]}}}}
EOF
}
job_cond() { [[ " $(k -n "$NS" get job "$1" -o jsonpath='{.status.conditions[*].type}') " == *" $2 "* ]]; }
pod_of() { k -n "$NS" get pods -l "job-name=$1" -o jsonpath='{.items[0].metadata.name}'; }

# (a)+(b) 1-GPU job
job ok-1gpu 1 | k apply -f - >/dev/null
wait_until 60 job_cond ok-1gpu Complete || fail "Job ok-1gpu did not complete"
POD=$(pod_of ok-1gpu)
NODE=$(k -n "$NS" get pod "$POD" -o jsonpath='{.spec.nodeName}')
PHASE=$(k -n "$NS" get pod "$POD" -o jsonpath='{.status.phase}')
[[ "$NODE" == gpu-node-* && "$PHASE" == Succeeded ]] || fail "pod $POD node=$NODE phase=$PHASE"
ok "1-GPU Job: pod $POD scheduled on $NODE, phase $PHASE, Job Complete"

# (c) 16-GPU job stays Pending
job too-big 16 | k apply -f - >/dev/null
sched_msg() {
  k -n "$NS" get events --field-selector reason=FailedScheduling -o jsonpath='{.items[*].message}' \
    | grep -q 'Insufficient nvidia.com/gpu'
}
wait_until 60 sched_msg || fail "no FailedScheduling event mentioning nvidia.com/gpu"
BIGPOD=$(pod_of too-big)
[[ "$(k -n "$NS" get pod "$BIGPOD" -o jsonpath='{.status.phase}')" == Pending ]] || fail "$BIGPOD not Pending"
ok "16-GPU Job: pod $BIGPOD Pending, FailedScheduling: Insufficient nvidia.com/gpu"

# (d) logs: a kwok Logs object named after the pod points at a CRI-format file
printf '%s stdout F step 1 loss=2.0\n%s stdout F step 2 loss=1.5\n' \
  "$(date -u +%Y-%m-%dT%H:%M:%S.%NZ)" "$(date -u +%Y-%m-%dT%H:%M:%S.%NZ)" >"$LOGDIR/train.log"
cat <<EOF | k apply -f - >/dev/null
{"apiVersion":"kwok.x-k8s.io/v1alpha1","kind":"Logs","metadata":{"name":"$POD","namespace":"$NS"},
 "spec":{"logs":[{"containers":["train"],"logsFile":"$LOGDIR/train.log"}]}}
EOF
get_log() { k get --raw "/api/v1/namespaces/$NS/pods/$POD/log?container=train" | grep -q 'step 2 loss=1.5'; }
wait_until 30 get_log || fail "pod log not served"
ok "GET /api/v1/namespaces/$NS/pods/$POD/log returns the file's lines (pod is $PHASE)"

# (e) failure injection by label
job fails 1 '{"labels":{"lfops.test/fail":"true"}}' | k apply -f - >/dev/null
wait_until 60 job_cond fails Failed || fail "Job fails did not fail"
FPOD=$(pod_of fails)
EXIT=$(k -n "$NS" get pod "$FPOD" -o jsonpath='{.status.phase} {.status.containerStatuses[0].state.terminated.exitCode} {.status.containerStatuses[0].state.terminated.reason}')
[[ "$EXIT" == "Failed 1 Error" ]] || fail "pod $FPOD: $EXIT"
ok "lfops.test/fail=true: pod $FPOD Failed (exit 1, reason Error), Job Failed ($(k -n "$NS" get job fails -o jsonpath='{.status.conditions[?(@.type=="Failed")].reason}'))"

echo "smoke test passed"
