"""backend.forge's GitLab against a fake GitLab REST v4 API (tests/forge_fakes.py): no hosted GitLab is reachable."""

from __future__ import annotations

import json

import pytest

from backend.errors import AuthenticationFailed, Conflict, LfopsError, PermissionDenied
from backend.forge import ForgeUnavailable, GitLabForge, make_forge
from tests.forge_fakes import FakeGitLab, fake_sha

SECRET = "hook-secret"
TOKENS = {"glpat-bot": "lfops-bot", "glpat-rita": "rita"}


def forge(fake: FakeGitLab, token: str = "glpat-bot") -> GitLabForge:  # noqa: S107
    f = make_forge("gitlab", fake.host, fake.project, token, SECRET, transport=fake.transport)
    assert isinstance(f, GitLabForge)
    return f


@pytest.fixture
def gitlab() -> FakeGitLab:
    return FakeGitLab(TOKENS, write={"lfops-bot", "rita"})


def test_mock_gitlab_merge_request_flow(gitlab):
    bot, rita = forge(gitlab), forge(gitlab, "glpat-rita")
    head = fake_sha("one")
    gitlab.push("alice/lr", head)

    mr = bot.open_pull_request("alice/lr", "main", "Tune lr", "| key | value |")
    assert (mr.number, mr.state, mr.head_sha, mr.author, mr.mergeable) == (1, "open", head, "lfops-bot", True)
    assert mr.url == "https://gitlab.example.com/group/sub/configs/-/merge_requests/1"
    assert gitlab.calls[-1].path == "/api/v4/projects/group%2Fsub%2Fconfigs/merge_requests"
    assert gitlab.calls[-1].headers["private-token"] == "glpat-bot"
    assert bot.find_pull_request("alice/lr", "main").number == 1
    assert bot.find_pull_request("alice/lr", "release") is None
    with pytest.raises(Conflict, match="Another open merge request already exists"):
        bot.open_pull_request("alice/lr", "main", "again", "")

    bot.set_commit_status(head, "failure", description="learning_rate: must be > 0")
    (status,) = bot.list_commit_statuses(head)
    assert (status.state, status.context, status.description) == (
        "failure",
        "lfops/validate",
        "learning_rate: must be > 0",
    )
    assert gitlab.statuses[head][0]["status"] == "failed"  # GitLab's word for it
    bot.set_commit_status(head, "failure")  # the same state again: GitLab refuses the transition; nothing to do
    with pytest.raises(Conflict, match="405"):
        bot.merge(1, head_sha=head)
    bot.set_commit_status(head, "success")
    with pytest.raises(Conflict, match="405"):
        bot.merge(1, head_sha=head)  # no approval yet

    with pytest.raises(PermissionDenied, match="not allowed to approve merge request !1"):
        bot.submit_review(1, "approved", commit_id=head)  # the author
    review = rita.submit_review(1, "approved", commit_id=head)
    assert (review.reviewer, review.state, review.commit_id) == ("rita", "approved", head)
    (listed,) = bot.list_reviews(1)
    assert (listed.reviewer, listed.state, listed.commit_id, listed.official) == ("rita", "approved", head, True)
    assert listed.approves(head)

    merged = bot.merge(1, head_sha=head, message="Merge config\n\nApproved-by: rita")
    assert (merged.state, merged.merged, merged.merge_commit_sha) == ("merged", True, gitlab.branches["main"])
    assert merged.merged_by == gitlab.tokens["glpat-bot"]
    assert gitlab.calls[-1].body == {
        "squash": False,
        "sha": head,
        "merge_commit_message": "Merge config\n\nApproved-by: rita",
    }


def test_mock_gitlab_push_after_approval(gitlab):
    bot, rita = forge(gitlab), forge(gitlab, "glpat-rita")
    old = fake_sha("old")
    gitlab.push("b", old)
    bot.open_pull_request("b", "main", "t", "")
    rita.submit_review(1, "approved", commit_id=old)
    new = fake_sha("new")
    gitlab.push("b", new)  # the project resets approvals on push
    assert bot.get_pull_request(1).head_sha == new
    assert bot.list_reviews(1) == []
    bot.set_commit_status(new, "success")
    with pytest.raises(Conflict, match="SHA does not match"):
        bot.merge(1, head_sha=old)
    with pytest.raises(Conflict, match="SHA does not match"):
        rita.submit_review(1, "approved", commit_id=old)
    rita.submit_review(1, "approved", commit_id=new)
    # squash with the merge-commit method: main gets a merge commit (whose second parent is the squashed commit)
    assert bot.merge(1, head_sha=new, style="squash").merge_commit_sha == gitlab.branches["main"]
    assert gitlab.calls[-1].body == {"squash": True, "sha": new}


def test_mock_gitlab_approvals_without_reset_on_push_never_count():
    gitlab = FakeGitLab(TOKENS, write={"lfops-bot", "rita"}, reset_approvals_on_push=False)
    bot, rita = forge(gitlab), forge(gitlab, "glpat-rita")
    head = fake_sha("h")
    gitlab.push("b", head)
    bot.open_pull_request("b", "main", "t", "")
    rita.submit_review(1, "approved", commit_id=head)
    gitlab.reviewer_states[1] = {"olga": "requested_changes", "rita": "approved"}
    reviews = bot.list_reviews(1)
    # GitLab does not say which commit an approval was given on: unknown, so it never counts as the head's
    assert [(r.reviewer, r.state, r.commit_id, r.approves(head)) for r in reviews] == [
        ("rita", "approved", None, False),
        ("olga", "changes_requested", None, False),
    ]
    with pytest.raises(LfopsError, match="state"):
        rita.submit_review(1, "changes_requested", "no")  # GitLab's REST API cannot request changes


def test_mock_gitlab_update_comment_errors(gitlab):
    bot = forge(gitlab)
    gitlab.push("b", fake_sha("b"))
    bot.open_pull_request("b", "main", "t", "")
    mr = bot.update_pull_request(1, title="t2", body="b2")
    assert (mr.title, mr.body) == ("t2", "b2")
    bot.comment(1, "validation: ok")
    assert gitlab.notes[1] == ["validation: ok"]
    assert bot.update_pull_request(1, state="closed").state == "closed"
    assert bot.find_pull_request("b", "main") is None
    assert bot.update_pull_request(1, state="open").state == "open"
    with pytest.raises(LfopsError, match="style"):
        bot.merge(1, style="rebase")  # GitLab's merge method is a project setting
    with pytest.raises(AuthenticationFailed, match="token was rejected") as info:
        forge(gitlab, "glpat-nope").get_pull_request(1)
    assert "glpat-nope" not in str(info.value)
    with pytest.raises(LfopsError, match="group/project"):
        make_forge("gitlab", gitlab.host, "justone", "t")
    gitlab.down = True
    with pytest.raises(ForgeUnavailable, match="cannot reach the forge at https://gitlab.example.com/api/v4"):
        bot.get_pull_request(1)


# ---- webhooks: payloads shaped as GitLab documents them -------------------------------------------------------------


def _delivery(event: str, payload: dict, token: str = SECRET) -> tuple[dict[str, str], bytes]:
    headers = {
        "X-Gitlab-Event": event,
        "X-Gitlab-Token": token,
        "X-Gitlab-Event-UUID": "13792a34-cac6-4fda-95a8-c58e00a3954e",
        "Content-Type": "application/json",
    }
    return headers, json.dumps(payload).encode()


def _mr_hook(action: str, head: str, **attrs) -> dict:
    return {
        "object_kind": "merge_request",
        "event_type": "merge_request",
        "user": {"id": 1, "name": "Rita", "username": "rita"},
        "project": {"id": 42, "path_with_namespace": "group/sub/configs"},
        "object_attributes": {
            "iid": 3,
            "title": "Tune lr",
            "description": "",
            "state": "opened",
            "source_branch": "alice/lr",
            "target_branch": "main",
            "url": "https://gitlab.example.com/group/sub/configs/-/merge_requests/3",
            "last_commit": {"id": head, "message": "config"},
            "merge_status": "unchecked",
            "detailed_merge_status": "checking",
            "merge_commit_sha": None,
            "action": action,
            **attrs,
        },
    }


def test_mock_gitlab_webhooks(gitlab):
    bot = forge(gitlab)
    head = fake_sha("h")
    event = bot.receive_webhook(*_delivery("Merge Request Hook", _mr_hook("open", head)))
    assert (event.kind, event.action, event.number, event.sender) == ("pull_request", "opened", 3, "rita")
    assert (event.pull_request.head_sha, event.pull_request.mergeable) == (head, None)
    assert event.delivery == "13792a34-cac6-4fda-95a8-c58e00a3954e"
    event = bot.receive_webhook(*_delivery("Merge Request Hook", _mr_hook("update", head, oldrev=fake_sha("o"))))
    assert event.action == "synchronized"
    assert bot.receive_webhook(*_delivery("Merge Request Hook", _mr_hook("update", head))).action == "edited"
    event = bot.receive_webhook(*_delivery("Merge Request Hook", _mr_hook("approval", head)))
    assert (event.kind, event.review_state, event.sender) == ("review", "approved", "rita")
    assert (
        bot.receive_webhook(*_delivery("Merge Request Hook", _mr_hook("unapproval", head))).review_state == "dismissed"
    )
    merged = _mr_hook("merge", head, state="merged", merge_commit_sha=fake_sha("m"))
    event = bot.receive_webhook(*_delivery("Merge Request Hook", merged))
    assert (event.action, event.pull_request.state, event.pull_request.merge_commit_sha) == (
        "merged",
        "merged",
        fake_sha("m"),
    )
    push = {
        "object_kind": "push",
        "ref": "refs/heads/alice/lr",
        "before": fake_sha("0"),
        "after": head,
        "user_username": "alice",
    }
    event = bot.receive_webhook(*_delivery("Push Hook", push))
    assert (event.kind, event.push.after, event.sender) == ("push", head, "alice")
    note = {
        "object_kind": "note",
        "user": {"username": "olga"},
        "merge_request": {"iid": 3},
        "object_attributes": {"note": "hm"},
    }
    assert bot.receive_webhook(*_delivery("Note Hook", note)).number == 3

    with pytest.raises(AuthenticationFailed, match="X-Gitlab-Token token does not match"):
        bot.receive_webhook(*_delivery("Push Hook", push, token="guess"))
    headers, body = _delivery("Push Hook", push)
    del headers["X-Gitlab-Token"]
    with pytest.raises(AuthenticationFailed, match="missing"):
        bot.verify_webhook(headers, body)
