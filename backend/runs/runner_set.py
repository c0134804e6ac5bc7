"""The runners of one app: the default one, and the others made on first use (each run row names its backend)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from backend.errors import LfopsError
from backend.gitstore import GitStore
from backend.runners.base import Resources, Runner

if TYPE_CHECKING:
    from backend.settings import Settings

RUNNERS = ("local", "kubernetes")


def make_runner(settings: Settings, repo: GitStore, name: str | None = None) -> Runner:
    """The runner called `name` (default settings.runner); heavy backends are imported only when chosen."""
    name = name or settings.runner
    if name == "local":
        from backend.runners.local import LocalRunner

        return LocalRunner(settings.runs_dir, repo)
    if name == "kubernetes":
        from backend.runners.kubernetes import KubernetesRunner

        return KubernetesRunner.from_settings(settings)
    raise LfopsError(f"runner: {name!r} is not a runner (use local or kubernetes)")


class RunnerSet:
    def __init__(self, default: Runner, other_runners: Callable[[str], Runner] | None = None) -> None:
        self.default = default  # launches without a cluster profile go here
        self._other_runners = other_runners
        self._runners: dict[str, Runner] = {default.name: default}
        self._lock = threading.Lock()

    def get(self, backend: str) -> Runner:
        """The runner a run was launched on; made on first use."""
        with self._lock:
            runner = self._runners.get(backend)
            if runner is None:
                if self._other_runners is None or backend not in RUNNERS:
                    raise LfopsError(f"runner: {backend!r} is not configured in this app")
                runner = self._runners[backend] = self._other_runners(backend)
            return runner

    def for_resources(self, resources: Resources) -> Runner:
        """Where a launch with these resources runs: a cluster profile means Kubernetes, else the default runner."""
        return self.get("kubernetes") if resources.profile else self.default

    def close(self) -> None:
        """Close every runner made so far (watch threads, API connections, process handles); runs go on."""
        with self._lock:
            runners = list(self._runners.values())
        for runner in runners:
            runner.close()
