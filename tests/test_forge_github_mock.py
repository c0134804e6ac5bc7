"""backend.forge's GitHub against a fake GitHub REST API (tests/forge_fakes.py): no hosted forge is reachable here."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import pytest

from backend.errors import AuthenticationFailed, Conflict, LfopsError, NotFound, PermissionDenied, SettingsError
from backend.forge import ForgeUnavailable, GitHubForge, make_forge
from tests.forge_fakes import FakeGitHub, fake_sha

SECRET = "hook-secret"
TOKENS = {"tok-bot": "lfops-bot", "tok-rita": "rita", "tok-olga": "olga"}


@pytest.fixture
def github() -> FakeGitHub:
    return FakeGitHub(TOKENS, write={"lfops-bot", "rita"})


def forge(fake: FakeGitHub, token: str = "tok-bot", base_url: str = "https://github.com") -> GitHubForge:  # noqa: S107
    f = make_forge("github", base_url, f"{fake.owner}/{fake.repo}", token, SECRET, transport=fake.transport)
    assert isinstance(f, GitHubForge)
    return f


def test_mock_github_pull_request_flow(github):
    bot, rita = forge(github), forge(github, "tok-rita")
    head = fake_sha("one")
    github.push("alice/lr", head)

    pr = bot.open_pull_request("alice/lr", "main", "Tune lr", "| key | value |")
    assert (pr.number, pr.state, pr.head_sha, pr.author) == (1, "open", head, "lfops-bot")
    assert pr.url == "https://github.com/octo-org/configs/pull/1"
    assert pr.merge_commit_sha is None  # GitHub's test-merge sha before a merge is not a merge commit
    assert bot.find_pull_request("alice/lr", "main").number == 1
    assert bot.find_pull_request("alice/other", "main") is None
    with pytest.raises(Conflict, match="already exists"):
        bot.open_pull_request("alice/lr", "main", "again", "")

    bot.set_commit_status(head, "failure", description="x" * 200, target_url="https://lfops.example/cr/1")
    (status,) = bot.list_commit_statuses(head)
    assert (status.state, status.context, len(status.description)) == ("failure", "lfops/validate", 140)
    with pytest.raises(Conflict, match="lfops/validate"):
        bot.merge(1, head_sha=head)
    bot.set_commit_status(head, "success")
    with pytest.raises(Conflict, match="approving review"):
        bot.merge(1, head_sha=head)

    with pytest.raises(PermissionDenied, match="own pull request"):
        bot.submit_review(1, "approved", commit_id=head)
    review = rita.submit_review(1, "approved", "fine", commit_id=head)
    assert (review.reviewer, review.state, review.commit_id, review.official) == ("rita", "approved", head, True)
    assert [r.approves(head) for r in bot.list_reviews(1)] == [True]

    merged = bot.merge(1, head_sha=head, message="Merge config\n\nApproved-by: rita")
    assert (merged.state, merged.merged) == ("merged", True)
    assert merged.merge_commit_sha == github.branches["main"]
    assert merged.merged_by == github.tokens["tok-bot"]
    sent = [c for c in github.calls if c.path.endswith("/pulls/1/merge")][-1]
    assert sent.method == "PUT"
    assert sent.body == {
        "merge_method": "merge",
        "sha": head,
        "commit_title": "Merge config",
        "commit_message": "Approved-by: rita",
    }
    assert sent.headers["authorization"] == "Bearer tok-bot"
    assert sent.headers["x-github-api-version"] == "2022-11-28"


def test_mock_github_review_counts_only_from_writers_and_on_the_head(github):
    bot, olga, rita = forge(github), forge(github, "tok-olga"), forge(github, "tok-rita")
    old = fake_sha("old")
    github.push("b", old)
    bot.open_pull_request("b", "main", "t", "")
    olga_review = olga.submit_review(1, "approved", commit_id=old)
    assert (olga_review.official, olga_review.approves(old)) == (False, False)  # olga can only read
    rita.submit_review(1, "approved", commit_id=old)
    new = fake_sha("new")
    github.push("b", new)  # a force-push after the approval
    assert bot.get_pull_request(1).head_sha == new
    reviews = bot.list_reviews(1)
    assert [(r.reviewer, r.official, r.approves(old), r.approves(new)) for r in reviews] == [
        ("olga", False, False, False),
        ("rita", True, True, False),
    ]
    bot.set_commit_status(new, "success")
    with pytest.raises(Conflict, match="modified"):
        bot.merge(1, head_sha=old)
    with pytest.raises(Conflict, match="approving review"):
        bot.merge(1, head_sha=new)
    # permissions are asked once per reviewer per listing
    asked = [c.path for c in github.calls if c.path.endswith("/permission")]
    assert asked[-2:] == [
        "/repos/octo-org/configs/collaborators/olga/permission",
        "/repos/octo-org/configs/collaborators/rita/permission",
    ]


def test_mock_github_reviews_are_read_across_pages(github):
    bot = forge(github)
    github.push("b", fake_sha("b"))
    bot.open_pull_request("b", "main", "t", "")
    for i in range(130):
        forge(github, "tok-olga").submit_review(1, "comment", f"note {i}")
    reviews = bot.list_reviews(1)
    assert [r.body for r in reviews] == [f"note {i}" for i in range(130)]
    pages = [c.params for c in github.calls if c.method == "GET" and c.path.endswith("/pulls/1/reviews")]
    assert pages == [{"per_page": "100", "page": "1"}, {"per_page": "100", "page": "2"}]


def test_mock_github_update_comment_and_errors(github):
    bot = forge(github)
    github.push("b", fake_sha("b"))
    bot.open_pull_request("b", "main", "t", "")
    pr = bot.update_pull_request(1, title="t2", body="b2")
    assert (pr.title, pr.body) == ("t2", "b2")
    bot.comment(1, "validation: ok")
    assert github.comments[1] == ["validation: ok"]
    assert bot.update_pull_request(1, state="closed").state == "closed"
    with pytest.raises(LfopsError, match="state"):
        bot.update_pull_request(1, state="merged")
    with pytest.raises(NotFound):
        bot.get_pull_request(7)
    with pytest.raises(LfopsError, match="style"):
        bot.merge(1, style="octopus")

    with pytest.raises(AuthenticationFailed, match="token was rejected.*Bad credentials") as info:
        forge(github, "tok-wrong").get_pull_request(1)
    assert "tok-wrong" not in str(info.value) and info.value.field == "LFOPS_FORGE_TOKEN"

    github.down = True
    with pytest.raises(ForgeUnavailable, match="cannot reach the forge at https://api.github.com") as info:
        bot.open_pull_request("b", "main", "t", "")
    assert "tok-bot" not in str(info.value) and "\n" not in str(info.value)


def test_mock_github_api_urls_and_settings():
    assert GitHubForge.api_url("https://github.com") == "https://api.github.com"
    assert GitHubForge.api_url("https://api.github.com/") == "https://api.github.com"
    assert GitHubForge.api_url("https://ghe.example.com") == "https://ghe.example.com/api/v3"
    assert GitHubForge.api_url("https://ghe.example.com/api/v3") == "https://ghe.example.com/api/v3"
    assert make_forge("github", "", "o/r", "t").http.api_url == "https://api.github.com"
    assert make_forge("none") is None and make_forge("") is None
    with pytest.raises(SettingsError, match="LFOPS_FORGE: 'bitbucket'"):
        make_forge("bitbucket", "https://x", "o/r", "t")
    with pytest.raises(SettingsError, match="LFOPS_FORGE_REPO: 'just-a-name'") as info:
        make_forge("github", "https://github.com", "just-a-name", "t")
    assert info.value.field == "LFOPS_FORGE_REPO"
    with pytest.raises(SettingsError, match="LFOPS_FORGE_TOKEN"):
        make_forge("github", "https://github.com", "o/r", "")
    with pytest.raises(SettingsError, match="must not carry credentials"):
        make_forge("gitea", "https://bot:secret@gitea.example", "o/r", "t")
    assert "t0ken" not in repr(make_forge("github", "https://github.com", "o/r", "t0ken"))


# ---- webhooks: payloads shaped as GitHub documents them -------------------------------------------------------------


def _delivery(event: str, payload: dict, secret: str = SECRET) -> tuple[dict[str, str], bytes]:
    body = json.dumps(payload).encode()
    signature = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    headers = {
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": "72d3162e-cc78-11e3-81ab-4c9367dc0958",
        "X-Hub-Signature-256": signature,
        "Content-Type": "application/json",
    }
    return headers, body


def _pull(number: int, head: str, *, merged: bool = False) -> dict:
    return {
        "number": number,
        "state": "closed" if merged else "open",
        "html_url": f"https://github.com/octo-org/configs/pull/{number}",
        "title": "Tune lr",
        "body": "",
        "user": {"login": "lfops-bot"},
        "head": {"ref": "alice/lr", "sha": head},
        "base": {"ref": "main", "sha": fake_sha("main")},
        "merged": merged,
        "merged_at": "2026-01-02T03:04:05Z" if merged else None,
        "merge_commit_sha": fake_sha("merge") if merged else fake_sha("test-merge"),
        "mergeable": None,
    }


def test_mock_github_webhooks(github):
    bot = forge(github)
    head = fake_sha("h")
    event = bot.receive_webhook(
        *_delivery(
            "pull_request",
            {"action": "synchronize", "number": 5, "pull_request": _pull(5, head), "sender": {"login": "alice"}},
        )
    )
    assert (event.kind, event.action, event.number, event.pull_request.head_sha, event.sender) == (
        "pull_request",
        "synchronized",
        5,
        head,
        "alice",
    )
    assert event.delivery == "72d3162e-cc78-11e3-81ab-4c9367dc0958"
    closed = {"action": "closed", "number": 5, "pull_request": _pull(5, head, merged=True), "sender": {"login": "rita"}}
    event = bot.receive_webhook(*_delivery("pull_request", closed))
    assert (event.action, event.pull_request.merge_commit_sha) == ("merged", fake_sha("merge"))
    review = {
        "action": "submitted",
        "review": {"id": 80, "user": {"login": "rita"}, "state": "approved", "commit_id": head, "body": ""},
        "pull_request": _pull(5, head),
        "sender": {"login": "rita"},
    }
    event = bot.receive_webhook(*_delivery("pull_request_review", review))
    assert (event.kind, event.review_state, event.sender, event.number) == ("review", "approved", "rita", 5)
    dismissed = {**review, "action": "dismissed", "review": {**review["review"], "state": "dismissed"}}
    assert bot.receive_webhook(*_delivery("pull_request_review", dismissed)).review_state == "dismissed"
    push = {"ref": "refs/heads/alice/lr", "before": fake_sha("h0"), "after": head, "sender": {"login": "alice"}}
    event = bot.receive_webhook(*_delivery("push", push))
    assert (event.kind, event.push.ref, event.push.after) == ("push", "refs/heads/alice/lr", head)
    status = {"sha": head, "state": "success", "context": "lfops/validate", "description": "ok", "target_url": None}
    event = bot.receive_webhook(*_delivery("status", {**status, "sender": {"login": "lfops-bot"}}))
    assert (event.kind, event.status.sha, event.status.state) == ("status", head, "success")
    assert bot.receive_webhook(*_delivery("ping", {"zen": "Keep it logically awesome.", "hook_id": 1})).kind == "ping"
    comment = {"action": "created", "issue": {"number": 5}, "comment": {"body": "hi"}, "sender": {"login": "o"}}
    event = bot.receive_webhook(*_delivery("issue_comment", comment))
    assert (event.kind, event.action, event.number) == ("other", "comment", 5)

    headers, body = _delivery("push", push, secret="wrong")
    with pytest.raises(AuthenticationFailed, match="X-Hub-Signature-256 signature does not match"):
        bot.receive_webhook(headers, body)
    headers, body = _delivery("push", push)
    with pytest.raises(AuthenticationFailed, match="does not match"):
        bot.verify_webhook(headers, body + b" ")
    with pytest.raises(AuthenticationFailed, match="missing"):
        bot.verify_webhook({"X-GitHub-Event": "push"}, body)
    with pytest.raises(LfopsError, match="not JSON"):
        bot.parse_webhook(headers, b"{nope")


def test_mock_git_push_auth_headers_never_put_the_token_in_a_url():
    from backend.forge import git_auth_env

    assert git_auth_env("none", "t") == {} and git_auth_env("gitea", "") == {}
    gitea = git_auth_env("gitea", "tok")
    assert (gitea["GIT_CONFIG_KEY_0"], gitea["GIT_CONFIG_VALUE_0"]) == ("http.extraHeader", "Authorization: token tok")
    github = git_auth_env("github", "tok")["GIT_CONFIG_VALUE_0"]
    assert github == "Authorization: Basic " + base64.b64encode(b"x-access-token:tok").decode()
    gitlab = git_auth_env("gitlab", "tok")["GIT_CONFIG_VALUE_0"]
    assert gitlab == "Authorization: Basic " + base64.b64encode(b"oauth2:tok").decode()
