"""The CLI against a remote lfops: with LFOPS_URL (and LFOPS_TOKEN) set, commands that support it ask that lfops'
REST API instead of opening the database, and print exactly what they print on the database.

Answers are rebuilt into the backend's own views (ChangeRequestView, RunView...), so each command keeps one printing
function for both ways. An error the server answers is raised as the backend error of the same code, with the
server's message: `error: <message>` and exit code 2, as on the database.
"""

from __future__ import annotations

import dataclasses
import os
from datetime import datetime
from typing import Any, TypeVar
from urllib.parse import quote

from backend import errors
from backend.errors import LfopsError

URL_VARIABLE, TOKEN_VARIABLE = "LFOPS_URL", "LFOPS_TOKEN"
T = TypeVar("T")
# The backend error class of each code the API answers (the reverse of backend.api.errors.STATUS_BY_CODE).
_ERRORS: dict[str, type[LfopsError]] = {
    "invalid": LfopsError,
    "unauthenticated": errors.AuthenticationFailed,
    "forbidden": errors.PermissionDenied,
    "not_found": errors.NotFound,
    "conflict": errors.Conflict,
    "unavailable": errors.StoreUnavailable,
    "timeout": errors.TimedOut,
    "cluster": errors.ClusterError,
    "settings": errors.SettingsError,
}


def remote_url() -> str:
    return os.environ.get(URL_VARIABLE, "").strip()


def from_view(cls: type[T], data: dict[str, Any], **nested: Any) -> T:
    """A backend view dataclass from its JSON: its own fields only (properties the API adds are computed again),
    datetimes parsed; `nested` gives fields that are views themselves, already built."""
    values = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name in nested:
            values[f.name] = nested[f.name]
        elif f.name in data:
            value = data[f.name]
            if isinstance(value, str) and "datetime" in str(f.type):
                value = datetime.fromisoformat(value)
            values[f.name] = value
    return cls(**values)


class Remote:
    """A remote lfops' REST API, answering with the backend's views."""

    def __init__(self, url: str, token: str, timeout: float = 60.0) -> None:
        import httpx

        self.url = url.rstrip("/")
        self._http = httpx.Client(
            base_url=f"{self.url}/api/v1", headers={"Authorization": f"Bearer {token}"}, timeout=timeout
        )

    @classmethod
    def from_env(cls) -> Remote | None:
        """The remote named by LFOPS_URL with LFOPS_TOKEN; None when LFOPS_URL is unset (use the database)."""
        url = remote_url()
        if not url:
            return None
        token = os.environ.get(TOKEN_VARIABLE, "").strip()
        if not token:
            raise LfopsError(
                f"{TOKEN_VARIABLE}: set it to an API token (`lfops token create NAME`) to use {URL_VARIABLE}",
                field=TOKEN_VARIABLE,
            )
        if not url.startswith(("http://", "https://")):
            raise LfopsError(f"{URL_VARIABLE}: {url!r} must start with http:// or https://", field=URL_VARIABLE)
        return cls(url, token)

    def get(self, path: str, **params: Any) -> Any:
        return self._answer(self._send("GET", path, params={k: v for k, v in params.items() if v is not None}))

    def post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        return self._answer(self._send("POST", path, json=body or {}))

    def _send(self, method: str, path: str, **kwargs: Any) -> Any:
        import httpx

        try:
            return self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise errors.StoreUnavailable(f"{URL_VARIABLE}: {self.url} did not answer ({type(exc).__name__})") from None

    def _answer(self, response: Any) -> Any:
        if response.is_success:
            return response.json()
        try:
            body = response.json()
            code, message, field = body["error"], body["message"], body.get("field") or ""
        except (ValueError, KeyError, TypeError):
            raise LfopsError(f"{URL_VARIABLE}: {self.url} answered HTTP {response.status_code}") from None
        raise _ERRORS.get(code, LfopsError)(message, field=field)

    def close(self) -> None:
        self._http.close()

    # ---- change requests ----------------------------------------------------------------------------------------

    def change_requests(self, status: str | None, author: str | None, limit: int, offset: int) -> list[Any]:
        page = self.get("/change-requests", status=status, author=author, limit=limit, offset=offset)
        return [_change_request(item) for item in page["items"]]

    def change_request_detail(self, cr_id: int) -> Any:
        from backend.review import ChangeRequestDetail, ParamRow

        data = self.get(f"/change-requests/{cr_id}")
        return from_view(
            ChangeRequestDetail,
            data,
            request=_change_request(data["request"]),
            params=[from_view(ParamRow, row) for row in data["params"]],
        )

    def decide(self, cr_id: int, action: str, comment: str = "") -> Any:
        """approve | request-changes | merge | close."""
        body = {"comment": comment} if action in ("approve", "request-changes") else None
        return _change_request(self.post(f"/change-requests/{cr_id}/{action}", body))

    # ---- runs ---------------------------------------------------------------------------------------------------

    def runs(self, limit: int, offset: int, params: list[str] | None = None, **filters: Any) -> list[Any]:
        page = self.get("/runs", limit=limit, offset=offset, param=params, **filters)
        return [_run(item) for item in page["items"]]

    def run(self, run_id: int) -> Any:
        return _run(self.get(f"/runs/{run_id}"))

    def run_metrics(self, run_id: int, keys: tuple[str, ...]) -> dict[str, list[tuple[int, float]]]:
        curves = self.get(f"/runs/{run_id}/metrics", key=list(keys))["curves"]
        return {key: [(int(step), float(value)) for step, value in points] for key, points in curves.items()}

    def run_model(self, run_id: int) -> Any:
        """The model version a run registered, or None."""
        from backend.registry import ModelVersionView

        data = self.get(f"/runs/{run_id}/model")
        return from_view(ModelVersionView, data) if data else None

    # ---- deployments --------------------------------------------------------------------------------------------

    def deployments(self, live: bool, include_stopped: bool) -> list[Any]:
        """Every deployment, page after page (the CLI lists them all)."""
        found: list[Any] = []
        offset: int | None = 0
        while offset is not None:
            page = self.get("/deployments", all=include_stopped, live=live, limit=200, offset=offset)
            found += [_deployment(item) for item in page["items"]]
            offset = page["next_offset"]
        return found

    def deployment_detail(self, name: str) -> Any:
        from backend.serving.service import DeploymentDetail, KeyInfo, RolloutInfo

        data = self.get(f"/deployments/{quote(name, safe='')}")
        return DeploymentDetail(
            _deployment(data["deployment"]),
            [from_view(RolloutInfo, r, deployment=name) for r in data["rollouts"]],
            [from_view(KeyInfo, k) for k in data["keys"]],
        )


def _deployment(data: dict[str, Any]) -> Any:
    from backend.serving.service import DeploymentInfo
    from backend.serving.targets import LiveStatus

    live = from_view(LiveStatus, data["live"]) if data.get("live") else None
    return from_view(DeploymentInfo, data, live=live)


def _change_request(data: dict[str, Any]) -> Any:
    from backend.review import ChangeRequestView, ReviewView
    from backend.review_status import ChangeRequestStatus, ReviewDecision

    reviews = [from_view(ReviewView, r, decision=ReviewDecision(r["decision"])) for r in data["reviews"]]
    return from_view(ChangeRequestView, data, status=ChangeRequestStatus(data["status"]), reviews=reviews)


def _run(data: dict[str, Any]) -> Any:
    from backend.runs import RunView

    return from_view(RunView, data)
