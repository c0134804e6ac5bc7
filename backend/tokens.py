"""Personal API tokens: created by their owner (shown once), revoked by their owner or an admin, checked on each use.

A token reads `lfops_<key id>_<secret>`: the key id (12 hex digits) is its public part, shown in lists and in the audit
log, and finds the row; the secret (256 random bits) never leaves the caller. The store keeps only the sha256 of the
whole token, compared in constant time. Every token has a scope (read | write, backend.auth.SCOPES) and an expiry.
A refused token (malformed, unknown, wrong secret, revoked, expired, its user deactivated) changes nothing and is
audited without the token itself.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import joinedload

from backend import audit
from backend.auth import READ, SCOPES, WRITE, Actor, require
from backend.errors import AuthenticationFailed, LfopsError, NotFound, PermissionDenied
from backend.paging import MAX_LIMIT
from backend.store import Store
from backend.store.models import ApiToken, User, utcnow

PREFIX = "lfops_"
_TOKEN_RE = re.compile(r"^lfops_(?P<key>[0-9a-f]{12})_(?P<secret>[A-Za-z0-9_-]{43})$")
_KEY_RE = re.compile(r"^lfops_(?P<key>[0-9a-f]{12})_")
DEFAULT_DAYS = 30
MAX_DAYS = 365
_BY_KEY = select(ApiToken).options(joinedload(ApiToken.user)).where(ApiToken.key_id == bindparam("key_id"))
# `last_used_at` is written at most this often per token: a write per request would serialise readers on SQLite.
_TOUCH_EVERY = timedelta(minutes=1)


@dataclass(frozen=True)
class TokenView:
    id: int
    name: str
    key_id: str
    owner: str
    scope: str
    created_at: datetime
    expires_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None
    revoked_by: str

    @property
    def prefix(self) -> str:
        """What a user recognises the token by (its public part)."""
        return f"{PREFIX}{self.key_id}_"

    @property
    def state(self) -> str:
        if self.revoked_at is not None:
            return "revoked"
        return "expired" if self.expires_at <= utcnow() else "active"


@dataclass(frozen=True)
class NewToken:
    view: TokenView
    token: str  # the only time the token exists outside its owner's hands: shown once, never stored


def _view(row: ApiToken) -> TokenView:
    return TokenView(
        id=row.id,
        name=row.name,
        key_id=row.key_id,
        owner=row.user.name,
        scope=row.scope,
        created_at=aware(row.created_at),
        expires_at=aware(row.expires_at),
        last_used_at=aware(row.last_used_at) if row.last_used_at else None,
        revoked_at=aware(row.revoked_at) if row.revoked_at else None,
        revoked_by=row.revoked_by,
    )


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def check_scope(scope: str) -> str:
    if scope not in SCOPES:
        raise LfopsError(f"scope: {scope!r} must be one of {', '.join(SCOPES)}", field="scope")
    return scope


class Tokens:
    def __init__(self, store: Store) -> None:
        self.store = store

    # ---- the owner's verbs --------------------------------------------------------------------------------------

    def create(self, actor: Actor, name: str, scope: str = READ, expires_in_days: int | None = None) -> NewToken:
        """A new token of `actor`'s (expiring in DEFAULT_DAYS unless told); the token is in the answer only."""
        require(actor, "token.manage")
        expires_in_days = DEFAULT_DAYS if expires_in_days is None else expires_in_days
        name = (name or "").strip()
        if not 1 <= len(name) <= 100:
            raise LfopsError("name: must be 1-100 characters (what the token is for)", field="name")
        check_scope(scope)
        if not isinstance(expires_in_days, int) or not 1 <= expires_in_days <= MAX_DAYS:
            raise LfopsError(f"expires_in_days: must be from 1 to {MAX_DAYS}", field="expires_in_days")
        with self.store.session() as s:
            while True:  # 48 random bits: a clash is rare, but the column is unique
                key_id = secrets.token_hex(6)
                if s.scalar(select(ApiToken.id).where(ApiToken.key_id == key_id)) is None:
                    break
            token = f"{PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
            row = ApiToken(
                user_id=actor.id,
                name=name,
                key_id=key_id,
                secret_hash=digest(token),
                scope=scope,
                expires_at=utcnow() + timedelta(days=expires_in_days),
                revoked_by="",
            )
            s.add(row)
            s.flush()
            s.refresh(row)
            audit.record(s, actor, "token.create", f"token:{key_id}", name=name, scope=scope, days=expires_in_days)
            return NewToken(_view(row), token)

    def list(self, actor: Actor, everyone: bool = False, limit: int = MAX_LIMIT, offset: int = 0) -> list[TokenView]:
        """`actor`'s own tokens, newest first; an admin may list everyone's."""
        require(actor, "read")
        if everyone and not actor.role_allows("user.manage"):  # reading: a read token of an admin's will do
            raise PermissionDenied(f"{actor.name} ({actor.role}) may not list everyone's tokens")
        q = select(ApiToken).join(User, ApiToken.user_id == User.id).order_by(ApiToken.id.desc())
        if not everyone:
            q = q.where(ApiToken.user_id == actor.id)
        with self.store.session() as s:
            return [_view(row) for row in s.scalars(q.limit(limit).offset(offset))]

    def revoke(self, actor: Actor, token_id: int) -> TokenView:
        """Revoke a token at once: its owner may, and an admin may revoke anyone's."""
        require(actor, "token.manage")
        with self.store.session() as s:
            row = s.get(ApiToken, token_id)
            if row is None or (row.user_id != actor.id and not actor.can("user.manage")):
                raise NotFound(f"token #{token_id} does not exist", field="token")  # others' tokens stay unnamed
            if row.revoked_at is None:
                row.revoked_at, row.revoked_by = utcnow(), actor.name
                audit.record(s, actor, "token.revoke", f"token:{row.key_id}", owner=row.user.name)
            return _view(row)

    # ---- checking a presented token ----------------------------------------------------------------------------

    def authenticate(self, token: str, where: str = "") -> Actor:
        """The actor a presented token stands for, with the token's scope; AuthenticationFailed (audited) otherwise.

        `where` says what the token was presented for (e.g. "GET /api/v1/runs") for the audit log."""
        match = _TOKEN_RE.match(token or "")
        if match is None:
            # a key id is public: name it when the token has one; the rest of a bad token is never recorded
            key = _KEY_RE.match(token or "")
            raise self._refused(f"token:{key.group('key')}" if key else "token:-", "malformed token", where)
        key_id = match.group("key")
        with self.store.session() as s:
            # the token with its user in one query (this runs on every API request)
            row = s.scalar(_BY_KEY, {"key_id": key_id})
            reason = _refusal(row, token)
            if reason is None:
                user = row.user
                now = utcnow()
                if row.last_used_at is None or now - aware(row.last_used_at) > _TOUCH_EVERY:
                    s.execute(update(ApiToken).where(ApiToken.id == row.id).values(last_used_at=now))
                return Actor.of(user, scope=row.scope)
            owner = row.user.name if row is not None else ""
        raise self._refused(f"token:{key_id}", reason, where, owner)

    def refuse_scope(self, actor: Actor, needed: str, where: str) -> None:
        """Refuse (and audit) a request needing a `needed`-scope token when `actor`'s allows less; else nothing."""
        if needed == WRITE and actor.scope != WRITE:
            with self.store.session() as s:
                audit.record(s, actor, "api.refused", f"user:{actor.name}", reason="read-only token", where=where)
            raise PermissionDenied(
                f"scope: {actor.name}'s token is read-only; {where} needs a write token", field="scope"
            )

    def _refused(self, subject: str, reason: str, where: str, owner: str = "") -> AuthenticationFailed:
        """Audit a refused token (in its own transaction: the request itself changes nothing) and say why.

        The actor is unknown ("-"): whoever presented a key id is not its owner until the secret matches."""
        detail = {"reason": reason, "where": where} | ({"owner": owner} if owner else {})
        with self.store.session() as s:
            audit.record(s, "-", "api.auth_failed", subject, **detail)
        return AuthenticationFailed(f"token: {reason}", field="token")


def _refusal(row: ApiToken | None, token: str) -> str | None:
    """Why a well-formed token is refused (None: it is good). The hash is compared in constant time."""
    if row is None:
        return "unknown token"
    if not hmac.compare_digest(row.secret_hash, digest(token)):
        return "wrong secret"
    if row.revoked_at is not None:
        return "revoked token"
    if aware(row.expires_at) <= utcnow():
        return "expired token"
    if not row.user.active:
        return "the token's user is deactivated"
    return None


def aware(value: datetime) -> datetime:
    """SQLite hands back naive datetimes for timezone-aware columns; they were written in UTC."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)
