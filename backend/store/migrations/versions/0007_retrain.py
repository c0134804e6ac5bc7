"""retrain: change requests the bot opens for deployed models, and the signals behind them

- retrain_requests: one per retrain change request; `open_key` (unique, NULL when finished) keeps one open request
  per model.
- retrain_signals: every signal received (drift, dataset) with its outcome; the evidence of a request and its
  comments.

Revision ID: 0007_retrain
Revises: 0006_monitoring
"""
from alembic import op
import sqlalchemy as sa


revision = "0007_retrain"
down_revision = "0006_monitoring"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "retrain_requests",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model_name", sa.String(length=200), nullable=False),
        sa.Column("config_path", sa.String(length=255), nullable=False),
        sa.Column("open_key", sa.String(length=200), nullable=True),
        sa.Column("change_request_id", sa.Integer(), nullable=True),
        sa.Column("branch", sa.String(length=255), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["change_request_id"], ["change_requests.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("open_key"),
    )
    with op.batch_alter_table("retrain_requests", schema=None) as batch_op:
        batch_op.create_index("ix_retrain_requests_model_name", ["model_name"], unique=False)
        batch_op.create_index("ix_retrain_requests_change_request_id", ["change_request_id"], unique=False)
        batch_op.create_index("ix_retrain_requests_state", ["state"], unique=False)
        batch_op.create_index("ix_retrain_requests_created_at", ["created_at"], unique=False)

    op.create_table(
        "retrain_signals",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("request_id", sa.Integer(), nullable=True),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("model_name", sa.String(length=200), nullable=False),
        sa.Column("deployment", sa.String(length=64), nullable=False),
        sa.Column("model_version_id", sa.Integer(), nullable=True),
        sa.Column("fingerprint", sa.String(length=255), nullable=False),
        sa.Column("evidence_ref", sa.String(length=255), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("observed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("outcome", sa.String(length=20), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["request_id"], ["retrain_requests.id"]),
        sa.ForeignKeyConstraint(["model_version_id"], ["model_versions.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("retrain_signals", schema=None) as batch_op:
        batch_op.create_index("ix_retrain_signals_fingerprint_id", ["fingerprint", "id"], unique=False)
        batch_op.create_index("ix_retrain_signals_request_id", ["request_id"], unique=False)
        batch_op.create_index("ix_retrain_signals_model_name", ["model_name"], unique=False)
        batch_op.create_index("ix_retrain_signals_model_version_id", ["model_version_id"], unique=False)
        batch_op.create_index("ix_retrain_signals_outcome", ["outcome"], unique=False)


def downgrade() -> None:
    op.drop_table("retrain_signals")
    op.drop_table("retrain_requests")
