"""per-user quotas: the goals and stored bytes each user holds, kept by triggers

Revision ID: f6a8b0c2d4e6
Revises: e5f7a9b1c3d4
Create Date: 2026-12-07 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "f6a8b0c2d4e6"
down_revision: str | None = "e5f7a9b1c3d4"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Row triggers, so every write path counts (the API, a cascade from a goal's or user's deletion,
# a fix in psql). Deletes only UPDATE: during a user's hard delete the usage row may go first.
COUNT = """
CREATE FUNCTION usage_{name}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        UPDATE user_usage SET {column} = {column} + {added} WHERE user_id = NEW.user_id;
    ELSE
        UPDATE user_usage SET {column} = {column} - {removed} WHERE user_id = OLD.user_id;
    END IF;
    RETURN NULL;
END $$
"""
TRIGGERS = (
    """
    CREATE FUNCTION usage_new_user() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO user_usage (user_id) VALUES (NEW.id);
        RETURN NULL;
    END $$
    """,
    "CREATE TRIGGER usage_users AFTER INSERT ON users "
    "FOR EACH ROW EXECUTE FUNCTION usage_new_user()",
    COUNT.format(name="goals", column="goals", added="1", removed="1"),
    "CREATE TRIGGER usage_goals AFTER INSERT OR DELETE ON goals "
    "FOR EACH ROW EXECUTE FUNCTION usage_goals()",
    COUNT.format(name="attachments", column="stored_bytes", added="NEW.size", removed="OLD.size"),
    "CREATE TRIGGER usage_attachments AFTER INSERT OR DELETE ON goal_attachments "
    "FOR EACH ROW EXECUTE FUNCTION usage_attachments()",
)


def upgrade() -> None:
    op.create_table(
        "user_usage",
        sa.Column("user_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("goals", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("stored_bytes", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_user_usage_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_user_usage")),
    )
    # Backfill, before the triggers count anything new (the migration runs in one transaction).
    op.execute(
        """
        INSERT INTO user_usage (user_id, goals, stored_bytes)
        SELECT users.id,
               (SELECT count(*) FROM goals WHERE goals.user_id = users.id),
               (SELECT coalesce(sum(size), 0) FROM goal_attachments a WHERE a.user_id = users.id)
        FROM users
        """
    )
    for statement in TRIGGERS:
        op.execute(statement)


def downgrade() -> None:
    op.execute("DROP TRIGGER usage_attachments ON goal_attachments")
    op.execute("DROP TRIGGER usage_goals ON goals")
    op.execute("DROP TRIGGER usage_users ON users")
    op.execute("DROP FUNCTION usage_attachments(), usage_goals(), usage_new_user()")
    op.drop_table("user_usage")
