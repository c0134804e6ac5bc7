"""HTTP for the forges: one httpx client per forge, time-outs on every call, and forge answers turned into
`backend.errors` with one-line messages that never carry the token."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from backend.errors import AuthenticationFailed, Conflict, LfopsError, NotFound, PermissionDenied
from backend.forge.base import ForgeUnavailable

# status -> error class; 5xx and 429 mean "try later", like a network failure
_BY_STATUS: dict[int, type[LfopsError]] = {
    401: AuthenticationFailed,
    403: PermissionDenied,
    404: NotFound,
    405: Conflict,  # Gitea and GitHub: "not mergeable", protection not satisfied
    406: Conflict,  # GitLab: "Branch cannot be merged"
    409: Conflict,  # head moved, already exists
    422: Conflict,  # validation: already exists, own pull request
}
_MAX_MESSAGE = 300

Refusal = Callable[[int, str], "type[LfopsError] | None"]


def _flatten(value: Any) -> list[str]:
    """GitLab's messages can be strings, lists or {field: [messages]}; GitHub adds `errors: [{message}]`."""
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [m for item in value for m in _flatten(item)]
    if isinstance(value, dict):
        if "message" in value:
            return _flatten(value["message"])
        return [f"{k} {m}" for k, v in value.items() for m in _flatten(v)]
    return [str(value)]


def forge_message(response: httpx.Response) -> str:
    try:
        data = response.json()
    except ValueError:
        return response.text.strip()[:_MAX_MESSAGE] or response.reason_phrase
    if not isinstance(data, dict):
        return str(data)[:_MAX_MESSAGE]
    parts = _flatten(data.get("message")) + _flatten(data.get("errors")) + _flatten(data.get("error"))
    parts += _flatten(data.get("error_description"))
    return "; ".join(dict.fromkeys(p.strip() for p in parts if p.strip())) or response.reason_phrase


class ForgeHttp:
    """A forge's REST API at `api_url`; `label` starts every error message ("gitea admin/configs")."""

    def __init__(
        self,
        label: str,
        api_url: str,
        headers: dict[str, str],
        token: str,
        *,
        timeout: float = 10.0,
        transport: httpx.BaseTransport | None = None,
        refusal: Refusal | None = None,
    ) -> None:
        self.label = label
        self.api_url = api_url.rstrip("/")
        self._token = token
        self._refusal = refusal
        self.timeout = timeout
        self._client = httpx.Client(
            base_url=self.api_url,
            headers={"User-Agent": "lfops", "Accept": "application/json", **headers},
            timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)),
            transport=transport,
            follow_redirects=False,
            trust_env=False,  # a forge on 127.0.0.1 must not go through an HTTP proxy from the environment
        )

    def __repr__(self) -> str:  # never the headers: they hold the token
        return f"ForgeHttp({self.label!r}, {self.api_url!r})"

    def _clean(self, text: str) -> str:
        text = " ".join(str(text).split())
        if self._token:
            text = text.replace(self._token, "***")
        return text[:_MAX_MESSAGE]

    def request(
        self,
        method: str,
        path: str,
        what: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
    ) -> httpx.Response:
        """One call; `what` names the action in errors ("open a pull request from 'alice/x'")."""
        try:
            response = self._client.request(method, path, json=json, params=params)
        except httpx.TimeoutException:
            raise ForgeUnavailable(
                self._clean(f"{self.label}: no answer within {self.timeout:g} s to {what}; try again later")
            ) from None
        except httpx.HTTPError as exc:
            reason = exc.__class__.__name__ if not str(exc) else str(exc)
            raise ForgeUnavailable(
                self._clean(f"{self.label}: cannot reach the forge at {self.api_url} to {what} ({reason})")
            ) from None
        if response.is_success:
            return response
        raise self.error(response, what)

    def error(self, response: httpx.Response, what: str) -> LfopsError:
        status = response.status_code
        message = forge_message(response)
        cls = (self._refusal(status, message) if self._refusal else None) or _BY_STATUS.get(status)
        if status == 401:
            return AuthenticationFailed(
                self._clean(f"{self.label}: the forge token was rejected (HTTP 401) when trying to {what}: {message}"),
                field="LFOPS_FORGE_TOKEN",
            )
        if status == 429 or status >= 500:
            return ForgeUnavailable(self._clean(f"{self.label}: the forge failed to {what} (HTTP {status}): {message}"))
        return (cls or LfopsError)(self._clean(f"{self.label}: refused to {what} (HTTP {status}): {message}"))

    def json(self, method: str, path: str, what: str, **kwargs: Any) -> Any:
        response = self.request(method, path, what, **kwargs)
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise ForgeUnavailable(
                self._clean(f"{self.label}: answered {what} with something that is not JSON")
            ) from None

    def pages(
        self, path: str, what: str, *, size_param: str, size: int, params: dict[str, Any] | None = None
    ) -> list[Any]:
        """Every item of a paged list (page=1, 2, ... until a short page)."""
        items: list[Any] = []
        for page in range(1, 101):  # a bound, so a forge that ignores `page` cannot loop us forever
            batch = self.json("GET", path, what, params={**(params or {}), size_param: size, "page": page})
            if not isinstance(batch, list):
                raise ForgeUnavailable(self._clean(f"{self.label}: answered {what} with something that is not a list"))
            items.extend(batch)
            if len(batch) < size:
                break
        return items

    def close(self) -> None:
        self._client.close()
