"""Who is calling: a bearer token (backend.tokens checks it and audits refusals), or for reading only, the WebUI's
sign-in session cookie. Which actions an actor may take is decided in backend/ (`require`), never here; routes only
say whether they read or write, and a write needs a write-scope token before any backend call is made.

Browser sessions are read-only on the API: their cookie is sent by any page the browser visits (cross-site request
forgery), a bearer token is not.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from fastapi import Depends, Request
from fastapi.security import HTTPBearer

from backend.auth import READ, WRITE, Actor, actor_by_name
from backend.errors import AuthenticationFailed, NotFound
from backend.workspace import Workspace

# Reads the Authorization header for the OpenAPI description ("Authorize" in the docs); parsing is ours, below.
bearer_scheme = HTTPBearer(auto_error=False, description="a personal API token: `lfops token create NAME`")
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# A function the WebUI gives the API: the signed-in user of a request's session cookie, or None.
SessionUser = Callable[[Request], str | None]


def workspace(request: Request) -> Workspace:
    return request.app.state.ws


def route_of(request: Request) -> str:
    """`GET /api/v1/runs/{run_id}`: what was asked for, by route template (no ids or values), for the audit log."""
    route = request.scope.get("route")
    path = request.scope.get("root_path", "") + getattr(route, "path", "") if route is not None else request.url.path
    return f"{request.method} {path}"


def authenticate(request: Request) -> Actor:
    actor = _authenticate(request)
    request.state.actor = actor.name  # for the request log
    return actor


def _authenticate(request: Request) -> Actor:
    ws = workspace(request)
    header = request.headers.get("authorization")
    if header is not None:
        scheme, _, credentials = header.strip().partition(" ")
        # a header that is not "Bearer <token>" is a malformed token: refused and audited like one
        token = credentials.strip() if scheme.lower() == "bearer" else ""
        return ws.tokens.authenticate(token, where=route_of(request))
    session_user: SessionUser | None = getattr(request.app.state, "session_user", None)
    name = session_user(request) if session_user is not None and request.method in SAFE_METHODS else None
    if name:
        try:
            with ws.store.session() as s:
                return replace(actor_by_name(s, name), scope=READ)
        except NotFound:
            pass  # deactivated since signing in
    raise AuthenticationFailed(
        "authorization: send 'Authorization: Bearer <token>' (create one with `lfops token create`)",
        field="authorization",
    )


def reader(request: Request, _credentials: object = Depends(bearer_scheme)) -> Actor:
    """The caller of a route that only reads."""
    return authenticate(request)


def writer(request: Request, _credentials: object = Depends(bearer_scheme)) -> Actor:
    """The caller of a route that changes something: refused (and audited) unless their token has write scope."""
    actor = authenticate(request)
    workspace(request).tokens.refuse_scope(actor, WRITE, route_of(request))
    return actor
