"""Launches killed at every step, trainers outliving their wrappers, launches racing each other, run ids out of range:
the run invariants hold after a reconcile, on SQLite and PostgreSQL.

A stand-in llamafactory-cli "trains" (bench/crash_scenarios/launch.py) so that a killed launch takes about a second;
the launching process is a forked copy of the test that kills itself at the step named.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import psutil
import pytest
from sqlalchemy import func, select, update

from backend.cli import main as lfops
from backend.errors import NotFound
from backend.reconcile import runs as reconcile_runs
from backend.runners.local import external_id_for
from backend.runs.launchers import this_process
from backend.store.models import AuditEvent, Config, ModelVersion, Run
from bench.crash_scenarios import launch as crash
from tests.runs_fixtures import approved_merge, kill_leftover_runs, wait_for
from tests.snapshots import db_state, snapshot

HUGE = 99999999999999999999


@pytest.fixture
def fake_env(any_db_env, tmp_path, monkeypatch):
    """A workspace (SQLite or PostgreSQL) whose runs start the stand-in trainer, and one approved change request."""
    env = any_db_env
    crash.with_fake_trainer(env.ws, crash.fake_trainer(tmp_path / "bin"))
    monkeypatch.setenv("FAKE_TRAIN_S", "0.5")
    env.cr, _ = approved_merge(env, "crash")
    yield env
    kill_leftover_runs(env.ws)


@pytest.fixture
def hold(tmp_path, monkeypatch):
    """The stand-in trainer trains until this file is removed."""
    path = tmp_path / "hold"
    path.write_text("")
    monkeypatch.setenv("FAKE_HOLD", str(path))
    return path


def _run(env, run_id: int) -> Run:
    with env.ws.store.session() as s:
        run = s.get(Run, run_id)
        s.expunge(run)
        return run


def _model_versions(env, run_id: int) -> int:
    with env.ws.store.session() as s:
        return s.scalar(select(func.count(ModelVersion.id)).where(ModelVersion.run_id == run_id))


def _killed_launch(env, boundary: str) -> int:
    """A launch whose process died at `boundary`; returns the run id it left."""
    with env.ws.store.session() as s:
        last = s.scalar(select(func.max(Run.id))) or 0
    status = crash._wait_child(crash._launch_in_child(env.ws, env.actor("alice"), env.cr, boundary))
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    with env.ws.store.session() as s:
        return s.scalar(select(Run.id).where(Run.id > last))


# ---- the crash injection ------------------------------------------------------------------------------------------


def test_launch_killed_at_every_boundary_leaves_no_violation_after_reconcile(fake_env):
    """Two kills at every step boundary of a launch, of the run's own processes, of the tracker before registering,
    and at random points: every kill leaves a state that breaks an invariant until the reconcile, none after."""
    env = fake_env
    result = crash.run_in(env.ws, env.actor("alice"), env.cr, kills=2 * len(crash.SCENARIOS), seed=7)
    assert result["kills"] == 2 * len(crash.SCENARIOS)
    assert result["violations_after"] == 0, result["notes"]
    by_scenario = result["by_scenario"]
    assert set(by_scenario) == set(crash.SCENARIOS)
    # A launcher killed at a boundary always leaves a broken run (the check can fail); a random kill may land before
    # the run row exists, and a trainer killed while the launch still runs may be recorded failed by the launch itself.
    for scenario in [name for name, _ in crash.BOUNDARIES] + ["register-killed", "wrapper-killed"]:
        kills, before, _after = by_scenario[scenario]
        assert before >= kills, f"{scenario}: the kill broke nothing\n{result['notes']}"


# ---- a trainer that started is found by its marker ----------------------------------------------------------------


def test_launch_killed_after_the_trainer_started_is_found_by_its_marker_and_registered(fake_env, hold):
    """Killed between starting the trainer and recording its id: the run is queued without a runner id while the
    trainer trains. A check without repair changes nothing; the repair finds the trainer by the wrapper's marker,
    follows it to its end and registers the model."""
    env = fake_env
    run_id = _killed_launch(env, "process-started")
    run = _run(env, run_id)
    assert run.status == "queued" and run.external_id == ""
    assert crash.run_processes(env.ws, run_id), "the trainer should be training"
    before = db_state(env.ws.store)
    findings = reconcile_runs.check(env.ws, repair=False)
    assert [(f.invariant, f.subject, f.repaired) for f in findings] == [
        ("run-started-not-recorded", f"run #{run_id}", False)
    ]
    assert db_state(env.ws.store) == before
    repaired = reconcile_runs.check(env.ws, repair=True)
    assert [(f.invariant, f.repaired) for f in repaired] == [("run-started-not-recorded", True)]
    run = _run(env, run_id)
    assert run.status == "running" and run.external_id == external_id_for(run_id)
    assert reconcile_runs.check(env.ws, repair=True) == []  # running with its trainer: nothing wrong
    hold.unlink()
    wait_for(lambda: not crash.run_processes(env.ws, run_id), timeout=60, what="the trainer to end")
    env.ws.runs.advance()
    run = _run(env, run_id)
    assert run.status == "succeeded" and run.reason == "" and run.final_loss == 1.5
    assert _model_versions(env, run_id) == 1


def test_trainer_outliving_its_killed_wrapper_stays_running_and_succeeds(fake_env, hold):
    """SIGKILL to the wrapper only: the run is not lost while the trainer lives, and ends with the trainer's real
    outcome (complete results: succeeded, registered), though no exit code was ever written."""
    env = fake_env
    view = env.ws.runs.launch(env.actor("alice"), env.cr)
    runner = env.ws.runs.runner
    wrapper, trainer = crash._wait_marker(env.ws, view.id)
    assert runner.process_info(view.external_id)["pid"] == wrapper
    os.kill(wrapper, signal.SIGKILL)
    wait_for(lambda: not psutil.pid_exists(wrapper) or psutil.Process(wrapper).status() == "zombie", timeout=10)
    runner.close()  # reap it
    assert env.ws.runs.advance() == []
    assert env.ws.runs.get(env.actor("alice"), view.id).status == "running"
    assert reconcile_runs.check(env.ws, repair=True) == []
    assert env.ws.runs.get(env.actor("alice"), view.id).status == "running"
    hold.unlink()
    wait_for(lambda: not psutil.pid_exists(trainer) or psutil.Process(trainer).status() == "zombie", timeout=60)
    assert not (runner.run_dir(view.external_id) / "exit_code").exists()
    assert env.ws.runs.advance() == [view.id]
    done = env.ws.runs.get(env.actor("alice"), view.id)
    assert done.status == "succeeded" and done.final_loss == 1.5
    assert f"trainer {trainer} ended after its wrapper {wrapper} was killed" in done.reason
    assert _model_versions(env, view.id) == 1


def test_wrapper_survives_sigterm_and_records_the_trainers_exit_code(fake_env, hold):
    env = fake_env
    view = env.ws.runs.launch(env.actor("alice"), env.cr)
    wrapper, trainer = crash._wait_marker(env.ws, view.id)
    os.kill(wrapper, signal.SIGTERM)
    time.sleep(0.3)
    assert psutil.Process(wrapper).status() != "zombie"
    os.kill(trainer, signal.SIGTERM)
    done = env.ws.runs.wait(env.actor("alice"), view.id, timeout=30)
    assert done.status == "failed" and done.reason.startswith("killed by SIGTERM (exit code 143)")


# ---- runs with nothing behind them ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("boundary", "reason"),
    [
        ("recorded", "never reached the runner (its launch by process {pid} on {host} ended before)"),
        ("dir-made", "the launch stopped before the trainer started (no process was started in {run_dir})"),
        ("yaml-written", "the launch stopped before the trainer started (no process was started in {run_dir})"),
    ],
)
def test_run_whose_launch_died_before_the_trainer_is_marked_lost_with_the_reason(fake_env, boundary, reason):
    env = fake_env
    run_id = _killed_launch(env, boundary)
    with env.ws.store.session() as s:
        launcher = s.scalar(
            select(AuditEvent.detail).where(AuditEvent.subject == f"run:{run_id}", AuditEvent.action == "run.launch")
        )["launcher"]
    findings = reconcile_runs.check(env.ws, repair=True)
    assert [(f.invariant, f.subject, f.repaired) for f in findings] == [
        ("run-active-without-process", f"run #{run_id}", True)
    ]
    run = _run(env, run_id)
    run_dir = env.ws.settings.runs_dir / external_id_for(run_id)
    assert run.status == "lost" and run.finished_at is not None
    assert run.reason == reason.format(pid=launcher["pid"], host=launcher["host"], run_dir=run_dir)
    assert reconcile_runs.check(env.ws, repair=True) == []


def test_a_launch_under_way_is_left_alone(fake_env):
    """A run without its runner id whose launching process lives (here: this one) is being launched: no finding, no
    change, even from the repair."""
    env = fake_env
    with env.ws.store.session() as s:
        config_id = s.scalar(select(Run.config_id).limit(1)) or _a_config_id(env)
        run = Run(config_id=config_id, backend="local", status="queued", submitted_by_id=env.actor("alice").id)
        s.add(run)
        s.flush()
        launch = {"launcher": this_process()}
        s.add(AuditEvent(actor="alice", action="run.launch", subject=f"run:{run.id}", detail=launch))
    before = snapshot(env)
    assert reconcile_runs.check(env.ws, repair=True) == []
    assert env.ws.runs.advance() == []
    assert snapshot(env) == before


def _a_config_id(env) -> int:
    with env.ws.store.session() as s:
        return s.scalar(select(Config.id).limit(1))


def test_succeeded_run_without_its_model_version_gets_it(fake_env):
    """The tracking process died between recording success and registering: the reconcile registers, once."""
    env = fake_env
    view = env.ws.runs.launch(env.actor("alice"), env.cr)
    wait_for(lambda: not crash.run_processes(env.ws, view.id), timeout=60, what="the trainer to end")
    status = crash._wait_child(crash._in_child(env.ws, "register-killed", lambda child: child.runs.advance()))
    assert os.WIFSIGNALED(status)
    assert _run(env, view.id).status == "succeeded" and _model_versions(env, view.id) == 0
    findings = reconcile_runs.check(env.ws, repair=False)
    assert [(f.invariant, f.repaired) for f in findings] == [("run-succeeded-without-model", False)]
    assert [(f.invariant, f.repaired) for f in reconcile_runs.check(env.ws, repair=True)] == [
        ("run-succeeded-without-model", True)
    ]
    assert _model_versions(env, view.id) == 1
    assert reconcile_runs.check(env.ws, repair=True) == []


def test_registrations_racing_each_other_make_one_version(fake_env):
    env = fake_env
    view = env.ws.runs.launch(env.actor("alice"), env.cr)
    wait_for(lambda: not crash.run_processes(env.ws, view.id), timeout=60, what="the trainer to end")
    with env.ws.store.session() as s:  # recorded as succeeded by a tracker that never registered
        s.execute(update(Run).where(Run.id == view.id).values(status="succeeded", finished_at=func.now()))
    barrier = threading.Barrier(4)

    def register():
        barrier.wait()
        env.ws.runs.tracker.register(view.id)

    threads = [threading.Thread(target=register) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert _model_versions(env, view.id) == 1


# ---- the monitor ----------------------------------------------------------------------------------------------------


def test_monitor_reconciles_at_start_and_then_periodically(fake_env, hold, caplog):
    """The monitor's first pass is a reconcile (it repairs and logs what it found); later passes follow a trainer
    whose launch died before recording its id to its end."""
    env = fake_env
    first = _killed_launch(env, "recorded")  # the launch died: the monitor's first pass finds it
    monitor = env.ws.runs.start_monitor(interval=0.05)
    try:
        wait_for(lambda: monitor.reconciled >= 1, timeout=30, what="the start-up reconcile")
        assert _run(env, first).status == "lost"
        assert f"reconcile: [repaired] run-active-without-process: run #{first}: queued" in caplog.text
        monitor.reconcile_every = 0.2
        second = _killed_launch(env, "process-started")  # a trainer without its id, found by a later pass
        wait_for(lambda: _run(env, second).external_id, timeout=30, what="the periodic reconcile")
        assert _run(env, second).status == "running"
        hold.unlink()
        wait_for(lambda: _run(env, second).status == "succeeded", timeout=60, what="the periodic reconcile")
        wait_for(lambda: _model_versions(env, second) == 1, timeout=30, what="the registration")
    finally:
        env.ws.runs.stop_monitor()


def test_reconcile_is_skipped_when_no_run_could_need_it(fake_env):
    env = fake_env
    assert not env.ws.runs.repair.needed()
    view = env.ws.runs.launch(env.actor("alice"), env.cr)
    assert env.ws.runs.repair.needed()
    env.ws.runs.wait(env.actor("alice"), view.id, timeout=60)
    assert not env.ws.runs.repair.needed()  # succeeded and registered


# ---- launches racing each other -------------------------------------------------------------------------------------


def _check_distinct_complete_runs(env, run_ids: list[int]) -> None:
    alice = env.actor("alice")
    assert len(set(run_ids)) == len(run_ids)
    for run_id in run_ids:
        view = env.ws.runs.wait(alice, run_id, timeout=60)
        assert view.status == "succeeded", view.reason
        assert view.external_id == external_id_for(run_id)
        assert _model_versions(env, run_id) == 1
    wrappers = {env.ws.runs.runner.process_info(external_id_for(r))["pid"] for r in run_ids}
    assert len(wrappers) == len(run_ids)  # one process per run, never two for one or one for two
    assert reconcile_runs.check(env.ws, repair=False) == []


def test_two_launches_of_one_change_request_at_once_in_threads_make_two_whole_runs(fake_env):
    env = fake_env
    alice = env.actor("alice")
    barrier = threading.Barrier(2)
    views, errors = [], []

    def launch():
        barrier.wait()
        try:
            views.append(env.ws.runs.launch(alice, env.cr))
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=launch) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    _check_distinct_complete_runs(env, [v.id for v in views])


def test_two_overridden_launches_of_an_unrecorded_commit_at_once_make_two_whole_runs(fake_env, monkeypatch):
    """An admin launches a commit lfops never recorded (init's commit on main) twice at the same moment: both launches
    look for its config row at once, find none and insert it; the one that loses the race takes the row the other
    made. (The two launches meet at the config row, so the race happens every time.)"""
    env = fake_env
    admin = env.actor("admin")
    commit = env.origin_git("rev-list", "--max-parents=0", "main").strip()
    from backend.runs import launching

    meet = threading.Barrier(2, timeout=30)
    calls = iter(range(1000))  # next() is atomic under the GIL
    record_config = launching.record_config

    def record_config_together(*args, **kwargs):
        if next(calls) < 2:
            meet.wait()  # the first attempt of each launch; the retry goes on alone
        return record_config(*args, **kwargs)

    monkeypatch.setattr(launching, "record_config", record_config_together)
    barrier = threading.Barrier(2)
    views, errors = [], []

    def launch():
        barrier.wait()
        try:
            views.append(env.ws.runs.launch(admin, commit, "configs/example.yaml", override_reason="race test"))
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=launch) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with env.ws.store.session() as s:
        assert s.scalar(select(func.count(Config.id)).where(Config.commit == commit)) == 1
    _check_distinct_complete_runs(env, [v.id for v in views])


def test_two_launches_of_one_change_request_at_once_in_processes_make_two_whole_runs(fake_env):
    env = fake_env
    with env.ws.store.session() as s:
        last = s.scalar(select(func.max(Run.id))) or 0
    alice = env.actor("alice")
    start_at = time.time() + 1.0  # both children start the launch at the same moment

    def launch(child):
        time.sleep(max(0.0, start_at - time.time()))
        child.runs.launch(alice, env.cr)

    children = [crash._in_child(env.ws, None, launch) for _ in range(2)]
    assert [crash._wait_child(pid) for pid in children] == [0, 0]
    with env.ws.store.session() as s:
        run_ids = list(s.scalars(select(Run.id).where(Run.id > last)))
    assert len(run_ids) == 2
    env.ws.runs.advance()
    _check_distinct_complete_runs(env, run_ids)


# ---- run ids out of range -------------------------------------------------------------------------------------------


def test_run_ids_out_of_range_are_no_such_run(any_db_env, capsys, monkeypatch):
    env = any_db_env
    alice = env.actor("alice")
    before = snapshot(env)
    message = f"run #{HUGE} does not exist"
    for verb in (
        lambda: env.ws.runs.get(alice, HUGE),
        lambda: env.ws.runs.advance_run(HUGE),
        lambda: env.ws.runs.metrics(alice, HUGE),
        lambda: list(env.ws.runs.logs(alice, HUGE)),
        lambda: env.ws.runs.cancel(alice, HUGE),
        lambda: env.ws.runs.wait(alice, HUGE, timeout=1),
        lambda: env.ws.runs.get(alice, -HUGE),
        lambda: env.ws.runs.get(alice, 2**31),
    ):
        with pytest.raises(NotFound, match="does not exist"):
            verb()
    with pytest.raises(NotFound, match=rf"run #{HUGE} does not exist"):
        env.ws.lineage.compare(alice, [HUGE, 1])
    assert env.ws.runs.list(alice, change_request=HUGE) == []
    monkeypatch.setenv("LFOPS_PASSWORD", env.passwords["alice"])
    monkeypatch.setenv("LFOPS_DATABASE_URL", env.ws.settings.database_url)  # the CLI on the same database
    base = ["--workspace", str(env.ws.settings.workspace), "--user", "alice"]
    for args in (
        ["runs", "show", str(HUGE)],
        ["runs", "cancel", str(HUGE)],
        ["runs", "logs", str(HUGE)],
        ["runs", "wait", str(HUGE), "--timeout", "1"],
        ["runs", "compare", str(HUGE), "1"],
    ):
        assert lfops([*base, *args]) == 2, args
        err = capsys.readouterr().err
        assert f"error: {message}" in err and "Traceback" not in err, (args, err)
    assert lfops([*base, "runs", "list", "--change-request", str(HUGE)]) == 0
    assert snapshot(env) == before
