"""Users, roles and permissions. Every backend action calls `require`; the UI only mirrors these rules.

An actor signed in with a password may do what their role allows; one that presents an API token also only what the
token's scope allows (backend.tokens): a `read` token reads, a `write` token does what the role allows.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerifyMismatchError
from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.errors import AuthenticationFailed, Conflict, LfopsError, NotFound, PermissionDenied
from backend.store.models import User

ROLES = ("analyst", "reviewer", "admin")
BOT_ROLE = "bot"
PERMISSIONS: dict[str, frozenset[str]] = {
    "analyst": frozenset({"config.save", "run.launch", "run.cancel", "token.manage", "notify.mute", "read"}),
    # deploy.manage: reviewers decide what is merged, so they answer for what serves traffic (docs/serving.md)
    "reviewer": frozenset(
        {
            "config.save",
            "review.decide",
            "review.merge",
            "run.launch",
            "run.cancel",
            "token.manage",
            "deploy.manage",
            "notify.mute",
            "read",
        }
    ),
    "admin": frozenset(
        {
            "config.save",
            "review.decide",
            "review.merge",
            "run.launch",
            "run.cancel",
            "run.override",
            "user.manage",
            "audit.read",
            "registry.manage",
            "token.manage",
            "deploy.manage",
            "notify.manage",
            "notify.mute",
            "read",
        }
    ),
    # The retrain bot (backend.retrain.bot): it proposes change requests and reads; it never decides, merges, launches
    # or deploys. It is not in ROLES: nobody can be made a bot, and a bot cannot sign in (authenticate, actor_by_name).
    BOT_ROLE: frozenset({"config.save", "read"}),
}
# What an actor's credentials allow on top of the role: "write" (a password sign-in, a write token) allows all the
# role does, "read" (a read token, a browser session on the API) only reading.
SCOPES = ("read", "write")
READ, WRITE = SCOPES
ACTIONS = {
    "config.save": "save configs",
    "review.decide": "approve or request changes",
    "review.merge": "merge change requests",
    "run.launch": "launch runs",
    "run.cancel": "cancel runs",
    "run.override": "launch unapproved commits",
    "user.manage": "manage users",
    "audit.read": "read the audit log",
    "registry.manage": "manage the model registry",
    "token.manage": "manage their API tokens",
    "deploy.manage": "deploy, roll out or undeploy models and manage their API keys",
    "notify.manage": "manage notification targets and read their delivery log",
    "notify.mute": "mute notifications",
    "read": "read",
}
RESERVED_NAMES = frozenset({"lfops", "lfops-bot"})  # lfops' own actors in the audit log and as authors
_USERNAME_RE = re.compile(r"^[a-z][a-z0-9_.-]{1,31}$")
_hasher = PasswordHasher()


@dataclass(frozen=True)
class Actor:
    """Who is acting: a signed-in user (or the trusted proxy's user)."""

    id: int
    name: str
    role: str
    email: str
    scope: str = WRITE  # what the credentials allow on top of the role (SCOPES)

    def can(self, permission: str) -> bool:
        return self.role_allows(permission) and (self.scope == WRITE or permission == "read")

    def role_allows(self, permission: str) -> bool:
        return permission in PERMISSIONS.get(self.role, frozenset())

    @classmethod
    def of(cls, user: User, scope: str = WRITE) -> Actor:
        return cls(user.id, user.name, user.role, user.email or f"{user.name}@lfops.local", scope)


def require(actor: Actor | None, permission: str) -> Actor:
    if actor is None:
        raise PermissionDenied("sign in first")
    if not actor.can(permission):
        action = ACTIONS.get(permission, permission)
        if actor.role_allows(permission):  # the role may, the credentials may not
            raise PermissionDenied(
                f"scope: {actor.name}'s credentials are {actor.scope}-only; to {action} use a write token",
                field="scope",
            )
        raise PermissionDenied(f"{actor.name} ({actor.role}) may not {action}")
    return actor


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def new_password() -> str:
    return secrets.token_urlsafe(12)


def check_password(password: str) -> None:
    if len(password or "") < 8:
        raise LfopsError("password: must be at least 8 characters", field="password")


def add_user(session: Session, name: str, role: str, password: str, email: str = "") -> User:
    if not _USERNAME_RE.match(name or ""):
        raise LfopsError(f"name: {name!r} must be 2-32 characters: lowercase letters, digits, '_', '.', '-'")
    if role not in ROLES:
        raise LfopsError(f"role: {role!r} must be one of {', '.join(ROLES)}", field="role")
    check_password(password)
    if session.scalar(select(User).where(User.name == name)):
        raise Conflict(f"name: user {name!r} already exists")
    if name in RESERVED_NAMES:
        raise Conflict(f"name: {name!r} is reserved for lfops itself")
    user = User(name=name, role=role, email=email or f"{name}@lfops.local", password_hash=hash_password(password))
    session.add(user)
    session.flush()
    return user


def authenticate(session: Session, name: str, password: str) -> Actor:
    user = session.scalar(select(User).where(User.name == name))
    try:
        if user is None or not user.active or user.role == BOT_ROLE:
            raise AuthenticationFailed("wrong user name or password")
        if not _hasher.verify(user.password_hash, password or ""):
            raise AuthenticationFailed("wrong user name or password")
    except (VerifyMismatchError, InvalidHashError):
        raise AuthenticationFailed("wrong user name or password") from None
    return Actor.of(user)


def actor_by_name(session: Session, name: str) -> Actor:
    """For a trusted authenticating proxy: the user it names must exist and be active."""
    user = session.scalar(select(User).where(User.name == name))
    if user is None or not user.active or user.role == BOT_ROLE:
        raise NotFound(f"user {name!r} is not known to lfops")
    return Actor.of(user)
