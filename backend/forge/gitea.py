"""Gitea (checked against a real v1.26.4, see scripts/gitea.sh): GitHub's REST shape with its own review verbs,
an `official` flag on reviews, merge by `POST .../merge {"Do": style}`, and review webhooks as their own event types."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import ClassVar
from urllib.parse import quote

from backend.errors import Conflict, NotFound
from backend.forge.base import PullRequest, WebhookEvent, verify_hmac_sha256
from backend.forge.hub import HubForge, login, pull_request_from_json

# X-Gitea-Event-Type of a review delivery -> lfops review state
_REVIEW_EVENTS = {
    "pull_request_review_approved": "approved",
    "pull_request_review_rejected": "changes_requested",
    "pull_request_review_comment": "comment",
}
_PULL_REQUEST_EVENTS = (
    "pull_request",
    "pull_request_sync",
    "pull_request_assign",
    "pull_request_label",
    "pull_request_milestone",
    "pull_request_review_request",
)


class GiteaForge(HubForge):
    kind = "gitea"
    size_param = "limit"
    page_size = 50  # Gitea's default MAX_RESPONSE_ITEMS
    review_events: ClassVar[dict[str, str]] = {
        "approved": "APPROVED",
        "changes_requested": "REQUEST_CHANGES",
        "comment": "COMMENT",
    }
    review_states: ClassVar[dict[str, str]] = {
        "APPROVED": "approved",
        "REQUEST_CHANGES": "changes_requested",
        "COMMENT": "comment",
        "PENDING": "pending",
        "REQUEST_REVIEW": "pending",
    }
    # right after a push Gitea checks mergeability in the background and refuses merges with "Please try again later"
    merge_wait_s: float = 15.0

    @staticmethod
    def api_url(base_url: str) -> str:
        return f"{base_url.rstrip('/')}/api/v1"

    @staticmethod
    def auth_headers(token: str) -> dict[str, str]:
        return {"Authorization": f"token {token}"}

    def is_official(self, review: Mapping[str, object]) -> bool:
        return bool(review.get("official"))

    def find_pull_request(self, head: str, base: str) -> PullRequest | None:
        try:
            data = self.http.json(
                "GET",
                f"{self._prefix}/pulls/{quote(base, safe='')}/{quote(head, safe='/')}",
                f"find the pull request from {head!r} into {base!r}",
            )
        except NotFound:
            return None
        pr = pull_request_from_json(data)
        if pr.state == "open":
            return pr
        # that endpoint may answer with an older, closed pull request of the same branches: look among the open ones
        items = self.http.pages(
            f"{self._prefix}/pulls",
            f"list open pull requests into {base!r}",
            size_param=self.size_param,
            size=self.page_size,
            params={"state": "open"},
        )
        for item in items:
            candidate = pull_request_from_json(item)
            if candidate.head_branch == head and candidate.base_branch == base:
                return candidate
        return None

    def merge(
        self, number: int, *, style: str = "merge", head_sha: str | None = None, message: str | None = None
    ) -> PullRequest:
        payload: dict[str, str] = {"Do": self.check_merge_style(style)}
        if head_sha:
            payload["head_commit_id"] = head_sha
        if message:
            title, _, rest = message.partition("\n")
            payload["merge_title_field"] = title
            payload["merge_message_field"] = rest.strip()
        deadline = time.monotonic() + self.merge_wait_s
        delay = 0.2
        while True:
            try:
                self.http.request(
                    "POST", f"{self._prefix}/pulls/{int(number)}/merge", f"merge pull request #{number}", json=payload
                )
                break
            except Conflict as exc:
                if "try again later" not in str(exc).lower() or time.monotonic() + delay > deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 2.0)
        return self.get_pull_request(number)

    # ---- webhooks -----------------------------------------------------------------------------------------------

    def verify_webhook(self, headers: Mapping[str, str], body: bytes) -> None:
        low = {k.lower(): v for k, v in headers.items()}
        if "x-gitea-signature" in low or "x-hub-signature-256" not in low:
            verify_hmac_sha256(self._webhook_secret, body, low.get("x-gitea-signature"), "X-Gitea-Signature")
        else:
            verify_hmac_sha256(self._webhook_secret, body, low.get("x-hub-signature-256"), "X-Hub-Signature-256")

    def parse_webhook(self, headers: Mapping[str, str], body: bytes) -> WebhookEvent:
        low, data = self.webhook_json(headers, body)
        # the specific type: X-Gitea-Event says "pull_request_comment" for both a review comment and a plain comment
        event = low.get("x-gitea-event-type") or low.get("x-gitea-event") or ""
        delivery = low.get("x-gitea-delivery", "")
        action = str(data.get("action") or "")
        if event in _REVIEW_EVENTS:
            pr = pull_request_from_json(data["pull_request"]) if data.get("pull_request") else None
            number = int(data.get("number") or (pr.number if pr else 0)) or None
            return WebhookEvent(
                self.kind,
                delivery,
                "review",
                _REVIEW_EVENTS[event],
                login(data.get("sender")),
                number,
                pr,
                review_state=_REVIEW_EVENTS[event],
            )
        if event in _PULL_REQUEST_EVENTS:
            return self.hub_event("pull_request", action, delivery, data)
        if event in ("push", "status"):
            return self.hub_event(event, action, delivery, data)
        if event in ("pull_request_comment", "issue_comment"):
            return self.hub_event("other", "comment", delivery, data)
        return self.hub_event("other", action or event, delivery, data)
