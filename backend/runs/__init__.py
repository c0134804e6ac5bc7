"""Runs: the launch policy, run records and their tracking (status, metrics, logs, cancel, wait), one module per job.

`Runs` (facade.py) is what callers use; see its module for the parts. A run goes queued -> running -> succeeded |
failed | cancelled | lost, each change persisted with its time and reason (tracking.py); metrics are tailed from
LLaMA-Factory's `trainer_log.jsonl` while training and completed from `trainer_state.json` / `all_results.json` at the
end (ingest.py), with LLaMA-Factory's progress (progress.py); changes.py tells pages waiting for it what moved.
"""

from backend.runs.changes import Moved, RunChanges
from backend.runs.facade import Runs
from backend.runs.launching import Launcher
from backend.runs.monitor import RunMonitor
from backend.runs.policy import LaunchPolicy, LaunchTarget
from backend.runs.progress import RunProgress, fmt_duration
from backend.runs.queries import RunQueries, RunView, commit_filter, custom_plans, run_views, runs_query
from backend.runs.repair import RunRepair
from backend.runs.runner_set import RUNNERS, RunnerSet, make_runner
from backend.runs.tracking import ACTIVE, FULL_PASS_S, SUBMIT_GRACE, Progress, Tracker

__all__ = [
    "ACTIVE",
    "FULL_PASS_S",
    "RUNNERS",
    "SUBMIT_GRACE",
    "LaunchPolicy",
    "LaunchTarget",
    "Launcher",
    "Moved",
    "Progress",
    "RunChanges",
    "RunMonitor",
    "RunProgress",
    "RunQueries",
    "RunRepair",
    "RunView",
    "RunnerSet",
    "Runs",
    "Tracker",
    "commit_filter",
    "custom_plans",
    "fmt_duration",
    "make_runner",
    "run_views",
    "runs_query",
]
