"""What the API accepts and answers: the contract its OpenAPI description publishes.

Answers are built from the backend's views (`Model.model_validate(view)`, attributes read by name, properties
included), so a value is computed once, in backend/; these models only say which of them the API promises.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from backend.auth import SCOPES
from backend.tokens import DEFAULT_DAYS, MAX_DAYS

T = TypeVar("T")
ScopeName = Literal[SCOPES]  # the backend's scopes, so the description lists them


class Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class Page(Out, Generic[T]):
    items: list[T]
    limit: int
    offset: int
    next_offset: int | None = Field(description="offset of the next page; null on the last page")


class ErrorOut(BaseModel):
    error: str = Field(description="what kind of failure: invalid, unauthenticated, forbidden, not_found, conflict...")
    field: str | None = Field(description="the input it is about, when there is one")
    message: str
    problems: list[dict[str, str]] | None = Field(None, description="each problem of an invalid config or form")


# ---- change requests --------------------------------------------------------------------------------------------


class ReviewOut(Out):
    reviewer: str
    decision: str
    comment: str
    head_commit: str
    at: datetime
    counts: bool = Field(description="an approval that counts for the request's current head")


class PullRequestOut(Out):
    forge: str = Field(description="gitea, github or gitlab")
    number: int
    url: str = Field(description="the pull request on the forge")
    state: str = Field(description="open, closed or merged")
    head_commit: str
    merge_commit: str | None
    approved_at_merge: bool | None = Field(description="whether an approval counted when it was merged")
    label: str = Field(description="the forge state in words")


class ChangeRequestOut(Out):
    id: int
    title: str
    description: str
    branch: str
    base_commit: str
    head_commit: str
    config_path: str
    config_hash: str
    dataset_version: str
    author: str
    status: str
    merged_commit: str | None
    merged_by: str | None
    created_at: datetime
    updated_at: datetime
    approvers: list[str]
    reviews: list[ReviewOut]
    pull_request: PullRequestOut | None = Field(None, description="its pull request, with a forge (LFOPS_FORGE)")


class ParamRowOut(Out):
    key: str
    before: Any
    after: Any
    change: Literal["changed", "added", "removed", "unchanged"]


class ChangeRequestDetailOut(Out):
    request: ChangeRequestOut
    yaml_diff: str
    params: list[ParamRowOut] = Field(description="hyperparameter table against `baseline`")
    baseline: str = Field(
        description="what `before` is: main, the config it was opened from, or LLaMA-Factory's defaults"
    )
    validation: list[str]
    yaml: str
    preflight: list[str] = Field([], description="which launch targets can run the head's config (docs/preflight.md)")
    last_reviewed_commit: str | None = Field(None, description="the head the last review was given on, if older")
    review_diff: str = Field("", description="YAML diff since the last review")
    review_params: list[ParamRowOut] = Field(default_factory=list, description="table since the last review")
    derived_from: str = Field("", description="the config it was opened from, when that is the baseline")


class UpdateIn(BaseModel):
    message: str = Field(description="what this revision changes", max_length=20_000)
    yaml: str = Field(description="the revised training config")


class SaveIn(BaseModel):
    name: str = Field(description="config name: the file is configs/<name>.yaml", max_length=200)
    message: str = Field(description="commit message; its first line is the title", max_length=20_000)
    yaml: str = Field(description="the training config (LLaMA-Factory YAML with an optional lfops: block)")
    branch: str | None = Field(None, description="branch name (default: <user>/<name>)", max_length=255)


class SaveOut(Out):
    change_request: int
    branch: str
    commit: str
    config_path: str
    config_hash: str
    dataset_version: str
    warnings: list[str]
    preflight: list[str] = Field([], description="a note, not a refusal: which launch targets can run the config")


class CommentIn(BaseModel):
    comment: str = Field("", max_length=20_000)


# ---- runs -------------------------------------------------------------------------------------------------------


class RunOut(Out):
    id: int
    status: str
    reason: str
    backend: str
    external_id: str
    commit: str
    config_path: str
    config_name: str
    config_hash: str
    dataset_version: str
    base_model: str
    base_model_revision: str
    change_request_id: int | None
    submitted_by: str
    override_reason: str
    reproduces_run_id: int | None
    final_loss: float | None
    final_metrics: dict[str, float]
    params: dict[str, Any]
    resources: dict[str, Any]
    output_dir: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    duration_s: float | None


class LaunchIn(BaseModel):
    target: str = Field(description="a merged change request's number (12 or #12) or a commit id", max_length=64)
    config: str | None = Field(None, description="config path in the repository (default: the change request's)")
    override_reason: str | None = Field(None, description="admin only: launch without the approval policy, audited")
    profile: str | None = Field(None, description="cluster profile: run as a Kubernetes Job (default: this machine)")
    gpus_per_node: int | None = None
    nodes: int | None = None


class MetricsOut(Out):
    run_id: int
    curves: dict[str, list[tuple[int, float]]] = Field(description="key -> [[step, value], ...] in step order")


# ---- registry and lineage ---------------------------------------------------------------------------------------


class ModelVersionOut(Out):
    id: int
    ref: str
    name: str
    version: int
    kind: str
    run_id: int | None
    parent_id: int | None
    artifact_uri: str
    manifest_sha256: str
    hub_repo: str
    hub_revision: str
    created_at: datetime


class ModelDetailOut(Out):
    model: ModelVersionOut
    manifest: dict[str, Any]


class VerifyOut(Out):
    ref: str
    ok: bool
    files_checked: int
    problems: list[str]


class ChangeRequestFactsOut(Out):
    id: int
    title: str
    author: str
    status: str
    approvers: list[str]
    merged_by: str | None
    merged_commit: str | None
    merged_at: datetime | None


class DeploymentOut(Out):
    id: int
    model_version_id: int
    model: str
    target: str
    endpoint: str
    status: str
    created_at: datetime


class ModelLineageOut(Out):
    model: ModelVersionOut
    ancestors: list[ModelVersionOut]
    derived: list[ModelVersionOut]
    run: RunOut | None
    change_request: ChangeRequestFactsOut | None
    approvers: list[str]
    commit: str
    config_path: str
    config_hash: str
    dataset_version: str
    base_model: str
    base_model_revision: str
    final_loss: float | None
    final_metrics: dict[str, float]
    reproductions: list[RunOut]
    deployments: list[DeploymentOut]
    because: str = Field("", description="why it was trained, for a retrain: 'NAME:v2 was trained because v1 drifted'")
    graph: dict[str, list[dict[str, str]]] = Field(
        default_factory=dict, description="nodes and edges: data -> config -> review -> run -> model"
    )


class ConfigRefOut(Out):
    commit: str
    path: str
    config_hash: str
    dataset_version: str
    change_request: int | None


class DerivedOut(Out):
    kind: Literal["commit", "dataset_version"]
    key: str
    configs: list[ConfigRefOut] = Field(description="this page of the configs")
    runs: list[RunOut] = Field(description="this page of the runs, newest first")
    models: list[ModelVersionOut] = Field(description="model versions of this page's runs")
    deployments: list[DeploymentOut] = Field(description="deployments of those model versions")
    limit: int = 0
    offset: int = 0
    next_offset: int | None = Field(None, description="offset of the next page; null on the last page")


# ---- tokens and who am I ----------------------------------------------------------------------------------------


class TokenOut(Out):
    id: int
    name: str
    prefix: str = Field(description="the token's public part, to recognise it by")
    owner: str
    scope: str
    state: Literal["active", "expired", "revoked"]
    created_at: datetime
    expires_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None
    revoked_by: str


class TokenIn(BaseModel):
    name: str = Field(description="what the token is for", min_length=1, max_length=100)
    scope: ScopeName = "read"
    expires_in_days: int = Field(DEFAULT_DAYS, ge=1, le=MAX_DAYS)


class NewTokenOut(Out):
    token: str = Field(description="the token itself: shown only in this answer, never again")
    details: TokenOut


class MeOut(Out):
    name: str
    role: str
    email: str
    scope: str
