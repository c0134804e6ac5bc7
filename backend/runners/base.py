"""The runner interface: every backend (local process, Kubernetes) offers the same verbs.

Modelled on Kubeflow Trainer SDK's `backends/base.py`: submit a spec, get an id; then status, logs, cancel, wait.
A runner only runs things; the policy (approved, merged commits only) and the run records live in backend.runs.
"""

from __future__ import annotations

import abc
import enum
from collections.abc import Iterator
from dataclasses import dataclass, field

from backend.errors import TimedOut


class RunState(enum.StrEnum):
    QUEUED = "queued"
    PENDING = "pending"  # accepted by the backend, waiting for resources (e.g. a GPU node)
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    LOST = "lost"  # the backend no longer knows it (e.g. the process vanished while lfops was down)

    @property
    def finished(self) -> bool:
        return self in (RunState.SUCCEEDED, RunState.FAILED, RunState.CANCELLED, RunState.LOST)


@dataclass(frozen=True)
class Resources:
    gpus_per_node: int = 0
    nodes: int = 1
    cpu: str = ""
    memory: str = ""
    profile: str = ""  # a named cluster profile in Settings.cluster_profiles (Kubernetes only)


@dataclass(frozen=True)
class RunSpec:
    """Exactly what to run: a config file at one commit of one repository, with resources."""

    run_id: int
    repo_url: str
    commit: str
    config_path: str
    training_yaml: str  # the config at that commit, metadata removed, as LLaMA-Factory will read it
    resources: Resources = field(default_factory=Resources)
    labels: dict[str, str] = field(default_factory=dict)  # lineage: commit, config hash, dataset version...


@dataclass(frozen=True)
class RunStatus:
    state: RunState
    reason: str = ""
    external_id: str = ""


class Runner(abc.ABC):
    """One way of running training; implementations must be safe to call from several threads."""

    name: str

    @abc.abstractmethod
    def submit(self, spec: RunSpec) -> str:
        """Start the run; return the backend's id for it. Submitting the same run id twice must not start two."""

    @abc.abstractmethod
    def status(self, external_id: str) -> RunStatus: ...

    @abc.abstractmethod
    def logs(self, external_id: str, follow: bool = False) -> Iterator[str]: ...

    @abc.abstractmethod
    def cancel(self, external_id: str, reason: str = "cancelled") -> None:
        """End the run and everything it started; `reason` is what its status reports afterwards."""

    def output_dir(self, external_id: str) -> str:
        """Where the run's LLaMA-Factory output_dir can be read on this machine ("" if it cannot, yet).

        The run tracker tails `trainer_log.jsonl` there while training and reads `all_results.json` /
        `trainer_state.json` at the end; the registry copies the finished model from it (a shared volume in a cluster).
        """
        return ""

    def wait(self, external_id: str, timeout: float | None = None, poll: float = 0.5) -> RunStatus:
        import time

        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            status = self.status(external_id)
            if status.state.finished:
                return status
            if deadline is not None and time.monotonic() > deadline:
                raise TimedOut(f"run {external_id} still {status.state} after {timeout} s")
            time.sleep(poll)
