"""The runner interface: every backend (local process, Kubernetes) offers the same verbs.

Modelled on Kubeflow Trainer SDK's `backends/base.py`: submit a spec, get an id; then status, logs, cancel, wait.
`preview` shows what a submit would do before anything starts; `close` releases what the runner holds in the app.
`Resources` checks what a user asks for once, for the CLI, the WebUI and the manifests.
A runner only runs things; the policy (approved, merged commits only) and the run records live in backend.runs.
"""

from __future__ import annotations

import abc
import collections
import enum
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal

from backend.adaptors import kubernetes as k8s
from backend.errors import Problem, TimedOut, ValidationFailed


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

    @property
    def label(self) -> str:
        """What the CLI and the WebUI show (the value is what the database stores)."""
        return _RUN_STATE_LABELS[self]


_RUN_STATE_LABELS = {
    RunState.QUEUED: "queued",
    RunState.PENDING: "waiting for resources",
    RunState.RUNNING: "running",
    RunState.SUCCEEDED: "succeeded",
    RunState.FAILED: "failed",
    RunState.CANCELLED: "cancelled",
    RunState.LOST: "lost by its runner",
}


# Resources as the user sees them: the manifests' own names by default; the CLI and the WebUI pass their labels.
RESOURCE_FIELDS = ("gpus_per_node", "nodes", "cpu", "memory", "profile")
DEFAULT_NAMES = {name: f"resources.{name}" for name in RESOURCE_FIELDS}
_WHOLE_NUMBER = re.compile(r"^[+-]?\d+$")


@dataclass(frozen=True)
class Resources:
    """What one run asks for. Build it from user input with `from_user`, which checks every field once for the CLI,
    the WebUI and the manifests alike."""

    gpus_per_node: int = 0
    nodes: int = 1
    cpu: str = ""
    memory: str = ""
    profile: str = ""  # a named cluster profile in Settings.cluster_profiles (Kubernetes only)

    @classmethod
    def from_user(
        cls,
        *,
        gpus_per_node: object = None,
        nodes: object = None,
        cpu: object = None,
        memory: object = None,
        profile: object = None,
        names: Mapping[str, str] | None = None,
    ) -> Resources:
        """Resources from form or command-line values (ints, whole floats, strings of digits; None: the default).

        GPUs default to 1 on a cluster profile and 0 on this machine; several nodes need a profile. Raises
        ValidationFailed naming every bad field as `names` spells it (e.g. {"gpus_per_node": "--gpus"}).
        """
        names = {**DEFAULT_NAMES, **(names or {})}
        problems: list[Problem] = []
        profile_text = _text(profile)
        resources = cls(
            gpus_per_node=_whole(gpus_per_node, 1 if profile_text else 0, names["gpus_per_node"], problems),
            nodes=_whole(nodes, 1, names["nodes"], problems),
            cpu=_text(cpu),
            memory=_text(memory),
            profile=profile_text,
        )
        problems += resources.problems(names)  # a value _whole refused stands as its (valid) default here
        if resources.nodes > 1 and not profile_text:
            problems.append(Problem(names["nodes"], f"more than 1 needs a cluster profile ({names['profile']})"))
        if problems:
            raise ValidationFailed(problems)
        return resources

    def problems(self, names: Mapping[str, str] | None = None) -> list[Problem]:
        """What is wrong with these values (none when they are fine); the manifests check a RunSpec's with this."""
        names = {**DEFAULT_NAMES, **(names or {})}
        problems = []
        if not _is_int(self.gpus_per_node):
            problems.append(Problem(names["gpus_per_node"], f"{self.gpus_per_node!r} is not a whole number"))
        elif self.gpus_per_node < 0:
            problems.append(Problem(names["gpus_per_node"], "must be 0 or more"))
        if not _is_int(self.nodes):
            problems.append(Problem(names["nodes"], f"{self.nodes!r} is not a whole number"))
        elif self.nodes < 1:
            problems.append(Problem(names["nodes"], "must be at least 1"))
        for attr in ("cpu", "memory"):
            value = getattr(self, attr)
            if not value:
                continue  # not requested
            quantity = _quantity(value)
            if quantity is None:
                problems.append(Problem(names[attr], f"{value!r} is not a Kubernetes quantity (e.g. 8, 500m, 64Gi)"))
            elif quantity <= 0:
                problems.append(Problem(names[attr], f"{value!r} must be more than 0"))
        return problems


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _text(value: object) -> str:
    return "" if value is None else str(value).strip()


def _whole(value: object, default: int, name: str, problems: list[Problem]) -> int:
    """A whole number from a form (Gradio's Number gives floats) or a command line (strings); None: the default."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return default
    if _is_int(value):
        return value  # type: ignore[return-value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and _WHOLE_NUMBER.match(value.strip()):
        return int(value.strip())
    problems.append(Problem(name, f"{value!r} is not a whole number"))
    return default


def _quantity(value: object) -> Decimal | None:
    """The number a Kubernetes quantity stands for (kubernetes' own parser); None when it is not a finite one."""
    try:
        quantity = k8s.parse_quantity(str(value).strip())
    except (ValueError, ArithmeticError):
        return None
    return quantity if quantity.is_finite() else None


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

    def log_tail(self, external_id: str, max_lines: int, max_bytes: int) -> list[str]:
        """The last lines of the run's log, at most `max_lines` and about `max_bytes` (the page's log panel). This
        reads the whole log through `logs`, keeping only the tail; runners that can seek override it."""
        tail: collections.deque[str] = collections.deque(maxlen=max_lines)
        size = 0
        for line in self.logs(external_id, follow=False):
            tail.append(line[:max_bytes])
            size += len(line)
            while size > max_bytes and len(tail) > 1:
                size -= len(tail.popleft())
        return list(tail)

    @abc.abstractmethod
    def cancel(self, external_id: str, reason: str = "cancelled") -> None:
        """End the run and everything it started; `reason` is what its status reports afterwards."""

    @abc.abstractmethod
    def preview(self, spec: RunSpec) -> str:
        """What submitting `spec` would do, as YAML for a reviewer; starts nothing and changes nothing."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release what this runner holds in the app (watch threads, connections, process handles); runs go on."""

    def find_submitted(self, run_id: int, resources: Resources) -> str | None:
        """The id of run `run_id` when its submit reached this backend although the app never recorded the id (it died
        in between); None when nothing of it did. `status` of that id says what became of it. Backends that cannot
        look a run up by its run id raise NotImplementedError (the tracker then waits SUBMIT_GRACE before giving up)."""
        raise NotImplementedError

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
