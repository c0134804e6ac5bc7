"""One Settings object for the whole app, read from the environment (`LFOPS_*`) with embedded defaults."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class ClusterProfile:
    """Where and how training Jobs run on a Kubernetes cluster (see backend.runners.kubernetes)."""

    name: str
    namespace: str = "lfops"
    image: str = "ghcr.io/lfops/train:0.9.5"
    gpus_per_node: int = 1
    node_selector: dict = field(default_factory=dict)
    tolerations: list = field(default_factory=list)
    priority_class: str = ""
    outputs_pvc: str = "lfops-outputs"
    hub_token_secret: str = ""  # name of a Secret with key HF_TOKEN; the token itself never passes through lfops
    kueue_queue: str = ""
    active_deadline_seconds: int = 7 * 24 * 3600
    backoff_limit: int = 0
    ttl_seconds_after_finished: int = 7 * 24 * 3600
    master_port: int = 29500  # torchrun rendezvous port on pod 0 of a multi-node run
    service_account: str = ""  # for the training pods (they get no API token either way)
    image_pull_secret: str = ""
    pod_labels: dict = field(default_factory=dict)  # extra labels/annotations on training pods (cost centre, mesh)
    pod_annotations: dict = field(default_factory=dict)
    outputs_mount: str = ""  # where this app sees outputs_pvc (e.g. /outputs in its own pod); "" = not readable here
    clone_image: str = ""  # an image with git: clone the config repo at the run's commit (for dataset_dir: data)
    repo_credentials_secret: str = ""  # Secret with key .git-credentials for cloning a private config repo


def parse_cluster_profiles(raw: str) -> dict[str, ClusterProfile]:
    """LFOPS_CLUSTER_PROFILES: a JSON object of name -> ClusterProfile fields; one-line errors name the profile."""
    from backend.errors import LfopsError

    try:
        doc = json.loads(raw)
    except ValueError as exc:
        raise LfopsError(f"LFOPS_CLUSTER_PROFILES: not valid JSON ({exc})") from exc
    if not isinstance(doc, dict) or not all(isinstance(v, dict) for v in doc.values()):
        raise LfopsError("LFOPS_CLUSTER_PROFILES: must be a JSON object of profile name -> {field: value}")
    known = set(ClusterProfile.__dataclass_fields__) - {"name"}
    for name, spec in doc.items():
        unknown = sorted(set(spec) - known)
        if unknown:
            raise LfopsError(f"LFOPS_CLUSTER_PROFILES.{name}: unknown field {unknown[0]!r}")
    return {name: ClusterProfile(name=name, **spec) for name, spec in doc.items()}


@dataclass(frozen=True)
class Settings:
    workspace: Path
    database_url: str
    repo_url: str
    runner: str = "local"
    main_branch: str = "main"
    kubeconfig: str = ""
    cluster_profiles: dict[str, ClusterProfile] = field(default_factory=dict)
    trusted_user_header: str = ""  # e.g. X-Forwarded-User when behind oauth2-proxy
    hub_repo: str = ""  # optional Hugging Face Hub repo for registry pushes
    ci_install: str = ""  # pip requirement pinning the lfops the config repo's CI installs ("" = vendor a wheel)

    @property
    def mirror_dir(self) -> Path:
        """lfops' own bare clone of the config repo; every operation goes through it under a lock."""
        return self.workspace / "mirror.git"

    @property
    def runs_dir(self) -> Path:
        return self.workspace / "runs"

    @property
    def registry_dir(self) -> Path:
        return self.workspace / "registry"

    @property
    def models_dir(self) -> Path:
        return self.workspace / "models"

    @classmethod
    def from_env(cls, workspace: str | os.PathLike | None = None) -> Settings:
        env = os.environ
        ws = Path(workspace or env.get("LFOPS_WORKSPACE") or Path.cwd() / ".lfops").resolve()
        profiles = {}
        raw = env.get("LFOPS_CLUSTER_PROFILES", "")
        if raw:
            profiles = parse_cluster_profiles(raw)
        return cls(
            workspace=ws,
            database_url=env.get("LFOPS_DATABASE_URL") or f"sqlite:///{ws / 'lfops.db'}",
            repo_url=env.get("LFOPS_REPO_URL") or str(ws / "origin.git"),
            runner=env.get("LFOPS_RUNNER", "local"),
            main_branch=env.get("LFOPS_MAIN_BRANCH", "main"),
            kubeconfig=env.get("LFOPS_KUBECONFIG", ""),
            cluster_profiles=profiles,
            trusted_user_header=env.get("LFOPS_TRUSTED_USER_HEADER", ""),
            hub_repo=env.get("LFOPS_HUB_REPO", ""),
            ci_install=env.get("LFOPS_CI_INSTALL", ""),
        )
