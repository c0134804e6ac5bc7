"""GitHub (api.github.com or GitHub Enterprise Server's /api/v3): the REST shape Gitea copied, with GitHub's review
verbs, `PUT .../merge`, and no `official` flag: a review counts for protection when its author can write."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import ClassVar
from urllib.parse import quote, urlsplit

from backend.errors import NotFound
from backend.forge.base import PullRequest, Review, WebhookEvent, verify_hmac_sha256
from backend.forge.hub import HubForge, login, pull_request_from_json

_WRITE = ("admin", "maintain", "write")
# GitHub's review webhook states are lower case
_HOOK_REVIEW_STATES = {"approved": "approved", "changes_requested": "changes_requested", "commented": "comment"}


class GitHubForge(HubForge):
    kind = "github"
    size_param = "per_page"
    page_size = 100
    review_events: ClassVar[dict[str, str]] = {
        "approved": "APPROVE",
        "changes_requested": "REQUEST_CHANGES",
        "comment": "COMMENT",
    }
    review_states: ClassVar[dict[str, str]] = {
        "APPROVED": "approved",
        "CHANGES_REQUESTED": "changes_requested",
        "COMMENTED": "comment",
        "DISMISSED": "dismissed",
        "PENDING": "pending",
    }

    @staticmethod
    def api_url(base_url: str) -> str:
        base = base_url.rstrip("/")
        if not base or urlsplit(base).hostname in ("github.com", "api.github.com"):
            return "https://api.github.com"
        return base if base.endswith("/api/v3") else f"{base}/api/v3"  # GitHub Enterprise Server

    @staticmethod
    def auth_headers(token: str) -> dict[str, str]:
        return {
            "Authorization": f"Bearer {token}",
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": "2022-11-28",
        }

    def is_official(self, review: Mapping[str, object]) -> bool:
        return False  # decided in _with_permissions: GitHub's review JSON does not say

    def _can_write(self, user: str, cache: dict[str, bool]) -> bool:
        if user not in cache:
            try:
                data = self.http.json(
                    "GET",
                    f"{self._prefix}/collaborators/{quote(user, safe='')}/permission",
                    f"read {user!r}'s permission",
                )
                cache[user] = str((data or {}).get("permission") or "") in _WRITE
            except NotFound:
                cache[user] = False
        return cache[user]

    def _with_permissions(self, reviews: list[Review]) -> list[Review]:
        """Approvals and change requests count for protection only from users with write access."""
        cache: dict[str, bool] = {}
        return [
            replace(r, official=self._can_write(r.reviewer, cache))
            if r.state in ("approved", "changes_requested")
            else r
            for r in reviews
        ]

    def list_reviews(self, number: int) -> list[Review]:
        return self._with_permissions(super().list_reviews(number))

    def submit_review(self, number: int, state: str, body: str = "", commit_id: str | None = None) -> Review:
        return self._with_permissions([super().submit_review(number, state, body, commit_id)])[0]

    def find_pull_request(self, head: str, base: str) -> PullRequest | None:
        owner = self.repo.split("/", 1)[0]
        items = self.http.json(
            "GET",
            f"{self._prefix}/pulls",
            f"find the pull request from {head!r} into {base!r}",
            params={"state": "open", "head": f"{owner}:{head}", "base": base, "per_page": 10},
        )
        return pull_request_from_json(items[0]) if items else None

    def merge(
        self, number: int, *, style: str = "merge", head_sha: str | None = None, message: str | None = None
    ) -> PullRequest:
        payload: dict[str, str] = {"merge_method": self.check_merge_style(style)}
        if head_sha:
            payload["sha"] = head_sha
        if message:
            title, _, rest = message.partition("\n")
            payload["commit_title"] = title
            payload["commit_message"] = rest.strip()
        self.http.request(
            "PUT", f"{self._prefix}/pulls/{int(number)}/merge", f"merge pull request #{number}", json=payload
        )
        return self.get_pull_request(number)

    # ---- webhooks -----------------------------------------------------------------------------------------------

    def verify_webhook(self, headers: Mapping[str, str], body: bytes) -> None:
        low = {k.lower(): v for k, v in headers.items()}
        verify_hmac_sha256(self._webhook_secret, body, low.get("x-hub-signature-256"), "X-Hub-Signature-256")

    def parse_webhook(self, headers: Mapping[str, str], body: bytes) -> WebhookEvent:
        low, data = self.webhook_json(headers, body)
        event = low.get("x-github-event", "")
        delivery = low.get("x-github-delivery", "")
        action = str(data.get("action") or "")
        if event == "pull_request_review":
            review = data.get("review") or {}
            state = (
                "dismissed" if action == "dismissed" else _HOOK_REVIEW_STATES.get(str(review.get("state")), "comment")
            )
            pr = pull_request_from_json(data["pull_request"]) if data.get("pull_request") else None
            return WebhookEvent(
                self.kind,
                delivery,
                "review",
                state,
                login(review.get("user") or data.get("sender")),
                pr.number if pr else None,
                pr,
                review_state=state,
            )
        if event == "pull_request":
            return self.hub_event("pull_request", "synchronized" if action == "synchronize" else action, delivery, data)
        if event in ("push", "status", "ping"):
            return self.hub_event(event, action, delivery, data)
        if event in ("issue_comment", "pull_request_review_comment"):
            return self.hub_event("other", "comment", delivery, data)
        return self.hub_event("other", action or event, delivery, data)
