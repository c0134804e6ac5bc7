"""serving: deployments written by backend.serving, their rollouts and API keys

- deployments: name (unique), namespace, port, reason, follows_config, created_by, stopped_at. The table existed but
  was never written by lfops; rows someone made by hand are named deployment-<id>.
- rollouts: every switch of a deployment's version (deploy, manual, follow, undeploy), for lineage ("where was v3
  served, and when") and the switch time.
- api_keys: a deployment's keys as public id + sha256 (the key itself is never stored).

Revision ID: 0004_serving
Revises: 0003_api_tokens
"""
from alembic import op
import sqlalchemy as sa


revision = "0004_serving"
down_revision = "0003_api_tokens"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("deployments", schema=None) as batch_op:
        batch_op.add_column(sa.Column("name", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("namespace", sa.String(length=63), nullable=False, server_default=""))
        batch_op.add_column(sa.Column("port", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("reason", sa.Text(), nullable=False, server_default=""))
        batch_op.add_column(sa.Column("follows_config", sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column("created_by", sa.String(length=64), nullable=False, server_default=""))
        batch_op.add_column(sa.Column("stopped_at", sa.DateTime(timezone=True), nullable=True))
    op.execute("UPDATE deployments SET name = 'deployment-' || CAST(id AS VARCHAR(20)) WHERE name IS NULL")
    with op.batch_alter_table("deployments", schema=None) as batch_op:
        batch_op.alter_column("name", existing_type=sa.String(length=64), nullable=False)
        batch_op.create_index("ix_deployments_name", ["name"], unique=True)
        batch_op.create_index("ix_deployments_follows_config", ["follows_config"], unique=False)

    op.create_table(
        "rollouts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("deployment_id", sa.Integer(), nullable=False),
        sa.Column("from_version_id", sa.Integer(), nullable=True),
        sa.Column("to_version_id", sa.Integer(), nullable=True),
        sa.Column("trigger", sa.String(length=16), nullable=False),
        sa.Column("actor", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("switch_s", sa.Float(), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["deployment_id"], ["deployments.id"]),
        sa.ForeignKeyConstraint(["from_version_id"], ["model_versions.id"]),
        sa.ForeignKeyConstraint(["to_version_id"], ["model_versions.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("rollouts", schema=None) as batch_op:
        batch_op.create_index("ix_rollouts_deployment_started", ["deployment_id", "started_at"], unique=False)
        batch_op.create_index("ix_rollouts_to_version_id", ["to_version_id"], unique=False)

    op.create_table(
        "api_keys",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("deployment_id", sa.Integer(), nullable=False),
        sa.Column("key_id", sa.String(length=16), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("label", sa.String(length=100), nullable=False),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["deployment_id"], ["deployments.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("key_id"),
        sa.UniqueConstraint("sha256"),
    )
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.create_index("ix_api_keys_deployment_id", ["deployment_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.drop_index("ix_api_keys_deployment_id")
    op.drop_table("api_keys")
    with op.batch_alter_table("rollouts", schema=None) as batch_op:
        batch_op.drop_index("ix_rollouts_to_version_id")
        batch_op.drop_index("ix_rollouts_deployment_started")
    op.drop_table("rollouts")
    with op.batch_alter_table("deployments", schema=None) as batch_op:
        batch_op.drop_index("ix_deployments_follows_config")
        batch_op.drop_index("ix_deployments_name")
        batch_op.drop_column("stopped_at")
        batch_op.drop_column("created_by")
        batch_op.drop_column("follows_config")
        batch_op.drop_column("reason")
        batch_op.drop_column("port")
        batch_op.drop_column("namespace")
        batch_op.drop_column("name")
