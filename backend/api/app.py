"""The HTTP app the WebUI is mounted into: /healthz, /readyz, /metrics and the REST API under /api/v1.

    /healthz        the process answers (nothing else is asked: a slow database must not restart the pod)
    /readyz         database and config repository reachable (503 naming the failing part otherwise)
    /metrics        Prometheus text format; open to loopback clients, others need a token (any scope)
    /api/v1/...     the REST API (backend.api.routes), its OpenAPI description at /api/v1/openapi.json, docs at
                    /api/v1/docs

No rule lives here: each route calls the backend verb the CLI and the WebUI call, with the actor its token names.
"""

from __future__ import annotations

import logging
import time
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from backend.api import errors
from backend.api.routes import (
    admin,
    changes,
    forge,
    lineage,
    monitoring,
    notify,
    preflight,
    registry,
    retrain,
    runs,
    serving,
    tokens,
)
from backend.api.security import SessionUser, authenticate
from backend.ops import Metrics, Readiness, is_loopback, leader_detail
from backend.workspace import Workspace

API_PREFIX = "/api/v1"
log = logging.getLogger("lfops.api")


def _version() -> str:
    try:
        return version("lfops")
    except PackageNotFoundError:
        return "0"


def route_template(scope: Scope) -> str:
    """The route a request matched, as its template (`/api/v1/runs/{run_id}`): bounded label values for metrics.

    Routers update the request's scope in place as they match, so after the call it names the route and the mount
    prefix it was found under."""
    prefix = scope.get("root_path", "").removeprefix(scope.get("app_root_path", ""))
    route = scope.get("route")
    if route is not None and hasattr(route, "path"):
        return prefix + route.path
    return prefix + "/{path}" if prefix else "unmatched"


class ObserveRequests:
    """Counts and times every HTTP request by route template and status; logs API requests (never their headers)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            seconds = time.perf_counter() - started
            route, method = route_template(scope), scope["method"]
            self.metrics.observe_request(method, route, status, seconds)
            if route.startswith(API_PREFIX):
                actor = scope.get("state", {}).get("actor", "-")
                log.info(
                    "%s %s %s %.1f ms %s",
                    method,
                    route,
                    status,
                    seconds * 1000,
                    actor,
                    extra={"method": method, "route": route, "status": status, "ms": round(seconds * 1000, 1)},
                )


def create_api(ws: Workspace) -> FastAPI:
    """The /api/v1 app: routers, its error handling and its OpenAPI description."""
    api = FastAPI(
        title="lfops API",
        version=_version(),
        description=(
            "Change requests, runs, the model registry, lineage, deployments, monitoring, retrain and preflight of "
            "lfops: the same calls and policy as its CLI "
            "and WebUI. Authenticate with `Authorization: Bearer <token>` (`lfops token create NAME --scope write`); "
            "lists take `limit` (1-200) and `offset` and answer `next_offset`. Errors are "
            '`{"error": code, "field": ..., "message": ...}`.'
        ),
        openapi_url="/openapi.json",
        docs_url="/docs",
        redoc_url=None,
    )
    for router in (
        changes.router,
        runs.router,
        registry.router,
        lineage.router,
        tokens.router,
        admin.router,
        notify.router,
        forge.router,
        serving.router,
        monitoring.router,
        retrain.router,
        preflight.router,
    ):
        api.include_router(router)
    errors.install(api)
    return api


def create_app(ws: Workspace, session_user: SessionUser | None = None) -> FastAPI:
    """The root app: operations endpoints and the API. The WebUI mounts Gradio at "/" after these routes."""
    app = FastAPI(title="lfops", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.ws = ws
    app.state.session_user = session_user
    metrics = app.state.metrics = Metrics(ws.store)
    metrics.time_pushes(ws.repo)
    metrics.watch_leadership(ws.leadership)
    readiness = app.state.readiness = Readiness(ws)
    errors.install(app)

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False)
    def readyz() -> JSONResponse:
        checks = readiness.checks()
        failing = [c.name for c in checks if not c.ok]
        content: dict[str, Any] = {
            "status": "not ready" if failing else "ready",
            "failing": failing,
            "checks": [
                {"name": c.name, "ok": c.ok, "detail": c.detail, "ms": round(c.seconds * 1000, 1)} for c in checks
            ],
            "leader": leader_detail(ws.leadership),  # a standby replica is ready too: it serves requests
        }
        return JSONResponse(content, status_code=503 if failing else 200)

    @app.get("/metrics", include_in_schema=False)
    def prometheus(request: Request) -> Response:
        client = request.client.host if request.client else ""
        if not is_loopback(client):
            authenticate(request)  # a token of any scope (or a signed-in browser)
        data, content_type = metrics.exposition()
        return Response(data, media_type=content_type)

    api = create_api(ws)
    api.state = app.state  # one state: the WebUI sets session_user once it has mounted Gradio
    app.mount(API_PREFIX, api)
    app.add_middleware(ObserveRequests, metrics=metrics)
    app.router.on_shutdown.append(readiness.close)
    return app
