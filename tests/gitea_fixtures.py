"""A sandbox on the real Gitea of scripts/gitea.sh: fresh users, a repository with branch protection and a webhook to
a local HTTP server, and a Git clone to push branches from. Used by tests/test_forge_gitea.py and bench/forge_gitea.py.

Everything is named with a random suffix, so sandboxes of several test runs share one server without colliding."""

from __future__ import annotations

import os
import secrets
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

from backend.forge import STATUS_CONTEXT, GiteaForge, make_forge
from tests.helpers import git_clone

GITEA_URL = os.environ.get("LFOPS_TEST_GITEA_URL", "")
GITEA_ADMIN = os.environ.get("LFOPS_TEST_GITEA_ADMIN", "")
GITEA_TOKEN = os.environ.get("LFOPS_TEST_GITEA_TOKEN", "")
HOOK_EVENTS = [
    "pull_request",
    "pull_request_sync",
    "pull_request_review_approved",
    "pull_request_review_rejected",
    "pull_request_review_comment",
    "push",
    "status",
]


def gitea_available() -> bool:
    if not (GITEA_URL and GITEA_TOKEN):
        return False
    try:
        return httpx.get(f"{GITEA_URL}/api/v1/version", timeout=5, trust_env=False).is_success
    except httpx.HTTPError:
        return False


@dataclass
class Delivery:
    headers: dict[str, str]
    body: bytes
    at: float


class WebhookSink:
    """A local HTTP server that records every delivery (Gitea posts to it over loopback)."""

    def __init__(self) -> None:
        self.deliveries: list[Delivery] = []
        self._cond = threading.Condition()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with sink._cond:
                    sink.deliveries.append(Delivery(dict(self.headers.items()), body, time.monotonic()))
                    sink._cond.notify_all()
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def wait_for(self, predicate: Callable[[Delivery], bool], timeout: float = 30.0) -> Delivery:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for d in self.deliveries:
                    if predicate(d):
                        return d
                left = deadline - time.monotonic()
                if left <= 0:
                    kinds = [d.headers.get("X-Gitea-Event-Type") for d in self.deliveries]
                    raise AssertionError(f"no matching webhook delivery within {timeout} s; got {kinds}")
                self._cond.wait(left)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class GiteaUser:
    login: str
    password: str
    token: str


@dataclass
class GiteaSandbox:
    url: str
    owner: str
    name: str
    admin: httpx.Client
    users: dict[str, GiteaUser]
    webhook_secret: str
    clone: Path
    sink: WebhookSink
    forges: list[GiteaForge] = field(default_factory=list)

    @property
    def repo(self) -> str:
        return f"{self.owner}/{self.name}"

    def forge(self, who: str, **kwargs: Any) -> GiteaForge:
        """A forge client acting as `who` (author, reviewer, outsider)."""
        forge = make_forge("gitea", self.url, self.repo, self.users[who].token, self.webhook_secret, **kwargs)
        assert isinstance(forge, GiteaForge)
        self.forges.append(forge)
        return forge

    def git(self, *args: str) -> str:
        env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"}
        return subprocess.run(
            ["git", "-C", str(self.clone), *args], check=True, capture_output=True, text=True, env=env
        ).stdout.strip()

    def push_branch(self, branch: str, content: str, *, amend: bool = False) -> str:
        """Commit configs/<branch>.yaml on `branch` (from main, or amending its tip) and push it; the new head sha."""
        if not amend:
            self.git("fetch", "-q", "origin", "main")
            self.git("checkout", "-q", "-B", branch, "origin/main")
        path = self.clone / "configs" / f"{branch.replace('/', '-')}.yaml"
        path.parent.mkdir(exist_ok=True)
        path.write_text(content)
        self.git("add", "-A")
        self.git("commit", "-q", *(["--amend", "--no-edit"] if amend else ["-m", f"config {branch}"]))
        self.git("push", "-q", *(["--force"] if amend else []), "origin", f"{branch}:{branch}")
        return self.git("rev-parse", "HEAD")

    def parents(self, sha: str) -> list[str]:
        self.git("fetch", "-q", "origin", "main")
        return self.git("rev-list", "--parents", "-n", "1", sha).split()[1:]

    def close(self) -> None:
        for forge in self.forges:
            forge.close()
        self.sink.close()
        try:
            self.admin.delete(f"/repos/{self.owner}/{self.name}")
            for user in self.users.values():
                self.admin.delete(f"/admin/users/{user.login}", params={"purge": "true"})
        finally:
            self.admin.close()


def _ok(response: httpx.Response) -> Any:
    if not response.is_success:
        raise AssertionError(
            f"{response.request.method} {response.request.url.path}: {response.status_code} {response.text}"
        )
    return response.json() if response.content else None


def make_sandbox(workdir: Path, *, status_context: str = STATUS_CONTEXT) -> GiteaSandbox:
    """Users author/reviewer (write access) and outsider (none), a repository owned by the admin with `main`
    protected (1 official approval, the status `status_context`, stale approvals dismissed), and a webhook."""
    suffix = uuid.uuid4().hex[:8]
    admin = httpx.Client(
        base_url=f"{GITEA_URL}/api/v1",
        headers={"Authorization": f"token {GITEA_TOKEN}"},
        timeout=30,
        trust_env=False,
    )
    users: dict[str, GiteaUser] = {}
    for role in ("author", "reviewer", "outsider"):
        login, password = f"{role}-{suffix}", secrets.token_urlsafe(16)
        _ok(
            admin.post(
                "/admin/users",
                json={
                    "username": login,
                    "email": f"{login}@lfops.invalid",
                    "password": password,
                    "must_change_password": False,
                },
            )
        )
        token = _ok(
            httpx.post(
                f"{GITEA_URL}/api/v1/users/{login}/tokens",
                auth=(login, password),
                json={"name": f"lfops-{suffix}", "scopes": ["all"]},
                timeout=30,
                trust_env=False,
            )
        )["sha1"]
        users[role] = GiteaUser(login, password, token)
    name = f"configs-{suffix}"
    _ok(admin.post("/user/repos", json={"name": name, "auto_init": True, "default_branch": "main"}))
    repo = f"/repos/{GITEA_ADMIN}/{name}"
    for role in ("author", "reviewer"):
        _ok(admin.put(f"{repo}/collaborators/{users[role].login}", json={"permission": "write"}))
    _ok(
        admin.post(
            f"{repo}/branch_protections",
            json={
                "rule_name": "main",
                "required_approvals": 1,
                "enable_status_check": True,
                "status_check_contexts": [status_context],
                "block_on_rejected_reviews": True,
                "dismiss_stale_approvals": True,
            },
        )
    )
    sink = WebhookSink()
    secret = secrets.token_hex(16)
    _ok(
        admin.post(
            f"{repo}/hooks",
            json={
                "type": "gitea",
                "active": True,
                "events": HOOK_EVENTS,
                "config": {"url": sink.url, "content_type": "json", "secret": secret},
            },
        )
    )
    clone = workdir / name
    author = users["author"]
    host = GITEA_URL.split("://", 1)[1]
    remote = f"http://{author.login}:{author.token}@{host}/{GITEA_ADMIN}/{name}.git"
    git_clone(remote, clone, user=author.login)
    return GiteaSandbox(GITEA_URL, GITEA_ADMIN, name, admin, users, secret, clone, sink)
