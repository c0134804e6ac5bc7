"""Where a deployment runs: the verbs the serving service needs from a target, and the local target.

A target knows processes or Kubernetes objects, never the database: `backend.serving.service` decides (policy,
rows, audit) and calls a target to act. Every target's `start` is all or nothing: when it raises, nothing it made is
left (no process, no object), so the service writes its row only after a start that succeeded.

    LocalTarget       LLaMA-Factory's API + the gateway as detached processes on this machine (local_server.py)
    KubernetesTarget  the manifests of manifests.py applied to a cluster profile's namespace (kubernetes.py)
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from backend.errors import NotFound
from backend.serving.httpserver import free_port
from backend.serving.keys import StoredKey
from backend.serving.local_server import LocalDeployment, LocalSupervisor, ModelServerSpec

LOCAL = "local"


@dataclass(frozen=True)
class ServedVersion:
    """A registry version as a target needs it: where its files are and what its manifest says."""

    id: int
    name: str
    version: int
    kind: str  # adapter | full
    artifact_uri: str
    manifest: dict[str, Any] = field(default_factory=dict)

    @property
    def ref(self) -> str:
        return f"{self.name}:v{self.version}"


@dataclass(frozen=True)
class Started:
    endpoint: str  # the OpenAI base URL clients use (".../v1")
    namespace: str = ""  # Kubernetes: where the objects are
    port: int | None = None  # local: the gateway's port


@dataclass(frozen=True)
class LiveStatus:
    """What the target reports now, beside what the database says should be."""

    state: str  # running | starting | restarting | rolling | failed | stopped
    model_version: str = ""  # NAME:vN actually served
    detail: str = ""  # pids and restarts, or ready/updated replicas
    reason: str = ""


class Target(Protocol):
    name: str

    def check(self, version: ServedVersion) -> None:
        """Refuse what cannot be served here (files, base model, profile fields) before anything starts."""

    def start(
        self, deployment: str, version: ServedVersion, keys: list[StoredKey], port: int | None, ready_timeout_s: float
    ) -> Started:
        """Serve `version` as `deployment`; returns once it answers. All or nothing."""

    def rollout(
        self,
        deployment: str,
        namespace: str,
        version: ServedVersion,
        keys: list[StoredKey],
        previous: ServedVersion | None = None,
    ) -> None:
        """Serve `version` instead of `previous` with no failed request; on failure `previous` keeps serving."""

    def stop(self, deployment: str, namespace: str) -> None:
        """Remove everything `start` made (logs stay); nothing there is not an error."""

    def set_keys(self, deployment: str, namespace: str, version: ServedVersion, keys: list[StoredKey]) -> None:
        """Replace the accepted API keys without a restart."""

    def status(self, deployment: str, namespace: str) -> LiveStatus: ...


class LocalTarget:
    """This machine: one LocalDeployment per deployment under `root`, kept running by a LocalSupervisor."""

    name = LOCAL

    def __init__(self, root: Path, **deployment_options: Any) -> None:
        self.root = Path(root)
        self.options = deployment_options
        self.supervisor = LocalSupervisor(self.root, **deployment_options)

    def deployment(self, name: str) -> LocalDeployment:
        return self.supervisor.deployment(name)

    def spec(self, version: ServedVersion) -> ModelServerSpec:
        return ModelServerSpec.from_version_dir(Path(version.artifact_uri))

    def check(self, version: ServedVersion) -> None:
        self.spec(version).check()

    def start(
        self, deployment: str, version: ServedVersion, keys: list[StoredKey], port: int | None, ready_timeout_s: float
    ) -> Started:
        # a deployment object of its own: the time-out is this start's, and the supervisor's objects stay as they are
        local = LocalDeployment(self.root, deployment, **{**self.options, "ready_timeout_s": ready_timeout_s})
        status = local.start(self.spec(version), port if port else free_port(), keys)
        return Started(status.endpoint, "", int((local.state() or {}).get("port", 0)) or None)

    def rollout(
        self,
        deployment: str,
        namespace: str,
        version: ServedVersion,
        keys: list[StoredKey],
        previous: ServedVersion | None = None,
    ) -> None:
        self.deployment(deployment).rollout(self.spec(version))  # the old model server serves until the switch

    def stop(self, deployment: str, namespace: str) -> None:
        try:
            self.deployment(deployment).stop()
        except NotFound:
            pass  # its state is gone already (removed by hand, a new machine): nothing runs that we know of

    def set_keys(self, deployment: str, namespace: str, version: ServedVersion, keys: Iterable[StoredKey]) -> None:
        self.deployment(deployment).set_keys(list(keys))

    def status(self, deployment: str, namespace: str) -> LiveStatus:
        s = self.deployment(deployment).status()
        detail = ""
        if s.state != "stopped":
            detail = (
                f"model server pid {s.model_server_pid or '-'} ({s.model_server_restarts} restarts), "
                f"gateway pid {s.gateway_pid or '-'} ({s.gateway_restarts} restarts)"
            )
        return LiveStatus(s.state, s.model_version, detail, s.reason)

    def start_supervisor(self) -> None:
        self.supervisor.start()

    def stop_supervisor(self) -> None:
        self.supervisor.stop()
