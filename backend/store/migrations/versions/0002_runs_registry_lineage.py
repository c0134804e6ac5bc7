"""runs tracking, registry and lineage columns

- runs.metrics_offset: bytes of trainer_log.jsonl already stored as metric rows, updated in the same transaction
  as the rows, so a restarted app (or a second monitor) never stores a step twice.
- model_versions.hub_repo / hub_revision: where a version was pushed on a Hugging Face Hub.
- indexes for the runs list filters and lineage: runs.submitted_by_id, runs.reproduces_run_id,
  model_versions.parent_id, configs.path.

Revision ID: 0002_runs_registry
Revises: 0001
"""
from alembic import op
import sqlalchemy as sa


revision = "0002_runs_registry"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("metrics_offset", sa.Integer(), nullable=False, server_default="0"))
        batch_op.create_index("ix_runs_submitted_by_id", ["submitted_by_id"], unique=False)
        batch_op.create_index("ix_runs_reproduces_run_id", ["reproduces_run_id"], unique=False)
    with op.batch_alter_table("model_versions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("hub_repo", sa.String(length=200), nullable=False, server_default=""))
        batch_op.add_column(sa.Column("hub_revision", sa.String(length=100), nullable=False, server_default=""))
        batch_op.create_index("ix_model_versions_parent_id", ["parent_id"], unique=False)
    with op.batch_alter_table("configs", schema=None) as batch_op:
        batch_op.create_index("ix_configs_path", ["path"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("configs", schema=None) as batch_op:
        batch_op.drop_index("ix_configs_path")
    with op.batch_alter_table("model_versions", schema=None) as batch_op:
        batch_op.drop_index("ix_model_versions_parent_id")
        batch_op.drop_column("hub_revision")
        batch_op.drop_column("hub_repo")
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.drop_index("ix_runs_reproduces_run_id")
        batch_op.drop_index("ix_runs_submitted_by_id")
        batch_op.drop_column("metrics_offset")
