"""backend.forge against a real Gitea (scripts/gitea.sh start): protection, statuses, reviews, merges, webhooks."""

from __future__ import annotations

import json
import socket
import time

import pytest

from backend.errors import AuthenticationFailed, Conflict, NotFound, PermissionDenied
from backend.forge import ForgeUnavailable, make_forge
from tests.gitea_fixtures import GiteaSandbox, gitea_available, make_sandbox
from tests.helpers import free_port, need_service, wait_for


@pytest.fixture(scope="module")
def gitea(tmp_path_factory) -> GiteaSandbox:
    need_service("Gitea (LFOPS_TEST_GITEA_URL; scripts/gitea.sh start)", gitea_available())
    sandbox = make_sandbox(tmp_path_factory.mktemp("gitea"))
    yield sandbox
    sandbox.close()


def _branch(name: str) -> str:
    return f"{name}-{time.monotonic_ns() % 10**9}"


def test_pull_request_flow_under_protection(gitea):
    author, reviewer = gitea.forge("author"), gitea.forge("reviewer")
    branch = _branch("flow")
    sha = gitea.push_branch(branch, "learning_rate: -1\n")

    pr = author.open_pull_request(branch, "main", "Tune learning rate", "| key | value |\n| --- | --- |")
    assert (pr.state, pr.merged, pr.merge_commit_sha) == ("open", False, None)
    assert (pr.head_branch, pr.base_branch, pr.head_sha) == (branch, "main", sha)
    assert pr.author == gitea.users["author"].login
    assert pr.url.startswith(gitea.url) and pr.url.endswith(f"/pulls/{pr.number}")
    assert author.find_pull_request(branch, "main").number == pr.number
    assert author.find_pull_request(f"{branch}-nope", "main") is None

    # a broken config: lfops posts a failing status, and protection refuses the merge
    author.set_commit_status(sha, "failure", description="learning_rate: must be > 0", target_url=f"{gitea.url}/x")
    (status,) = [s for s in author.list_commit_statuses(sha) if s.context == "lfops/validate"]
    assert (status.state, status.description, status.sha) == ("failure", "learning_rate: must be > 0", sha)
    with pytest.raises(Conflict, match="status check"):
        author.merge(pr.number, head_sha=sha)

    # fixed (same head here; the status is what changes): still no approval
    author.set_commit_status(sha, "success", description="the config validates")
    with pytest.raises(Conflict, match="approvals"):
        author.merge(pr.number, head_sha=sha)

    # the author cannot approve their own pull request; the forge says so
    with pytest.raises(PermissionDenied, match="own pull"):
        author.submit_review(pr.number, "approved", "lgtm", commit_id=sha)

    approval = reviewer.submit_review(pr.number, "approved", "looks right", commit_id=sha)
    assert (approval.state, approval.reviewer, approval.commit_id, approval.official) == (
        "approved",
        gitea.users["reviewer"].login,
        sha,
        True,
    )
    reviews = author.list_reviews(pr.number)
    assert [(r.reviewer, r.state, r.commit_id, r.official) for r in reviews if r.state == "approved"] == [
        (gitea.users["reviewer"].login, "approved", sha, True)
    ]
    assert any(r.approves(sha) for r in reviews)

    merged = author.merge(pr.number, head_sha=sha, message="Merge config\n\nApproved-by: reviewer")
    assert (merged.state, merged.merged) == ("merged", True)
    assert merged.merge_commit_sha and merged.merge_commit_sha != sha
    assert author.get_pull_request(pr.number).merge_commit_sha == merged.merge_commit_sha
    # a real merge commit: first parent is main before, second the approved head; lfops' trailers are in it
    assert gitea.parents(merged.merge_commit_sha)[1] == sha
    message = gitea.git("log", "-1", "--format=%B", merged.merge_commit_sha)
    assert message.startswith("Merge config") and "Approved-by: reviewer" in message
    with pytest.raises(Conflict):
        author.merge(pr.number)  # already merged


def test_official_flag_needs_write_access(gitea):
    author, outsider = gitea.forge("author"), gitea.forge("outsider")
    branch = _branch("official")
    sha = gitea.push_branch(branch, "num_train_epochs: 2\n")
    pr = author.open_pull_request(branch, "main", "epochs", "")
    review = outsider.submit_review(pr.number, "approved", commit_id=sha)
    assert (review.state, review.official, review.commit_id) == ("approved", False, sha)
    assert not review.approves(sha)
    author.set_commit_status(sha, "success")
    with pytest.raises(Conflict, match="approvals"):
        author.merge(pr.number, head_sha=sha)


def test_force_push_after_approval_voids_it(gitea):
    author, reviewer = gitea.forge("author"), gitea.forge("reviewer")
    branch = _branch("force")
    old = gitea.push_branch(branch, "lora_rank: 8\n")
    pr = author.open_pull_request(branch, "main", "rank", "")
    author.set_commit_status(old, "success")
    reviewer.submit_review(pr.number, "approved", commit_id=old)

    new = gitea.push_branch(branch, "lora_rank: 64\n", amend=True)
    assert new != old
    head = wait_for(
        lambda: author.get_pull_request(pr.number).head_sha == new, 30, 0.2, "the pull request to follow the force-push"
    )
    assert head
    reviewer_login = gitea.users["reviewer"].login
    # Gitea moves the head first and dismisses the approval about 0.5 s later; in between, the commit rule alone
    # already keeps the old approval from counting for the new head
    (review,) = [r for r in author.list_reviews(pr.number) if r.reviewer == reviewer_login]
    assert review.commit_id == old and not review.approves(new)
    review = wait_for(
        lambda: next((r for r in author.list_reviews(pr.number) if r.reviewer == reviewer_login and r.stale), None),
        30,
        0.2,
        "the stale approval to be dismissed (dismiss_stale_approvals)",
    )
    assert (review.commit_id, review.state) == (old, "dismissed") and not review.approves(new)
    author.set_commit_status(new, "success")
    with pytest.raises(Conflict, match="approvals"):
        author.merge(pr.number, head_sha=new)

    reviewer.submit_review(pr.number, "approved", commit_id=new)
    with pytest.raises(Conflict):  # lfops asks to merge what it validated; the head has moved on from `old`
        author.merge(pr.number, head_sha=old)
    merged = author.merge(pr.number, head_sha=new)
    assert merged.merged and gitea.parents(merged.merge_commit_sha)[1] == new

    # the webhooks of the push and of the merge, as lfops will receive them
    def delivery(kind: str, action: str):
        def match(d) -> bool:
            data = json.loads(d.body)
            return (
                d.headers.get("X-Gitea-Event-Type") == kind
                and data.get("number") == pr.number
                and (data.get("action") == action)
            )

        return gitea.sink.wait_for(match)

    event = author.receive_webhook(*_parts(delivery("pull_request_sync", "synchronized")))
    assert (event.kind, event.action, event.pull_request.head_sha) == ("pull_request", "synchronized", new)
    event = author.receive_webhook(*_parts(delivery("pull_request", "closed")))
    assert (event.action, event.pull_request.state) == ("merged", "merged")
    assert event.pull_request.merge_commit_sha == merged.merge_commit_sha


def _parts(delivery) -> tuple[dict[str, str], bytes]:
    return delivery.headers, delivery.body


def test_update_comment_close_and_reopen(gitea):
    author = gitea.forge("author")
    branch = _branch("update")
    gitea.push_branch(branch, "cutoff_len: 512\n")
    pr = author.open_pull_request(branch, "main", "first title", "first body")
    updated = author.update_pull_request(pr.number, title="second title", body="second body")
    assert (updated.title, updated.body) == ("second title", "second body")
    author.comment(pr.number, "validation: ok")
    comments = gitea.admin.get(f"/repos/{gitea.repo}/issues/{pr.number}/comments").json()
    assert [c["body"] for c in comments] == ["validation: ok"]
    assert author.update_pull_request(pr.number, state="closed").state == "closed"
    assert author.find_pull_request(branch, "main") is None
    assert author.update_pull_request(pr.number, state="open").state == "open"
    assert author.find_pull_request(branch, "main").number == pr.number
    with pytest.raises(NotFound):
        author.get_pull_request(999999)


def test_webhooks_arrive_signed_and_parse(gitea):
    author, reviewer = gitea.forge("author"), gitea.forge("reviewer")
    branch = _branch("hook")
    sha = gitea.push_branch(branch, "per_device_train_batch_size: 4\n")
    pr = author.open_pull_request(branch, "main", "batch", "")
    author.set_commit_status(sha, "pending", description="validating")
    reviewer.submit_review(pr.number, "approved", commit_id=sha)

    def about(kind: str):
        def match(d) -> bool:
            data = json.loads(d.body)
            if d.headers.get("X-Gitea-Event-Type") != kind:
                return False
            return data.get("number") == pr.number or data.get("sha") == sha

        return match

    opened = gitea.sink.wait_for(about("pull_request"))
    approved = gitea.sink.wait_for(about("pull_request_review_approved"))
    status = gitea.sink.wait_for(about("status"))

    event = author.receive_webhook(opened.headers, opened.body)
    assert (event.kind, event.action, event.number) == ("pull_request", "opened", pr.number)
    assert event.pull_request.head_sha == sha and event.delivery
    assert event.sender == gitea.users["author"].login
    event = author.receive_webhook(approved.headers, approved.body)
    assert (event.kind, event.review_state, event.number) == ("review", "approved", pr.number)
    assert event.sender == gitea.users["reviewer"].login
    event = author.receive_webhook(status.headers, status.body)
    assert (event.kind, event.status.sha, event.status.state, event.status.context) == (
        "status",
        sha,
        "pending",
        "lfops/validate",
    )

    # a tampered body, a wrong secret, no signature: refused
    with pytest.raises(AuthenticationFailed, match="does not match"):
        author.verify_webhook(opened.headers, opened.body.replace(b'"opened"', b'"closed"'))
    wrong = make_forge("gitea", gitea.url, gitea.repo, gitea.users["author"].token, "not-the-secret")
    with pytest.raises(AuthenticationFailed, match="does not match"):
        wrong.verify_webhook(opened.headers, opened.body)
    wrong.close()
    unsigned = {k: v for k, v in opened.headers.items() if "signature" not in k.lower()}
    with pytest.raises(AuthenticationFailed, match="missing"):
        author.verify_webhook(unsigned, opened.body)
    no_secret = make_forge("gitea", gitea.url, gitea.repo, gitea.users["author"].token, "")
    with pytest.raises(AuthenticationFailed, match="no webhook secret"):
        no_secret.verify_webhook(opened.headers, opened.body)
    no_secret.close()


def test_forge_down_or_token_rejected_gives_one_clear_line(gitea):
    token = gitea.users["author"].token
    closed_port = free_port()  # a port nothing listens on
    down = make_forge("gitea", f"http://127.0.0.1:{closed_port}", gitea.repo, token)
    with pytest.raises(ForgeUnavailable) as info:
        down.open_pull_request("x", "main", "t", "b")
    message = str(info.value)
    assert "cannot reach the forge" in message and "open a pull request" in message
    assert token not in message and "\n" not in message
    assert info.value.code == "unavailable"
    down.close()

    # a server that accepts and never answers: the time-out ends the call
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    try:
        hung = make_forge("gitea", f"http://127.0.0.1:{silent.getsockname()[1]}", gitea.repo, token, timeout=0.5)
        t0 = time.monotonic()
        with pytest.raises(ForgeUnavailable, match="no answer within 0.5 s"):
            hung.get_pull_request(1)
        assert time.monotonic() - t0 < 5
        hung.close()
    finally:
        silent.close()

    bad = make_forge("gitea", gitea.url, gitea.repo, "0" * 40)
    with pytest.raises(AuthenticationFailed, match="token was rejected") as info:
        bad.get_pull_request(1)
    assert info.value.field == "LFOPS_FORGE_TOKEN" and "0" * 40 not in str(info.value)
    bad.close()
