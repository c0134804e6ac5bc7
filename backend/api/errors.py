"""The API's one error path: backend.errors by `code` to an HTTP status, once; every error body is
`{"error": code, "field": ..., "message": ...}` (plus `problems` for an invalid config or form)."""

from __future__ import annotations

import logging
import re
import secrets
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from backend.errors import InvalidQuery, LfopsError, ValidationFailed

log = logging.getLogger("lfops.api")

STATUS_BY_CODE = {
    "invalid": 400,
    "unauthenticated": 401,
    "forbidden": 403,
    "not_found": 404,
    "conflict": 409,
    "cluster": 502,  # the Kubernetes API refused a request
    "unavailable": 503,  # the database, the config repository or the cluster cannot be reached
    "timeout": 504,
    "settings": 500,  # the server is misconfigured
}
_CODE_BY_STATUS = {status: code for code, status in STATUS_BY_CODE.items()} | {
    405: "method_not_allowed",
    422: "invalid",
}
# "field: reason" messages name their field first (backend.errors' convention); a sentence never matches.
_FIELD_PREFIX = re.compile(r"^([A-Za-z_][\w.\-]*): ")


def status_of(exc: LfopsError) -> int:
    if isinstance(exc, InvalidQuery):
        return 422  # a bad filter of a list, like FastAPI's own query checks
    return STATUS_BY_CODE.get(exc.code, 400)


def body(error: str, message: str, field: str | None = None, **more: Any) -> dict[str, Any]:
    return {"error": error, "field": field or None, "message": message, **more}


def field_of(exc: LfopsError) -> str | None:
    if exc.field:
        return exc.field
    match = _FIELD_PREFIX.match(str(exc))
    return match.group(1) if match else None


def lfops_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, LfopsError)
    more: dict[str, Any] = {}
    if isinstance(exc, ValidationFailed):
        more["problems"] = [{"field": p.field, "message": p.reason} for p in exc.problems]
    status = status_of(exc)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(body(exc.code, str(exc), field_of(exc), **more), status_code=status, headers=headers)


def invalid_request(_request: Request, exc: Exception) -> JSONResponse:
    """FastAPI's own checks of the request (types, bounds): 422, naming the first bad field as the request names it."""
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    problems = []
    for error in errors:
        loc = [str(part) for part in error.get("loc", ()) if part not in ("query", "path", "body", "header")]
        problems.append({"field": ".".join(loc) or "body", "message": error.get("msg", "invalid")})
    first = problems[0] if problems else {"field": "body", "message": "invalid request"}
    message = f"{first['field']}: {first['message']}"
    return JSONResponse(body("invalid", message, first["field"], problems=problems), status_code=422)


def http_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _CODE_BY_STATUS.get(exc.status_code, "error")
    return JSONResponse(body(code, str(exc.detail)), status_code=exc.status_code, headers=exc.headers)


class CatchUnexpected:
    """A bug or an outage: logged here, once, with its traceback and a reference; the caller reads the reference only.

    ASGI middleware rather than an exception handler: Starlette re-raises after an `Exception` handler, which would
    log every traceback a second time."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = False

        async def send_and_note(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        except Exception as exc:  # noqa: BLE001 - the one place the API turns a bug into an answer
            if started or scope["type"] != "http":
                raise  # half an answer is out: nothing better to send
            reference = secrets.token_hex(4)
            log.error("unexpected error %s in %s %s", reference, scope["method"], scope["path"], exc_info=exc)
            message = f"unexpected error on the server (reference {reference}); it is logged for the admins"
            await JSONResponse(body("internal", message), status_code=500)(scope, receive, send)


def install(app: FastAPI) -> None:
    app.add_exception_handler(LfopsError, lfops_error)
    app.add_exception_handler(RequestValidationError, invalid_request)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_middleware(CatchUnexpected)
