"""Notification targets (an admin's), each user's mutes, and the delivery log: the verbs, checked in backend.auth."""

from __future__ import annotations

import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select, update

from backend import audit
from backend.auth import Actor, require
from backend.errors import Conflict, LfopsError, NotFound
from backend.notifications.events import KINDS
from backend.notifications.sealing import Sealer
from backend.notifications.senders import apprise_url_is_valid
from backend.store import Store
from backend.store.models import AuditEvent, NotifyDelivery, NotifyMute, NotifyTarget, User, utcnow

TARGET_KINDS = ("webhook", "apprise")
DELIVERY_STATUSES = ("pending", "delivered", "failed", "muted")
_NAME_RE = re.compile(r"^[a-z][a-z0-9_.-]{0,63}$")


@dataclass(frozen=True)
class TargetView:
    id: int
    name: str
    kind: str
    address: str  # the webhook's URL; for apprise only its scheme (the rest is the secret)
    kinds: list[str]  # [] = every kind
    user: str  # "" = the team's target; else the user whose mutes apply
    created_by: str
    created_at: datetime


@dataclass(frozen=True)
class AddedTarget:
    target: TargetView
    signing_secret: str  # a webhook's, shown once; "" for apprise


@dataclass(frozen=True)
class DeliveryView:
    id: int
    target: str
    event_id: int
    kind: str
    subject: str
    status: str
    attempts: int
    last_status: int | None
    last_error: str
    created_at: datetime
    finished_at: datetime | None


def check_kinds(kinds: Sequence[str], field: str = "kind") -> list[str]:
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise LfopsError(f"{field}: {unknown[0]!r} must be one of {', '.join(KINDS)}", field=field)
    return list(dict.fromkeys(kinds))


class Targets:
    def __init__(self, store: Store, sealer: Sealer) -> None:
        self.store = store
        self.sealer = sealer

    # ---- targets (admins) -----------------------------------------------------------------------------------------

    def add(
        self, actor: Actor, name: str, kind: str, url: str, kinds: Sequence[str] = (), user: str | None = None
    ) -> AddedTarget:
        """A webhook (its signing secret is made here and shown once) or an apprise URL; both sealed for storage.
        It receives the events audited from now on."""
        require(actor, "notify.manage")
        if not _NAME_RE.match(name or ""):
            raise LfopsError(f"name: {name!r} must be 1-64 characters: lowercase letters, digits, '_', '.', '-'")
        if kind not in TARGET_KINDS:
            raise LfopsError(f"kind: {kind!r} must be webhook or apprise", field="kind")
        url = (url or "").strip()
        if kind == "webhook" and not re.match(r"^https?://[^\s/]+", url):
            raise LfopsError("url: a webhook's URL must start with http:// or https://", field="url")
        if kind == "apprise" and not apprise_url_is_valid(url):
            raise LfopsError("url: not a URL apprise knows (see its list of services)", field="url")
        kinds = check_kinds(kinds)
        signing_secret = "whsec_" + secrets.token_urlsafe(32) if kind == "webhook" else ""
        with self.store.session() as s:
            if s.scalar(select(NotifyTarget.id).where(NotifyTarget.name == name, NotifyTarget.removed_at.is_(None))):
                raise Conflict(f"name: a notification target {name!r} exists already")
            user_id = None
            if user:
                user_id = s.scalar(select(User.id).where(User.name == user))
                if user_id is None:
                    raise NotFound(f"user: {user!r} does not exist", field="user")
            old = s.scalar(select(NotifyTarget).where(NotifyTarget.name == name))
            if old is not None:  # a removed target's name is free again; its delivery log stays under a new name
                old.name = f"{name}~{old.id}"[:64]
            target = NotifyTarget(
                name=name,
                kind=kind,
                url=url if kind == "webhook" else url.split("://", 1)[0] + "://",
                secret_sealed=self.sealer.seal(signing_secret if kind == "webhook" else url),
                kinds=kinds,
                user_id=user_id,
                since_event_id=s.scalar(select(func.coalesce(func.max(AuditEvent.id), 0))),
                created_by=actor.name,
            )
            s.add(target)
            s.flush()
            audit.record(s, actor, "notify.target_add", f"notify_target:{name}", kind=kind, kinds=kinds, user=user)
            return AddedTarget(_target_view(target, user or ""), signing_secret)

    def list(self, actor: Actor) -> list[TargetView]:
        require(actor, "notify.manage")
        with self.store.session() as s:
            rows = s.execute(
                select(NotifyTarget, User.name)
                .outerjoin(User, NotifyTarget.user_id == User.id)
                .where(NotifyTarget.removed_at.is_(None))
                .order_by(NotifyTarget.name)
            ).all()
            return [_target_view(t, user or "") for t, user in rows]

    def remove(self, actor: Actor, name: str) -> None:
        """No more deliveries to it; those still waiting end as failed. Its delivery log stays."""
        require(actor, "notify.manage")
        with self.store.session() as s:
            target = s.scalar(select(NotifyTarget).where(NotifyTarget.name == name, NotifyTarget.removed_at.is_(None)))
            if target is None:
                raise NotFound(f"name: no notification target {name!r}", field="name")
            target.removed_at = utcnow()
            s.execute(
                update(NotifyDelivery)
                .where(NotifyDelivery.target_id == target.id, NotifyDelivery.status == "pending")
                .values(status="failed", last_error="target removed", finished_at=utcnow())
            )
            audit.record(s, actor, "notify.target_remove", f"notify_target:{name}")

    def deliveries(
        self, actor: Actor, target: str | None = None, status: str | None = None, limit: int = 50, offset: int = 0
    ) -> list[DeliveryView]:
        """The delivery log, newest first."""
        require(actor, "notify.manage")
        if status and status not in DELIVERY_STATUSES:
            raise LfopsError(f"status: {status!r} must be one of {', '.join(DELIVERY_STATUSES)}", field="status")
        q = (
            select(NotifyDelivery, NotifyTarget.name)
            .join(NotifyTarget, NotifyDelivery.target_id == NotifyTarget.id)
            .order_by(NotifyDelivery.id.desc())
            .limit(limit)
            .offset(offset)
        )
        if target:
            q = q.where(NotifyTarget.name == target)
        if status:
            q = q.where(NotifyDelivery.status == status)
        with self.store.session() as s:
            return [
                DeliveryView(
                    d.id,
                    name,
                    d.event_id,
                    d.kind,
                    d.subject,
                    d.status,
                    d.attempts,
                    d.last_status,
                    d.last_error,
                    d.created_at,
                    d.finished_at,
                )  # fmt: skip
                for d, name in s.execute(q).all()
            ]

    # ---- mutes (each user, their own) -----------------------------------------------------------------------------

    def mute(self, actor: Actor, kind: str) -> list[str]:
        """Nothing of `kind` goes to the actor's own targets any more; returns their mutes."""
        require(actor, "notify.mute")
        (kind,) = check_kinds([kind])
        with self.store.session() as s:
            if s.get(NotifyMute, (actor.id, kind)) is None:
                s.add(NotifyMute(user_id=actor.id, kind=kind))
                audit.record(s, actor, "notify.mute", f"user:{actor.name}", kind=kind)
        return self.mutes(actor)

    def unmute(self, actor: Actor, kind: str) -> list[str]:
        require(actor, "notify.mute")
        (kind,) = check_kinds([kind])
        with self.store.session() as s:
            row = s.get(NotifyMute, (actor.id, kind))
            if row is not None:
                s.delete(row)
                audit.record(s, actor, "notify.unmute", f"user:{actor.name}", kind=kind)
        return self.mutes(actor)

    def mutes(self, actor: Actor) -> list[str]:
        require(actor, "read")
        with self.store.session() as s:
            return sorted(s.scalars(select(NotifyMute.kind).where(NotifyMute.user_id == actor.id)))


def _target_view(t: NotifyTarget, user: str) -> TargetView:
    return TargetView(t.id, t.name, t.kind, t.url, list(t.kinds or []), user, t.created_by, t.created_at)
