"""User administration (admins): add, change a role, deactivate and reactivate, reset a password, delete.

One rule guards all of them (`_keep_an_admin`): no change may leave the workspace without an active admin. The rows
of the remaining admins are locked while it counts (FOR UPDATE on PostgreSQL; SQLite writes one at a time), so two
admins demoting each other at once cannot both succeed. Every change is audited in its own transaction; deactivating
a user or resetting their password ends their WebUI sessions at once (their API tokens stop working while they are
inactive: backend.tokens checks the user on each use).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, exists, select
from sqlalchemy.orm import Session

from backend import audit
from backend.auth import ROLES, Actor, add_user, check_password, hash_password, new_password, require
from backend.errors import Conflict, LfopsError, NotFound
from backend.sessions import aware, revoke_user_sessions
from backend.store import Store
from backend.store.models import ApiToken, ChangeRequest, Review, Run, User, WebSession


@dataclass(frozen=True)
class UserView:
    id: int
    name: str
    email: str
    role: str
    active: bool
    created_at: datetime


def _view(user: User) -> UserView:
    return UserView(user.id, user.name, user.email, user.role, user.active, aware(user.created_at))


def check_role(role: str) -> str:
    if role not in ROLES:
        raise LfopsError(f"role: {role!r} must be one of {', '.join(ROLES)}", field="role")
    return role


class Users:
    def __init__(self, store: Store) -> None:
        self.store = store

    def list(self, actor: Actor, limit: int = 200, offset: int = 0) -> list[UserView]:
        require(actor, "user.manage")
        with self.store.session() as s:
            return [_view(u) for u in s.scalars(select(User).order_by(User.name).limit(limit).offset(offset))]

    def get(self, actor: Actor, name: str) -> UserView:
        require(actor, "user.manage")
        with self.store.session() as s:
            return _view(_user(s, name))

    def add(self, actor: Actor, name: str, role: str, password: str = "", email: str = "") -> tuple[UserView, str]:
        """A new active user; returns it and its password (generated when none is given: show it once)."""
        require(actor, "user.manage")
        password = password or new_password()
        with self.store.session() as s:
            user = add_user(s, name, role, password, email)
            audit.record(s, actor, "user.add", f"user:{user.name}", role=user.role)
            return _view(user), password

    def set_role(self, actor: Actor, name: str, role: str) -> UserView:
        return self.change(actor, name, role=role)

    def set_active(self, actor: Actor, name: str, active: bool) -> UserView:
        """Deactivate (sessions end, tokens stop working, sign-in refused) or reactivate a user."""
        return self.change(actor, name, active=active)

    def change(self, actor: Actor, name: str, role: str | None = None, active: bool | None = None) -> UserView:
        """A new role and/or activity for `name`, in one transaction: all of it or (refused) nothing."""
        require(actor, "user.manage")
        if role is not None:
            check_role(role)
        with self.store.session() as s:
            user = _user(s, name)
            new_role = user.role if role is None else role
            new_active = user.active if active is None else active
            _keep_an_admin(s, user, role=new_role, active=new_active)
            if new_role != user.role:
                audit.record(s, actor, "user.role", f"user:{name}", role=new_role, was=user.role)
                user.role = new_role
            if new_active != user.active:
                user.active = new_active
                if not new_active:
                    revoke_user_sessions(s, user.id, "deactivated")
                audit.record(s, actor, "user.activate" if new_active else "user.deactivate", f"user:{name}")
            return _view(user)

    def reset_password(self, actor: Actor, name: str, password: str = "") -> str:
        """A new password for `name` (generated when none is given: show it once); their sessions end."""
        require(actor, "user.manage")
        password = password or new_password()
        check_password(password)
        with self.store.session() as s:
            user = _user(s, name)
            user.password_hash = hash_password(password)
            ended = revoke_user_sessions(s, user.id, "password reset")
            audit.record(s, actor, "user.password_reset", f"user:{name}", sessions_ended=ended)
        return password

    def delete(self, actor: Actor, name: str) -> None:
        """Remove a user who has done nothing yet (a typo); anyone with a history is deactivated instead."""
        require(actor, "user.manage")
        with self.store.session() as s:
            user = _user(s, name)
            _keep_an_admin(s, user, role="", active=False)
            for column in (
                ChangeRequest.author_id,
                ChangeRequest.merged_by_id,
                Review.reviewer_id,
                Run.submitted_by_id,
            ):
                if s.scalar(select(exists().where(column == user.id))):
                    raise Conflict(
                        f"user: {name} has change requests, reviews or runs; deactivate them instead", field="user"
                    )
            s.execute(delete(ApiToken).where(ApiToken.user_id == user.id))
            s.execute(delete(WebSession).where(WebSession.user_id == user.id))
            s.delete(user)
            audit.record(s, actor, "user.delete", f"user:{name}", role=user.role)


def _user(s: Session, name: str) -> User:
    user = s.scalar(select(User).where(User.name == name))
    if user is None:
        raise NotFound(f"user: {name!r} does not exist", field="user")
    return user


def _keep_an_admin(s: Session, user: User, role: str, active: bool) -> None:
    """The one rule: a change that would leave no active admin is refused (nothing is changed)."""
    if not (user.role == "admin" and user.active) or (role == "admin" and active):
        return  # the user is not an active admin now, or stays one
    # every active admin's row, locked in one order: a concurrent change waits, then sees this one's outcome
    admins = select(User.id).where(User.role == "admin", User.active.is_(True)).order_by(User.id)
    if s.get_bind().dialect.name == "postgresql":
        admins = admins.with_for_update()
    if not [admin for admin in s.scalars(admins) if admin != user.id]:
        raise Conflict(f"user: {user.name} is the last active admin; make another user admin first", field="user")
