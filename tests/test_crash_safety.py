"""Crash safety of save, merge and close, on SQLite and PostgreSQL: killed at every step boundary, then repaired by
the reconcile; retried after a crash; and each repair rule of backend.reconcile.change_requests on its own.

The kills run in real processes (bench/crash_scenarios/_harness.py: forked workers that die at a crash point);
the invariants are checked on origin itself and the database, independently of the reconcile's code.
"""

from __future__ import annotations

import pytest
from sqlalchemy import delete, select, text

from backend.cli import main
from backend.reconcile import change_requests
from backend.review import CLOSE_STEPS, MERGE_STEPS, SAVE_STEPS
from backend.review_status import ChangeRequestStatus
from backend.settings import Settings
from backend.store.models import AuditEvent, ChangeRequest, Config
from backend.workspace import Workspace
from bench.crash_scenarios import _harness as h
from bench.crash_scenarios import close, merge, save
from tests.snapshots import snapshot


def target_of(env) -> h.Target:
    return h.Target(env.ws, env.passwords)


@pytest.fixture(scope="module")
def fork_server(template_workspace):
    """One warm fork server for the module (its start-up imports LLaMA-Factory's checks: the slow part)."""
    root, passwords = template_workspace
    with h.Workers(h.Target(Workspace(Settings.from_env(root)), passwords)) as running:
        yield running


@pytest.fixture
def workers(fork_server, any_db_env):
    fork_server.target = target_of(any_db_env)
    return fork_server


def test_kills_at_every_step_boundary_are_repaired_by_the_reconcile(any_db_env, workers):
    target = target_of(any_db_env)
    for scenario, steps in ((save, SAVE_STEPS), (merge, MERGE_STEPS), (close, CLOSE_STEPS)):
        result = scenario.run_on(target, 2 * len(steps), seed=7, random_kills=False, workers=workers)
        assert result["kills"] == 2 * len(steps), result
        assert result["violations_after"] == 0, result
    assert h.violations(target) == []


def test_kills_left_violations_that_only_the_reconcile_removed(any_db_env, workers):
    """The kills are real: right after each, origin and the database disagree (else the test above proves nothing)."""
    target = target_of(any_db_env)
    alice = target.actor("alice")
    assert workers.run(_save_job(target, "pushed"), crash_at="save.pushed").kind == h.CRASHED
    assert h.violations(target) == [
        f"branch alice/pushed has no change request under review at {_head(any_db_env)}",
        "change request #1 is a half-made save",
    ]
    saved = target.ws.changes.save(alice, target.example_yaml(5), "other", "msg")
    rita = target.actor("rita")
    target.ws.changes.approve(rita, saved.change_request)
    assert workers.run({"op": "merge", "user": "rita", "id": saved.change_request}, "merge.pushed").kind == h.CRASHED
    assert any("is approved, but its head is on main" in v for v in h.violations(target))
    found = change_requests.check(target.ws, repair=False)
    assert {f.invariant for f in found} == {"branch-without-change-request", "status-differs-from-git"}
    assert not any(f.repaired for f in found)
    assert h.violations(target) != []  # looking repairs nothing
    repaired = h.repair(target)
    assert all(f.repaired for f in repaired) and h.violations(target) == []
    assert change_requests.check(target.ws, repair=True) == []  # nothing left for a second pass


@pytest.mark.parametrize("point", SAVE_STEPS)
def test_save_retried_after_a_crash_works(any_db_env, workers, point):
    target = target_of(any_db_env)
    assert workers.run(_save_job(target, "retry"), crash_at=point).kind == h.CRASHED
    again = target.ws.changes.save(target.actor("alice"), target.example_yaml(11), "retry", "the same save")
    assert any_db_env.origin_git("rev-parse", "refs/heads/alice/retry").strip() == again.commit
    view = target.ws.changes.get(target.actor("alice"), again.change_request)
    assert view.status == ChangeRequestStatus.OPEN and view.head_commit == again.commit
    h.repair(target)  # a save killed before its push leaves a hidden row, dropped here (nothing is in flight)
    assert h.violations(target) == []


def test_merge_again_after_a_crash_records_it(any_db_env, workers):
    target = target_of(any_db_env)
    alice, rita = target.actor("alice"), target.actor("rita")
    saved = target.ws.changes.save(alice, target.example_yaml(12), "remerge", "msg")
    target.ws.changes.approve(rita, saved.change_request)
    job = {"op": "merge", "user": "rita", "id": saved.change_request}
    assert workers.run(job, crash_at="merge.pushed").kind == h.CRASHED
    main_after_crash = any_db_env.origin_git("rev-parse", "main").strip()
    merged = target.ws.changes.merge(rita, saved.change_request)  # before: "already on main", stuck for good
    assert merged.status == ChangeRequestStatus.MERGED and merged.merged_commit == main_after_crash
    assert any_db_env.origin_git("rev-parse", "main").strip() == main_after_crash  # not merged twice
    assert h.violations(target) == []


def test_reconcile_leaves_a_save_in_flight_alone_until_it_is_stale(any_db_env, workers):
    target = target_of(any_db_env)
    assert workers.run(_save_job(target, "inflight"), crash_at="save.reserved").kind == h.CRASHED
    before = snapshot(any_db_env)
    assert change_requests.check(target.ws, repair=True) == []  # a save that just reserved may still be pushing
    assert snapshot(any_db_env) == before
    assert h.violations(target) == ["change request #1 is a half-made save"]
    [dropped] = change_requests.check(target.ws, repair=True, stale_after=0)
    assert dropped.invariant == "save-interrupted" and dropped.repaired
    with target.ws.store.session() as s:
        assert (
            s.scalar(select(ChangeRequest.id)) is None
            and s.scalar(select(Config.id).where(Config.change_request_id == 1)) is None
        )


def test_branch_is_adopted_from_its_trailers_when_the_database_lost_its_row(any_db_env):
    env = any_db_env
    alice = env.actor("alice")
    saved = env.ws.changes.save(alice, h.Target(env.ws, env.passwords).example_yaml(13), "restored", "Rank\n\nbody")
    with env.ws.store.session() as s:  # the database comes back from a backup taken before the save
        s.execute(delete(AuditEvent))
        s.execute(delete(Config).where(Config.change_request_id == saved.change_request))
        s.execute(delete(ChangeRequest))
        if s.bind.dialect.name == "postgresql":
            s.execute(text("SELECT setval(pg_get_serial_sequence('change_requests', 'id'), 1, false)"))
    [found] = change_requests.check(env.ws, repair=True)
    assert found.invariant == "branch-without-change-request" and found.repaired, found
    view = env.ws.changes.get(alice, saved.change_request)
    assert (view.id, view.status, view.author, view.head_commit, view.config_hash) == (
        saved.change_request,
        ChangeRequestStatus.OPEN,
        "alice",
        saved.commit,
        saved.config_hash,
    )
    assert (view.title, view.description) == ("Rank", "Rank\n\nbody")
    later = env.ws.changes.save(alice, h.Target(env.ws, env.passwords).example_yaml(14), "later", "msg")
    assert later.change_request == saved.change_request + 1  # the id sequence moved past the adopted id


def test_a_foreign_branch_is_reported_and_left_alone(any_db_env):
    env = any_db_env
    env.origin_git("update-ref", "refs/heads/feature/by-hand", env.origin_git("rev-parse", "main").strip())
    before = snapshot(env)
    [found] = change_requests.check(env.ws, repair=True)
    assert (found.invariant, found.subject, found.repaired) == (
        "branch-without-change-request",
        "branch feature/by-hand",
        False,
    )
    assert "no lfops trailers" in found.detail and "left alone" in found.repair
    assert snapshot(env) == before


def test_an_open_change_request_whose_branch_is_gone_is_closed(any_db_env):
    env = any_db_env
    alice = env.actor("alice")
    saved = env.ws.changes.save(alice, h.Target(env.ws, env.passwords).example_yaml(15), "gone", "msg")
    env.origin_git("update-ref", "-d", "refs/heads/alice/gone")
    [found] = change_requests.check(env.ws, repair=True)
    assert (found.invariant, found.repaired) == ("change-request-without-branch", True)
    assert env.ws.changes.get(alice, saved.change_request).status == ChangeRequestStatus.CLOSED
    with env.ws.store.session() as s:
        assert s.scalar(select(AuditEvent.actor).where(AuditEvent.action == "review.close")) == "lfops-reconcile"


def test_doctor_reports_then_repairs(any_db_env, workers, capsys, monkeypatch):
    target = target_of(any_db_env)
    monkeypatch.setenv("LFOPS_DATABASE_URL", target.ws.settings.database_url)
    args = ["--workspace", str(target.ws.settings.workspace), "doctor"]
    assert main(args) == 0 and "ok: the database agrees with Git" in capsys.readouterr().out
    assert workers.run(_save_job(target, "doc"), crash_at="save.pushed").kind == h.CRASHED
    assert main(args) == 1
    out = capsys.readouterr().out
    assert "[found] branch-without-change-request: branch alice/doc: its save of change request #1 stopped" in out
    assert main([*args, "--repair"]) == 0
    assert "[repaired] branch-without-change-request: branch alice/doc" in capsys.readouterr().out
    assert main(args) == 0 and h.violations(target) == []


def _save_job(target: h.Target, name: str) -> dict:
    return {"op": "save", "user": "alice", "name": name, "message": "msg", "yaml": target.example_yaml(11).decode()}


def _head(env) -> str:
    return env.origin_git("rev-parse", "refs/heads/alice/pushed").strip()[:12]


def test_the_app_reconciles_at_start_and_then_periodically(env):
    import time

    from backend.reconcile.periodic import PeriodicReconcile

    alice = env.actor("alice")
    first = env.ws.changes.save(alice, h.Target(env.ws, env.passwords).example_yaml(16), "p1", "msg")
    env.origin_git("update-ref", "-d", "refs/heads/alice/p1")
    reconciler = PeriodicReconcile(env.ws, interval=0.2)
    assert [f.subject for f in reconciler.run_once()] == [f"change request #{first.change_request}"]
    second = env.ws.changes.save(alice, h.Target(env.ws, env.passwords).example_yaml(17), "p2", "msg")
    env.origin_git("update-ref", "-d", "refs/heads/alice/p2")
    reconciler.start()
    try:
        deadline = time.monotonic() + 30
        while env.ws.changes.get(alice, second.change_request).status != ChangeRequestStatus.CLOSED:
            assert time.monotonic() < deadline, "the periodic pass did not repair"
            time.sleep(0.1)
    finally:
        reconciler.stop()
    assert env.ws.changes.get(alice, first.change_request).status == ChangeRequestStatus.CLOSED


def test_a_ref_lock_left_in_the_mirror_by_a_killed_git_is_cleared(env):
    """A git killed mid-update leaves `<ref>.lock`; git then refuses that ref ("File exists") until it is removed."""
    mirror = env.ws.settings.mirror_dir
    env.ws.repo.fetch()
    for lock in (mirror / "refs" / "remotes" / "origin" / "main.lock", mirror / "packed-refs.lock"):
        lock.write_text("")
    saved = env.ws.changes.save(env.actor("alice"), h.Target(env.ws, env.passwords).example_yaml(18), "locked", "m")
    env.origin_git("update-ref", "refs/heads/main", saved.commit)  # main moves: the fetch must update its copy
    env.ws.repo.fetch()  # would fail with "Unable to create '.../main.lock': File exists"
    assert env.ws.repo.branches()["main"] == saved.commit
    assert list(mirror.rglob("*.lock")) == []
