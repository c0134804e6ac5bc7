"""`Runs`: the one object the WebUI, the CLI and the workspace use for runs; each verb is done by the part that owns it.

policy      LaunchPolicy: resolve a target, refuse what the approval policy does not allow
launching   Launcher: launch, preview, reproduce
tracking    Tracker: advance runs from their runners, finish, register, wait, cancel
queries     RunQueries: get, list, metrics, logs
runner_set  RunnerSet: the default runner and the others, made on first use
monitor     RunMonitor: the background thread that advances runs
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from backend.auth import Actor
from backend.gitstore import GitStore
from backend.runners.base import Resources, Runner
from backend.runs.launching import Launcher
from backend.runs.monitor import RunMonitor
from backend.runs.policy import LaunchPolicy, LaunchTarget
from backend.runs.queries import RunQueries, RunView
from backend.runs.runner_set import RunnerSet
from backend.runs.tracking import Progress, Tracker
from backend.store import Store

if TYPE_CHECKING:
    from backend.registry import Registry


class Runs:
    def __init__(
        self,
        store: Store,
        repo: GitStore,
        runner: Runner,
        registry: Registry | None = None,
        other_runners: Callable[[str], Runner] | None = None,
    ) -> None:
        self.store = store
        self.repo = repo
        self.registry = registry
        self.runners = RunnerSet(runner, other_runners)
        self.policy = LaunchPolicy(store, repo)
        self.queries = RunQueries(store, self.runners)
        self.tracker = Tracker(store, self.runners, self.queries, registry)
        self.launcher = Launcher(store, repo, self.policy, self.runners, self.tracker, self.queries, registry)
        self._monitor: RunMonitor | None = None
        self._monitor_lock = threading.Lock()

    @property
    def runner(self) -> Runner:
        """The default runner: launches without a cluster profile go here."""
        return self.runners.default

    def runner_for(self, backend: str) -> Runner:
        """The runner a run was launched on (each run row names its backend); made on first use."""
        return self.runners.get(backend)

    # ---- policy and launch --------------------------------------------------------------------------------------

    def resolve(self, target: int | str, config_path: str | None = None) -> LaunchTarget:
        return self.policy.resolve(target, config_path)

    def refusal(self, target: LaunchTarget) -> str | None:
        return self.policy.refusal(target)

    def launch(
        self,
        actor: Actor,
        target: int | str,
        config_path: str | None = None,
        override_reason: str | None = None,
        resources: Resources | None = None,
        reproduces_run_id: int | None = None,
    ) -> RunView:
        return self.launcher.launch(actor, target, config_path, override_reason, resources, reproduces_run_id)

    def preview(
        self,
        target: int | str,
        config_path: str | None = None,
        resources: Resources | None = None,
        runner: str | None = None,
    ) -> str:
        return self.launcher.preview(target, config_path, resources, runner)

    def reproduce(self, actor: Actor, model: str, override_reason: str | None = None) -> RunView:
        return self.launcher.reproduce(actor, model, override_reason)

    # ---- tracking -----------------------------------------------------------------------------------------------

    def advance(self) -> list[int]:
        return self.tracker.advance()

    def advance_run(self, run_id: int) -> Progress:
        return self.tracker.advance_run(run_id)

    def wait(self, actor: Actor, run_id: int, timeout: float | None = None, poll: float = 0.5) -> RunView:
        return self.tracker.wait(actor, run_id, timeout, poll)

    def cancel(self, actor: Actor, run_id: int) -> RunView:
        return self.tracker.cancel(actor, run_id)

    def start_monitor(self, interval: float = 1.0) -> RunMonitor:
        """The background thread that advances runs (one per Runs; starting it twice returns the same one)."""
        with self._monitor_lock:
            if self._monitor is None or not self._monitor.alive:
                self._monitor = RunMonitor(self, interval)
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

    # ---- reading ------------------------------------------------------------------------------------------------

    def get(self, actor: Actor, run_id: int) -> RunView:
        return self.queries.get(actor, run_id)

    def list(
        self,
        actor: Actor,
        *,
        status: str | None = None,
        commit: str | None = None,
        config: str | None = None,
        config_hash: str | None = None,
        dataset_version: str | None = None,
        submitted_by: str | None = None,
        change_request: int | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[RunView]:
        return self.queries.list(
            actor,
            status=status,
            commit=commit,
            config=config,
            config_hash=config_hash,
            dataset_version=dataset_version,
            submitted_by=submitted_by,
            change_request=change_request,
            limit=limit,
            offset=offset,
        )

    def metrics(
        self, actor: Actor, run_id: int, keys: tuple[str, ...] = ("loss",)
    ) -> dict[str, list[tuple[int, float]]]:
        return self.queries.metrics(actor, run_id, keys)

    def logs(self, actor: Actor, run_id: int, follow: bool = False) -> Iterator[str]:
        return self.queries.logs(actor, run_id, follow)
