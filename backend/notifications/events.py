"""The events people are notified of, derived from the audit log: every state change is audited in the transaction
that makes it (backend.audit), so the audit log is the outbox and no feature module knows about notifications."""

from __future__ import annotations

from typing import Any

from backend.store.models import AuditEvent

# kind -> what it means (the kinds a target subscribes to and a user mutes)
KINDS: dict[str, str] = {
    "review.requested": "a change request waits for review",
    "review.approved": "a change request was approved",
    "review.merged": "a change request was merged",
    "run.succeeded": "a run finished",
    "run.failed": "a run failed or was lost",
    "model.registered": "a model version was registered",
    "model.drift": "a drift was declared on a deployment's requests (audited as monitoring.drift_declared)",
}
# audit action -> kind; actions not named here notify nobody
KIND_OF_ACTION: dict[str, str] = {
    "config.save": "review.requested",
    "review.approved": "review.approved",
    "review.merge": "review.merged",
    "run.succeeded": "run.succeeded",
    "run.failed": "run.failed",
    "run.lost": "run.failed",
    "registry.register": "model.registered",
    "monitoring.drift_declared": "model.drift",
}


def kind_of(action: str) -> str | None:
    return KIND_OF_ACTION.get(action)


def payload(event: AuditEvent, kind: str, delivery_id: int) -> dict[str, Any]:
    """The JSON a webhook receives (and the text of a chat message): what happened, to what, by whom, when."""
    return {
        "kind": kind,
        "summary": summary(event, kind),
        "delivery": delivery_id,  # the same on every retry: a receiver drops what it has seen
        "event": event.id,
        "action": event.action,
        "subject": event.subject,
        "actor": event.actor,
        "at": event.at.isoformat(),
        "detail": event.detail or {},
    }


def summary(event: AuditEvent, kind: str) -> str:
    reason = (event.detail or {}).get("reason") or ""
    text = f"{event.subject}: {KINDS[kind]}" + (f" ({reason})" if reason else "")
    return text if event.actor in ("lfops", "-") else f"{text}, by {event.actor}"
