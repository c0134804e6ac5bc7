"""`Runs`: the one object the WebUI, the CLI and the workspace use for runs; each verb is done by the part that owns it.

policy      LaunchPolicy: resolve a target, refuse what the approval policy does not allow
launching   Launcher: launch, preview, reproduce
tracking    Tracker: advance runs from their runners, finish, register, wait, cancel
queries     RunQueries: get, list, metrics, logs
runner_set  RunnerSet: the default runner and the others, made on first use
repair      RunRepair: the runs' invariants checked against the runners, and repaired (backend.reconcile's run side)
monitor     RunMonitor: the background thread that advances runs, and repairs them at start and periodically
changes     RunChanges: revision numbers that move when a run appears, changes status or logs a step (for live pages)
progress    RunProgress: step / total, elapsed and remaining time, as the CLI and the WebUI show them
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from backend.gitstore import GitStore
from backend.preflight import Preflight
from backend.runners.base import Runner
from backend.runs.changes import RunChanges
from backend.runs.launching import Launcher
from backend.runs.monitor import RunMonitor
from backend.runs.policy import LaunchPolicy
from backend.runs.queries import RunQueries
from backend.runs.repair import RunRepair
from backend.runs.runner_set import RunnerSet
from backend.runs.tracking import Tracker
from backend.store import Store

if TYPE_CHECKING:
    from backend.registry import Registry


class Runs:
    """The verbs on runs, each served by the part that owns it (bound in __init__, so a verb's signature and its
    documentation live in one place: resolve/refusal in LaunchPolicy, launch/preview/reproduce in Launcher,
    advance/advance_run/wait/cancel/may_cancel in Tracker, get/list/metrics/progress/logs in RunQueries, reconcile in
    RunRepair; `changes` says what moved, for pages that wait for it)."""

    def __init__(
        self,
        store: Store,
        repo: GitStore,
        runner: Runner,
        registry: Registry | None = None,
        other_runners: Callable[[str], Runner] | None = None,
        preflight: Preflight | None = None,
    ) -> None:
        self.store = store
        self.repo = repo
        self.registry = registry
        self.runners = RunnerSet(runner, other_runners)
        self.policy = LaunchPolicy(store, repo, preflight)
        self.queries = RunQueries(store, self.runners)
        self.tracker = Tracker(store, self.runners, self.queries, registry)
        self.launcher = Launcher(store, repo, self.policy, self.runners, self.tracker, self.queries, registry)
        self.repair = RunRepair(store, self.runners, self.tracker, registry)
        self.changes = RunChanges(store)
        self._monitor: RunMonitor | None = None
        self._monitor_lock = threading.Lock()

        self.resolve = self.policy.resolve
        self.refusal = self.policy.refusal
        self.launch = self.launcher.launch
        self.preview = self.launcher.preview
        self.reproduce = self.launcher.reproduce
        self.advance = self.tracker.advance
        self.advance_run = self.tracker.advance_run
        self.wait = self.tracker.wait
        self.cancel = self.tracker.cancel
        self.may_cancel = self.tracker.may_cancel
        self.get = self.queries.get
        self.list = self.queries.list
        self.metrics = self.queries.metrics
        self.metric_keys = self.queries.metric_keys
        self.progress = self.queries.progress
        self.logs = self.queries.logs
        self.log_tail = self.queries.log_tail
        self.reconcile = self.repair.check

    @property
    def runner(self) -> Runner:
        """The default runner: launches without a cluster profile go here."""
        return self.runners.default

    def runner_for(self, backend: str) -> Runner:
        """The runner a run was launched on (each run row names its backend); made on first use."""
        return self.runners.get(backend)

    def start_monitor(self, interval: float = 1.0) -> RunMonitor:
        """The background thread that advances runs and repairs them at start and periodically (one per Runs;
        starting it twice returns the same one)."""
        with self._monitor_lock:
            if self._monitor is None or not self._monitor.alive:
                self._monitor = RunMonitor(self.tracker, interval, reconciler=self.repair, observer=self.changes)
                self._monitor.start()
            return self._monitor

    def stop_monitor(self) -> None:
        with self._monitor_lock:
            if self._monitor is not None:
                self._monitor.stop()
                self._monitor = None

    def close(self) -> None:
        """Stop the monitor and close the runners (watch threads, connections); the runs themselves go on."""
        self.stop_monitor()
        self.runners.close()
