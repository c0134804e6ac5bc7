"""What Gitea and GitHub share: Gitea copied GitHub's REST shape (`/repos/{owner}/{repo}/pulls`, `/issues/{n}/comments`,
`/statuses/{sha}`, the pull request and status JSON, most webhook payloads). The differences (auth header, review
verbs and states, the merge call, finding a pull request by branch, review webhooks) stay in gitea.py and github.py."""

from __future__ import annotations

import re
from abc import abstractmethod
from collections.abc import Mapping
from datetime import datetime
from typing import Any, ClassVar
from urllib.parse import quote

import httpx

from backend.errors import LfopsError, PermissionDenied, SettingsError
from backend.forge.base import (
    MERGE_STYLES,
    STATUS_CONTEXT,
    STATUS_STATES,
    CommitStatus,
    Forge,
    PullRequest,
    Push,
    Review,
    WebhookEvent,
    check_choice,
    json_body,
    lower_keys,
)
from backend.forge.http import ForgeHttp

_OWN_PULL = re.compile(r"your own pull", re.IGNORECASE)
_NOT_ALLOWED_TO_MERGE = re.compile(r"not allowed to merge", re.IGNORECASE)
_DESCRIPTION_LIMIT = 140  # GitHub refuses longer status descriptions; Gitea shows them cut


def _refusal(status: int, message: str) -> type[LfopsError] | None:
    """Refusals that are about who is asking, not about the pull request's state."""
    if _OWN_PULL.search(message) or _NOT_ALLOWED_TO_MERGE.search(message):
        return PermissionDenied
    return None


def parse_time(value: str | None) -> datetime | None:
    if not value or value.startswith("0001-01-01"):  # Gitea's zero time for "not submitted"
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def login(user: Mapping[str, Any] | None) -> str:
    return str((user or {}).get("login") or (user or {}).get("username") or "")


def pull_request_from_json(data: Mapping[str, Any]) -> PullRequest:
    # GitHub's list answers have merged_at but no `merged`; merge_commit_sha is a test merge until merged
    merged = bool(data.get("merged") or data.get("merged_at"))
    head = data.get("head") or {}
    base = data.get("base") or {}
    mergeable = data.get("mergeable")
    return PullRequest(
        number=int(data["number"]),
        url=str(data.get("html_url") or ""),
        state="merged" if merged else str(data.get("state") or "open"),
        title=str(data.get("title") or ""),
        body=str(data.get("body") or ""),
        author=login(data.get("user")),
        head_branch=str(head.get("ref") or ""),
        base_branch=str(base.get("ref") or ""),
        head_sha=str(head.get("sha") or ""),
        merged=merged,
        merge_commit_sha=(data.get("merge_commit_sha") or None) if merged else None,
        mergeable=mergeable if isinstance(mergeable, bool) else None,
        merged_by=login(data.get("merged_by")) if merged else "",
    )


def status_from_json(data: Mapping[str, Any], sha: str = "") -> CommitStatus:
    return CommitStatus(
        sha=str(data.get("sha") or sha),
        state=str(data.get("state") or data.get("status") or ""),
        context=str(data.get("context") or ""),
        description=str(data.get("description") or ""),
        target_url=str(data.get("target_url") or ""),
    )


def check_repo(repo: str) -> tuple[str, str]:
    parts = repo.split("/") if isinstance(repo, str) else []
    if len(parts) != 2 or not all(parts):
        raise SettingsError(f"LFOPS_FORGE_REPO: {repo!r} is not 'owner/name'", field="LFOPS_FORGE_REPO")
    return parts[0], parts[1]


class HubForge(Forge):
    """A forge with GitHub's REST shape, acting as the user whose token it holds."""

    size_param: ClassVar[str]  # the page-size query parameter
    page_size: ClassVar[int]
    review_events: ClassVar[dict[str, str]]  # lfops review state -> the forge's review event
    review_states: ClassVar[dict[str, str]]  # the forge's review state -> lfops review state

    def __init__(
        self,
        base_url: str,
        repo: str,
        token: str,
        webhook_secret: str = "",
        *,
        timeout: float = 10.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        owner, name = check_repo(repo)
        self.base_url = base_url.rstrip("/")
        self.repo = repo
        self._webhook_secret = webhook_secret
        self._prefix = f"/repos/{quote(owner, safe='')}/{quote(name, safe='')}"
        self.http = ForgeHttp(
            f"{self.kind} {repo}",
            self.api_url(self.base_url),
            self.auth_headers(token),
            token,
            timeout=timeout,
            transport=transport,
            refusal=_refusal,
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.base_url!r}, {self.repo!r})"

    @staticmethod
    @abstractmethod
    def api_url(base_url: str) -> str: ...

    @staticmethod
    @abstractmethod
    def auth_headers(token: str) -> dict[str, str]: ...

    # ---- pull requests ------------------------------------------------------------------------------------------

    def open_pull_request(self, head: str, base: str, title: str, body: str) -> PullRequest:
        data = self.http.json(
            "POST",
            f"{self._prefix}/pulls",
            f"open a pull request from {head!r} into {base!r}",
            json={"head": head, "base": base, "title": title, "body": body},
        )
        return pull_request_from_json(data)

    def update_pull_request(
        self, number: int, *, title: str | None = None, body: str | None = None, state: str | None = None
    ) -> PullRequest:
        fields: dict[str, str] = {}
        if title is not None:
            fields["title"] = title
        if body is not None:
            fields["body"] = body
        if state is not None:
            fields["state"] = check_choice(state, ("open", "closed"), "state")
        data = self.http.json(
            "PATCH", f"{self._prefix}/pulls/{int(number)}", f"update pull request #{number}", json=fields
        )
        return pull_request_from_json(data)

    def get_pull_request(self, number: int) -> PullRequest:
        data = self.http.json("GET", f"{self._prefix}/pulls/{int(number)}", f"read pull request #{number}")
        return pull_request_from_json(data)

    # ---- reviews and comments -----------------------------------------------------------------------------------

    def review_from_json(self, data: Mapping[str, Any]) -> Review:
        state = self.review_states.get(str(data.get("state") or ""), "comment")
        dismissed = bool(data.get("dismissed")) or state == "dismissed"
        return Review(
            id=int(data.get("id") or 0),
            reviewer=login(data.get("user")),
            state="dismissed" if dismissed else state,
            commit_id=data.get("commit_id") or None,
            official=self.is_official(data),
            stale=bool(data.get("stale")) or dismissed,
            body=str(data.get("body") or ""),
            submitted_at=parse_time(data.get("submitted_at")),
        )

    @abstractmethod
    def is_official(self, review: Mapping[str, Any]) -> bool: ...

    def list_reviews(self, number: int) -> list[Review]:
        items = self.http.pages(
            f"{self._prefix}/pulls/{int(number)}/reviews",
            f"list the reviews of pull request #{number}",
            size_param=self.size_param,
            size=self.page_size,
        )
        return [self.review_from_json(item) for item in items]

    def submit_review(self, number: int, state: str, body: str = "", commit_id: str | None = None) -> Review:
        event = self.review_events.get(check_choice(state, ("approved", "changes_requested", "comment"), "state"))
        payload: dict[str, str] = {"event": str(event), "body": body}
        if commit_id:
            payload["commit_id"] = commit_id
        data = self.http.json(
            "POST", f"{self._prefix}/pulls/{int(number)}/reviews", f"review pull request #{number}", json=payload
        )
        return self.review_from_json(data)

    def comment(self, number: int, body: str) -> None:
        self.http.request(
            "POST",
            f"{self._prefix}/issues/{int(number)}/comments",
            f"comment on pull request #{number}",
            json={"body": body},
        )

    # ---- statuses -----------------------------------------------------------------------------------------------

    def set_commit_status(
        self, sha: str, state: str, context: str = STATUS_CONTEXT, description: str = "", target_url: str = ""
    ) -> None:
        check_choice(state, STATUS_STATES, "state")
        if len(description) > _DESCRIPTION_LIMIT:
            description = description[: _DESCRIPTION_LIMIT - 1] + "…"
        payload = {"state": state, "context": context, "description": description}
        if target_url:
            payload["target_url"] = target_url
        self.http.request(
            "POST",
            f"{self._prefix}/statuses/{quote(sha, safe='')}",
            f"set status {context!r} on commit {sha[:12]}",
            json=payload,
        )

    def list_commit_statuses(self, sha: str) -> list[CommitStatus]:
        items = self.http.pages(
            f"{self._prefix}/commits/{quote(sha, safe='')}/statuses",
            f"list the statuses of commit {sha[:12]}",
            size_param=self.size_param,
            size=self.page_size,
        )
        return [status_from_json(item, sha) for item in items]

    # ---- merge --------------------------------------------------------------------------------------------------

    def check_merge_style(self, style: str) -> str:
        return check_choice(style, MERGE_STYLES, "style")

    # ---- webhooks -----------------------------------------------------------------------------------------------

    def hub_event(self, kind: str, action: str, delivery: str, data: Mapping[str, Any]) -> WebhookEvent:
        """The parts of a delivery that Gitea and GitHub send alike (pull_request, push, status, ping)."""
        sender = login(data.get("sender"))
        if kind == "pull_request":
            pr = pull_request_from_json(data["pull_request"]) if data.get("pull_request") else None
            if action == "closed" and pr is not None and pr.merged:
                action = "merged"
            number = int(data.get("number") or (pr.number if pr else 0)) or None
            return WebhookEvent(self.kind, delivery, "pull_request", action, sender, number, pr)
        if kind == "push":
            push = Push(str(data.get("ref") or ""), str(data.get("before") or ""), str(data.get("after") or ""))
            return WebhookEvent(self.kind, delivery, "push", "pushed", sender, push=push)
        if kind == "status":
            status = status_from_json(data)
            return WebhookEvent(self.kind, delivery, "status", status.state, sender, status=status)
        if kind == "ping":
            return WebhookEvent(self.kind, delivery, "ping", "ping", sender)
        # comments name their issue or pull request
        number = (
            data.get("number")
            or (data.get("issue") or {}).get("number")
            or (data.get("pull_request") or {}).get("number")
        )
        return WebhookEvent(self.kind, delivery, "other", action or kind, sender, int(number) if number else None)

    @staticmethod
    def webhook_json(headers: Mapping[str, str], body: bytes) -> tuple[dict[str, str], dict[str, Any]]:
        return lower_keys(headers), json_body(body)

    def close(self) -> None:
        self.http.close()
