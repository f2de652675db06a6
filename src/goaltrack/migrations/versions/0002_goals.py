"""goals, stages, attachments, reminders, and the file-deletion outbox

Revision ID: cc409dad1de9
Revises: 3643f474ee0b
Create Date: 2026-11-27 04:11:17.350737
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "cc409dad1de9"
down_revision: str | None = "3643f474ee0b"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

QUEUE_ATTACHMENT_FILE_FUNCTION = """
CREATE FUNCTION queue_attachment_file_deletion() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO file_deletions (id, object_key) VALUES (gen_random_uuid(), OLD.object_key);
    RETURN NULL;
END
$$
"""


def upgrade() -> None:
    op.create_table(
        "file_deletions",
        sa.Column("object_key", sa.String(length=1024), nullable=False),
        sa.Column("is_prefix", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column(
            "not_before",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_file_deletions")),
    )
    # Outbox sweep: WHERE not_before <= now() ORDER BY not_before LIMIT n FOR UPDATE SKIP LOCKED
    op.create_index("ix_file_deletions_not_before", "file_deletions", ["not_before"], unique=False)
    op.create_table(
        "goals",
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("deadline", sa.Date(), nullable=True),
        sa.Column("progress", sa.SmallInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("stage_count", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column(
            "completed_stage_count", sa.Integer(), server_default=sa.text("0"), nullable=False
        ),
        sa.Column("is_archived", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "ai_status", sa.String(length=16), server_default=sa.text("'idle'"), nullable=False
        ),
        sa.Column("ai_error", sa.Text(), nullable=True),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "ai_status IN ('idle', 'pending', 'done', 'failed')", name=op.f("ck_goals_ai_status")
        ),
        sa.CheckConstraint("progress BETWEEN 0 AND 100", name=op.f("ck_goals_progress")),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_goals_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_goals")),
    )
    # GET /goals, /goals/archived: WHERE user_id = ? AND is_archived = ? AND (created_at, id) < cursor
    #   ORDER BY created_at DESC, id DESC LIMIT n  — an index range scan, whatever the page
    op.create_index(
        "ix_goals_user_id_is_archived_created_at_id",
        "goals",
        [
            "user_id",
            "is_archived",
            sa.literal_column("created_at DESC"),
            sa.literal_column("id DESC"),
        ],
        unique=False,
    )
    op.create_table(
        "goal_attachments",
        sa.Column("goal_id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("object_key", sa.String(length=255), nullable=False),
        sa.Column("file_url", sa.String(length=1024), nullable=False),
        sa.Column("file_type", sa.String(length=64), nullable=False),
        sa.Column("file_name", sa.String(length=255), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["goal_id"],
            ["goals.id"],
            name=op.f("fk_goal_attachments_goal_id_goals"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_goal_attachments_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_goal_attachments")),
        sa.UniqueConstraint("object_key", name=op.f("uq_goal_attachments_object_key")),
    )
    # A goal's attachments: WHERE goal_id = ? ORDER BY created_at, id (and the cascade from goals)
    op.create_index(
        "ix_goal_attachments_goal_id_created_at",
        "goal_attachments",
        ["goal_id", "created_at"],
        unique=False,
    )
    # The cascade from users (hard delete) and the data export: WHERE user_id = ?
    op.create_index(
        op.f("ix_goal_attachments_user_id"), "goal_attachments", ["user_id"], unique=False
    )
    op.create_table(
        "goal_reminders",
        sa.Column("goal_id", sa.Uuid(), nullable=False),
        sa.Column("remind_time", sa.Time(), nullable=False),
        sa.Column("frequency_days", sa.SmallInteger(), nullable=False),
        sa.Column("anchor_date", sa.Date(), nullable=False),
        sa.Column("next_fire_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "frequency_days BETWEEN 1 AND 3", name=op.f("ck_goal_reminders_frequency_days")
        ),
        sa.ForeignKeyConstraint(
            ["goal_id"],
            ["goals.id"],
            name=op.f("fk_goal_reminders_goal_id_goals"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_goal_reminders")),
    )
    # A goal's reminders: WHERE goal_id = ? (and the cascade from goals)
    op.create_index(op.f("ix_goal_reminders_goal_id"), "goal_reminders", ["goal_id"], unique=False)
    # Scheduler: WHERE next_fire_at <= now() ORDER BY next_fire_at LIMIT n FOR UPDATE SKIP LOCKED
    op.create_index(
        "ix_goal_reminders_next_fire_at",
        "goal_reminders",
        ["next_fire_at"],
        unique=False,
        postgresql_where=sa.text("next_fire_at IS NOT NULL"),
    )
    op.create_table(
        "goal_stages",
        sa.Column("goal_id", sa.Uuid(), nullable=False),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("is_completed", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint("position >= 0", name=op.f("ck_goal_stages_position")),
        sa.ForeignKeyConstraint(
            ["goal_id"], ["goals.id"], name=op.f("fk_goal_stages_goal_id_goals"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_goal_stages")),
        sa.UniqueConstraint(
            "goal_id",
            "position",
            deferrable=True,
            initially="DEFERRED",
            name="uq_goal_stages_goal_id_position",
        ),
    )
    # Every removed attachment row (directly, or by cascade from its goal or user) queues its
    # object for deletion in the same transaction: no code path can forget the file.
    op.execute(QUEUE_ATTACHMENT_FILE_FUNCTION)
    op.execute(
        "CREATE TRIGGER goal_attachments_queue_file AFTER DELETE ON goal_attachments "
        "FOR EACH ROW EXECUTE FUNCTION queue_attachment_file_deletion()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS goal_attachments_queue_file ON goal_attachments")
    op.execute("DROP FUNCTION IF EXISTS queue_attachment_file_deletion()")
    op.drop_table("goal_stages")
    op.drop_index(
        "ix_goal_reminders_next_fire_at",
        table_name="goal_reminders",
        postgresql_where=sa.text("next_fire_at IS NOT NULL"),
    )
    op.drop_index(op.f("ix_goal_reminders_goal_id"), table_name="goal_reminders")
    op.drop_table("goal_reminders")
    op.drop_index(op.f("ix_goal_attachments_user_id"), table_name="goal_attachments")
    op.drop_index("ix_goal_attachments_goal_id_created_at", table_name="goal_attachments")
    op.drop_table("goal_attachments")
    op.drop_index("ix_goals_user_id_is_archived_created_at_id", table_name="goals")
    op.drop_table("goals")
    op.drop_index("ix_file_deletions_not_before", table_name="file_deletions")
    op.drop_table("file_deletions")
