"""account exports and notifications

Revision ID: 22b165294e72
Revises: cc409dad1de9
Create Date: 2026-11-27 04:18:43.738975
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "22b165294e72"
down_revision: str | None = "cc409dad1de9"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "data_exports",
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column(
            "status", sa.String(length=16), server_default=sa.text("'pending'"), nullable=False
        ),
        sa.Column("object_key", sa.String(length=255), nullable=True),
        sa.Column("size", sa.BigInteger(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "status IN ('pending', 'ready', 'failed')", name=op.f("ck_data_exports_status")
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_data_exports_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_data_exports")),
    )
    # Expiry job: WHERE expires_at <= now()
    op.create_index(
        "ix_data_exports_expires_at",
        "data_exports",
        ["expires_at"],
        unique=False,
        postgresql_where=sa.text("expires_at IS NOT NULL"),
    )
    # The cascade from users, the export's own lookups: WHERE user_id = ?
    op.create_index(op.f("ix_data_exports_user_id"), "data_exports", ["user_id"], unique=False)
    # One export at a time per user (409 export_in_progress)
    op.create_index(
        "uq_data_exports_user_id_pending",
        "data_exports",
        ["user_id"],
        unique=True,
        postgresql_where=sa.text("status = 'pending'"),
    )
    op.create_table(
        "notifications",
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("type", sa.String(length=32), nullable=False),
        sa.Column("title", sa.String(length=255), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column(
            "data",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'"),
            nullable=False,
        ),
        sa.Column("is_read", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_notifications_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notifications")),
    )
    # The feed: WHERE user_id = ? AND (created_at, id) < cursor ORDER BY created_at DESC, id DESC
    op.create_index(
        "ix_notifications_user_id_created_at_id",
        "notifications",
        ["user_id", sa.literal_column("created_at DESC"), sa.literal_column("id DESC")],
        unique=False,
    )
    # unread_count: WHERE user_id = ? AND NOT is_read
    op.create_index(
        "ix_notifications_user_id_unread",
        "notifications",
        ["user_id"],
        unique=False,
        postgresql_where=sa.text("NOT is_read"),
    )


def downgrade() -> None:
    op.drop_index(
        "ix_notifications_user_id_unread",
        table_name="notifications",
        postgresql_where=sa.text("NOT is_read"),
    )
    op.drop_index("ix_notifications_user_id_created_at_id", table_name="notifications")
    op.drop_table("notifications")
    op.drop_index(
        "uq_data_exports_user_id_pending",
        table_name="data_exports",
        postgresql_where=sa.text("status = 'pending'"),
    )
    op.drop_index(op.f("ix_data_exports_user_id"), table_name="data_exports")
    op.drop_index(
        "ix_data_exports_expires_at",
        table_name="data_exports",
        postgresql_where=sa.text("expires_at IS NOT NULL"),
    )
    op.drop_table("data_exports")
