"""GitLab (REST v4): merge requests instead of pull requests, approvals instead of reviews, commit statuses named by
`name`, and a shared-token webhook header instead of a signature.

GitLab records who approved but not on which commit. An approval is attributed to the merge request's current head
only when the project removes approvals on push (`reset_approvals_on_push`); otherwise its commit is unknown (None) and
`Review.approves()` never counts it, so lfops cannot mistake an approval of an older head for one of the current."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import httpx

from backend.errors import AuthenticationFailed, LfopsError, NotFound, PermissionDenied, SettingsError
from backend.forge.base import (
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
    verify_shared_token,
)
from backend.forge.http import ForgeHttp
from backend.forge.hub import parse_time

_STATES_IN = {"opened": "open", "closed": "closed", "locked": "closed", "merged": "merged"}
_STATUS_OUT = {"pending": "pending", "success": "success", "failure": "failed", "error": "failed"}
_STATUS_IN = {
    "pending": "pending",
    "created": "pending",
    "running": "pending",
    "success": "success",
    "failed": "failure",
    "canceled": "error",
    "skipped": "error",
}
_CHECKING = ("unchecked", "checking", "preparing", "approvals_syncing")
_REVIEWER_STATES = {"requested_changes": "changes_requested", "reviewed": "comment"}
# Merge Request Hook actions about approvals -> lfops review state
_APPROVAL_ACTIONS = {
    "approved": "approved",
    "approval": "approved",
    "unapproved": "dismissed",
    "unapproval": "dismissed",
}
_MR_ACTIONS = {"open": "opened", "reopen": "reopened", "close": "closed", "merge": "merged"}
_PAGE = 100


def _check_project(repo: str) -> str:
    parts = repo.split("/") if isinstance(repo, str) else []
    if len(parts) < 2 or not all(parts):
        raise SettingsError(f"LFOPS_FORGE_REPO: {repo!r} is not 'group/project'", field="LFOPS_FORGE_REPO")
    return repo


def merge_request_from_json(data: Mapping[str, Any]) -> PullRequest:
    state = _STATES_IN.get(str(data.get("state") or ""), "open")
    detailed = str(data.get("detailed_merge_status") or data.get("merge_status") or "")
    mergeable = None if detailed in _CHECKING or not detailed else detailed in ("mergeable", "can_be_merged")
    head = str(data.get("sha") or (data.get("last_commit") or {}).get("id") or "")
    merged = state == "merged"
    # squash merges record squash_commit_sha; a fast-forward merge makes the head itself the merged commit
    merge_commit = (data.get("merge_commit_sha") or data.get("squash_commit_sha") or head or None) if merged else None
    return PullRequest(
        number=int(data["iid"]),
        url=str(data.get("web_url") or data.get("url") or ""),
        state=state,
        title=str(data.get("title") or ""),
        body=str(data.get("description") or ""),
        author=str((data.get("author") or {}).get("username") or ""),
        head_branch=str(data.get("source_branch") or ""),
        base_branch=str(data.get("target_branch") or ""),
        head_sha=head,
        merged=merged,
        merge_commit_sha=merge_commit,
        mergeable=mergeable,
        merged_by=str((data.get("merge_user") or data.get("merged_by") or {}).get("username") or "") if merged else "",
    )


class GitLabForge(Forge):
    kind = "gitlab"

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
        self.base_url = base_url.rstrip("/")
        self.repo = _check_project(repo)
        self._webhook_secret = webhook_secret
        self._prefix = f"/projects/{quote(repo, safe='')}"
        self._resets_on_push: bool | None = None
        self.http = ForgeHttp(
            f"gitlab {repo}",
            f"{self.base_url}/api/v4",
            {"PRIVATE-TOKEN": token},
            token,
            timeout=timeout,
            transport=transport,
        )

    def __repr__(self) -> str:
        return f"GitLabForge({self.base_url!r}, {self.repo!r})"

    def _mr(self, number: int) -> str:
        return f"{self._prefix}/merge_requests/{int(number)}"

    # ---- pull requests ------------------------------------------------------------------------------------------

    def open_pull_request(self, head: str, base: str, title: str, body: str) -> PullRequest:
        data = self.http.json(
            "POST",
            f"{self._prefix}/merge_requests",
            f"open a merge request from {head!r} into {base!r}",
            json={"source_branch": head, "target_branch": base, "title": title, "description": body},
        )
        return merge_request_from_json(data)

    def update_pull_request(
        self, number: int, *, title: str | None = None, body: str | None = None, state: str | None = None
    ) -> PullRequest:
        fields: dict[str, str] = {}
        if title is not None:
            fields["title"] = title
        if body is not None:
            fields["description"] = body
        if state is not None:
            fields["state_event"] = {"open": "reopen", "closed": "close"}[
                check_choice(state, ("open", "closed"), "state")
            ]
        data = self.http.json("PUT", self._mr(number), f"update merge request !{number}", json=fields)
        return merge_request_from_json(data)

    def get_pull_request(self, number: int) -> PullRequest:
        return merge_request_from_json(self.http.json("GET", self._mr(number), f"read merge request !{number}"))

    def find_pull_request(self, head: str, base: str) -> PullRequest | None:
        items = self.http.json(
            "GET",
            f"{self._prefix}/merge_requests",
            f"find the merge request from {head!r} into {base!r}",
            params={"state": "opened", "source_branch": head, "target_branch": base, "per_page": 10},
        )
        return merge_request_from_json(items[0]) if items else None

    # ---- reviews and comments -----------------------------------------------------------------------------------

    def _approvals_reset_on_push(self) -> bool:
        if self._resets_on_push is None:
            try:
                data = self.http.json("GET", f"{self._prefix}/approvals", "read the project's approval settings")
                self._resets_on_push = bool((data or {}).get("reset_approvals_on_push"))
            except (NotFound, PermissionDenied):
                self._resets_on_push = False  # not readable with this token or tier: commits stay unknown
        return self._resets_on_push

    def list_reviews(self, number: int) -> list[Review]:
        mr = self.get_pull_request(number)
        approvals = self.http.json("GET", f"{self._mr(number)}/approvals", f"read the approvals of !{number}") or {}
        commit = mr.head_sha if self._approvals_reset_on_push() else None
        reviews = [
            Review(
                id=int(user.get("id") or 0),
                reviewer=str(user.get("username") or ""),
                state="approved",
                commit_id=commit,
                official=True,  # GitLab only accepts approvals from users its rules allow to approve
                stale=False,
                body="",
                submitted_at=parse_time(entry.get("approved_at")),
            )
            for entry in approvals.get("approved_by") or []
            for user in [entry.get("user") or {}]
        ]
        reviewers = self.http.json("GET", f"{self._mr(number)}/reviewers", f"read the reviewers of !{number}") or []
        for entry in reviewers:
            state = _REVIEWER_STATES.get(str(entry.get("state") or ""))
            if state:
                user = entry.get("user") or {}
                reviews.append(
                    Review(
                        id=int(user.get("id") or 0),
                        reviewer=str(user.get("username") or ""),
                        state=state,
                        commit_id=None,
                        official=True,
                        stale=False,
                        body="",
                        submitted_at=parse_time(entry.get("created_at")),
                    )
                )
        return reviews

    def submit_review(self, number: int, state: str, body: str = "", commit_id: str | None = None) -> Review:
        check_choice(state, ("approved", "comment"), "state")  # GitLab has no REST call to request changes
        if state == "comment":
            self.comment(number, body)
            return Review(0, "", "comment", commit_id, True, False, body, None)
        payload = {"sha": commit_id} if commit_id else {}
        try:
            data = self.http.json(
                "POST", f"{self._mr(number)}/approve", f"approve merge request !{number}", json=payload
            )
        except AuthenticationFailed:
            # GitLab answers 401 to the author, to a user its rules do not let approve, and to a bad token alike
            raise PermissionDenied(
                f"gitlab {self.repo}: not allowed to approve merge request !{number} "
                "(the author or a user who may not approve; or the token was rejected)"
            ) from None
        approvers = [e.get("user") or {} for e in (data or {}).get("approved_by") or []]
        me = approvers[-1] if approvers else {}
        return Review(
            int(me.get("id") or 0), str(me.get("username") or ""), "approved", commit_id, True, False, body, None
        )

    def comment(self, number: int, body: str) -> None:
        self.http.request(
            "POST", f"{self._mr(number)}/notes", f"comment on merge request !{number}", json={"body": body}
        )

    # ---- statuses -----------------------------------------------------------------------------------------------

    def set_commit_status(
        self, sha: str, state: str, context: str = STATUS_CONTEXT, description: str = "", target_url: str = ""
    ) -> None:
        payload = {"state": _STATUS_OUT[check_choice(state, STATUS_STATES, "state")], "name": context}
        if description:
            payload["description"] = description[:255]
        if target_url:
            payload["target_url"] = target_url
        try:
            self.http.request(
                "POST",
                f"{self._prefix}/statuses/{quote(sha, safe='')}",
                f"set status {context!r} on commit {sha[:12]}",
                json=payload,
            )
        except LfopsError as exc:
            # GitLab refuses to post a state the status already has ("Cannot transition status via :run from
            # :running"): the status is as asked, so that is success
            if "cannot transition status" not in str(exc).lower():
                raise

    def list_commit_statuses(self, sha: str) -> list[CommitStatus]:
        items = self.http.pages(
            f"{self._prefix}/repository/commits/{quote(sha, safe='')}/statuses",
            f"list the statuses of commit {sha[:12]}",
            size_param="per_page",
            size=_PAGE,
        )
        return [
            CommitStatus(
                sha=str(item.get("sha") or sha),
                state=_STATUS_IN.get(str(item.get("status") or ""), "error"),
                context=str(item.get("name") or ""),
                description=str(item.get("description") or ""),
                target_url=str(item.get("target_url") or ""),
            )
            for item in items
        ]

    # ---- merge --------------------------------------------------------------------------------------------------

    def merge(
        self, number: int, *, style: str = "merge", head_sha: str | None = None, message: str | None = None
    ) -> PullRequest:
        # the merge method (merge commit, fast-forward) is a project setting; squash is per merge
        check_choice(style, ("merge", "squash"), "style")
        payload: dict[str, Any] = {"squash": style == "squash"}
        if head_sha:
            payload["sha"] = head_sha
        if message:
            payload["merge_commit_message"] = message
        data = self.http.json("PUT", f"{self._mr(number)}/merge", f"merge merge request !{number}", json=payload)
        return merge_request_from_json(data)

    # ---- webhooks -----------------------------------------------------------------------------------------------

    def verify_webhook(self, headers: Mapping[str, str], body: bytes) -> None:
        verify_shared_token(self._webhook_secret, lower_keys(headers).get("x-gitlab-token"), "X-Gitlab-Token")

    def parse_webhook(self, headers: Mapping[str, str], body: bytes) -> WebhookEvent:
        low = lower_keys(headers)
        data = json_body(body)
        event = low.get("x-gitlab-event", "")
        delivery = low.get("x-gitlab-event-uuid") or low.get("x-gitlab-webhook-uuid") or ""
        sender = str((data.get("user") or {}).get("username") or data.get("user_username") or "")
        attrs = data.get("object_attributes") or {}
        if event == "Merge Request Hook":
            action = str(attrs.get("action") or "")
            mr = merge_request_from_json(attrs) if attrs.get("iid") else None
            number = mr.number if mr else None
            if action in _APPROVAL_ACTIONS:
                state = _APPROVAL_ACTIONS[action]
                return WebhookEvent(self.kind, delivery, "review", state, sender, number, mr, review_state=state)
            if action == "update":  # an update with `oldrev` is a push to the source branch; without, an edit
                action = "synchronized" if attrs.get("oldrev") else "edited"
            return WebhookEvent(
                self.kind, delivery, "pull_request", _MR_ACTIONS.get(action, action), sender, number, mr
            )
        if event == "Push Hook":
            push = Push(str(data.get("ref") or ""), str(data.get("before") or ""), str(data.get("after") or ""))
            return WebhookEvent(self.kind, delivery, "push", "pushed", sender, push=push)
        if event == "Pipeline Hook":
            status = CommitStatus(
                sha=str(attrs.get("sha") or ""),
                state=_STATUS_IN.get(str(attrs.get("status") or ""), "error"),
                context=str(attrs.get("name") or ""),
                description="",
                target_url=str(attrs.get("url") or ""),
            )
            return WebhookEvent(self.kind, delivery, "status", status.state, sender, status=status)
        if event == "Note Hook":
            number = (data.get("merge_request") or {}).get("iid")
            return WebhookEvent(self.kind, delivery, "other", "comment", sender, int(number) if number else None)
        return WebhookEvent(self.kind, delivery, "other", str(attrs.get("action") or event), sender)

    def close(self) -> None:
        self.http.close()
