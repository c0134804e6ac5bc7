"""The retrain bot: a `users` row (change requests need an author), role `bot` (backend.auth.BOT_ROLE).

It may save configs and read, nothing else: it never approves, requests changes, merges, launches or deploys, so a
retrain it proposes goes through review like any change. It cannot sign in: its password hash is no hash at all, and
backend.auth refuses a bot by password, by trusted proxy header and by name. Its audit events read `lfops-bot`.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from backend.auth import BOT_ROLE, Actor
from backend.errors import Conflict
from backend.store import Store
from backend.store.models import User

BOT_NAME = "lfops-bot"
BOT_EMAIL = "lfops-bot@localhost"
_NO_PASSWORD = "!"  # noqa: S105 - not an argon2 hash: nothing verifies against it


def bot_actor(store: Store) -> Actor:
    """The bot as an actor, its row made on first use (two processes making it at once: one row)."""
    for attempt in range(2):
        try:
            with store.session() as s:
                user = s.scalar(select(User).where(User.name == BOT_NAME))
                if user is None:
                    user = User(name=BOT_NAME, role=BOT_ROLE, email=BOT_EMAIL, password_hash=_NO_PASSWORD)
                    s.add(user)
                    s.flush()
                if user.role != BOT_ROLE:
                    raise Conflict(f"user {BOT_NAME!r} exists but is a {user.role}, not lfops' bot; rename that user")
                return Actor(user.id, user.name, user.role, user.email or BOT_EMAIL)
        except IntegrityError:
            if attempt:
                raise
    raise AssertionError("unreachable")
