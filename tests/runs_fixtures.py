"""Helpers for the runs, registry and lineage tests: a small training config, an approved merge, clean-up."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from backend.config import TrainConfig
from backend.runners.local import group_members

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


def wait_for(predicate, timeout: float = 120.0, poll: float = 0.1, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def kill_leftover_runs(runs_dir: Path) -> None:
    """A failed test must not leave training processes behind: kill every run's process group that still lives."""
    import json

    if not runs_dir.exists():
        return
    for info_path in runs_dir.glob("run-*/process.json"):
        pid = int(json.loads(info_path.read_text())["pid"])
        if group_members(pid):
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
