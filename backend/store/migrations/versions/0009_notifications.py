"""notifications: targets, deliveries, mutes and the dispatcher's cursor in the audit log

- notify_targets: webhooks and apprise URLs configured by an admin; secrets sealed (Fernet, the settings' notify key).
- notify_deliveries: one row per (target, audit event), retried with back-off; the delivery log.
- notify_mutes: (user, kind) a user muted for their own targets.
- notify_cursor: the last audit event turned into deliveries; starts at the newest event, so history is not sent.

Revision ID: 0009_notifications
Revises: 0008_run_params
"""
from alembic import op
import sqlalchemy as sa


revision = "0009_notifications"
down_revision = "0008_run_params"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "notify_targets",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("url", sa.String(length=500), nullable=False),
        sa.Column("secret_sealed", sa.Text(), nullable=False),
        sa.Column("kinds", sa.JSON(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=True),
        sa.Column("since_event_id", sa.Integer(), nullable=False),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("removed_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    op.create_table(
        "notify_deliveries",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("target_id", sa.Integer(), nullable=False),
        sa.Column("event_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("subject", sa.String(length=255), nullable=False),
        sa.Column("status", sa.String(length=12), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_status", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["event_id"], ["audit_events.id"]),
        sa.ForeignKeyConstraint(["target_id"], ["notify_targets.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("target_id", "event_id"),
    )
    op.create_index("ix_notify_deliveries_status_due", "notify_deliveries", ["status", "next_attempt_at"])
    op.create_index("ix_notify_deliveries_target_id", "notify_deliveries", ["target_id"])
    op.create_table(
        "notify_mutes",
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"]),
        sa.PrimaryKeyConstraint("user_id", "kind"),
    )
    cursor = op.create_table(
        "notify_cursor",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("last_event_id", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    newest = op.get_bind().execute(sa.text("SELECT coalesce(max(id), 0) FROM audit_events")).scalar()
    op.bulk_insert(cursor, [{"id": 1, "last_event_id": newest}])


def downgrade() -> None:
    op.drop_table("notify_cursor")
    op.drop_table("notify_mutes")
    op.drop_index("ix_notify_deliveries_target_id", table_name="notify_deliveries")
    op.drop_index("ix_notify_deliveries_status_due", table_name="notify_deliveries")
    op.drop_table("notify_deliveries")
    op.drop_table("notify_targets")
