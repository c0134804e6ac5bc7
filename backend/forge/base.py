"""The forge interface: pull requests, reviews, commit statuses, merges and webhooks on Gitea, GitHub or GitLab.

lfops pushes the branch itself (through the config repository's mirror, `backend.gitstore`); a forge opens and follows
the pull request around that branch. Every implementation has the same verbs and returns the same dataclasses, so the
review and launch policy never read a forge's JSON. Each instance acts as the user whose token it holds (lfops' bot).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

from backend.errors import AuthenticationFailed, GitFailure, LfopsError

PR_STATES = ("open", "closed", "merged")
REVIEW_STATES = ("approved", "changes_requested", "comment", "pending", "dismissed")
STATUS_STATES = ("pending", "success", "failure", "error")
MERGE_STYLES = ("merge", "squash", "rebase")
EVENT_KINDS = ("pull_request", "review", "push", "status", "ping", "other")
STATUS_CONTEXT = "lfops/validate"


class ForgeUnavailable(GitFailure):
    """The forge could not be reached or answered with a server error; retrying later is safe for reads."""


@dataclass(frozen=True)
class PullRequest:
    number: int
    url: str  # the page people open, not the API address
    state: str  # open | closed | merged
    title: str
    body: str
    author: str  # forge login of whoever opened it
    head_branch: str
    base_branch: str
    head_sha: str
    merged: bool
    merge_commit_sha: str | None  # set only once merged
    mergeable: bool | None  # None: the forge has not computed it (yet)
    merged_by: str = ""  # forge login of whoever merged it, once merged


@dataclass(frozen=True)
class Review:
    id: int
    reviewer: str  # forge login
    state: str  # one of REVIEW_STATES
    commit_id: str | None  # the head commit it was given on; None when the forge does not record it
    official: bool  # counts for the forge's branch protection (the reviewer may approve there)
    stale: bool  # given on an older head commit, or dismissed since
    body: str
    submitted_at: datetime | None

    def approves(self, head_sha: str) -> bool:
        """An official, current approval of exactly this head commit."""
        return self.state == "approved" and self.official and not self.stale and self.commit_id == head_sha


@dataclass(frozen=True)
class CommitStatus:
    sha: str
    state: str  # one of STATUS_STATES
    context: str
    description: str
    target_url: str


@dataclass(frozen=True)
class Push:
    ref: str  # refs/heads/<branch>
    before: str
    after: str


@dataclass(frozen=True)
class WebhookEvent:
    """One delivery, normalised. Deliveries arrive out of order: treat one as a hint to re-read the pull request."""

    forge: str
    delivery: str  # the forge's delivery id (idempotency key); "" when the forge sends none
    kind: str  # one of EVENT_KINDS
    action: str  # opened, synchronized, closed, reopened, edited, merged, approved, changes_requested, comment, ...
    sender: str
    number: int | None = None  # pull request number, when the event is about one
    pull_request: PullRequest | None = None
    review_state: str | None = None  # for kind == "review": one of REVIEW_STATES
    push: Push | None = None
    status: CommitStatus | None = None


def check_choice(value: str, allowed: tuple[str, ...], field: str) -> str:
    if value not in allowed:
        raise LfopsError(f"{field}: {value!r} is not one of {', '.join(allowed)}", field=field)
    return value


def lower_keys(headers: Mapping[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


def verify_hmac_sha256(secret: str, body: bytes, signature: str | None, header: str) -> None:
    """Refuse a delivery unless `signature` is the hex HMAC-SHA256 of `body` with `secret` (constant-time compare)."""
    if not secret:
        raise AuthenticationFailed(
            "webhook: no webhook secret is configured (LFOPS_FORGE_WEBHOOK_SECRET); deliveries are refused",
            field="LFOPS_FORGE_WEBHOOK_SECRET",
        )
    if not signature:
        raise AuthenticationFailed(f"webhook: the {header} header is missing; delivery refused", field=header)
    expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    given = signature.strip().lower().removeprefix("sha256=")
    if not hmac.compare_digest(expected.encode(), given.encode()):
        raise AuthenticationFailed(f"webhook: the {header} signature does not match the body; delivery refused")


def verify_shared_token(secret: str, token: str | None, header: str) -> None:
    """Refuse a delivery unless it carries the shared secret itself (GitLab's X-Gitlab-Token), compared in constant
    time."""
    if not secret:
        raise AuthenticationFailed(
            "webhook: no webhook secret is configured (LFOPS_FORGE_WEBHOOK_SECRET); deliveries are refused",
            field="LFOPS_FORGE_WEBHOOK_SECRET",
        )
    if not token:
        raise AuthenticationFailed(f"webhook: the {header} header is missing; delivery refused", field=header)
    if not hmac.compare_digest(secret.encode(), token.encode()):
        raise AuthenticationFailed(f"webhook: the {header} token does not match; delivery refused")


def json_body(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise LfopsError("webhook: the body is not JSON") from None
    if not isinstance(data, dict):
        raise LfopsError("webhook: the body is not a JSON object")
    return data


class Forge(ABC):
    """What lfops asks of a forge. Errors are `backend.errors` subclasses with one-line messages that never contain
    the token: ForgeUnavailable (network, timeouts, 5xx), AuthenticationFailed (token rejected), PermissionDenied,
    NotFound, Conflict (the forge refused: protection, not mergeable, head moved, already exists)."""

    kind: ClassVar[str]

    # ---- pull requests ------------------------------------------------------------------------------------------

    @abstractmethod
    def open_pull_request(self, head: str, base: str, title: str, body: str) -> PullRequest:
        """Open a pull request from branch `head` (already pushed) into `base`."""

    @abstractmethod
    def update_pull_request(
        self, number: int, *, title: str | None = None, body: str | None = None, state: str | None = None
    ) -> PullRequest:
        """Change the title, the body, or the state ("open" or "closed")."""

    @abstractmethod
    def get_pull_request(self, number: int) -> PullRequest: ...

    @abstractmethod
    def find_pull_request(self, head: str, base: str) -> PullRequest | None:
        """The open pull request from `head` into `base`, if there is one (to resume a save the forge interrupted)."""

    # ---- reviews and comments -----------------------------------------------------------------------------------

    @abstractmethod
    def list_reviews(self, number: int) -> list[Review]: ...

    @abstractmethod
    def submit_review(self, number: int, state: str, body: str = "", commit_id: str | None = None) -> Review:
        """Review as the token's user: "approved", "changes_requested" or "comment"; `commit_id` pins the head."""

    @abstractmethod
    def comment(self, number: int, body: str) -> None: ...

    # ---- statuses -----------------------------------------------------------------------------------------------

    @abstractmethod
    def set_commit_status(
        self, sha: str, state: str, context: str = STATUS_CONTEXT, description: str = "", target_url: str = ""
    ) -> None: ...

    @abstractmethod
    def list_commit_statuses(self, sha: str) -> list[CommitStatus]:
        """The statuses on `sha`, newest first (a context may appear more than once)."""

    # ---- merge --------------------------------------------------------------------------------------------------

    @abstractmethod
    def merge(
        self, number: int, *, style: str = "merge", head_sha: str | None = None, message: str | None = None
    ) -> PullRequest:
        """Merge as the forge's protection allows; refused (Conflict) if the head is no longer `head_sha`."""

    # ---- webhooks -----------------------------------------------------------------------------------------------

    @abstractmethod
    def verify_webhook(self, headers: Mapping[str, str], body: bytes) -> None:
        """Raise AuthenticationFailed unless the delivery is signed with the webhook secret."""

    @abstractmethod
    def parse_webhook(self, headers: Mapping[str, str], body: bytes) -> WebhookEvent: ...

    def receive_webhook(self, headers: Mapping[str, str], body: bytes) -> WebhookEvent:
        """Verify, then parse: the one call a webhook endpoint needs."""
        self.verify_webhook(headers, body)
        return self.parse_webhook(headers, body)

    def close(self) -> None:  # noqa: B027 - optional for implementations without resources
        """Release connections."""
