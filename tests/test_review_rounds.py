"""Revisable change requests and configs derived from another config: a revision adds a commit to the same request
(review history kept, a new approval needed, open again, a diff since the last review); a config opened from another
one is reviewed against that one; crash safety of the update on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from backend.cli import main
from backend.config import TrainConfig
from backend.errors import Conflict, LfopsError, PermissionDenied, ValidationFailed
from backend.gitstore import parse_trailers
from backend.reconcile import change_requests
from backend.review import UPDATE_STEPS
from backend.review_status import ChangeRequestStatus
from backend.settings import Settings
from backend.store.models import AuditEvent
from backend.workspace import Workspace
from bench.crash_scenarios import _harness as h
from bench.crash_scenarios import update as update_scenario
from tests.snapshots import snapshot


def changed(env, **values) -> bytes:
    text = env.example_yaml().decode()
    for key, value in values.items():
        lines = [ln for ln in text.splitlines() if ln.startswith(f"{key}:")]
        assert lines, key
        text = text.replace(lines[0], f"{key}: {value}")
    return text.encode()


def test_an_update_adds_a_commit_to_the_same_request_and_needs_a_new_approval(any_db_env, monkeypatch):
    env = any_db_env
    monkeypatch.setenv("LFOPS_DATABASE_URL", env.ws.settings.database_url)
    alice, rita = env.actor("alice"), env.actor("rita")
    saved = env.ws.changes.save(alice, changed(env, lora_rank=16), "rounds", "Rank 16")
    cr = saved.change_request
    env.ws.changes.approve(rita, cr, "ok for rank 16")
    env.ws.changes.request_changes(env.actor("admin"), cr, "and a lower learning rate, please")
    assert env.ws.changes.get(alice, cr).status == ChangeRequestStatus.CHANGES_REQUESTED

    revised = env.ws.changes.update(alice, cr, changed(env, lora_rank=16, learning_rate="5.0e-4"), "Lower the LR")
    assert revised.change_request == cr and revised.branch == saved.branch
    assert env.origin_git("rev-parse", f"refs/heads/{saved.branch}").strip() == revised.commit
    assert env.origin_git("log", "-1", "--format=%P", revised.commit).split() == [saved.commit]
    trailers = parse_trailers(env.origin_git("log", "-1", "--format=%B", revised.commit))
    assert trailers["Change-Request"] == [str(cr)] and trailers["Config-Hash"] == [revised.config_hash]
    view = env.ws.changes.get(alice, cr)
    assert (view.status, view.head_commit, view.config_hash) == ("open", revised.commit, revised.config_hash)
    assert [r.decision for r in view.reviews] == ["approved", "changes_requested"]  # the history stays
    assert view.approvers == []  # the approval was for the old head

    detail = env.ws.changes.show(rita, cr)
    assert detail.last_reviewed_commit == saved.commit
    since = {r.key: (r.before, r.after) for r in detail.review_params if r.change != "unchanged"}
    assert since == {"learning_rate": (1e-3, 5e-4)}  # only what changed since the last review
    assert "+learning_rate: 0.0005" in detail.review_diff and "lora_rank" not in detail.review_diff
    against_main = {r.key for r in detail.params if r.change != "unchanged"}
    assert {"lora_rank", "learning_rate"} <= against_main  # a new file: against the defaults

    with pytest.raises(Conflict, match="not approved"):
        env.ws.changes.merge(rita, cr)
    env.ws.changes.approve(rita, cr, "now fine")
    merged = env.ws.changes.merge(rita, cr)
    assert merged.status == "merged" and merged.head_commit == revised.commit
    assert "learning_rate: 0.0005" in env.origin_git("show", "main:configs/rounds.yaml")
    with env.ws.store.session() as s:
        actions = s.scalars(select(AuditEvent.action)).all()
    assert actions.count("config.update") == 1
    # `lfops log` checks every commit's trailers, the first revision's too
    assert main(["--workspace", str(env.ws.settings.workspace), "log"]) == 0


def test_only_the_author_updates_and_only_while_under_review(any_db_env):
    env = any_db_env
    alice, rita = env.actor("alice"), env.actor("rita")
    cr = env.ws.changes.save(alice, changed(env, lora_rank=4), "guarded", "Rank 4").change_request
    before = snapshot(env)
    with pytest.raises(PermissionDenied, match="only alice, its author, can update change request"):
        env.ws.changes.update(rita, cr, changed(env, lora_rank=2), "mine now")
    with pytest.raises(LfopsError, match="message: say what this revision changes"):
        env.ws.changes.update(alice, cr, changed(env, lora_rank=2), "  ")
    with pytest.raises(ValidationFailed, match="lora_rank"):
        env.ws.changes.update(alice, cr, changed(env, lora_rank="many"), "bad")
    assert snapshot(env) == before
    env.ws.changes.close(alice, cr)
    with pytest.raises(Conflict, match=f"change request #{cr} is closed; it can no longer be updated"):
        env.ws.changes.update(alice, cr, changed(env, lora_rank=2), "too late")
    with pytest.raises(LfopsError, match="does not exist"):
        env.ws.changes.update(alice, 999, changed(env, lora_rank=2), "nothing")


def test_the_same_update_twice_records_one_revision(env):
    alice = env.actor("alice")
    cr = env.ws.changes.save(alice, changed(env, lora_rank=4), "twice", "Rank 4").change_request
    first = env.ws.changes.update(alice, cr, changed(env, lora_rank=2), "Rank 2")
    again = env.ws.changes.update(alice, cr, changed(env, lora_rank=2), "Rank 2")
    assert again.commit == first.commit and "already has exactly this config" in again.warnings[-1]


def test_save_from_the_cli_with_update(env, tmp_path, capsys, monkeypatch):
    alice = env.actor("alice")
    cr = env.ws.changes.save(alice, changed(env, lora_rank=4), "clirev", "Rank 4").change_request
    path = tmp_path / "rev.yaml"
    path.write_bytes(changed(env, lora_rank=2))
    monkeypatch.setenv("LFOPS_PASSWORD", env.passwords["alice"])
    args = ["--workspace", str(env.ws.settings.workspace), "--user", "alice", "save", str(path), "-m", "Rank 2"]
    assert main([*args, "--update", str(cr)]) == 0
    assert f"change request #{cr} updated" in capsys.readouterr().out
    assert "lora_rank: 2" in env.origin_git("show", "refs/heads/alice/clirev:configs/clirev.yaml")
    assert main([*args, "--update", str(cr), "--name", "other"]) != 0
    assert "--update: the change request keeps its file and branch" in capsys.readouterr().err


def test_a_config_opened_from_another_is_reviewed_against_it(env):
    alice, rita = env.actor("alice"), env.actor("rita")
    main_sha = env.origin_git("rev-parse", "main").strip()
    opened = TrainConfig.parse(changed(env, learning_rate="2.0e-4"), "configs/example.yaml")
    opened.metadata.update(derived_from="configs/example.yaml", derived_from_commit=main_sha)
    cr = env.ws.changes.save(alice, opened, "from-example", "LR 2e-4 from the example").change_request
    detail = env.ws.changes.show(rita, cr)
    assert detail.baseline == f"configs/example.yaml at {main_sha[:10]}"
    assert [(r.key, r.before, r.after) for r in detail.params if r.change != "unchanged"] == [
        ("learning_rate", 1e-3, 2e-4)
    ]
    assert "-learning_rate: 0.001" in detail.yaml_diff and "+learning_rate: 0.0002" in detail.yaml_diff
    assert "lora_rank" not in detail.yaml_diff  # a diff against the base, not a whole new file
    defaults = env.ws.changes.show(rita, cr, against_defaults=True)
    assert defaults.baseline == "LLaMA-Factory default"
    assert sum(r.change != "unchanged" for r in defaults.params) > 5
    # a revision of it, opened from its own head, keeps the base it was derived from
    head = TrainConfig.parse(env.origin_git("show", f"{detail.request.head_commit}:configs/from-example.yaml"))
    head.args["lora_rank"] = 4
    head.metadata.update(derived_from="configs/from-example.yaml", derived_from_commit=detail.request.head_commit)
    env.ws.changes.update(alice, cr, head, "and rank 4")
    again = env.ws.changes.show(rita, cr)
    assert again.baseline == f"configs/example.yaml at {main_sha[:10]}"
    assert {r.key for r in again.params if r.change != "unchanged"} == {"learning_rate", "lora_rank"}


# ---- crash safety -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fork_server(template_workspace):
    root, passwords = template_workspace
    with h.Workers(h.Target(Workspace(Settings.from_env(root)), passwords)) as running:
        yield running


@pytest.fixture
def workers(fork_server, any_db_env):
    fork_server.target = h.Target(any_db_env.ws, any_db_env.passwords)
    return fork_server


def test_update_killed_at_every_step_is_repaired_by_the_reconcile(any_db_env, workers):
    target = h.Target(any_db_env.ws, any_db_env.passwords)
    result = update_scenario.run_on(target, 2 * len(UPDATE_STEPS), seed=3, random_kills=False, workers=workers)
    assert result["kills"] == 2 * len(UPDATE_STEPS) and result["violations_after"] == 0, result
    assert result["violations_before"] > 0, result  # the kills after the push really left Git ahead of the database
    assert h.violations(target) == []


@pytest.mark.parametrize("point", UPDATE_STEPS)
def test_update_retried_after_a_crash_works(any_db_env, workers, point):
    target = h.Target(any_db_env.ws, any_db_env.passwords)
    alice = target.actor("alice")
    saved = target.ws.changes.save(alice, target.example_yaml(21), "retryup", "msg")
    job = {"op": "update", "user": "alice", "id": saved.change_request, "message": "rev", "yaml": ""}
    job["yaml"] = target.example_yaml(22).decode()
    assert workers.run(job, crash_at=point).kind == h.CRASHED
    again = target.ws.changes.update(alice, saved.change_request, target.example_yaml(22), "rev")
    assert any_db_env.origin_git("rev-parse", "refs/heads/alice/retryup").strip() == again.commit
    view = target.ws.changes.get(alice, saved.change_request)
    assert view.status == ChangeRequestStatus.OPEN and view.head_commit == again.commit
    assert any_db_env.origin_git("log", "-1", "--format=%P", again.commit).split() == [saved.commit]
    assert h.violations(target) == []


def test_reconcile_records_an_update_that_stopped_after_its_push(any_db_env, workers):
    target = h.Target(any_db_env.ws, any_db_env.passwords)
    alice = target.actor("alice")
    saved = target.ws.changes.save(alice, target.example_yaml(23), "halfway", "msg")
    job = {"op": "update", "user": "alice", "id": saved.change_request, "message": "rev"}
    job["yaml"] = target.example_yaml(24).decode()
    assert workers.run(job, crash_at="update.pushed").kind == h.CRASHED
    assert h.violations(target) != []
    [found] = change_requests.check(target.ws, repair=False)
    assert found.invariant == "branch-differs-from-change-request" and "update" in found.detail
    [fixed] = change_requests.check(target.ws, repair=True)
    assert fixed.repaired and h.violations(target) == []
    view = target.ws.changes.get(alice, saved.change_request)
    assert view.head_commit == any_db_env.origin_git("rev-parse", "refs/heads/alice/halfway").strip()
