"""A run's state derived from its Job and its pods (pure functions over the summaries the watcher keeps)."""

from __future__ import annotations

from typing import Any

from backend.runners.base import RunState, RunStatus
from backend.runners.kubernetes import manifests as km


def summarize_job(obj: dict[str, Any]) -> dict[str, Any]:
    """The few fields a run's state depends on; the watcher keeps these instead of whole objects."""
    meta, spec, status = obj.get("metadata") or {}, obj.get("spec") or {}, obj.get("status") or {}
    labels = meta.get("labels") or {}
    return {
        "name": meta.get("name"),
        "uid": meta.get("uid"),
        "run_id": labels.get(km.RUN_ID_LABEL, ""),
        "queue": labels.get(km.QUEUE_LABEL, ""),
        "deleting": bool(meta.get("deletionTimestamp")),
        "suspend": bool(spec.get("suspend")),
        "completions": spec.get("completions") or 1,
        "active": status.get("active") or 0,
        "failed": status.get("failed") or 0,
        "conditions": [
            (c.get("type"), c.get("status"), c.get("reason") or "", c.get("message") or "")
            for c in status.get("conditions") or []
        ],
    }


def _container_state(status: dict[str, Any], key: str) -> tuple[str, str, Any] | None:
    for cs in status.get("containerStatuses") or []:
        state = (cs.get("state") or {}).get(key)
        if state:
            return state.get("reason") or "", state.get("message") or "", state.get("exitCode")
    return None


def summarize_pod(obj: dict[str, Any]) -> dict[str, Any]:
    meta, spec, status = obj.get("metadata") or {}, obj.get("spec") or {}, obj.get("status") or {}
    labels, annotations = meta.get("labels") or {}, meta.get("annotations") or {}
    scheduled = next((c for c in status.get("conditions") or [] if c.get("type") == "PodScheduled"), {})
    return {
        "name": meta.get("name"),
        "job": labels.get(km.JOB_NAME_LABEL) or labels.get("job-name", ""),
        "index": annotations.get(km.COMPLETION_INDEX_ANNOTATION, ""),
        "created": meta.get("creationTimestamp") or "",
        "deleting": bool(meta.get("deletionTimestamp")),
        "phase": status.get("phase") or "Pending",
        "node": spec.get("nodeName") or "",
        "scheduled": (scheduled.get("status"), scheduled.get("reason") or "", scheduled.get("message") or ""),
        "waiting": _container_state(status, "waiting"),
        "terminated": _container_state(status, "terminated"),
        "reason": status.get("reason") or "",
        "message": status.get("message") or "",
    }


def _pod_failure(pod: dict[str, Any]) -> str:
    if pod["terminated"]:
        reason, message, code = pod["terminated"]
        text = f"pod {pod['name']}: {reason or 'terminated'} (exit code {code})"
        return f"{text}: {message}" if message else text
    return f"pod {pod['name']}: {pod['reason'] or 'failed'}" + (f": {pod['message']}" if pod["message"] else "")


def _pod_pending(pod: dict[str, Any]) -> str:
    status, reason, message = pod["scheduled"]
    if status == "False":
        return f"pod {pod['name']}: {reason or 'not scheduled'}: {message}".rstrip(": ")
    if pod["waiting"]:
        reason, message, _ = pod["waiting"]
        return f"pod {pod['name']}: {reason}" + (f": {message}" if message else "")
    if not pod["node"]:
        return f"pod {pod['name']}: waiting for the scheduler"
    return f"pod {pod['name']}: starting on {pod['node']}"


def derive_status(
    job: dict[str, Any] | None, pods: list[dict[str, Any]], *, deleted: bool = False, cancelled: str = ""
) -> RunStatus:
    """A run's state from its Job summary and its pods' summaries (see summarize_job / summarize_pod).

    `cancelled` is the reason when lfops itself deleted the Job; a Job deleted by anyone else is cancelled too.
    """
    if job is None:
        if deleted:
            return RunStatus(RunState.CANCELLED, cancelled or "the Job was deleted outside lfops")
        return RunStatus(RunState.LOST, "the Job does not exist")
    true = {ctype: (reason, message) for ctype, status, reason, message in job["conditions"] if status == "True"}
    if "Complete" in true or "SuccessCriteriaMet" in true:
        return RunStatus(RunState.SUCCEEDED)
    failed = true.get("Failed") or true.get("FailureTarget")
    pods = sorted(pods, key=lambda p: (p["index"], p["created"], p["name"]))
    if failed:
        reason = ": ".join(part for part in failed if part)
        details = [_pod_failure(p) for p in pods if p["phase"] == "Failed"]
        return RunStatus(RunState.FAILED, "; ".join([reason or "Failed", *details[:2]]))
    if job["deleting"] or deleted:
        return RunStatus(RunState.CANCELLED, cancelled or "the Job was deleted outside lfops")
    if job["suspend"]:
        queue = f" in Kueue queue {job['queue']}" if job["queue"] else ""
        return RunStatus(RunState.QUEUED, f"suspended: waiting for admission{queue}")
    live = [p for p in pods if not p["deleting"] and p["phase"] in ("Pending", "Running")]
    pending = [p for p in live if p["phase"] == "Pending"]
    if pending:
        return RunStatus(RunState.PENDING, "; ".join(_pod_pending(p) for p in pending[:2]))
    running = [p for p in live if p["phase"] == "Running"]
    if running:
        nodes = sorted({p["node"] for p in running})
        return RunStatus(RunState.RUNNING, f"{len(running)}/{job['completions']} pods running on {', '.join(nodes)}")
    failures = [_pod_failure(p) for p in pods if p["phase"] == "Failed"]
    if failures:
        return RunStatus(RunState.PENDING, f"retrying after {failures[-1]}")
    return RunStatus(RunState.PENDING, "waiting for the Job controller to create pods")
