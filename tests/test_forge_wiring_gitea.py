"""lfops with a real Gitea as its forge (scripts/gitea.sh): save opens a pull request, lfops validates every head and
posts lfops/validate, reviews and merges on the forge are mirrored (webhook through the real endpoint, and the
reconcile), the launch policy takes the merge commit of an approved pull request only.

The lfops bot's token is the sandbox's `author` user (so the forge itself refuses the author's self-approval); the
lfops users alice (analyst) and rita (reviewer) map to the forge logins author-* and reviewer-*."""

from __future__ import annotations

import json
import logging
import os
import subprocess
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from backend.api import create_app
from backend.errors import Conflict, GitFailure, PermissionDenied
from backend.forge import ForgeUnavailable
from backend.review_status import ChangeRequestStatus
from backend.runs.policy import LaunchPolicy
from backend.store.models import AuditEvent, ChangeRequest, PullRequest
from backend.workspace import Workspace
from tests.gitea_fixtures import GITEA_TOKEN, GiteaSandbox, gitea_available, make_sandbox
from tests.helpers import free_port, git, need_service, run_lfops, wait_for
from tests.runs_fixtures import kill_leftover_runs, small_config
from tests.workspace_fixtures import Env, make_env

PROTECTION = {
    "rule_name": "main",
    "required_approvals": 1,
    "enable_status_check": True,
    "status_check_contexts": ["lfops/validate"],
    "block_on_rejected_reviews": True,
    "dismiss_stale_approvals": True,
}


@pytest.fixture(scope="module")
def gitea(tmp_path_factory) -> GiteaSandbox:
    need_service("Gitea (LFOPS_TEST_GITEA_URL; scripts/gitea.sh start)", gitea_available())
    sandbox = make_sandbox(tmp_path_factory.mktemp("gitea"))
    yield sandbox
    sandbox.close()


def _auth_env(token: str) -> dict[str, str]:
    return {
        **os.environ,
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_CONFIG_COUNT": "1",
        "GIT_CONFIG_KEY_0": "http.extraHeader",
        "GIT_CONFIG_VALUE_0": f"Authorization: token {token}",
    }


def _seed_main(gitea: GiteaSandbox, origin: Path) -> None:
    """The Gitea repository's main becomes the lfops workspace's seeded main (protection lifted for that push)."""
    repo = f"/repos/{gitea.repo}"
    gitea.admin.delete(f"{repo}/branch_protections/main").raise_for_status()
    subprocess.run(
        ["git", "-C", str(origin), "push", "-q", "--force", f"{gitea.url}/{gitea.repo}.git", "main:main"],
        check=True,
        capture_output=True,
        env=_auth_env(GITEA_TOKEN),
    )
    gitea.admin.post(f"{repo}/branch_protections", json=PROTECTION).raise_for_status()
    gitea.git("fetch", "-q", "origin")


def _settings_for(env: Env, gitea: GiteaSandbox, **overrides):
    users = gitea.users
    return env.ws.settings.model_copy(
        update={
            "repo_url": f"{gitea.url}/{gitea.repo}.git",
            "forge": "gitea",
            "forge_url": gitea.url,
            "forge_repo": gitea.repo,
            "forge_token": users["author"].token,
            "forge_webhook_secret": gitea.webhook_secret,
            "forge_user_map": {users["author"].login: "alice", users["reviewer"].login: "rita"},
            "public_url": "http://lfops.test",
            **overrides,
        }
    )


@pytest.fixture(scope="module")
def forge_env(gitea, template_workspace, tmp_path_factory) -> Env:
    root = tmp_path_factory.mktemp("forge-ws")
    env = make_env(template_workspace, root / "ws")
    _seed_main(gitea, env.origin)
    ws = Workspace(_settings_for(env, gitea))
    git(ws.settings.mirror_dir, "remote", "set-url", "origin", ws.settings.repo_url)
    ws.repo.fetch()
    env = Env(ws, env.passwords)
    yield env
    ws.store.dispose()


@pytest.fixture(scope="module")
def api(forge_env) -> TestClient:
    with TestClient(create_app(forge_env.ws), raise_server_exceptions=False) as client:
        yield client


def _config(env: Env, rank: int, **overrides: object) -> bytes:
    """The example config, small enough to train in seconds (tests/runs_fixtures.py), with this LoRA rank."""
    return small_config(env, lora_rank=rank, **overrides).frozen().canonical_yaml.encode()


def _deliver(gitea: GiteaSandbox, api: TestClient, kind: str, number: int, since: int) -> httpx.Response:
    """Hand lfops' endpoint the real, signed delivery Gitea sent (to the sandbox's sink) about pull request `number`."""

    def about(d) -> bool:
        return d.headers.get("X-Gitea-Event-Type") == kind and f'"number": {number},' in d.body.decode()

    gitea.sink.wait_for(lambda d: gitea.sink.deliveries.index(d) >= since and about(d), timeout=60)
    delivery = next(d for d in gitea.sink.deliveries[since:] if about(d))
    headers = {k: v for k, v in delivery.headers.items() if k.lower().startswith("x-")}
    return api.post("/api/v1/forge/webhook", content=delivery.body, headers=headers)


def _hand_push(gitea: GiteaSandbox, branch: str, path: str, content: bytes, *, force: bool = False) -> str:
    """A commit pushed to the branch by a person, outside lfops (amending its tip when `force`)."""
    gitea.git("fetch", "-q", "origin")
    gitea.git("checkout", "-q", "-B", branch, f"origin/{branch}")
    (gitea.clone / path).write_bytes(content)
    gitea.git("add", path)
    gitea.git("commit", "-q", *(["--amend", "--no-edit"] if force else ["-m", "edited by hand"]))
    gitea.git("push", "-q", *(["--force"] if force else []), "origin", f"{branch}:{branch}")
    return gitea.git("rev-parse", "HEAD")


def _status(gitea: GiteaSandbox, sha: str):
    statuses = [s for s in gitea.forge("author").list_commit_statuses(sha) if s.context == "lfops/validate"]
    return statuses[0] if statuses else None


def test_save_validate_review_on_the_forge_merge_launch(gitea, forge_env, api):
    ws, alice, rita = forge_env.ws, forge_env.actor("alice"), forge_env.actor("rita")
    sync = ws.forge_sync
    saved = ws.changes.save(alice, _config(forge_env, 16), "rank16", "LoRA rank 16")

    # save -> pull request: body with the table, hashes and link; a success status on the head
    pr = sync.pull_request(saved.change_request)
    forge_pr = gitea.forge("reviewer").get_pull_request(pr.number)
    assert (forge_pr.state, forge_pr.head_branch, forge_pr.head_sha) == ("open", saved.branch, saved.commit)
    assert forge_pr.author == gitea.users["author"].login
    for text in ("| lora_rank | 8 | 16 |", saved.config_hash, saved.dataset_version, "validation | ok"):
        assert text in forge_pr.body
    assert f"(http://lfops.test/?tab=review&cr={saved.change_request})" in forge_pr.body  # the WebUI's Review tab
    assert f"(http://lfops.test/api/v1/change-requests/{saved.change_request})" in forge_pr.body
    assert _status(gitea, saved.commit).target_url == f"http://lfops.test/?tab=review&cr={saved.change_request}"
    # the REST API shows the pull request with the change request
    token = ws.tokens.create(alice, "forge-test").token
    shown = api.get(f"/api/v1/change-requests/{saved.change_request}", headers={"Authorization": f"Bearer {token}"})
    assert shown.status_code == 200, shown.text
    assert shown.json()["request"]["pull_request"] == {
        "forge": "gitea",
        "number": pr.number,
        "url": forge_pr.url,
        "state": "open",
        "head_commit": saved.commit,
        "merge_commit": None,
        "approved_at_merge": None,
        "label": pr.label,
    }
    assert _status(gitea, saved.commit).state == "success"

    # a broken config pushed by hand: lfops sees the new head (webhook) and posts a failing status with the problem
    since = len(gitea.sink.deliveries)
    broken = _hand_push(gitea, saved.branch, saved.config_path, _config(forge_env, 16, learning_rate=-1.0))
    assert _deliver(gitea, api, "pull_request_sync", pr.number, since).status_code == 200
    failing = _status(gitea, broken)
    assert failing.state == "failure" and "learning_rate" in failing.description
    assert ws.changes.get(alice, saved.change_request).head_commit == broken

    # fixed by hand: success, and the head followed
    since = len(gitea.sink.deliveries)
    fixed = _hand_push(gitea, saved.branch, saved.config_path, _config(forge_env, 32))
    assert _deliver(gitea, api, "pull_request_sync", pr.number, since).status_code == 200
    assert _status(gitea, fixed).state == "success"
    view = ws.changes.get(alice, saved.change_request)
    assert (view.head_commit, view.status) == (fixed, ChangeRequestStatus.OPEN)

    # the author's approval: the forge refuses it (the bot opened it as the author's login)
    with pytest.raises(PermissionDenied, match="own pull"):
        gitea.forge("author").submit_review(pr.number, "approved", "mine", commit_id=fixed)

    # the reviewer approves on the forge; lfops without the login mapping does not count it (reconcile)...
    since = len(gitea.sink.deliveries)
    gitea.forge("reviewer").submit_review(pr.number, "approved", "looks right", commit_id=fixed)
    unmapped = Workspace(_settings_for(forge_env, gitea, forge_user_map={gitea.users["author"].login: "alice"}))
    unmapped.forge_sync.reconcile()
    view = ws.changes.get(alice, saved.change_request)
    assert view.status == ChangeRequestStatus.OPEN and view.approvers == []
    assert [r.reviewer for r in view.reviews] == [f"{gitea.users['reviewer'].login} (forge)"]
    unmapped.store.dispose()
    # ... nor mapped to an lfops analyst
    from backend.auth import add_user

    with ws.store.session() as s:
        add_user(s, "bob", "analyst", "a-long-password-for-bob")
    analyst = Workspace(
        _settings_for(
            forge_env,
            gitea,
            forge_user_map={gitea.users["author"].login: "alice", gitea.users["reviewer"].login: "bob"},
        )
    )
    analyst.forge_sync.reconcile()
    view = ws.changes.get(alice, saved.change_request)
    assert view.status == ChangeRequestStatus.OPEN and view.approvers == []
    assert [(r.reviewer, r.counts) for r in view.reviews] == [("bob", False)]
    analyst.store.dispose()
    # ... and with it, the webhook through the real endpoint makes it count
    assert _deliver(gitea, api, "pull_request_review_approved", pr.number, since).status_code == 200
    view = ws.changes.get(alice, saved.change_request)
    assert (view.status, view.approvers) == (ChangeRequestStatus.APPROVED, ["rita"])

    # merge through lfops: the forge merges (its protection is satisfied), lfops records it; the policy launches it
    merged = ws.changes.merge(rita, saved.change_request)
    assert merged.status == ChangeRequestStatus.MERGED
    row = sync.pull_request(saved.change_request)
    assert (row.state, row.merge_commit, row.approved_at_merge) == ("merged", merged.merged_commit, True)
    assert gitea.parents(merged.merged_commit)[1] == fixed
    assert "Approved-by: rita" in gitea.git("log", "-1", "--format=%B", merged.merged_commit)
    policy = LaunchPolicy(ws.store, ws.repo)
    target = policy.resolve(saved.change_request)
    assert target.commit == merged.merged_commit and policy.refusal(target) is None
    ws.runs.start_monitor(interval=0.2)
    try:
        run = ws.runs.launch(alice, saved.change_request)
        final = ws.runs.wait(alice, run.id, timeout=600)
    finally:
        ws.runs.stop_monitor()
        kill_leftover_runs(ws)
    assert final.status == "succeeded", final.reason
    # the closing webhook re-reads a merged pull request: nothing changes
    assert ws.forge_sync.sync(pr.number).state == "merged"


def test_merges_made_on_the_forge(gitea, forge_env, api):
    ws, alice = forge_env.ws, forge_env.actor("alice")
    policy = LaunchPolicy(ws.store, ws.repo)

    # approved and merged on the forge by the reviewer: mirrored by the reconcile, launchable
    ok = ws.changes.save(alice, _config(forge_env, 24), "rank24", "LoRA rank 24")
    number = ws.forge_sync.pull_request(ok.change_request).number
    gitea.forge("reviewer").submit_review(number, "approved", "ok", commit_id=ok.commit)
    merged = gitea.forge("reviewer").merge(number, head_sha=ok.commit)
    ws.forge_sync.reconcile()
    view = ws.changes.get(alice, ok.change_request)
    assert (view.status, view.merged_commit, view.approvers) == ("merged", merged.merge_commit_sha, ["rita"])
    assert ws.forge_sync.pull_request(ok.change_request).approved_at_merge is True
    assert policy.refusal(policy.resolve(ok.change_request)) is None

    # an admin's force merge without an approval: visible as such, launchable only by the audited override
    forced = ws.changes.save(alice, _config(forge_env, 48), "rank48", "LoRA rank 48")
    number = ws.forge_sync.pull_request(forced.change_request).number
    since = len(gitea.sink.deliveries)

    def force_merge() -> httpx.Response | None:
        """Gitea's own API; right after a push it answers 405 "try again later" until its mergeability check ran."""
        merge = {"Do": "merge", "force_merge": True}
        answer = gitea.admin.post(f"/repos/{gitea.repo}/pulls/{number}/merge", json=merge)
        return None if answer.status_code == 405 and "try again later" in answer.text.lower() else answer

    answer = wait_for(force_merge, timeout=60, interval=0.5, what="Gitea to accept the force merge")
    assert answer.is_success, answer.text
    assert _deliver(gitea, api, "pull_request", number, since).status_code == 200
    row = ws.forge_sync.pull_request(forced.change_request)
    assert (row.state, row.approved_at_merge) == ("merged", False)
    assert "without an approval that counts" in row.label
    refusal = policy.refusal(policy.resolve(forced.change_request))
    assert refusal and "merged on the forge without an approval that counts" in refusal


def test_force_push_after_approval_voids_it(gitea, forge_env):
    ws, alice, rita = forge_env.ws, forge_env.actor("alice"), forge_env.actor("rita")
    saved = ws.changes.save(alice, _config(forge_env, 12), "rank12", "LoRA rank 12")
    number = ws.forge_sync.pull_request(saved.change_request).number
    gitea.forge("reviewer").submit_review(number, "approved", "ok", commit_id=saved.commit)
    ws.forge_sync.sync(number)
    assert ws.changes.get(alice, saved.change_request).approvers == ["rita"]

    amended = _hand_push(gitea, saved.branch, saved.config_path, _config(forge_env, 13), force=True)
    ws.forge_sync.reconcile()
    view = ws.changes.get(alice, saved.change_request)
    assert (view.head_commit, view.status, view.approvers) == (amended, ChangeRequestStatus.OPEN, [])
    with pytest.raises(Conflict, match="not approved"):
        ws.changes.merge(rita, saved.change_request)
    assert _status(gitea, amended).state == "success"  # validated like any head


def test_webhook_bad_signature_refused_and_duplicates_skipped(gitea, forge_env, api, caplog):
    ws = forge_env.ws
    body = b'{"action": "opened", "number": 1}'
    with caplog.at_level(logging.WARNING):
        answer = api.post(
            "/api/v1/forge/webhook",
            content=body,
            headers={"X-Gitea-Event-Type": "pull_request", "X-Gitea-Delivery": "d-1", "X-Gitea-Signature": "0" * 64},
        )
    assert answer.status_code == 401 and "signature" in answer.json()["message"]
    assert gitea.webhook_secret not in caplog.text and "signature does not match" in caplog.text
    with ws.store.session() as s:
        event = s.scalars(select(AuditEvent).where(AuditEvent.action == "forge.webhook-refused")).first()
        assert event is not None and gitea.webhook_secret not in str(event.detail)

    # a real delivery handed twice: the second is skipped by its delivery id
    delivery = gitea.sink.deliveries[-1]
    headers = {k: v for k, v in delivery.headers.items() if k.lower().startswith("x-")}
    api.post("/api/v1/forge/webhook", content=delivery.body, headers=headers)
    again = api.post("/api/v1/forge/webhook", content=delivery.body, headers=headers)
    assert again.status_code == 200 and "already handled" in again.json()["status"]


def test_forge_down_during_a_save_leaves_nothing(gitea, forge_env, tmp_path):
    ws, alice = forge_env.ws, forge_env.actor("alice")
    dead = f"http://127.0.0.1:{free_port()}"

    def rows() -> list[tuple[int, str]]:
        with ws.store.session() as s:
            return [(c.id, c.status) for c in s.scalars(select(ChangeRequest))]

    before, prs_before = rows(), ws.forge_sync.pull_requests()

    # the forge's API down, its Git up: the push is undone, no change request, no pull request row
    api_down = Workspace(_settings_for(forge_env, gitea, forge_url=dead, forge_timeout=2))
    with pytest.raises(ForgeUnavailable) as caught:
        api_down.changes.save(alice, _config(forge_env, 40), "rank40", "LoRA rank 40")
    message = str(caught.value)
    assert "\n" not in message and "nothing was saved" in message and gitea.users["author"].token not in message
    assert ws.repo.remote_head("alice/rank40") is None
    assert rows() == before and ws.forge_sync.pull_requests() == prs_before
    api_down.store.dispose()

    # the whole forge down (Git too): a one-line error before anything is made
    all_down = Workspace(  # its own mirror, whose origin is the dead address; the same database
        _settings_for(
            forge_env, gitea, forge_url=dead, repo_url=f"{dead}/{gitea.repo}.git", workspace=tmp_path / "down"
        )
    )
    with pytest.raises(GitFailure) as caught:
        all_down.changes.save(alice, _config(forge_env, 40), "rank40", "LoRA rank 40")
    assert "\n" not in str(caught.value)
    assert rows() == before
    all_down.store.dispose()

    # with the forge back, the same save works
    saved = ws.changes.save(alice, _config(forge_env, 40), "rank40", "LoRA rank 40")
    assert ws.forge_sync.pull_request(saved.change_request).state == "open"
    with ws.store.session() as s:
        assert s.scalar(select(PullRequest.number).where(PullRequest.change_request_id == saved.change_request))


def test_publish_is_idempotent_and_the_reconcile_opens_missing_pull_requests(gitea, forge_env):
    from backend.review import ChangeRequests
    from webui.review_tab import ReviewTab

    ws, alice = forge_env.ws, forge_env.actor("alice")
    # a save whose pull request never got opened (as after a crash between the push and the forge call)
    saved = ChangeRequests(ws.store, ws.repo, forge=None).save(alice, _config(forge_env, 20), "rank20", "rank 20")
    assert ws.forge_sync.pull_request(saved.change_request) is None
    findings = ws.forge_sync.reconcile()
    assert [(f.invariant, f.repaired) for f in findings] == [("change-request-without-pull-request", True)]
    first = ws.forge_sync.pull_request(saved.change_request)
    assert first.state == "open" and _status(gitea, saved.commit).state == "success"

    # publishing again (what a revised save does after its push) updates the same pull request
    again = ws.forge_sync.publish(saved.change_request)
    assert again.number == first.number
    open_prs = gitea.admin.get(f"/repos/{gitea.repo}/pulls", params={"state": "open", "limit": 50}).json()
    assert [p["number"] for p in open_prs if p["head"]["ref"] == saved.branch] == [first.number]

    # the Review tab links to it with its forge state
    header = ReviewTab.render(ws.changes.show(alice, saved.change_request))[0]
    assert f"[pull request #{first.number}]({first.url})" in header and "on gitea: open" in header

    # closing in lfops closes it on the forge first
    ws.changes.close(alice, saved.change_request)
    assert gitea.forge("reviewer").get_pull_request(first.number).state == "closed"
    assert ws.forge_sync.pull_request(saved.change_request).state == "closed"


def test_the_flow_on_postgresql(gitea, forge_env, template_workspace, pg_database, tmp_path):
    """The same mirroring on PostgreSQL: pull request row, reviews upserted by id, deliveries, merge."""
    env = make_env(template_workspace, tmp_path / "pg-ws", pg_database)
    ws = Workspace(_settings_for(env, gitea, database_url=pg_database))
    git(ws.settings.mirror_dir, "remote", "set-url", "origin", ws.settings.repo_url)
    ws.repo.fetch()
    try:
        alice, rita = ws.login("alice", env.passwords["alice"]), ws.login("rita", env.passwords["rita"])
        saved = ws.changes.save(alice, _config(env, 64), "rank64pg", "LoRA rank 64")
        number = ws.forge_sync.pull_request(saved.change_request).number
        since = len(gitea.sink.deliveries)
        gitea.forge("reviewer").submit_review(number, "approved", "ok", commit_id=saved.commit)

        def approved_delivery(d) -> bool:
            return d.headers.get("X-Gitea-Event-Type") == "pull_request_review_approved" and (
                f'"number": {number},' in d.body.decode()
            )

        delivery = gitea.sink.wait_for(lambda d: gitea.sink.deliveries.index(d) >= since and approved_delivery(d))
        headers = {k: v for k, v in delivery.headers.items() if k.lower().startswith("x-")}
        assert "re-read" in ws.forge_sync.receive(headers, delivery.body)
        assert "already handled" in ws.forge_sync.receive(headers, delivery.body)
        ws.forge_sync.sync(number)  # a second re-read: the review is updated, not added
        view = ws.changes.get(alice, saved.change_request)
        assert (view.status, view.approvers, len(view.reviews)) == (ChangeRequestStatus.APPROVED, ["rita"], 1)
        merged = ws.changes.merge(rita, saved.change_request)
        assert ws.forge_sync.pull_request(saved.change_request).merge_commit == merged.merged_commit
    finally:
        ws.store.dispose()


def test_cli_forge_status_and_sync(gitea, forge_env):
    settings = forge_env.ws.settings
    users = gitea.users
    forge_vars = {
        "LFOPS_REPO_URL": settings.repo_url,
        "LFOPS_FORGE": "gitea",
        "LFOPS_FORGE_URL": gitea.url,
        "LFOPS_FORGE_REPO": gitea.repo,
        "LFOPS_FORGE_TOKEN": users["author"].token,
        "LFOPS_FORGE_WEBHOOK_SECRET": gitea.webhook_secret,
        "LFOPS_FORGE_USER_MAP": json.dumps({users["author"].login: "alice", users["reviewer"].login: "rita"}),
    }
    status = run_lfops("forge", "status", workspace=settings.workspace, env=forge_vars)
    assert status.returncode == 0, status.stderr
    prs = forge_env.ws.forge_sync.pull_requests()
    assert prs and all(f"PR #{pr.number:<5} {pr.label:<10} head {pr.head_commit[:12]}" in status.stdout for pr in prs)
    assert users["author"].token not in status.stdout + status.stderr
    synced = run_lfops("forge", "sync", workspace=settings.workspace, env=forge_vars)
    assert synced.returncode == 0 and "in step with the forge" in synced.stdout, synced.stderr

    none = run_lfops("forge", "status", workspace=settings.workspace)
    assert none.returncode != 0 and none.stderr.strip().splitlines()[-1].startswith("error: LFOPS_FORGE:")
