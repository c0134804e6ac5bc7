"""forge: pull requests on Gitea/GitHub/GitLab mirrored into change requests (backend.forge_sync)

- pull_requests: one per change request (number, url, state, head, merge commit, merged_by, approved_at_merge, the
  head whose lfops/validate status was posted).
- reviews: source (lfops | forge), forge_review_id (unique per change request: re-reading is idempotent),
  forge_login, official; reviewer_id may be NULL (a forge login that maps to no lfops user).
- forge_deliveries: webhook delivery ids already handled.

Revision ID: 0005_forge
Revises: 0004_serving
"""
from alembic import op
import sqlalchemy as sa


revision = "0005_forge"
down_revision = "0004_serving"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("reviews", schema=None) as batch_op:
        batch_op.alter_column("reviewer_id", existing_type=sa.Integer(), nullable=True)
        batch_op.add_column(sa.Column("source", sa.String(length=8), nullable=False, server_default="lfops"))
        batch_op.add_column(sa.Column("forge_review_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("forge_login", sa.String(length=255), nullable=False, server_default=""))
        batch_op.add_column(sa.Column("official", sa.Boolean(), nullable=False, server_default=sa.true()))
        batch_op.create_unique_constraint(
            "uq_reviews_change_request_id_forge_review_id", ["change_request_id", "forge_review_id"]
        )

    op.create_table(
        "pull_requests",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("change_request_id", sa.Integer(), nullable=False),
        sa.Column("forge", sa.String(length=16), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("url", sa.String(length=1000), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("head_commit", sa.String(length=40), nullable=False),
        sa.Column("merge_commit", sa.String(length=40), nullable=True),
        sa.Column("merged_by", sa.String(length=255), nullable=False, server_default=""),
        sa.Column("approved_at_merge", sa.Boolean(), nullable=True),
        sa.Column("validated_commit", sa.String(length=40), nullable=False, server_default=""),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["change_request_id"], ["change_requests.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("change_request_id"),
        sa.UniqueConstraint("forge", "number"),
    )
    with op.batch_alter_table("pull_requests", schema=None) as batch_op:
        batch_op.create_index("ix_pull_requests_merge_commit", ["merge_commit"], unique=False)

    op.create_table(
        "forge_deliveries",
        sa.Column("delivery", sa.String(length=100), nullable=False),
        sa.Column("event", sa.String(length=64), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("delivery"),
    )
    with op.batch_alter_table("forge_deliveries", schema=None) as batch_op:
        batch_op.create_index("ix_forge_deliveries_received_at", ["received_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("forge_deliveries", schema=None) as batch_op:
        batch_op.drop_index("ix_forge_deliveries_received_at")
    op.drop_table("forge_deliveries")
    with op.batch_alter_table("pull_requests", schema=None) as batch_op:
        batch_op.drop_index("ix_pull_requests_merge_commit")
    op.drop_table("pull_requests")
    op.execute("DELETE FROM reviews WHERE reviewer_id IS NULL")
    with op.batch_alter_table("reviews", schema=None) as batch_op:
        batch_op.drop_constraint("uq_reviews_change_request_id_forge_review_id", type_="unique")
        batch_op.drop_column("official")
        batch_op.drop_column("forge_login")
        batch_op.drop_column("forge_review_id")
        batch_op.drop_column("source")
        batch_op.alter_column("reviewer_id", existing_type=sa.Integer(), nullable=False)
