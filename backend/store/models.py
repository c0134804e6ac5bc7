"""SQLAlchemy models of the metadata store.

What lineage queries filter on (commit, config hash, dataset version, status, final loss) are typed, indexed
columns, not generic key/value rows: that is the lesson of MLflow's params/tags tables.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy import true as sa_true
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from backend.names import BRANCH_MAX, CONFIG_PATH_MAX
from backend.review_status import ChangeRequestStatus
from backend.value_rules import MODEL_NAME_MAX


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    type_annotation_map = {dict: JSON, list: JSON, datetime: DateTime(timezone=True)}


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    email: Mapped[str] = mapped_column(String(255), default="")
    role: Mapped[str] = mapped_column(String(16))
    password_hash: Mapped[str] = mapped_column(String(255))
    active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ApiToken(Base):
    """A personal API token: only the sha256 of the token is stored; `key_id` is its public part, shown in lists."""

    __tablename__ = "api_tokens"
    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    key_id: Mapped[str] = mapped_column(String(16), unique=True)
    secret_hash: Mapped[str] = mapped_column(String(64))  # sha256 hex of the whole token
    scope: Mapped[str] = mapped_column(String(10))  # read | write
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]
    revoked_by: Mapped[str] = mapped_column(String(64), default="")

    user: Mapped[User] = relationship()


class WebSession(Base):
    """A WebUI sign-in session: only the sha256 of its id (the browser's cookie) is stored, so every replica knows it
    and a restart keeps it; revoked on sign-out, deactivation and password reset (backend.sessions)."""

    __tablename__ = "web_sessions"
    id: Mapped[int] = mapped_column(primary_key=True)
    id_hash: Mapped[str] = mapped_column(String(64), unique=True)  # sha256 hex of the cookie's value
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    last_seen_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]
    revoked_reason: Mapped[str] = mapped_column(String(100), default="", server_default="")

    user: Mapped[User] = relationship()


class Lease(Base):
    """Who holds a leadership (backend.leader) as the holder last wrote it: for /readyz and the other replicas to
    read. The lock itself is a PostgreSQL advisory lock or a file lock, never this row."""

    __tablename__ = "leases"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(255))
    acquired_at: Mapped[datetime] = mapped_column(default=utcnow)
    renewed_at: Mapped[datetime] = mapped_column(default=utcnow)


class ChangeRequest(Base):
    __tablename__ = "change_requests"
    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    branch: Mapped[str] = mapped_column(String(BRANCH_MAX), index=True)  # backend.names caps what goes in
    base_commit: Mapped[str] = mapped_column(String(40))
    head_commit: Mapped[str] = mapped_column(String(40))
    config_path: Mapped[str] = mapped_column(String(CONFIG_PATH_MAX), index=True)
    config_hash: Mapped[str] = mapped_column(String(64), index=True)
    dataset_version: Mapped[str] = mapped_column(String(80))
    author_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    # a ChangeRequestStatus value; stored as text so the enum can grow without a migration
    status: Mapped[str] = mapped_column(String(20), index=True, default=ChangeRequestStatus.OPEN.value)
    merged_commit: Mapped[str | None] = mapped_column(String(40), index=True)
    merged_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    merged_at: Mapped[datetime | None]

    author: Mapped[User] = relationship(foreign_keys=[author_id])
    merged_by: Mapped[User | None] = relationship(foreign_keys=[merged_by_id])
    reviews: Mapped[list[Review]] = relationship(back_populates="change_request", order_by="Review.id")
    pull_request: Mapped[PullRequest | None] = relationship(viewonly=True, uselist=False)


class Review(Base):
    __tablename__ = "reviews"
    __table_args__ = (UniqueConstraint("change_request_id", "forge_review_id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    change_request_id: Mapped[int] = mapped_column(ForeignKey("change_requests.id"), index=True)
    # NULL: a forge review by a login that maps to no active lfops user (shown, never counted)
    reviewer_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    decision: Mapped[str] = mapped_column(String(20))  # a ReviewDecision value
    comment: Mapped[str] = mapped_column(Text, default="")
    head_commit: Mapped[str] = mapped_column(String(40))  # an approval counts for this exact head only
    at: Mapped[datetime] = mapped_column(default=utcnow)
    source: Mapped[str] = mapped_column(String(8), default="lfops", server_default="lfops")  # lfops | forge
    forge_review_id: Mapped[int | None] = mapped_column(Integer)  # mirrored reviews are upserted by it
    forge_login: Mapped[str] = mapped_column(String(255), default="", server_default="")
    # lfops' own decisions: true. A forge review: the forge counts it (not stale) and its login maps to an lfops
    # user who may decide (backend.forge_sync); backend.approvals counts only official ones.
    official: Mapped[bool] = mapped_column(default=True, server_default=sa_true())

    change_request: Mapped[ChangeRequest] = relationship(back_populates="reviews")
    reviewer: Mapped[User | None] = relationship()


class PullRequest(Base):
    """The pull request on the forge that carries a change request (backend.forge_sync); mirrored, never trusted
    from a webhook payload: every field is what the forge answered when it was last read."""

    __tablename__ = "pull_requests"
    __table_args__ = (UniqueConstraint("forge", "number"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    change_request_id: Mapped[int] = mapped_column(ForeignKey("change_requests.id"), unique=True)
    forge: Mapped[str] = mapped_column(String(16))
    number: Mapped[int] = mapped_column(Integer)
    url: Mapped[str] = mapped_column(String(1000), default="")
    state: Mapped[str] = mapped_column(String(16), default="open")  # open | closed | merged
    head_commit: Mapped[str] = mapped_column(String(40))
    merge_commit: Mapped[str | None] = mapped_column(String(40), index=True)
    merged_by: Mapped[str] = mapped_column(String(255), default="", server_default="")  # forge login
    # once merged: whether an approval counted for the head it merged (false: e.g. an admin merge on the forge)
    approved_at_merge: Mapped[bool | None]
    validated_commit: Mapped[str] = mapped_column(String(40), default="", server_default="")  # status posted for
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    change_request: Mapped[ChangeRequest] = relationship()


class ForgeDelivery(Base):
    """Webhook deliveries already handled: a redelivery of the same id is skipped (idempotency)."""

    __tablename__ = "forge_deliveries"
    delivery: Mapped[str] = mapped_column(String(100), primary_key=True)
    event: Mapped[str] = mapped_column(String(64), default="")
    received_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class Config(Base):
    """One training config as it stands at one commit (a branch head or a merge on main)."""

    __tablename__ = "configs"
    __table_args__ = (UniqueConstraint("commit", "path"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    commit: Mapped[str] = mapped_column(String(40), index=True)
    path: Mapped[str] = mapped_column(String(CONFIG_PATH_MAX), index=True)
    config_hash: Mapped[str] = mapped_column(String(64), index=True)
    dataset_version: Mapped[str] = mapped_column(String(80), index=True)
    base_model: Mapped[str] = mapped_column(String(MODEL_NAME_MAX))
    base_model_revision: Mapped[str] = mapped_column(String(80), default="")
    change_request_id: Mapped[int | None] = mapped_column(ForeignKey("change_requests.id"), index=True)
    params: Mapped[dict] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Run(Base):
    __tablename__ = "runs"
    __table_args__ = (
        Index("ix_runs_config_status_loss", "config_id", "status", "final_loss"),
        Index("ix_runs_final_loss", "final_loss", "id"),  # "best loss first" (backend.runs.params) reads it in order
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    config_id: Mapped[int] = mapped_column(ForeignKey("configs.id"), index=True)
    backend: Mapped[str] = mapped_column(String(20))
    external_id: Mapped[str] = mapped_column(String(255), default="")
    status: Mapped[str] = mapped_column(String(20), index=True, default="queued")
    reason: Mapped[str] = mapped_column(Text, default="")
    submitted_by_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    resources: Mapped[dict] = mapped_column(default=dict)
    run_dir: Mapped[str] = mapped_column(String(500), default="")
    override_reason: Mapped[str] = mapped_column(Text, default="")
    reproduces_run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id"), index=True)
    final_loss: Mapped[float | None] = mapped_column(Float)
    final_metrics: Mapped[dict] = mapped_column(default=dict)
    # bytes of trainer_log.jsonl already stored as metrics rows (moved in the same transaction as the rows)
    metrics_offset: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]

    config: Mapped[Config] = relationship()
    submitted_by: Mapped[User] = relationship()


class Metric(Base):
    __tablename__ = "metrics"
    # "curve of one run" and "latest value of key per run" are both prefix scans of this index.
    __table_args__ = (Index("ix_metrics_run_key_step", "run_id", "key", "step"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"))
    step: Mapped[int] = mapped_column(Integer)
    key: Mapped[str] = mapped_column(String(64))
    value: Mapped[float] = mapped_column(Float)


class RunParam(Base):
    """One hyperparameter of a run (a flat LLaMA-Factory key of its config), typed for indexed search: numbers in
    `num` (ranges use the (key, num) index), text and booleans in `text` (backend.runs.params). `loss` copies the
    run's final loss (+inf while none), so an equality's index range is already in "best loss first" order."""

    __tablename__ = "run_params"
    __table_args__ = (
        Index("ix_run_params_key_num", "key", "num", "loss", "run_id"),
        Index("ix_run_params_key_text", "key", "text", "loss", "run_id"),
        # SQLite: the rows live in the primary key's b-tree, so probing (run id, key) for its value is one seek
        {"sqlite_with_rowid": False},
    )
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"), primary_key=True)
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    num: Mapped[float | None] = mapped_column(Float)
    text: Mapped[str | None] = mapped_column(String(255))
    loss: Mapped[float] = mapped_column(Float)  # backend.runs.params.loss_key(run.final_loss)


class ModelVersion(Base):
    __tablename__ = "model_versions"
    __table_args__ = (UniqueConstraint("name", "version"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), index=True)
    version: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(20), default="adapter")  # adapter | full
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id"), index=True)
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"), index=True)
    artifact_uri: Mapped[str] = mapped_column(String(1000))
    manifest_sha256: Mapped[str] = mapped_column(String(64))
    hub_repo: Mapped[str] = mapped_column(String(200), default="", server_default="")
    hub_revision: Mapped[str] = mapped_column(String(100), default="", server_default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    run: Mapped[Run | None] = relationship()


class Deployment(Base):
    """A served model version (backend.serving). Written only once its processes or Kubernetes objects are up; an
    undeployed one stays, stopped, so lineage can say where a version was served."""

    __tablename__ = "deployments"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True, index=True)  # backend.serving.names
    # the version served now (after an undeploy: the last one served)
    model_version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id"), index=True)
    target: Mapped[str] = mapped_column(String(200))  # "local" or a cluster profile name
    # Kubernetes: the namespace its objects were made in (kept: the profile may change before the undeploy)
    namespace: Mapped[str] = mapped_column(String(63), default="", server_default="")
    endpoint: Mapped[str] = mapped_column(String(500), default="")
    port: Mapped[int | None] = mapped_column(Integer)  # local: the gateway's port
    status: Mapped[str] = mapped_column(String(20), default="running")  # a DeploymentStatus value
    reason: Mapped[str] = mapped_column(Text, default="", server_default="")
    follows_config: Mapped[str | None] = mapped_column(String(255), index=True)  # config path; NULL: pinned
    created_by: Mapped[str] = mapped_column(String(64), default="", server_default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    stopped_at: Mapped[datetime | None]


class Rollout(Base):
    """One switch of a deployment's version: deploy (from nothing), manual, follow, or undeploy (to nothing)."""

    __tablename__ = "rollouts"
    __table_args__ = (Index("ix_rollouts_deployment_started", "deployment_id", "started_at"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    deployment_id: Mapped[int] = mapped_column(ForeignKey("deployments.id"))
    from_version_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"))
    to_version_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"), index=True)
    trigger: Mapped[str] = mapped_column(String(16))  # deploy | manual | follow | undeploy
    actor: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))  # succeeded | failed
    reason: Mapped[str] = mapped_column(Text, default="")
    switch_s: Mapped[float | None] = mapped_column(Float)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]


class ApiKey(Base):
    """A deployment's API key: its public id and sha256 only (the key is shown once and never stored)."""

    __tablename__ = "api_keys"
    id: Mapped[int] = mapped_column(primary_key=True)
    deployment_id: Mapped[int] = mapped_column(ForeignKey("deployments.id"), index=True)
    key_id: Mapped[str] = mapped_column(String(16), unique=True)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    label: Mapped[str] = mapped_column(String(100), default="")
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None]


class AuditEvent(Base):
    __tablename__ = "audit_events"
    id: Mapped[int] = mapped_column(primary_key=True)
    actor: Mapped[str] = mapped_column(String(64), index=True)
    action: Mapped[str] = mapped_column(String(64), index=True)
    subject: Mapped[str] = mapped_column(String(255), index=True)
    detail: Mapped[dict] = mapped_column(default=dict)
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class RequestSample(Base):
    """One sampled request of a deployment's gateway (backend.monitoring): the prompt redacted and capped, with what
    the gateway saw of the answer. `weight` is 1/sampling rate at the time, so traffic figures can be estimated."""

    __tablename__ = "request_samples"
    __table_args__ = (Index("ix_request_samples_deployment_at", "deployment", "at"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    deployment: Mapped[str] = mapped_column(String(64))  # the name: the gateway knows no row id
    model_version: Mapped[str] = mapped_column(String(255), default="")  # NAME:vN that answered
    at: Mapped[datetime] = mapped_column(default=utcnow)
    route: Mapped[str] = mapped_column(String(32), default="")
    status: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str] = mapped_column(String(200), default="")
    stream: Mapped[bool] = mapped_column(default=False)
    latency_ms: Mapped[float] = mapped_column(Float, default=0.0)
    ttft_ms: Mapped[float | None] = mapped_column(Float)
    prompt: Mapped[str] = mapped_column(Text, default="")  # redacted, capped; "" for a binary prompt
    prompt_chars: Mapped[int] = mapped_column(Integer, default=0)  # the full length before the cap
    prompt_truncated: Mapped[bool] = mapped_column(default=False)
    prompt_binary: Mapped[bool] = mapped_column(default=False)
    redactions: Mapped[int] = mapped_column(Integer, default=0)
    prompt_tokens: Mapped[int | None] = mapped_column(Integer)
    completion_tokens: Mapped[int | None] = mapped_column(Integer)
    response_chars: Mapped[int] = mapped_column(Integer, default=0)
    weight: Mapped[float] = mapped_column(Float, default=1.0)


class SamplingPolicy(Base):
    """How a deployment's gateway samples requests; no row: the defaults (backend.monitoring.policy_rows)."""

    __tablename__ = "sampling_policies"
    id: Mapped[int] = mapped_column(primary_key=True)
    deployment: Mapped[str] = mapped_column(String(64), unique=True)
    enabled: Mapped[bool] = mapped_column(default=True)
    rate: Mapped[float] = mapped_column(Float)
    max_samples: Mapped[int] = mapped_column(Integer)
    retention_days: Mapped[float] = mapped_column(Float)
    updated_by: Mapped[str] = mapped_column(String(64), default="")
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class DriftReport(Base):
    """One drift check of one window of a deployment's sampled prompts against its model's training prompts."""

    __tablename__ = "drift_reports"
    __table_args__ = (
        Index("ix_drift_reports_deployment_created", "deployment", "created_at"),
        # windows never overlap: a second checker (the app and a CronJob at once) cannot report the same window
        UniqueConstraint("deployment", "window_start", name="uq_drift_reports_window"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    deployment: Mapped[str] = mapped_column(String(64))
    model_version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id"), index=True)
    model_version: Mapped[str] = mapped_column(String(255))  # NAME:vN
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    window_start: Mapped[datetime]
    window_end: Mapped[datetime]
    n_prompts: Mapped[int] = mapped_column(Integer)
    n_reference: Mapped[int] = mapped_column(Integer, default=0)
    dataset_version: Mapped[str] = mapped_column(String(80), default="")
    state: Mapped[str] = mapped_column(String(32))  # ok | drifting | declared | reference_missing
    drifting: Mapped[bool] = mapped_column(default=False)  # this window crossed a threshold
    declared: Mapped[bool] = mapped_column(default=False, index=True)  # the second drifting window in a row
    scores: Mapped[dict] = mapped_column(default=dict)
    thresholds: Mapped[dict] = mapped_column(default=dict)
    evidence: Mapped[dict] = mapped_column(default=dict)  # top_terms, sample_prompts
    reason: Mapped[str] = mapped_column(Text, default="")


class RetrainRequest(Base):
    """A retrain change request the bot opened (or is opening) for a deployed model (backend.retrain).

    `open_key` is the model's name while the request is under review and NULL once it is merged, closed or failed:
    its unique index is what keeps one open retrain request per model, across processes and replicas."""

    __tablename__ = "retrain_requests"
    id: Mapped[int] = mapped_column(primary_key=True)
    model_name: Mapped[str] = mapped_column(String(200), index=True)
    config_path: Mapped[str] = mapped_column(String(CONFIG_PATH_MAX))
    open_key: Mapped[str | None] = mapped_column(String(200), unique=True)
    change_request_id: Mapped[int | None] = mapped_column(ForeignKey("change_requests.id"), index=True)
    branch: Mapped[str] = mapped_column(String(BRANCH_MAX), default="")
    state: Mapped[str] = mapped_column(String(16), index=True)  # opening | open | merged | closed | failed
    reason: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    finished_at: Mapped[datetime | None]


class RetrainSignalRecord(Base):
    """One retrain signal as received (a declared drift, a new dataset version) and what was done with it: opened
    a request, commented on the open one, or why nothing was done (suppressed, cool-down, hourly limit, invalid)."""

    __tablename__ = "retrain_signals"
    __table_args__ = (Index("ix_retrain_signals_fingerprint_id", "fingerprint", "id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    request_id: Mapped[int | None] = mapped_column(ForeignKey("retrain_requests.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # drift | dataset
    model_name: Mapped[str] = mapped_column(String(200), index=True)
    deployment: Mapped[str] = mapped_column(String(64), default="")
    model_version_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"), index=True)
    fingerprint: Mapped[str] = mapped_column(String(255))
    evidence_ref: Mapped[str] = mapped_column(String(255))
    summary: Mapped[str] = mapped_column(Text, default="")
    observed_at: Mapped[datetime]
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    outcome: Mapped[str] = mapped_column(String(20), index=True)  # a backend.retrain.signals.Outcome value
    reason: Mapped[str] = mapped_column(Text, default="")


class NotifyTarget(Base):
    """Where notifications go (backend.notifications): a signed webhook or an apprise URL (chat, e-mail). Its secret
    (the webhook's signing key, the apprise URL) is stored encrypted with the settings' notify key, never in clear."""

    __tablename__ = "notify_targets"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    kind: Mapped[str] = mapped_column(String(16))  # webhook | apprise
    url: Mapped[str] = mapped_column(String(500), default="")  # the webhook's URL; "" for apprise (it is the secret)
    secret_sealed: Mapped[str] = mapped_column(Text)  # Fernet token of the signing key or the apprise URL
    kinds: Mapped[list] = mapped_column(JSON, default=list)  # event kinds sent; [] = all
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))  # a user's own target: their mutes apply
    since_event_id: Mapped[int] = mapped_column(Integer, default=0)  # audit events after this one only
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    removed_at: Mapped[datetime | None]


class NotifyDelivery(Base):
    """One event sent to one target: at most one row per (target, event), retried with back-off until delivered or
    failed; the delivery log."""

    __tablename__ = "notify_deliveries"
    __table_args__ = (
        UniqueConstraint("target_id", "event_id"),
        Index("ix_notify_deliveries_status_due", "status", "next_attempt_at"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    target_id: Mapped[int] = mapped_column(ForeignKey("notify_targets.id"), index=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("audit_events.id"))
    kind: Mapped[str] = mapped_column(String(32))
    subject: Mapped[str] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(12), default="pending")  # pending | delivered | failed | muted
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_status: Mapped[int | None] = mapped_column(Integer)  # the HTTP status of the last attempt
    last_error: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]


class NotifyMute(Base):
    """A user's muted event kind: nothing of that kind goes to their own targets."""

    __tablename__ = "notify_mutes"
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32), primary_key=True)


class NotifyCursor(Base):
    """How far the dispatcher has read the audit log (one row): events after it become deliveries."""

    __tablename__ = "notify_cursor"
    id: Mapped[int] = mapped_column(primary_key=True)
    last_event_id: Mapped[int] = mapped_column(Integer, default=0)
