"""Crash injection for launch: kill the launching process at every step boundary and at random points, or kill the
run's wrapper / trainer afterwards; then check the run invariants, reconcile (backend.reconcile.runs.check with
repair), and check them again.

Each kill is one launch in a forked copy of this process (everything already imported, so a kill takes about a
second), with a stand-in `llamafactory-cli` that "trains" for half a second and writes what LLaMA-Factory writes at
the end (all_results.json, trainer_state.json, an adapter). The invariants are checked against the ground truth
(the processes that live, the files the trainer wrote), not against what lfops believes:

- active-without-process: no run is queued/pending/running once every process of it has ended;
- succeeded-without-model: no succeeded run is without its model version;
- outcome-not-recorded: a run whose trainer finished its training (complete results) is recorded succeeded.

    .venv/bin/python bench/crash_scenarios/launch.py [--kills 100] [--seed 1]

`run(kills, seed)` is what bench/crash_injection.py calls; `run_in(...)` is what the tests call on their workspace.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import random
import signal
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import psutil  # noqa: E402
from sqlalchemy import func, select  # noqa: E402

from backend.auth import Actor  # noqa: E402
from backend.config import TrainConfig  # noqa: E402
from backend.gitstore import GitStore  # noqa: E402
from backend.reconcile import runs as reconcile_runs  # noqa: E402
from backend.runners import lfprocess  # noqa: E402
from backend.runners.base import RunState  # noqa: E402
from backend.runners.local import MARKER_FILE, LocalRunner, external_id_for, training_completed  # noqa: E402
from backend.runs import Runs  # noqa: E402
from backend.runs.launching import Launcher  # noqa: E402
from backend.runs.tracking import ACTIVE, Tracker  # noqa: E402
from backend.settings import Settings  # noqa: E402
from backend.store.models import ModelVersion, Run  # noqa: E402
from backend.workspace import Workspace  # noqa: E402

NAME = "launch"

# A stand-in for `llamafactory-cli train <yaml>`: trains for FAKE_TRAIN_S seconds (and while the file FAKE_HOLD names
# exists), then writes LLaMA-Factory's files.
FAKE_TRAINER = """#!/bin/sh
out=$(sed -n 's/^output_dir: //p' "$2" | tr -d "'\\"")
sleep "${FAKE_TRAIN_S:-0.5}"
while [ -n "$FAKE_HOLD" ] && [ -e "$FAKE_HOLD" ]; do sleep 0.05; done
printf '{"current_steps": 1, "total_steps": 1, "loss": 1.5}\\n' > "$out/trainer_log.jsonl"
printf '{"peft_type": "LORA"}\\n' > "$out/adapter_config.json"
printf 'weights' > "$out/adapter_model.safetensors"
printf '{"log_history": [{"step": 1, "loss": 1.5}]}\\n' > "$out/trainer_state.json"
printf '{"epoch": 1.0, "train_loss": 1.5, "train_runtime": 0.5}\\n' > "$out/all_results.json"
exit "${FAKE_EXIT:-0}"
"""

# Where the launching process dies: (name, what it left behind). Each is a function entered or left in the launch.
BOUNDARIES = (
    ("recorded", "the run row and its launch event committed, nothing submitted"),
    ("dir-made", "the run directory made and locked, no checkout"),
    ("checked-out", "the checkout written, no train.yaml"),
    ("yaml-written", "train.yaml written, no process"),
    ("process-started", "the wrapper started (it marks the trainer), process.json not written"),
    ("process-recorded", "process.json written, the runner id not recorded"),
    ("id-recorded", "the runner id recorded, the run not advanced"),
    ("launched", "the launch returned"),
)
# After a complete launch: the run's own processes die instead (SIGKILL: nothing of them can record anything).
PROCESS_KILLS = (
    ("wrapper-killed", "only the wrapper; the trainer trains on to the end"),
    ("trainer-killed", "only the trainer; the wrapper records its exit code"),
    ("all-killed", "the wrapper and the trainer (the machine restarting)"),
)
# After the trainer ended: the app following the run dies between recording it succeeded and registering its model.
TRACKER_KILLS = (("register-killed", "the tracking process, after recording success, before registering"),)
RANDOM = ("random", "SIGKILL from outside after a random delay within a launch's duration")
SCENARIOS = tuple(name for name, _ in BOUNDARIES + PROCESS_KILLS + TRACKER_KILLS) + (RANDOM[0],)
INVARIANTS = ("active-without-process", "succeeded-without-model", "outcome-not-recorded")


@dataclass
class Tally:
    kills: int = 0
    before: Counter = field(default_factory=Counter)  # invariant -> violations left by the kills
    after: Counter = field(default_factory=Counter)  # invariant -> violations after the reconcile
    by_scenario: dict[str, list[int]] = field(default_factory=dict)  # scenario -> [kills, before, after]
    seconds: float = 0.0

    def add(self, scenario: str, before: list[str], after: list[str]) -> None:
        self.kills += 1
        self.before.update(before)
        self.after.update(after)
        row = self.by_scenario.setdefault(scenario, [0, 0, 0])
        row[0] += 1
        row[1] += len(before)
        row[2] += len(after)

    def result(self) -> dict[str, Any]:
        notes = [f"{'scenario':18} {'kills':>5} {'before':>6} {'after':>5}"]
        notes += [f"{name:18} {k:>5} {b:>6} {a:>5}" for name, (k, b, a) in self.by_scenario.items()]
        notes.append("before: " + (", ".join(f"{k} {v}" for k, v in sorted(self.before.items())) or "none"))
        notes.append(f"{self.seconds:.0f} s, {self.seconds / max(self.kills, 1):.2f} s per kill")
        return {
            "kills": self.kills,
            "violations_before": sum(self.before.values()),
            "violations_after": sum(self.after.values()),
            "notes": "\n".join(notes),
            "by_scenario": self.by_scenario,
            "after_by_invariant": dict(self.after),
        }


# ---- the workspace ------------------------------------------------------------------------------------------------


def fake_trainer(directory: Path) -> Path:
    path = Path(directory) / "llamafactory-cli"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(FAKE_TRAINER)
    path.chmod(0o755)
    return path


def with_fake_trainer(ws: Workspace, cli: Path) -> Workspace:
    """`ws` with its runs on a local runner that starts the stand-in trainer (everything else as the app has it)."""
    runner = LocalRunner(ws.settings.runs_dir, ws.repo, cli=cli)
    ws.__dict__["runs"] = Runs(ws.store, ws.repo, runner, ws.registry)
    return ws


def approved_change_request(ws: Workspace, analyst: Actor, reviewer: Actor, name: str) -> int:
    config = TrainConfig.parse(ws.repo.read(ws.repo.sync_main(), "configs/example.yaml"), "example")
    cr = ws.changes.save(analyst, config, name, f"{name}: crash injection").change_request
    ws.changes.approve(reviewer, cr, "ok")
    ws.changes.merge(reviewer, cr)
    return cr


# ---- killing ------------------------------------------------------------------------------------------------------


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


@contextlib.contextmanager
def _patched(owner: Any, attr: str, when: str) -> Iterator[None]:
    """Make `owner.attr` kill this process on entry (`when="enter"`) or right after it returns (`"exit"`)."""
    original = getattr(owner, attr)

    def dying(*args: Any, **kwargs: Any) -> Any:
        if when == "enter":
            _die()
        result = original(*args, **kwargs)
        _die()
        return result

    setattr(owner, attr, dying)
    try:
        yield
    finally:
        setattr(owner, attr, original)


# boundary -> (object, attribute, enter|exit): the function of the launch at whose edge the process dies
_KILL_POINTS: dict[str, tuple[Any, str, str]] = {
    "recorded": (LocalRunner, "submit", "enter"),
    "dir-made": (LocalRunner, "_checkout", "enter"),
    "checked-out": (LocalRunner, "training_yaml", "enter"),
    "yaml-written": (lfprocess, "start", "enter"),
    "process-started": (lfprocess, "start", "exit"),
    "process-recorded": (LocalRunner, "submit", "exit"),
    "id-recorded": (Tracker, "advance_run", "enter"),
    "launched": (Launcher, "launch", "exit"),
    "register-killed": (Tracker, "register", "enter"),
}


def _launch_in_child(ws: Workspace, analyst: Actor, cr: int, boundary: str | None) -> int:
    """Fork; the child launches `cr` and dies at `boundary` (None: it completes the launch). Returns its pid."""
    return _in_child(ws, boundary, lambda child: child.runs.launch(analyst, cr))


_inherited: list[object] = []


def _in_child(ws: Workspace, boundary: str | None, action: Callable[[Workspace], object]) -> int:
    """Fork; the child does `action` on its own copy of the workspace and dies at `boundary` (None: it completes the
    action). Returns the child's pid."""
    pid = os.fork()
    if pid:
        return pid
    code = 0
    # GitPython's `cat-file --batch` processes of this thread are the parent's: a child killed in the middle of a read
    # would leave the pipe half read for everyone. The child starts its own; the parent's objects are kept referenced
    # (not closed, which would end the parent's processes).
    _inherited.append(GitStore._local.__dict__.pop("repos", None))
    try:
        owner, attr, when = _KILL_POINTS[boundary] if boundary else (None, "", "")
        with _patched(owner, attr, when) if owner is not None else contextlib.nullcontext():
            # the child's own database connections (the parent's pooled ones are not touched), made after the patch
            # (Runs binds its verbs when it is made)
            action(with_fake_trainer(Workspace(ws.settings), ws.runs.runner.cli))
    except BaseException:  # noqa: BLE001 - report and leave: the child must never return into the caller
        traceback.print_exc()
        code = 1
    os._exit(code)


def _wait_child(pid: int, timeout: float = 60.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)
    return os.waitpid(pid, 0)[1]


def _set_subreaper(on: bool) -> None:
    """Orphaned wrappers and trainers become this process's children, so it can reap them (no zombies pile up)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(36, 1 if on else 0, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER


def _reap(pids: set[int]) -> None:
    for pid in list(pids):
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:  # not ours (reaped by init, or never reparented here)
            pids.discard(pid)
            continue
        if done:
            pids.discard(pid)


# ---- the ground truth ---------------------------------------------------------------------------------------------


def run_processes(ws: Workspace, run_id: int) -> list[psutil.Process]:
    return ws.runs.runner.processes(external_id_for(run_id))


def violations(ws: Workspace, run_ids: list[int]) -> list[str]:
    """The invariants each run breaks, judged by what lives and what the trainer wrote (call once processes ended)."""
    found = []
    with ws.store.session() as s:
        rows = s.execute(
            select(Run.id, Run.status, func.count(ModelVersion.id))
            .outerjoin(ModelVersion, ModelVersion.run_id == Run.id)
            .where(Run.id.in_(run_ids))
            .group_by(Run.id, Run.status)
        ).all()
    for run_id, status, versions in rows:
        if status in ACTIVE and not run_processes(ws, run_id):
            found.append("active-without-process")
        if status == RunState.SUCCEEDED and not versions:
            found.append("succeeded-without-model")
        out = ws.settings.runs_dir / external_id_for(run_id) / "output"
        if training_completed(out) and status != RunState.SUCCEEDED:
            found.append("outcome-not-recorded")
    return found


def _settle(ws: Workspace, run_ids: list[int], orphans: set[int], timeout: float = 60.0) -> None:
    """Until every process of these runs has ended (the stand-in trainer takes half a second)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _reap(orphans)
        if not any(run_processes(ws, run_id) for run_id in run_ids):
            return
        time.sleep(0.05)
    for run_id in run_ids:
        for proc in run_processes(ws, run_id):
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()
    raise RuntimeError(f"runs {run_ids}: processes still alive after {timeout} s")


def _marker_pids(ws: Workspace, run_id: int) -> tuple[int, int] | None:
    marker = lfprocess.read_marker(ws.settings.runs_dir / external_id_for(run_id) / MARKER_FILE)
    return (marker.wrapper.pid, marker.trainer.pid) if marker else None


def _wait_marker(ws: Workspace, run_id: int, timeout: float = 30.0) -> tuple[int, int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = _marker_pids(ws, run_id)
        if pids:
            return pids
        time.sleep(0.005)
    raise RuntimeError(f"run #{run_id}: no marker after {timeout} s")


# ---- one kill -----------------------------------------------------------------------------------------------------

_PROCESS_TARGETS: dict[str, Callable[[int, int], list[int]]] = {
    "wrapper-killed": lambda wrapper, trainer: [wrapper],
    "trainer-killed": lambda wrapper, trainer: [trainer],
    "all-killed": lambda wrapper, trainer: [wrapper, trainer],
}


def kill_once(
    ws: Workspace, analyst: Actor, cr: int, scenario: str, rng: random.Random, orphans: set[int], launch_s: float
) -> tuple[list[int], list[str], list[str]]:
    """One launch killed as `scenario` says; returns (new run ids, violations before, violations after reconcile)."""
    with ws.store.session() as s:
        last = s.scalar(select(func.max(Run.id))) or 0
    boundary = scenario if scenario in _KILL_POINTS and scenario != "register-killed" else None
    pid = _launch_in_child(ws, analyst, cr, boundary)
    if scenario == "random":
        time.sleep(rng.uniform(0, launch_s))
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    elif scenario in _PROCESS_TARGETS:
        # as soon as the wrapper has marked the trainer (the trainer "trains" for half a second from then)
        wrapper, trainer = _wait_marker(ws, last + 1)
        orphans.update((wrapper, trainer))
        for target in _PROCESS_TARGETS[scenario](wrapper, trainer):
            with contextlib.suppress(ProcessLookupError):
                os.kill(target, signal.SIGKILL)
    _wait_child(pid)
    with ws.store.session() as s:
        run_ids = list(s.scalars(select(Run.id).where(Run.id > last).order_by(Run.id)))
    for run_id in run_ids:
        orphans.update(_marker_pids(ws, run_id) or ())
    _settle(ws, run_ids, orphans)
    if scenario == "register-killed":
        _wait_child(_in_child(ws, scenario, lambda child: child.runs.advance()))
    before = violations(ws, run_ids)
    reconcile_runs.check(ws, repair=True)
    after = violations(ws, run_ids)
    return run_ids, before, after


def measure_launch(ws: Workspace, analyst: Actor, cr: int, orphans: set[int]) -> float:
    """How long one whole launch takes in a child (the window random kills fall into)."""
    start = time.monotonic()
    _wait_child(_launch_in_child(ws, analyst, cr, None))
    took = time.monotonic() - start
    with ws.store.session() as s:
        run_id = s.scalar(select(func.max(Run.id)))
    _settle(ws, [run_id], orphans)
    reconcile_runs.check(ws, repair=True)
    return took


def run_in(
    ws: Workspace,
    analyst: Actor,
    cr: int,
    kills: int,
    seed: int,
    scenarios: tuple[str, ...] = SCENARIOS,
    train_s: float = 0.5,
) -> dict[str, Any]:
    """`kills` kills on workspace `ws` (its runs on the stand-in trainer, see `with_fake_trainer`), spread evenly over
    `scenarios` in a shuffled order; the counts as `run` returns them."""
    rng = random.Random(seed)
    os.environ["FAKE_TRAIN_S"] = str(train_s)
    orphans: set[int] = set()
    tally = Tally()
    start = time.monotonic()
    _set_subreaper(True)
    try:
        launch_s = measure_launch(ws, analyst, cr, orphans)
        order = [scenarios[i % len(scenarios)] for i in range(kills)]
        rng.shuffle(order)
        for scenario in order:
            _run_ids, before, after = kill_once(ws, analyst, cr, scenario, rng, orphans, launch_s)
            tally.add(scenario, before, after)
    finally:
        _set_subreaper(False)
        _reap(orphans)
    tally.seconds = time.monotonic() - start
    return tally.result()


def run(kills: int, seed: int) -> dict[str, Any]:
    """A fresh workspace (SQLite) in a temporary directory, one approved change request, `kills` killed launches."""
    with tempfile.TemporaryDirectory(prefix="lfops-crash-launch-") as tmp:
        ws = Workspace(Settings.from_env(Path(tmp) / "ws"))
        credentials = ws.init().credentials
        analyst = ws.login("alice", credentials["alice"][1])
        reviewer = ws.login("rita", credentials["rita"][1])
        with_fake_trainer(ws, fake_trainer(Path(tmp) / "bin"))
        cr = approved_change_request(ws, analyst, reviewer, "crash-launch")
        try:
            return run_in(ws, analyst, cr, kills, seed)
        finally:
            ws.runs.close()
            ws.store.dispose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    result = run(args.kills, args.seed)
    print(result["notes"])
    print(
        f"kills {result['kills']}, violations before reconcile {result['violations_before']}, "
        f"after {result['violations_after']}"
    )
    return 0 if result["violations_after"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
