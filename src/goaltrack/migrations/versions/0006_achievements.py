"""achievements: catalogue (seeded), user achievements, per-user counters (backfilled)

Revision ID: 7c2e4b91d0a6
Revises: 5a1d0c3e9b42
Create Date: 2026-12-01 04:30:00
"""

import uuid
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "7c2e4b91d0a6"
down_revision: str | None = "5a1d0c3e9b42"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# (code, icon, condition, threshold, (title en, title ru), (description en, description ru))
CATALOGUE = [
    (
        "first_goal",
        "flag",
        "goals_created",
        1,
        ("First goal", "Первая цель"),
        ("You set your first goal.", "Вы поставили свою первую цель."),
    ),
    (
        "first_stage",
        "check",
        "stages_completed",
        1,
        ("First step", "Первый шаг"),
        ("You completed your first stage.", "Вы выполнили первый этап."),
    ),
    (
        "stages_10",
        "steps",
        "stages_completed",
        10,
        ("Ten steps", "Десять шагов"),
        ("You completed 10 stages.", "Вы выполнили 10 этапов."),
    ),
    (
        "stages_50",
        "stairs",
        "stages_completed",
        50,
        ("Fifty steps", "Пятьдесят шагов"),
        ("You completed 50 stages.", "Вы выполнили 50 этапов."),
    ),
    (
        "stages_100",
        "mountain",
        "stages_completed",
        100,
        ("A hundred steps", "Сто шагов"),
        ("You completed 100 stages.", "Вы выполнили 100 этапов."),
    ),
    (
        "first_goal_completed",
        "trophy",
        "goals_completed",
        1,
        ("Goal reached", "Цель достигнута"),
        ("You completed your first goal.", "Вы достигли первой цели."),
    ),
    (
        "goals_completed_5",
        "medal",
        "goals_completed",
        5,
        ("Five goals", "Пять целей"),
        ("You completed 5 goals.", "Вы достигли 5 целей."),
    ),
    (
        "before_deadline",
        "clock",
        "goals_completed_before_deadline",
        1,
        ("Ahead of time", "Раньше срока"),
        ("You completed a goal before its deadline.", "Вы достигли цели до её срока."),
    ),
    (
        "first_result",
        "camera",
        "attachments_added",
        1,
        ("Proof", "Доказательство"),
        ("You attached your first result.", "Вы прикрепили первый результат."),
    ),
    (
        "first_ai_plan",
        "sparkles",
        "ai_plans_applied",
        1,
        ("Planned with AI", "План от ИИ"),
        ("Your first plan generated with AI.", "Ваш первый план, составленный ИИ."),
    ),
    (
        "three_in_progress",
        "juggler",
        "goals_in_progress",
        3,
        ("Juggler", "Жонглёр"),
        ("Three goals in progress at once.", "Три цели в работе одновременно."),
    ),
]

# Each metric from the history that exists (a backfill, run once).
BACKFILL_METRICS = {
    "goals_created": "SELECT user_id, count(*) FROM goals GROUP BY user_id",
    "stages_completed": (
        "SELECT g.user_id, count(*) FROM goal_stages s JOIN goals g ON g.id = s.goal_id "
        "WHERE s.is_completed GROUP BY g.user_id"
    ),
    "goals_completed": (
        "SELECT user_id, count(*) FROM goals WHERE completed_at IS NOT NULL GROUP BY user_id"
    ),
    "goals_completed_before_deadline": (
        "SELECT g.user_id, count(*) FROM goals g JOIN user_settings u ON u.user_id = g.user_id "
        "WHERE g.completed_at IS NOT NULL AND g.deadline IS NOT NULL "
        "AND (g.completed_at AT TIME ZONE u.timezone)::date <= g.deadline GROUP BY g.user_id"
    ),
    "attachments_added": "SELECT user_id, count(*) FROM goal_attachments GROUP BY user_id",
    "ai_plans_applied": (
        "SELECT user_id, count(*) FROM goals WHERE ai_status = 'done' GROUP BY user_id"
    ),
}
IN_PROGRESS = (
    "SELECT user_id, count(*) FROM goals WHERE NOT is_archived AND completed_at IS NULL "
    "GROUP BY user_id"
)


def upgrade() -> None:
    op.create_table(
        "achievements",
        sa.Column("code", sa.String(length=64), nullable=False),
        sa.Column("position", sa.SmallInteger(), nullable=False),
        sa.Column("icon", sa.String(length=64), nullable=False),
        sa.Column("title", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("description", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("condition", sa.String(length=64), nullable=False),
        sa.Column("threshold", sa.Integer(), server_default=sa.text("1"), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_achievements")),
        sa.UniqueConstraint("code", name=op.f("uq_achievements_code")),
    )
    op.create_table(
        "user_achievements",
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("achievement_id", sa.Uuid(), nullable=False),
        sa.Column("earned_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["achievement_id"],
            ["achievements.id"],
            name=op.f("fk_user_achievements_achievement_id_achievements"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_user_achievements_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("user_id", "achievement_id", name=op.f("pk_user_achievements")),
    )
    # The statistics: holders per achievement, index-only.
    op.create_index(
        "ix_user_achievements_achievement_id_user_id",
        "user_achievements",
        ["achievement_id", "user_id"],
    )
    counters = list(BACKFILL_METRICS)
    op.create_table(
        "user_stats",
        sa.Column("user_id", sa.Uuid(), nullable=False),
        *(
            sa.Column(name, sa.Integer(), server_default=sa.text("0"), nullable=False)
            for name in counters
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_user_stats_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_user_stats")),
    )

    achievements = sa.table(
        "achievements",
        sa.column("id", sa.Uuid()),
        sa.column("code", sa.String()),
        sa.column("position", sa.SmallInteger()),
        sa.column("icon", sa.String()),
        sa.column("title", postgresql.JSONB()),
        sa.column("description", postgresql.JSONB()),
        sa.column("condition", sa.String()),
        sa.column("threshold", sa.Integer()),
    )
    op.bulk_insert(achievements, catalogue_rows())
    for statement in backfill_statements():
        op.execute(statement)


def catalogue_rows() -> list[dict[str, object]]:
    """The catalogue's rows, as seeded (also used by the tests to seed it again)."""
    return [
        {
            "id": _uuid(code),
            "code": code,
            "position": position,
            "icon": icon,
            "title": {"en": title[0], "ru": title[1]},
            "description": {"en": description[0], "ru": description[1]},
            "condition": condition,
            "threshold": threshold,
        }
        for position, (code, icon, condition, threshold, title, description) in enumerate(CATALOGUE)
    ]


def backfill_statements() -> list[str]:
    """Backfill: the counters from the history, then every achievement it already earns (run by
    `upgrade`, and by the tests on a history made through the API)."""
    counters = list(BACKFILL_METRICS)
    return [
        "INSERT INTO user_stats (user_id) SELECT id FROM users",
        *(
            f"UPDATE user_stats SET {name} = m.n FROM ({query}) AS m(user_id, n) "
            "WHERE user_stats.user_id = m.user_id"
            for name, query in BACKFILL_METRICS.items()
        ),
        "INSERT INTO user_achievements (user_id, achievement_id, earned_at) "
        "SELECT s.user_id, a.id, now() FROM user_stats s JOIN achievements a "
        "ON a.condition <> 'goals_in_progress' AND CASE a.condition "
        + " ".join(f"WHEN '{name}' THEN s.{name}" for name in counters)
        + " END >= a.threshold",
        "INSERT INTO user_achievements (user_id, achievement_id, earned_at) "
        f"SELECT m.user_id, a.id, now() FROM ({IN_PROGRESS}) AS m(user_id, n) "
        "JOIN achievements a ON a.condition = 'goals_in_progress' AND m.n >= a.threshold",
    ]


def _uuid(code: str) -> uuid.UUID:
    """Stable ids: the same achievement has the same id in every database."""
    return uuid.uuid5(uuid.NAMESPACE_URL, f"goaltrack:achievement:{code}")


def downgrade() -> None:
    op.drop_table("user_stats")
    op.drop_table("user_achievements")
    op.drop_table("achievements")
