"""WebUI sign-in sessions in the metadata store: they survive a restart and hold on every replica.

The browser's cookie carries a random session id; the store keeps only its sha256, the user, an expiry and, once it
ends, when and why (sign-out, the user deactivated, their password reset). A session is good while it is neither
expired nor revoked and its user is active, checked on every request, so a deactivation takes effect at once.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from backend.store import Store
from backend.store.models import User, WebSession, utcnow

SESSION_TTL = timedelta(hours=12)
# `last_seen_at` is written at most this often per session: a write per request would serialise readers on SQLite.
_TOUCH_EVERY = timedelta(minutes=1)


def digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


class WebSessions:
    def __init__(self, store: Store, ttl: timedelta = SESSION_TTL) -> None:
        self.store = store
        self.ttl = ttl

    def open(self, session_id: str, user_name: str) -> None:
        """Record a session the sign-in just made for `user_name` (an unknown or inactive user gets none)."""
        with self.store.session() as s:
            user = s.scalar(select(User).where(User.name == user_name, User.active.is_(True)))
            if user is None:
                return
            now = utcnow()
            s.add(WebSession(id_hash=digest(session_id), user_id=user.id, expires_at=now + self.ttl, last_seen_at=now))

    def user_of(self, session_id: str | None) -> str | None:
        """The user name a good session belongs to; None when unknown, expired, revoked or the user is inactive."""
        if not session_id:
            return None
        with self.store.session() as s:
            row = s.execute(
                select(WebSession.id, WebSession.expires_at, WebSession.last_seen_at, User.name)
                .join(User, WebSession.user_id == User.id)
                .where(
                    WebSession.id_hash == digest(session_id),
                    WebSession.revoked_at.is_(None),
                    User.active.is_(True),
                )
            ).first()
            if row is None:
                return None
            now = utcnow()
            if aware(row.expires_at) <= now:
                return None
            if row.last_seen_at is None or now - aware(row.last_seen_at) > _TOUCH_EVERY:
                s.execute(update(WebSession).where(WebSession.id == row.id).values(last_seen_at=now))
            return row.name

    def close(self, session_id: str) -> None:
        """Sign-out: the session ends on every replica."""
        with self.store.session() as s:
            s.execute(
                update(WebSession)
                .where(WebSession.id_hash == digest(session_id), WebSession.revoked_at.is_(None))
                .values(revoked_at=utcnow(), revoked_reason="signed out")
            )

    def active_count(self, user_name: str) -> int:
        with self.store.session() as s:
            rows = s.scalars(
                select(WebSession.expires_at)
                .join(User, WebSession.user_id == User.id)
                .where(User.name == user_name, WebSession.revoked_at.is_(None))
            ).all()
        now = utcnow()
        return sum(1 for expires in rows if aware(expires) > now)


def revoke_user_sessions(s: Session, user_id: int, reason: str) -> int:
    """End every open session of a user, in the caller's transaction (deactivation, password reset)."""
    return s.execute(
        update(WebSession)
        .where(WebSession.user_id == user_id, WebSession.revoked_at.is_(None))
        .values(revoked_at=utcnow(), revoked_reason=reason[:100])
    ).rowcount


def aware(value: datetime) -> datetime:
    """SQLite hands back naive datetimes for timezone-aware columns; they were written in UTC."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)
