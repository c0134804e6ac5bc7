"""monitoring: sampled requests of deployments, their sampling policies, and drift reports

- request_samples: prompts (redacted, capped) and what the gateway saw of each sampled request, per deployment name.
- sampling_policies: per deployment: on/off, rate, cap and retention (no row: the defaults).
- drift_reports: one per checked window: scores, thresholds, whether it drifted and whether a drift was declared.

Revision ID: 0006_monitoring
Revises: 0005_forge
"""
from alembic import op
import sqlalchemy as sa


revision = "0006_monitoring"
down_revision = "0005_forge"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "request_samples",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("deployment", sa.String(length=64), nullable=False),
        sa.Column("model_version", sa.String(length=255), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("route", sa.String(length=32), nullable=False),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("error", sa.String(length=200), nullable=False),
        sa.Column("stream", sa.Boolean(), nullable=False),
        sa.Column("latency_ms", sa.Float(), nullable=False),
        sa.Column("ttft_ms", sa.Float(), nullable=True),
        sa.Column("prompt", sa.Text(), nullable=False),
        sa.Column("prompt_chars", sa.Integer(), nullable=False),
        sa.Column("prompt_truncated", sa.Boolean(), nullable=False),
        sa.Column("prompt_binary", sa.Boolean(), nullable=False),
        sa.Column("redactions", sa.Integer(), nullable=False),
        sa.Column("prompt_tokens", sa.Integer(), nullable=True),
        sa.Column("completion_tokens", sa.Integer(), nullable=True),
        sa.Column("response_chars", sa.Integer(), nullable=False),
        sa.Column("weight", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("request_samples", schema=None) as batch_op:
        batch_op.create_index("ix_request_samples_deployment_at", ["deployment", "at"], unique=False)

    op.create_table(
        "sampling_policies",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("deployment", sa.String(length=64), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("rate", sa.Float(), nullable=False),
        sa.Column("max_samples", sa.Integer(), nullable=False),
        sa.Column("retention_days", sa.Float(), nullable=False),
        sa.Column("updated_by", sa.String(length=64), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("deployment"),
    )

    op.create_table(
        "drift_reports",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("deployment", sa.String(length=64), nullable=False),
        sa.Column("model_version_id", sa.Integer(), nullable=False),
        sa.Column("model_version", sa.String(length=255), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("window_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("window_end", sa.DateTime(timezone=True), nullable=False),
        sa.Column("n_prompts", sa.Integer(), nullable=False),
        sa.Column("n_reference", sa.Integer(), nullable=False),
        sa.Column("dataset_version", sa.String(length=80), nullable=False),
        sa.Column("state", sa.String(length=32), nullable=False),
        sa.Column("drifting", sa.Boolean(), nullable=False),
        sa.Column("declared", sa.Boolean(), nullable=False),
        sa.Column("scores", sa.JSON(), nullable=False),
        sa.Column("thresholds", sa.JSON(), nullable=False),
        sa.Column("evidence", sa.JSON(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["model_version_id"], ["model_versions.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("deployment", "window_start", name="uq_drift_reports_window"),
    )
    with op.batch_alter_table("drift_reports", schema=None) as batch_op:
        batch_op.create_index("ix_drift_reports_deployment_created", ["deployment", "created_at"], unique=False)
        batch_op.create_index("ix_drift_reports_model_version_id", ["model_version_id"], unique=False)
        batch_op.create_index("ix_drift_reports_declared", ["declared"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("drift_reports", schema=None) as batch_op:
        batch_op.drop_index("ix_drift_reports_declared")
        batch_op.drop_index("ix_drift_reports_model_version_id")
        batch_op.drop_index("ix_drift_reports_deployment_created")
    op.drop_table("drift_reports")
    op.drop_table("sampling_policies")
    with op.batch_alter_table("request_samples", schema=None) as batch_op:
        batch_op.drop_index("ix_request_samples_deployment_at")
    op.drop_table("request_samples")
