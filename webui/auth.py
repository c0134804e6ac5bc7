"""Who is using the WebUI: password sign-in against the metadata store, or a trusted authenticating proxy's header.

Gradio's own authentication guards every route (page, config, queue, API, files), so an anonymous visitor gets only
the sign-in page and cannot call any event either. Its session table lives in the metadata store (`StoredSessions`,
backend.sessions), under one cookie name, so a session survives a restart and holds on every replica. Each event
then looks the user up again in the store, so a deactivated user or a changed role takes effect at once; permissions
themselves are checked in backend/.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, MutableMapping
from dataclasses import dataclass, field
from typing import Any

import anyio

from backend import audit
from backend.auth import Actor, actor_by_name
from backend.errors import AuthenticationFailed, LfopsError, NotFound, PermissionDenied
from backend.ops import is_loopback
from backend.sessions import WebSessions
from backend.workspace import Workspace

PASSWORD, PROXY, NONE = "password", "proxy", "none"
# Gradio names its cookie after a random id per process; one fixed name lets every replica read the same cookie.
COOKIE_ID = "lfops"
COOKIES = (f"access-token-{COOKIE_ID}", f"access-token-unsecure-{COOKIE_ID}")
_MAX_FAILURES, _WINDOW_S = 10, 600.0


def check_bind(host: str, mode: str) -> None:
    """Refuse to serve a network address without authentication."""
    if mode == NONE and not is_loopback(host):
        raise LfopsError(
            f"host: {host} is reachable from other machines; without authentication only 127.0.0.1 is allowed "
            "(drop --no-auth, or set LFOPS_TRUSTED_USER_HEADER behind an authenticating proxy)"
        )


@dataclass
class Authenticator:
    ws: Workspace
    mode: str = PASSWORD
    header: str = ""
    _failures: dict[str, tuple[int, float]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def for_workspace(cls, ws: Workspace, no_auth: bool = False) -> Authenticator:
        header = ws.settings.trusted_user_header
        if header:
            return cls(ws, PROXY, header)
        return cls(ws, NONE if no_auth else PASSWORD)

    def launch_kwargs(self) -> dict[str, Any]:
        if self.mode == PASSWORD:
            return {"auth": self.check_password, "auth_message": "Sign in with your lfops user name and password."}
        if self.mode == PROXY:
            return {"auth_dependency": self.proxy_user}
        return {}

    async def check_password(self, name: str, password: str) -> bool:
        """Gradio's sign-in callback (argon2 runs in a worker thread, not on the event loop)."""
        return await anyio.to_thread.run_sync(self._check_password, name, password)

    def _check_password(self, name: str, password: str) -> bool:
        now = time.monotonic()
        with self._lock:
            count, since = self._failures.get(name, (0, now))
            if now - since > _WINDOW_S:
                count, since = 0, now
            if count >= _MAX_FAILURES:  # slow down guessing: refuse without checking for a while
                self._audit(name, "user.login_refused", reason="too many failed sign-ins")
                return False
        try:
            self.ws.login(name, password)
        except AuthenticationFailed:
            with self._lock:
                self._failures[name] = (count + 1, since)
            self._audit(name, "user.login_failed")
            return False
        with self._lock:
            self._failures.pop(name, None)
        self._audit(name, "user.login")
        return True

    def _audit(self, name: str, action: str, **detail: Any) -> None:
        with self.ws.store.session() as s:
            audit.record(s, name[:64] or "-", action, f"user:{name[:64]}", via="webui", **detail)

    def proxy_user(self, request: Any) -> str | None:
        """Gradio's auth_dependency: the proxy's user header, if it names an active lfops user."""
        name = (request.headers.get(self.header) or "").strip()
        if not name:
            return None
        try:
            with self.ws.store.session() as s:
                return actor_by_name(s, name).name
        except NotFound:
            return None

    def actor(self, request: Any) -> Actor | None:
        """The signed-in user of a Gradio event, as the store knows them now (None when signed out)."""
        name = getattr(request, "username", None) if request is not None else None
        if not name:
            return None
        try:
            with self.ws.store.session() as s:
                return actor_by_name(s, name)
        except NotFound:
            raise PermissionDenied(f"user {name!r} is no longer active; sign in again") from None


class StoredSessions(MutableMapping[str, str]):
    """Gradio's session table (`app.tokens`: cookie value -> user name), kept in the metadata store.

    Gradio adds a session on sign-in and reads it on every request; the store keeps only the id's hash, so the table
    cannot be listed (sign-out ends the one session: `sign_out`)."""

    def __init__(self, sessions: WebSessions) -> None:
        self.sessions = sessions

    def __getitem__(self, session_id: str) -> str:
        name = self.sessions.user_of(session_id)
        if name is None:
            raise KeyError(session_id)
        return name

    def __setitem__(self, session_id: str, user_name: str) -> None:
        self.sessions.open(session_id, user_name)

    def __delitem__(self, session_id: str) -> None:
        self.sessions.close(session_id)

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


def use_stored_sessions(auth: Authenticator, gradio_app: Any) -> None:
    """Point a mounted Gradio app's sessions at the store (password sign-in; a proxy keeps no sessions)."""
    gradio_app.cookie_id = COOKIE_ID
    gradio_app.tokens = StoredSessions(auth.ws.sessions)


def sign_out(auth: Authenticator, request: Any) -> None:
    """End the session of a request's cookie, on every replica."""
    for cookie in COOKIES:
        session_id = request.cookies.get(cookie)
        if session_id:
            auth.ws.sessions.close(session_id)
