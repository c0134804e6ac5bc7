"""Real training of the tiny model through the local runner: tracking, restart of the app, cancel, lost runs.

One trained run is shared by this module and the registry and lineage tests (tests/runs_fixtures.py).
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import psutil
import pytest
from sqlalchemy import func, select

from backend.cli import main as lfops
from backend.settings import Settings
from backend.store.models import AuditEvent, Metric, Run
from backend.workspace import Workspace
from tests.helpers import wait_for
from tests.runs_fixtures import approved_merge, kill_leftover_runs, trained_run

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(template_workspace, tmp_path_factory):
    return trained_run(template_workspace, tmp_path_factory)


@pytest.fixture
def renv(env):
    yield env
    kill_leftover_runs(env.ws)


def test_loss_is_visible_while_it_trains(trained):
    assert trained.status_while_running == "running"
    assert trained.curve_while_running, "no loss stored before the run ended"
    steps = [step for step, _ in trained.curve_while_running]
    assert steps[0] == 1 and steps[-1] < 8  # seen before the last of its 8 steps


def test_restarted_app_reattaches_and_follows_the_run_to_the_end(trained):
    assert trained.leader_alive_after_restart
    assert trained.status_after_restart == "running"
    view = trained.env.ws.runs.get(trained.env.actor("alice"), trained.run_id)
    assert view.status == "succeeded" and view.reason == ""
    assert view.started_at is not None and view.finished_at is not None
    assert view.started_at <= view.finished_at


def test_metrics_are_stored_once_each_and_match_llamafactory_files(trained):
    """trainer_log.jsonl tailed across the restart: every step exactly once; final numbers from all_results.json."""
    ws, alice = trained.env.ws, trained.env.actor("alice")
    view = ws.runs.get(alice, trained.run_id)
    out = Path(view.output_dir)
    logged = [json.loads(line) for line in (out / "trainer_log.jsonl").read_text().splitlines()]
    curves = ws.runs.metrics(alice, trained.run_id, ("loss", "lr", "grad_norm"))
    assert curves["loss"] == [(r["current_steps"], pytest.approx(r["loss"])) for r in logged if "loss" in r]
    assert [s for s, _ in curves["lr"]] == list(range(1, 9))
    assert len(curves["grad_norm"]) == 8  # from trainer_state.json at the end
    with ws.store.session() as s:
        dupes = s.execute(
            select(Metric.step, Metric.key, func.count())
            .where(Metric.run_id == trained.run_id)
            .group_by(Metric.step, Metric.key)
            .having(func.count() > 1)
        ).all()
    assert dupes == []
    results = json.loads((out / "all_results.json").read_text())
    assert view.final_loss == pytest.approx(results["train_loss"], abs=0)
    assert view.final_metrics["train_runtime"] == pytest.approx(results["train_runtime"])


def test_progress_is_what_llamafactory_logged(trained):
    """Step, total, percentage and remaining time as trainer_log.jsonl has them (durations in seconds)."""
    ws, alice = trained.env.ws, trained.env.actor("alice")
    out = Path(ws.runs.get(alice, trained.run_id).output_dir)
    logged = [json.loads(line) for line in (out / "trainer_log.jsonl").read_text().splitlines()]
    progress = ws.runs.progress(alice, trained.run_id)
    assert progress.step == progress.total_steps == logged[-1]["total_steps"] == 8
    assert progress.fraction == 1.0 and progress.remaining_s == 0 and progress.label == "succeeded"
    remaining = ws.runs.metrics(alice, trained.run_id, ("remaining_s", "percentage"))
    first = logged[0]
    h, m, sec = (int(x) for x in first["remaining_time"].split(":"))
    assert remaining["remaining_s"][0] == (first["current_steps"], h * 3600 + m * 60 + sec)
    assert remaining["percentage"][-1] == (8, 100.0)
    assert "remaining_s" not in ws.runs.metric_keys(alice, trained.run_id)


def test_the_run_trained_exactly_its_commit_in_its_own_directory(trained):
    ws, alice = trained.env.ws, trained.env.actor("alice")
    view = ws.runs.get(alice, trained.run_id)
    run_dir = Path(view.output_dir).parent
    assert view.commit == trained.commit
    committed = ws.repo.read(trained.commit, "configs/tiny-sft.yaml").decode()
    assert (run_dir / "checkout" / "configs" / "tiny-sft.yaml").read_text() == committed
    assert (run_dir / "checkout" / "data" / "dataset_info.json").exists()
    train_yaml = (run_dir / "train.yaml").read_text()
    assert f"output_dir: {run_dir / 'output'}" in train_yaml
    assert "dataset_dir: data" in train_yaml and "lfops" not in train_yaml.replace(str(run_dir), "")
    info = json.loads((run_dir / "process.json").read_text())
    assert info["cwd"] == str(run_dir / "checkout") and info["command"][1:] == ["train", str(run_dir / "train.yaml")]
    assert (run_dir / "exit_code").read_text().strip() == "0"
    assert (
        "Training completed" in (run_dir / "train.log").read_text()
        or "train_loss" in (run_dir / "train.log").read_text()
    )


def test_status_changes_are_audited(trained):
    with trained.env.ws.store.session() as s:
        actions = s.scalars(
            select(AuditEvent.action).where(AuditEvent.subject == f"run:{trained.run_id}").order_by(AuditEvent.id)
        ).all()
    assert actions[0] == "run.launch" and actions[-1] == "run.succeeded"


def test_cli_runs_list_show_logs(trained, capsys, monkeypatch):
    ws = trained.env.ws
    monkeypatch.setenv("LFOPS_PASSWORD", trained.env.passwords["alice"])
    base = ["--workspace", str(ws.settings.workspace), "--user", "alice"]
    assert lfops([*base, "runs", "list", "--status", "succeeded", "--config", "tiny-sft"]) == 0
    out = capsys.readouterr().out
    assert f"{trained.run_id:>5} succeeded  alice" in out and trained.commit[:12] in out
    assert lfops([*base, "runs", "show", str(trained.run_id)]) == 0
    out = capsys.readouterr().out
    assert "final train loss" in out and "loss: 8 steps" in out and f"registered as {trained.model}" in out
    assert lfops([*base, "runs", "logs", str(trained.run_id)]) == 0
    assert "train_loss" in capsys.readouterr().out
    assert lfops([*base, "runs", "wait", str(trained.run_id)]) == 0
    assert lfops([*base, "runs", "show", "999"]) == 2
    assert "error: run #999 does not exist" in capsys.readouterr().err


def test_cancel_mid_run_kills_the_whole_process_tree(renv, monkeypatch):
    """With torchrun (FORCE_TORCHRUN) the tree is sh -> llamafactory-cli -> torchrun -> worker, and the worker is in a
    process group of its own: cancel must still end every one of them."""
    env = renv
    monkeypatch.setenv("FORCE_TORCHRUN", "1")
    monkeypatch.setenv("NPROC_PER_NODE", "1")
    cr, _ = approved_merge(env, "to-cancel", num_train_epochs=20.0)
    alice = env.actor("alice")
    view = env.ws.runs.launch(alice, cr)
    runner = env.ws.runs.runner

    def tree():
        procs = runner.processes(view.external_id)
        cmdlines = [" ".join(p.cmdline()) for p in procs]
        torchrun = any("bin/torchrun" in c for c in cmdlines)
        worker = any("launcher.py" in c and "bin/torchrun" not in c for c in cmdlines)
        return procs if torchrun and worker else None

    procs = wait_for(tree, timeout=120, interval=0.2, what="the torchrun worker")
    groups = {os.getpgid(p.pid) for p in procs}
    assert len(groups) >= 2  # the worker left the leader's process group
    wait_for(
        lambda: env.ws.runs.advance_run(view.id) and env.ws.runs.metrics(alice, view.id)["loss"],
        timeout=120,
        what="training to be under way",
    )
    result = env.ws.runs.cancel(alice, view.id)
    assert result.status == "cancelled" and result.reason == "cancelled by alice"
    assert result.finished_at is not None
    for proc in procs:
        assert not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE, proc.cmdline()
    assert runner.processes(view.external_id) == []
    assert env.ws.registry.for_run(view.id) is None


def test_run_whose_process_vanished_while_the_app_was_down_is_marked_lost(renv):
    env = renv
    cr, _ = approved_merge(env, "to-lose")
    alice = env.actor("alice")
    view = env.ws.runs.launch(alice, cr)
    assert view.status == "running"
    leader = env.ws.runs.runner.process_info(view.external_id)["pid"]
    for proc in env.ws.runs.runner.processes(view.external_id):  # the machine "reboots" while lfops is down
        proc.send_signal(signal.SIGKILL)
    wait_for(lambda: not env.ws.runs.runner.processes(view.external_id), what="the processes to die")
    restarted = Workspace(Settings.from_env(env.ws.settings.workspace))
    assert restarted.runs.advance() == [view.id]
    lost = restarted.runs.get(alice, view.id)
    assert lost.status == "lost"
    assert f"process {leader} ended without an exit code" in lost.reason
    with restarted.store.session() as s:
        assert s.get(Run, view.id).finished_at is not None
        assert (
            s.scalar(
                select(AuditEvent.action).where(AuditEvent.subject == f"run:{view.id}").order_by(AuditEvent.id.desc())
            )
            == "run.lost"
        )
