"""The audit log: one row per state change, written in the same transaction as the change itself; and its search."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.auth import Actor, require
from backend.errors import LfopsError
from backend.paging import DEFAULT_LIMIT, Page
from backend.store import Store
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


@dataclass(frozen=True)
class AuditFilter:
    """What to look for: exact actor and subject; an action exactly, or all under a prefix ending in '.' ('user.');
    a time range [since, until)."""

    actor: str = ""
    action: str = ""
    subject: str = ""
    since: datetime | None = None
    until: datetime | None = None

    def check(self) -> AuditFilter:
        for name in ("actor", "action", "subject"):
            if len(getattr(self, name)) > 255:
                raise LfopsError(f"{name}: at most 255 characters", field=name)
        for name in ("since", "until"):
            value = getattr(self, name)
            if value is not None and value.tzinfo is None:
                raise LfopsError(f"{name}: give a time zone (e.g. 2026-12-01T10:00:00Z)", field=name)
        if self.since and self.until and self.since >= self.until:
            raise LfopsError("since: must be before until", field="since")
        return self


@dataclass(frozen=True)
class EventView:
    id: int
    at: datetime
    actor: str
    action: str
    subject: str
    detail: dict


def search(store: Store, actor: Actor, where: AuditFilter, limit: int = DEFAULT_LIMIT, offset: int = 0) -> Page:
    """A page of the audit log, newest first, for admins (each filter uses an index)."""
    require(actor, "audit.read")
    where.check()
    query = select(AuditEvent).order_by(AuditEvent.id.desc())
    if where.actor:
        query = query.where(AuditEvent.actor == where.actor)
    if where.action.endswith("."):
        query = query.where(AuditEvent.action.startswith(where.action, autoescape=True))
    elif where.action:
        query = query.where(AuditEvent.action == where.action)
    if where.subject:
        query = query.where(AuditEvent.subject == where.subject)
    if where.since:
        query = query.where(AuditEvent.at >= where.since)
    if where.until:
        query = query.where(AuditEvent.at < where.until)

    def fetch(n: int, skip: int) -> list[EventView]:
        with store.session() as s:
            return [
                EventView(e.id, _aware(e.at), e.actor, e.action, e.subject, e.detail or {})
                for e in s.scalars(query.limit(n).offset(skip))
            ]

    return Page.of(fetch, limit, offset)


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)
