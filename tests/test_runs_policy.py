"""The launch policy and the local runner's bookkeeping, without a full training run.

Refusals are proven to change nothing: the remote, every database table and the runs directory stay as they were.
"""

from __future__ import annotations

import json
import os
import re
import subprocess

import psutil
import pytest
from sqlalchemy import select

from backend.cli import main as lfops
from backend.errors import Conflict, LfopsError, NotFound, PermissionDenied
from backend.runners.base import RunSpec, RunState
from backend.runners.local import LocalRunner, external_id_for
from backend.store.models import AuditEvent, Config, Run, utcnow
from tests.runs_fixtures import approved_merge, kill_leftover_runs, saved_unapproved, small_config
from tests.snapshots import snapshot


@pytest.fixture
def renv(env):
    yield env
    kill_leftover_runs(env.ws)


def _runs_dir_entries(env) -> list[str]:
    d = env.ws.settings.runs_dir
    return sorted(os.listdir(d)) if d.exists() else []


def test_unapproved_commit_is_refused_and_nothing_changes(renv):
    env = renv
    alice = env.actor("alice")
    saved = saved_unapproved(env, "draft")
    before = snapshot(env)
    with pytest.raises(Conflict, match=r"change request #\d+ is open, not merged"):
        env.ws.runs.launch(alice, saved.change_request)
    with pytest.raises(PermissionDenied, match="launch refused: commit .* is not the merge commit of an approved"):
        env.ws.runs.launch(alice, saved.commit)
    main = env.origin_git("rev-parse", "main").strip()  # lfops init's commit: on main but never reviewed
    with pytest.raises(PermissionDenied, match="not the merge commit of an approved change request"):
        env.ws.runs.launch(alice, main, config_path="configs/example.yaml")
    assert snapshot(env) == before
    assert _runs_dir_entries(env) == []


def test_approved_but_unmerged_change_request_is_refused(renv):
    env = renv
    saved = saved_unapproved(env, "approved-only")
    env.ws.changes.approve(env.actor("rita"), saved.change_request)
    before = snapshot(env)
    with pytest.raises(Conflict, match="is approved, not merged"):
        env.ws.runs.launch(env.actor("alice"), f"#{saved.change_request}")
    assert snapshot(env) == before


def test_analyst_override_is_refused_and_admin_needs_a_reason(renv):
    env = renv
    saved = saved_unapproved(env, "needs-override")
    before = snapshot(env)
    with pytest.raises(PermissionDenied, match=r"alice \(analyst\) may not launch unapproved commits"):
        env.ws.runs.launch(env.actor("alice"), saved.commit, override_reason="I am sure")
    with pytest.raises(PermissionDenied, match=r"rita \(reviewer\) may not launch unapproved commits"):
        env.ws.runs.launch(env.actor("rita"), saved.commit, override_reason="trust me")
    with pytest.raises(LfopsError, match="override: give a reason"):
        env.ws.runs.launch(env.actor("admin"), saved.commit, override_reason="   ")
    assert snapshot(env) == before


@pytest.mark.parametrize(
    ("target", "error", "message"),
    [
        ("not-a-commit", LfopsError, "target: 'not-a-commit' must be a change request number or a commit id"),
        ("9999", NotFound, r"change request #9999 does not exist"),
        ("deadbeefdeadbeef", NotFound, "commit: deadbeefdeadbeef is not in the config repository"),
        ("--upload-pack=x", LfopsError, "target: "),
    ],
)
def test_bad_targets_name_the_field_and_change_nothing(renv, target, error, message):
    before = snapshot(renv)
    with pytest.raises(error, match=message):
        renv.ws.runs.launch(renv.actor("alice"), target)
    assert snapshot(renv) == before


def test_config_path_must_be_the_approved_one(renv):
    env = renv
    cr, commit = approved_merge(env, "pathcheck")
    before = snapshot(env)
    with pytest.raises(LfopsError, match=r"config: change request #\d+ changed configs/pathcheck.yaml, not configs/"):
        env.ws.runs.launch(env.actor("alice"), cr, config_path="configs/example.yaml")
    with pytest.raises(PermissionDenied, match="approved configs/pathcheck.yaml, not configs/example.yaml"):
        env.ws.runs.launch(env.actor("alice"), commit, config_path="configs/example.yaml")
    assert snapshot(env) == before


def test_merge_commit_taken_off_main_is_refused(renv):
    env = renv
    cr, commit = approved_merge(env, "reverted")
    env.origin_git("update-ref", "refs/heads/main", f"{commit}^1")  # someone reset main past the merge
    before = snapshot(env)
    with pytest.raises(PermissionDenied, match=r"is not on main"):
        env.ws.runs.launch(env.actor("alice"), cr)
    assert snapshot(env) == before


def test_admin_override_launches_and_is_audited(renv):
    """An unapproved commit runs when an admin gives a reason; the reason is on the run and in the audit log."""
    env = renv
    saved = saved_unapproved(env, "hotfix")
    admin = env.actor("admin")
    view = env.ws.runs.launch(admin, saved.commit, override_reason="incident 42: retrain now")
    try:
        assert view.status == "running"
        assert view.override_reason == "incident 42: retrain now"
        assert view.commit == saved.commit and view.config_path == "configs/hotfix.yaml"
    finally:
        view = env.ws.runs.cancel(admin, view.id)
    assert view.status == "cancelled" and view.reason == "cancelled by admin"
    with env.ws.store.session() as s:
        event = s.scalar(select(AuditEvent).where(AuditEvent.action == "run.launch"))
        assert event.actor == "admin"
        assert event.detail["override_reason"] == "incident 42: retrain now"
        assert "not the merge commit of an approved change request" in event.detail["refusal_overridden"]
        actions = s.scalars(select(AuditEvent.action).where(AuditEvent.subject == f"run:{view.id}")).all()
    assert {"run.launch", "run.cancel", "run.cancelled"} <= set(actions)


def test_analyst_cannot_cancel_someone_elses_run(renv):
    env = renv
    cr, _commit = approved_merge(env, "owned")
    view = env.ws.runs.launch(env.actor("rita"), cr)
    try:
        before = snapshot(env)
        with pytest.raises(PermissionDenied, match=f"alice may not cancel run #{view.id} of rita"):
            env.ws.runs.cancel(env.actor("alice"), view.id)
        assert snapshot(env) == before
    finally:
        assert env.ws.runs.cancel(env.actor("rita"), view.id).status == "cancelled"
    with pytest.raises(Conflict, match=f"run #{view.id} is already cancelled"):
        env.ws.runs.cancel(env.actor("rita"), view.id)


def test_run_list_filters_are_validated(renv):
    alice = renv.actor("alice")
    with pytest.raises(LfopsError, match="status: 'done' must be one of"):
        renv.ws.runs.list(alice, status="done")
    with pytest.raises(LfopsError, match="commit: 'xyz' must be 7-40 hex digits"):
        renv.ws.runs.list(alice, commit="xyz")
    assert renv.ws.runs.list(alice, status="running") == []


# ---- the local runner's own bookkeeping ----------------------------------------------------------------------------


def _fake_run_dir(runner: LocalRunner, run_id: int, pid: int, create_time: float):
    d = runner.run_dir(external_id_for(run_id))
    d.mkdir(parents=True)
    (d / "process.json").write_text(json.dumps({"pid": pid, "create_time": create_time}))
    return external_id_for(run_id)


def test_runner_status_follows_pid_and_create_time(env, tmp_path):
    """A recorded pid counts as the run only with the same start time: a reused pid is another process (lost)."""
    runner = LocalRunner(tmp_path / "runs", env.ws.repo)
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        real = psutil.Process(sleeper.pid).create_time()
        alive = _fake_run_dir(runner, 1, sleeper.pid, real)
        reused = _fake_run_dir(runner, 2, sleeper.pid, real - 3600)
        assert runner.status(alive).state == RunState.RUNNING
        status = runner.status(reused)
        assert status.state == RunState.LOST and "ended without an exit code" in status.reason
    finally:
        sleeper.kill()
        sleeper.wait()
    assert runner.status(alive).state == RunState.LOST
    (runner.run_dir(alive) / "exit_code").write_text("0\n")
    assert runner.status(alive).state == RunState.SUCCEEDED
    (runner.run_dir(reused) / "train.log").write_text("loading\nValueError: Undefined dataset nope\nbye\n")
    (runner.run_dir(reused) / "exit_code").write_text("1\n")
    status = runner.status(reused)
    assert status.state == RunState.FAILED
    assert status.reason == "exit code 1: ValueError: Undefined dataset nope"
    assert runner.status("run-000777").state == RunState.LOST  # no directory at all
    with pytest.raises(NotFound, match="not a local run id"):
        runner.status("../../etc")


def test_failing_training_is_recorded_with_its_reason_and_followed_from_the_cli(renv, tmp_path, capsys, monkeypatch):
    """A config LLaMA-Factory rejects only at run time fails with the error line from its log; `lfops launch`,
    `runs logs -f` (which follows until the end, with the monitor running) and `runs wait` show it."""
    env = renv
    broken = tmp_path / "broken-model"
    broken.mkdir()  # a model directory without weights: validation passes, loading fails
    cr, _ = approved_merge(env, "broken-model", model_name_or_path=str(broken))
    monkeypatch.setenv("LFOPS_PASSWORD", env.passwords["alice"])
    base = ["--workspace", str(env.ws.settings.workspace), "--user", "alice"]
    assert lfops([*base, "launch", str(cr)]) == 0
    out = capsys.readouterr().out
    run_id = int(re.search(r"run #(\d+) \[running\]", out).group(1))
    assert f"lfops runs logs {run_id} -f" in out
    assert lfops([*base, "runs", "logs", str(run_id), "-f"]) == 0
    assert "Error" in capsys.readouterr().out
    assert lfops([*base, "runs", "wait", str(run_id)]) == 1
    assert "reason: exit code 1: " in capsys.readouterr().out
    view = env.ws.runs.get(env.actor("alice"), run_id)
    assert view.status == "failed" and view.reason.startswith("exit code 1: ") and "Error" in view.reason
    assert view.finished_at is not None and view.final_loss is None
    assert env.ws.registry.for_run(view.id) is None


def test_cli_launch_refusal_and_admin_override(renv, capsys, monkeypatch):
    env = renv
    saved = saved_unapproved(env, "cli-override")
    base = ["--workspace", str(env.ws.settings.workspace)]
    monkeypatch.setenv("LFOPS_PASSWORD", env.passwords["alice"])
    before = snapshot(env)
    assert lfops([*base, "--user", "alice", "launch", saved.commit]) == 2
    assert "error: launch refused: commit" in capsys.readouterr().err
    assert lfops([*base, "--user", "alice", "launch", saved.commit, "--override", "please"]) == 2
    assert "error: alice (analyst) may not launch unapproved commits" in capsys.readouterr().err
    assert snapshot(env) == before
    monkeypatch.setenv("LFOPS_PASSWORD", env.passwords["admin"])
    assert lfops([*base, "--user", "admin", "launch", saved.commit, "--override", "demo for the board"]) == 0
    out = capsys.readouterr().out
    run_id = re.search(r"run #(\d+)", out).group(1)
    assert "launched by override: demo for the board" in out
    assert lfops([*base, "--user", "admin", "runs", "cancel", run_id]) == 0
    assert f"run #{run_id} [cancelled]" in capsys.readouterr().out


def test_submit_is_idempotent(renv):
    """Submitting one run id twice starts one process (e.g. a retry after a timeout)."""
    env = renv
    cr, commit = approved_merge(env, "twice")
    alice = env.actor("alice")
    view = env.ws.runs.launch(alice, cr)
    runner = env.ws.runs.runner
    info = runner.process_info(view.external_id)
    spec = RunSpec(view.id, env.ws.repo.remote_url, commit, view.config_path, small_config(env).training_yaml())
    assert runner.submit(spec) == view.external_id
    assert runner.process_info(view.external_id) == info
    env.ws.runs.cancel(alice, view.id)


def test_queued_run_that_never_reached_the_runner_is_marked_lost(renv):
    """The app died between recording a run and submitting it: the run does not stay queued forever."""
    env = renv
    cr, _ = approved_merge(env, "orphan")

    with env.ws.store.session() as s:
        cfg = s.scalar(select(Config).where(Config.path == "configs/orphan.yaml").order_by(Config.id.desc()))
        run = Run(config_id=cfg.id, backend="local", status="queued", submitted_by_id=env.actor("alice").id)
        run.created_at = utcnow().replace(year=utcnow().year - 1)
        s.add(run)
        s.flush()
        run_id = run.id
    changed = env.ws.runs.advance()
    assert changed == [run_id]
    view = env.ws.runs.get(env.actor("alice"), run_id)
    assert view.status == "lost" and "never reached the runner" in view.reason


def test_monitor_thread_starts_once_and_stops(renv):
    runs = renv.ws.runs
    m1 = runs.start_monitor(interval=0.05)
    assert runs.start_monitor() is m1 and m1.alive
    runs.stop_monitor()  # returns once the thread has stopped
    assert not m1.alive


def test_policy_and_run_queries_on_sqlite_and_postgresql(any_db_env):
    """The refusal leaves both databases as they were; the run list and lineage reads work on both (PostgreSQL
    plans them per value: see runs.custom_plans)."""
    env = any_db_env
    alice = env.actor("alice")
    cr, commit = approved_merge(env, "both-dbs")
    saved = saved_unapproved(env, "both-dbs-draft")
    before = snapshot(env)
    with pytest.raises(PermissionDenied, match="launch refused"):
        env.ws.runs.launch(alice, saved.commit)
    assert snapshot(env) == before
    assert env.ws.runs.list(alice, commit=commit[:10], status="running", config="both-dbs") == []
    derived = env.ws.lineage.from_commit(alice, commit)
    assert [c["path"] for c in derived.configs] == ["configs/both-dbs.yaml"] and derived.runs == []
    with env.ws.store.session() as s:
        version = s.scalar(select(Config.dataset_version).where(Config.commit == commit))
    assert env.ws.lineage.from_dataset_version(alice, version).configs
    assert env.ws.lineage.runs_of_config(alice, "0" * 64) == []
