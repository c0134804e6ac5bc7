"""Helpers for the runs, registry and lineage tests: a small training config, an approved merge, clean-up."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import psutil
from sqlalchemy import select

from backend.config import TrainConfig
from backend.runners.local import external_id_for
from backend.store.models import Config, Run, utcnow
from tests.helpers import wait_for

# Four optimiser steps of the tiny model: a few seconds of training after ~15 s of start-up on two cores.
SMALL = {"max_samples": 32, "num_train_epochs": 1.0, "save_steps": 1000, "logging_steps": 1, "seed": 42}


def small_config(env, **overrides) -> TrainConfig:
    config = TrainConfig.parse(env.example_yaml(), "example")
    config.args.update({**SMALL, **overrides})
    return config


def approved_merge(env, name: str, **overrides) -> tuple[int, str]:
    """Save as alice, approve and merge as rita: returns (change request id, merge commit)."""
    alice, rita = env.actor("alice"), env.actor("rita")
    cr = env.ws.changes.save(alice, small_config(env, **overrides), name, f"{name} for tests").change_request
    env.ws.changes.approve(rita, cr, "looks right")
    merged = env.ws.changes.merge(rita, cr)
    return cr, merged.merged_commit


def saved_unapproved(env, name: str, **overrides):
    alice = env.actor("alice")
    return env.ws.changes.save(alice, small_config(env, **overrides), name, f"{name}, not reviewed")


def log_line(step: int, total: int, elapsed: str, remaining: str, loss: float | None = None) -> str:
    """A trainer_log.jsonl line as LLaMA-Factory 0.9.5 writes it (callbacks.LogCallback.on_log)."""
    record = {"current_steps": step, "total_steps": total}
    if loss is not None:
        record.update(loss=loss, lr=2e-4 * (total - step) / total, epoch=step / total)
    record.update(percentage=round(step / total * 100, 2), elapsed_time=elapsed, remaining_time=remaining)
    return json.dumps(record) + "\n"


def run_row(env, status: str = "running", submitter: str = "alice") -> tuple[int, object]:
    """A run row of an approved config with its local run directory (no process)."""
    approved_merge(env, f"live-{status}-{submitter}")
    with env.ws.store.session() as s:
        config_id = s.scalar(select(Config.id).order_by(Config.id.desc()).limit(1))
        run = Run(
            config_id=config_id,
            backend="local",
            status=status,
            submitted_by_id=env.actor(submitter).id,
            started_at=utcnow(),
        )
        s.add(run)
        s.flush()
        run.external_id = external_id_for(run.id)
        run_id = run.id
    out = env.ws.runs.runner.run_dir(external_id_for(run_id)) / "output"
    out.mkdir(parents=True)
    return run_id, out


def kill_leftover_runs(ws) -> None:
    """A failed test must not leave training processes behind: kill every process of every run that still lives."""
    runner = ws.runs.runner
    for run_dir in sorted(ws.settings.runs_dir.glob("run-*")):
        for proc in runner.processes(run_dir.name):
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass


# ---- one trained run shared by the training, registry and lineage test modules --------------------------------------

MAIN = {"per_device_train_batch_size": 4}  # 8 optimiser steps: room to watch it while it trains
_SHARED: dict[str, Trained] = {}


@dataclass
class Trained:
    env: Any
    cr: int
    commit: str
    run_id: int
    model: str  # the registry ref of the version the run registered
    curve_while_running: list[tuple[int, float]]  # loss rows stored while the process was still running
    status_while_running: str
    status_after_restart: str  # what a fresh Workspace (the app after a restart) made of the running run
    leader_alive_after_restart: bool
    monitor_threads_before_restart: int = 0
    notes: dict = field(default_factory=dict)


def trained_run(template_workspace, tmp_path_factory) -> Trained:
    """Launch one approved config, "kill" the app mid-run (drop its monitor and Workspace), start a new Workspace
    that re-attaches and follows the run to the end. Trained once per test session (see the module fixtures)."""
    if "run" in _SHARED:
        return _SHARED["run"]
    from backend.workspace import Workspace
    from tests.workspace_fixtures import Env, make_env

    env = make_env(template_workspace, tmp_path_factory.mktemp("trained") / "ws")
    cr, commit = approved_merge(env, "tiny-sft", **MAIN)
    alice = env.actor("alice")
    first = env.ws
    monitor = first.runs.start_monitor(interval=0.1)
    view = first.runs.launch(alice, cr)
    try:
        curve = wait_for(
            lambda: first.runs.metrics(alice, view.id)["loss"], timeout=180, interval=0.05, what="the first loss"
        )
        status_while_running = first.runs.get(alice, view.id).status
        leader = first.runs.runner.process_info(view.external_id)["pid"]
        # The app dies: its monitor stops and nothing of the old Workspace is used again.
        monitor.stop()
        second = Workspace(first.settings)
        second.runs.advance()
        status_after_restart = second.runs.get(alice, view.id).status
        leader_alive = psutil.pid_exists(leader)
        second.runs.start_monitor(interval=0.2)
        try:
            final = second.runs.wait(alice, view.id, timeout=300)
        finally:
            second.runs.stop_monitor()
    except BaseException:
        kill_leftover_runs(first)
        raise
    assert final.status == "succeeded", final.reason
    model = second.registry.for_run(view.id)
    trained = Trained(
        env=Env(second, env.passwords),
        cr=cr,
        commit=commit,
        run_id=view.id,
        model=model.ref if model else "",
        curve_while_running=list(curve),
        status_while_running=status_while_running,
        status_after_restart=status_after_restart,
        leader_alive_after_restart=leader_alive,
    )
    _SHARED["run"] = trained
    return trained
