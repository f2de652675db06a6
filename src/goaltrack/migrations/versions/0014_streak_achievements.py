"""streak achievements: 7, 30 and 100 days in a row of a habit; a check-in counter

Revision ID: 9c4d1e7b2f60
Revises: 5b8e2f0c7a13
Create Date: 2026-12-07 07:30:00
"""

import uuid
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "9c4d1e7b2f60"
down_revision: str | None = "5b8e2f0c7a13"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FIRST_POSITION = 11  # after the catalogue of migration 0006
# (code, icon, condition, threshold, (title en, title ru), (description en, description ru))
CATALOGUE = [
    (
        f"streak_{days}",
        "flame",
        "longest_habit_streak",
        days,
        (title, title_ru),
        (
            f"You kept a habit {days} times in a row.",
            f"Вы выполнили привычку {days} раз подряд.",
        ),
    )
    for days, title, title_ru in (
        (7, "A week in a row", "Неделя подряд"),
        (30, "A month in a row", "Месяц подряд"),
        (100, "A hundred in a row", "Сто раз подряд"),
    )
]


def _uuid(code: str) -> uuid.UUID:
    """As migration 0006: the same achievement has the same id in every database."""
    return uuid.uuid5(uuid.NAMESPACE_URL, f"goaltrack:achievement:{code}")


def catalogue_rows() -> list[dict[str, object]]:
    return [
        {
            "id": _uuid(code),
            "code": code,
            "position": FIRST_POSITION + index,
            "icon": icon,
            "title": {"en": title[0], "ru": title[1]},
            "description": {"en": description[0], "ru": description[1]},
            "condition": condition,
            "threshold": threshold,
        }
        for index, (code, icon, condition, threshold, title, description) in enumerate(CATALOGUE)
    ]


def upgrade() -> None:
    op.add_column(
        "user_stats",
        sa.Column("habit_checkins", sa.Integer(), server_default=sa.text("0"), nullable=False),
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
    # No backfill: habits are new with migration 0013, so no streak exists yet.


def downgrade() -> None:
    op.execute("DELETE FROM achievements WHERE condition = 'longest_habit_streak'")
    op.drop_column("user_stats", "habit_checkins")
