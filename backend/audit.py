"""The audit log: one row per state change, written in the same transaction as the change itself."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.auth import Actor
from backend.store.models import AuditEvent


def record(session: Session, actor: Actor | str, action: str, subject: str, **detail: Any) -> AuditEvent:
    event = AuditEvent(
        actor=actor if isinstance(actor, str) else actor.name, action=action, subject=subject, detail=detail
    )
    session.add(event)
    return event


def recent(session: Session, limit: int = 100, subject: str | None = None) -> list[AuditEvent]:
    query = select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit)
    if subject:
        query = query.where(AuditEvent.subject == subject)
    return list(session.scalars(query))
