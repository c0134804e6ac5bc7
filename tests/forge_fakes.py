"""Fake GitHub and GitLab REST servers for backend.forge's mock tests (no hosted forge is reachable from here).

Each fake keeps a little state (branches, pull/merge requests, reviews or approvals, statuses) and answers with the
response shapes and refusals of the forges' REST documentation (GitHub REST 2022-11-28, GitLab REST v4), so a test
can walk the whole flow. They plug into httpx as a MockTransport: `make_forge(..., transport=fake.transport)`."""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote

import httpx

NOW = "2026-01-02T03:04:05Z"


def fake_sha(*parts: str) -> str:
    return hashlib.sha1("/".join(parts).encode()).hexdigest()  # noqa: S324 - an id, not security


def _json(status: int, data: Any) -> httpx.Response:
    return httpx.Response(status, json=data)


@dataclass
class Call:
    method: str
    path: str
    params: dict[str, str]
    body: Any
    headers: dict[str, str]


@dataclass
class FakeForge:
    """What the GitHub and GitLab fakes share: users by token, branches, a call log, and failure switches."""

    tokens: dict[str, str]  # token -> login
    write: set[str]  # logins with write access
    branches: dict[str, str] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    down: bool = False  # every call fails to connect
    required_context: str = "lfops/validate"
    required_approvals: int = 1

    @property
    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self._handle)

    def push(self, branch: str, sha: str) -> None:
        self.branches[branch] = sha
        self.on_push(branch, sha)

    def on_push(self, branch: str, sha: str) -> None: ...

    def _handle(self, request: httpx.Request) -> httpx.Response:
        if self.down:
            raise httpx.ConnectError("[Errno 111] Connection refused", request=request)
        body = json.loads(request.content) if request.content else None
        path = request.url.raw_path.decode().split("?", 1)[0]
        self.calls.append(Call(request.method, path, dict(request.url.params), body, dict(request.headers)))
        user = self.authenticate(request)
        if user is None:
            return self.unauthorized()
        return self.route(request.method, path, dict(request.url.params), body, user)

    def authenticate(self, request: httpx.Request) -> str | None: ...

    def unauthorized(self) -> httpx.Response: ...

    def route(self, method: str, path: str, params: dict[str, str], body: Any, user: str) -> httpx.Response: ...


def _page(items: list[Any], params: dict[str, str], default: int) -> list[Any]:
    size = int(params.get("per_page", default))
    page = int(params.get("page", 1))
    return items[(page - 1) * size : page * size]


# ---- GitHub ---------------------------------------------------------------------------------------------------------


class FakeGitHub(FakeForge):
    """api.github.com for one repository, `owner/repo`; protection on main: 1 approval by a writer and the context."""

    owner = "octo-org"
    repo = "configs"

    def __init__(self, tokens: dict[str, str], write: set[str]) -> None:
        super().__init__(tokens, write, {"main": fake_sha("main")})
        self.pulls: dict[int, dict[str, Any]] = {}
        self.reviews: dict[int, list[dict[str, Any]]] = {}
        self.statuses: dict[str, list[dict[str, Any]]] = {}
        self.comments: dict[int, list[str]] = {}
        self._ids = itertools.count(1)

    def authenticate(self, request: httpx.Request) -> str | None:
        auth = request.headers.get("Authorization", "")
        return self.tokens.get(auth.removeprefix("Bearer ")) if auth.startswith("Bearer ") else None

    def unauthorized(self) -> httpx.Response:
        return _json(401, {"message": "Bad credentials", "documentation_url": "https://docs.github.com/rest"})

    def _user(self, login: str) -> dict[str, Any]:
        return {"login": login, "id": abs(hash(login)) % 10**6, "type": "User", "site_admin": False}

    def _pull_json(self, pr: dict[str, Any]) -> dict[str, Any]:
        return {
            "url": f"https://api.github.com/repos/{self.owner}/{self.repo}/pulls/{pr['number']}",
            "id": pr["number"] * 1000,
            "node_id": "PR_x",
            "html_url": f"https://github.com/{self.owner}/{self.repo}/pull/{pr['number']}",
            "number": pr["number"],
            "state": pr["state"],
            "locked": False,
            "title": pr["title"],
            "user": self._user(pr["author"]),
            "body": pr["body"],
            "created_at": NOW,
            "updated_at": NOW,
            "closed_at": None,
            "merged_at": NOW if pr["merged"] else None,
            # before a merge GitHub shows the sha of a test merge here; lfops must not read it as the merge commit
            "merge_commit_sha": pr["merge_commit_sha"] or fake_sha("test-merge", str(pr["number"])),
            "head": {"label": f"{self.owner}:{pr['head']}", "ref": pr["head"], "sha": pr["head_sha"]},
            "base": {"label": f"{self.owner}:{pr['base']}", "ref": pr["base"], "sha": self.branches[pr["base"]]},
            "draft": False,
            "merged": pr["merged"],
            "mergeable": True,
            "mergeable_state": "clean",
            "merged_by": self._user(pr["merged_by"]) if pr.get("merged_by") else None,
        }

    def on_push(self, branch: str, sha: str) -> None:
        for pr in self.pulls.values():
            if pr["head"] == branch and pr["state"] == "open":
                pr["head_sha"] = sha

    def route(self, method: str, path: str, params: dict[str, str], body: Any, user: str) -> httpx.Response:
        prefix = f"/repos/{self.owner}/{self.repo}"
        if not path.startswith(prefix):
            return _json(404, {"message": "Not Found"})
        rest = path[len(prefix) :]
        if m := re.fullmatch(r"/pulls", rest):
            return self._create_pull(body, user) if method == "POST" else self._list_pulls(params)
        if m := re.fullmatch(r"/pulls/(\d+)", rest):
            pr = self.pulls.get(int(m[1]))
            if pr is None:
                return _json(404, {"message": "Not Found"})
            if method == "PATCH":
                for key in ("title", "body", "state"):
                    if key in body:
                        pr[key] = body[key]
            return _json(200, self._pull_json(pr))
        if m := re.fullmatch(r"/pulls/(\d+)/reviews", rest):
            number = int(m[1])
            if method == "POST":
                return self._review(number, body, user)
            return _json(200, _page(self.reviews.get(number, []), params, 30))
        if m := re.fullmatch(r"/pulls/(\d+)/merge", rest):
            return self._merge(int(m[1]), body, user)
        if m := re.fullmatch(r"/issues/(\d+)/comments", rest):
            self.comments.setdefault(int(m[1]), []).append(body["body"])
            return _json(201, {"id": next(self._ids), "body": body["body"], "user": self._user(user)})
        if m := re.fullmatch(r"/statuses/([0-9a-f]{40})", rest):
            status = {
                "id": next(self._ids),
                "state": body["state"],
                "description": body.get("description"),
                "target_url": body.get("target_url"),
                "context": body.get("context", "default"),
                "created_at": NOW,
                "creator": self._user(user),
            }
            self.statuses.setdefault(m[1], []).insert(0, status)
            return _json(201, status)
        if m := re.fullmatch(r"/commits/([0-9a-f]{40})/statuses", rest):
            return _json(200, _page(self.statuses.get(m[1], []), params, 30))
        if m := re.fullmatch(r"/collaborators/([^/]+)/permission", rest):
            login = unquote(m[1])
            if login not in self.tokens.values():
                return _json(404, {"message": "Not Found"})
            permission = "write" if login in self.write else "read"
            return _json(200, {"permission": permission, "role_name": permission, "user": self._user(login)})
        return _json(404, {"message": "Not Found"})

    def _create_pull(self, body: dict[str, Any], user: str) -> httpx.Response:
        if body["head"] not in self.branches:
            return _json(
                422,
                {
                    "message": "Validation Failed",
                    "errors": [{"resource": "PullRequest", "field": "head", "code": "invalid"}],
                },
            )
        if any(p["head"] == body["head"] and p["state"] == "open" for p in self.pulls.values()):
            message = f"A pull request already exists for {self.owner}:{body['head']}."
            return _json(
                422,
                {
                    "message": "Validation Failed",
                    "errors": [{"resource": "PullRequest", "code": "custom", "message": message}],
                },
            )
        number = len(self.pulls) + 1
        self.pulls[number] = {
            "number": number,
            "state": "open",
            "title": body["title"],
            "body": body.get("body", ""),
            "author": user,
            "head": body["head"],
            "base": body["base"],
            "head_sha": self.branches[body["head"]],
            "merged": False,
            "merge_commit_sha": None,
        }
        return _json(201, self._pull_json(self.pulls[number]))

    def _list_pulls(self, params: dict[str, str]) -> httpx.Response:
        out = [
            self._pull_json(p)
            for p in self.pulls.values()
            if (params.get("state", "open") in ("all", p["state"]))
            and ("head" not in params or params["head"] == f"{self.owner}:{p['head']}")
            and ("base" not in params or params["base"] == p["base"])
        ]
        return _json(200, out)

    def _review(self, number: int, body: dict[str, Any], user: str) -> httpx.Response:
        pr = self.pulls[number]
        if pr["author"] == user and body["event"] in ("APPROVE", "REQUEST_CHANGES"):
            verb = "approve" if body["event"] == "APPROVE" else "request changes on"
            return _json(
                422,
                {
                    "message": "Unprocessable Entity",
                    "errors": [f"Review Can not {verb} your own pull request"],
                    "documentation_url": "https://docs.github.com/rest/pulls/reviews#create-a-review-for-a-pull-request",
                },
            )
        state = {"APPROVE": "APPROVED", "REQUEST_CHANGES": "CHANGES_REQUESTED", "COMMENT": "COMMENTED"}[body["event"]]
        review = {
            "id": next(self._ids),
            "node_id": "PRR_x",
            "user": self._user(user),
            "body": body.get("body", ""),
            "state": state,
            "html_url": f"https://github.com/{self.owner}/{self.repo}/pull/{number}#pullrequestreview-1",
            "submitted_at": NOW,
            "commit_id": body.get("commit_id") or pr["head_sha"],
            "author_association": "COLLABORATOR",
        }
        self.reviews.setdefault(number, []).append(review)
        return _json(200, review)

    def _merge(self, number: int, body: dict[str, Any], user: str) -> httpx.Response:
        pr = self.pulls[number]
        if pr["merged"] or pr["state"] != "open":
            return _json(405, {"message": "Pull Request is not mergeable"})
        if body.get("sha") and body["sha"] != pr["head_sha"]:
            return _json(409, {"message": "Head branch was modified. Review and try the merge again."})
        states = {s["context"]: s["state"] for s in reversed(self.statuses.get(pr["head_sha"], []))}
        if states.get(self.required_context) != "success":
            return _json(405, {"message": f'Required status check "{self.required_context}" is expected.'})
        approvals = {
            r["user"]["login"]
            for r in self.reviews.get(number, [])
            if r["state"] == "APPROVED" and r["commit_id"] == pr["head_sha"] and r["user"]["login"] in self.write
        }
        if len(approvals) < self.required_approvals:
            return _json(405, {"message": "At least 1 approving review is required by reviewers with write access."})
        merge = fake_sha("merge", str(number), pr["head_sha"])
        pr.update(merged=True, state="closed", merge_commit_sha=merge, merged_by=user)
        self.branches[pr["base"]] = merge
        return _json(200, {"sha": merge, "merged": True, "message": "Pull Request successfully merged"})


# ---- GitLab ---------------------------------------------------------------------------------------------------------


class FakeGitLab(FakeForge):
    """gitlab.example.com for one project, `group/sub/configs`; main needs 1 approval and a successful status."""

    project = "group/sub/configs"
    host = "https://gitlab.example.com"

    def __init__(self, tokens: dict[str, str], write: set[str], *, reset_approvals_on_push: bool = True) -> None:
        super().__init__(tokens, write, {"main": fake_sha("main")})
        self.reset_approvals_on_push = reset_approvals_on_push
        self.mrs: dict[int, dict[str, Any]] = {}
        self.approvals: dict[int, list[str]] = {}
        self.reviewer_states: dict[int, dict[str, str]] = {}
        self.statuses: dict[str, list[dict[str, Any]]] = {}
        self.notes: dict[int, list[str]] = {}
        self._ids = itertools.count(1)

    def authenticate(self, request: httpx.Request) -> str | None:
        return self.tokens.get(request.headers.get("PRIVATE-TOKEN", ""))

    def unauthorized(self) -> httpx.Response:
        return _json(401, {"message": "401 Unauthorized"})

    def _user(self, login: str) -> dict[str, Any]:
        return {"id": abs(hash(login)) % 10**6, "username": login, "name": login.title(), "state": "active"}

    def _mr_json(self, mr: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": mr["iid"] * 1000,
            "iid": mr["iid"],
            "project_id": 42,
            "title": mr["title"],
            "description": mr["description"],
            "state": mr["state"],
            "created_at": NOW,
            "updated_at": NOW,
            "merged_by": self._user(mr["merged_by"]) if mr.get("merged_by") else None,  # deprecated field
            "merge_user": self._user(mr["merged_by"]) if mr.get("merged_by") else None,
            "merged_at": NOW if mr["state"] == "merged" else None,
            "target_branch": mr["target"],
            "source_branch": mr["source"],
            "author": self._user(mr["author"]),
            "draft": False,
            "merge_status": "can_be_merged",
            "detailed_merge_status": "mergeable" if mr["state"] == "opened" else "not_open",
            "sha": mr["sha"],
            "merge_commit_sha": mr["merge_commit_sha"],
            "squash_commit_sha": mr["squash_commit_sha"],
            "squash": False,
            "web_url": f"{self.host}/{self.project}/-/merge_requests/{mr['iid']}",
        }

    def _approvals_json(self, iid: int) -> dict[str, Any]:
        approved_by = [{"user": self._user(login)} for login in self.approvals.get(iid, [])]
        left = max(0, self.required_approvals - len(approved_by))
        return {
            "id": iid * 1000,
            "iid": iid,
            "project_id": 42,
            "state": self.mrs[iid]["state"],
            "approved": left == 0,
            "approvals_required": self.required_approvals,
            "approvals_left": left,
            "approved_by": approved_by,
        }

    def on_push(self, branch: str, sha: str) -> None:
        for iid, mr in self.mrs.items():
            if mr["source"] == branch and mr["state"] == "opened":
                mr["sha"] = sha
                if self.reset_approvals_on_push:
                    self.approvals[iid] = []

    def route(self, method: str, path: str, params: dict[str, str], body: Any, user: str) -> httpx.Response:
        prefix = "/api/v4/projects/" + self.project.replace("/", "%2F")
        if not path.startswith(prefix):
            return _json(404, {"message": "404 Project Not Found"})
        rest = path[len(prefix) :]
        if rest == "/approvals":
            return _json(200, {"approvals_before_merge": 1, "reset_approvals_on_push": self.reset_approvals_on_push})
        if rest == "/merge_requests":
            return self._create_mr(body, user) if method == "POST" else self._list_mrs(params)
        if m := re.fullmatch(r"/merge_requests/(\d+)(/[a-z_]+)?", rest):
            iid, verb = int(m[1]), m[2] or ""
            mr = self.mrs.get(iid)
            if mr is None:
                return _json(404, {"message": "404 Not found"})
            return self._mr_verb(mr, verb, method, body or {}, user)
        if m := re.fullmatch(r"/statuses/([0-9a-f]{40})", rest):
            return self._set_status(m[1], body, user)
        if m := re.fullmatch(r"/repository/commits/([0-9a-f]{40})/statuses", rest):
            return _json(200, _page(self.statuses.get(m[1], []), params, 20))
        return _json(404, {"message": "404 Not Found"})

    def _create_mr(self, body: dict[str, Any], user: str) -> httpx.Response:
        if body["source_branch"] not in self.branches:
            return _json(400, {"message": {"source_branch": ["is invalid"]}})
        for mr in self.mrs.values():
            if mr["source"] == body["source_branch"] and mr["state"] == "opened":
                message = f"Another open merge request already exists for this source branch: !{mr['iid']}"
                return _json(409, {"message": [message]})
        iid = len(self.mrs) + 1
        self.mrs[iid] = {
            "iid": iid,
            "title": body["title"],
            "description": body.get("description", ""),
            "state": "opened",
            "source": body["source_branch"],
            "target": body["target_branch"],
            "author": user,
            "sha": self.branches[body["source_branch"]],
            "merge_commit_sha": None,
            "squash_commit_sha": None,
        }
        return _json(201, self._mr_json(self.mrs[iid]))

    def _list_mrs(self, params: dict[str, str]) -> httpx.Response:
        out = [
            self._mr_json(mr)
            for mr in self.mrs.values()
            if params.get("state", "all") in ("all", mr["state"])
            and params.get("source_branch", mr["source"]) == mr["source"]
            and params.get("target_branch", mr["target"]) == mr["target"]
        ]
        return _json(200, out)

    def _mr_verb(self, mr: dict[str, Any], verb: str, method: str, body: dict[str, Any], user: str) -> httpx.Response:
        iid = mr["iid"]
        if verb == "" and method == "PUT":
            if "title" in body:
                mr["title"] = body["title"]
            if "description" in body:
                mr["description"] = body["description"]
            if body.get("state_event") == "close":
                mr["state"] = "closed"
            elif body.get("state_event") == "reopen":
                mr["state"] = "opened"
            return _json(200, self._mr_json(mr))
        if verb == "":
            return _json(200, self._mr_json(mr))
        if verb == "/approvals":
            return _json(200, self._approvals_json(iid))
        if verb == "/reviewers":
            states = self.reviewer_states.get(iid, {})
            return _json(200, [{"user": self._user(u), "state": s, "created_at": NOW} for u, s in states.items()])
        if verb == "/approve":
            # GitLab answers 401 when this user may not approve (the author, with author approval off)
            if user == mr["author"] or user not in self.write:
                return _json(401, {"message": "401 Unauthorized"})
            if body.get("sha") and body["sha"] != mr["sha"]:
                return _json(409, {"message": "SHA does not match HEAD of source branch"})
            self.approvals.setdefault(iid, []).append(user)
            return _json(201, self._approvals_json(iid))
        if verb == "/notes":
            self.notes.setdefault(iid, []).append(body["body"])
            return _json(201, {"id": next(self._ids), "body": body["body"], "author": self._user(user)})
        if verb == "/merge":
            return self._merge(mr, body, user)
        return _json(404, {"message": "404 Not Found"})

    def _set_status(self, sha: str, body: dict[str, Any], user: str) -> httpx.Response:
        name = body.get("name", "default")
        current = next((s for s in self.statuses.get(sha, []) if s["name"] == name), None)
        if current and current["status"] == body["state"]:
            return _json(400, {"message": f"Cannot transition status via :{body['state']} from :{current['status']}"})
        status = {
            "id": next(self._ids),
            "sha": sha,
            "ref": None,
            "status": body["state"],
            "name": name,
            "target_url": body.get("target_url"),
            "description": body.get("description"),
            "created_at": NOW,
            "started_at": None,
            "finished_at": datetime.now(UTC).isoformat(),
            "allow_failure": False,
            "author": self._user(user),
        }
        self.statuses.setdefault(sha, []).insert(0, status)
        return _json(201, status)

    def _merge(self, mr: dict[str, Any], body: dict[str, Any], user: str) -> httpx.Response:
        if mr["state"] != "opened":
            return _json(405, {"message": "405 Method Not Allowed"})
        if body.get("sha") and body["sha"] != mr["sha"]:
            return _json(409, {"message": "SHA does not match HEAD of source branch: " + mr["sha"]})
        latest = next((s for s in self.statuses.get(mr["sha"], []) if s["name"] == self.required_context), None)
        if not latest or latest["status"] != "success":
            return _json(405, {"message": "405 Method Not Allowed"})
        if len(self.approvals.get(mr["iid"], [])) < self.required_approvals:
            return _json(405, {"message": "405 Method Not Allowed"})
        if body.get("squash"):
            mr["squash_commit_sha"] = fake_sha("squash", mr["sha"])
        mr["merge_commit_sha"] = fake_sha("merge", str(mr["iid"]), mr["sha"])
        mr["state"] = "merged"
        mr["merged_by"] = user
        self.branches[mr["target"]] = mr["merge_commit_sha"]
        return _json(200, self._mr_json(mr))
