"""seven locales: user_settings.locale takes every catalogue's locale; achievement texts move from
per-locale JSON columns to the message catalogues (by code)

Revision ID: e5f7a9b1c3d4
Revises: d4e6f8a0b2c3
Create Date: 2026-12-07 09:30:00
"""

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "e5f7a9b1c3d4"
down_revision: str | None = "d4e6f8a0b2c3"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# As of this revision (goaltrack/locales); a later catalogue comes with a migration of its own.
LOCALES = ("en", "de", "es", "fr", "pt-BR", "ru", "uk")
BEFORE = ("en", "ru")
# The migrations that seeded the texts this one drops: the downgrade puts them back.
SEEDS = ("0006_achievements.py", "0014_streak_achievements.py")


def _locale_check(locales: Sequence[str]) -> str:
    return "locale IN ({})".format(", ".join(f"'{locale}'" for locale in locales))


def upgrade() -> None:
    op.drop_constraint(op.f("ck_user_settings_locale"), "user_settings", type_="check")
    op.create_check_constraint(
        op.f("ck_user_settings_locale"), "user_settings", _locale_check(LOCALES)
    )
    op.drop_column("achievements", "title")
    op.drop_column("achievements", "description")


def _seed(name: str) -> ModuleType:
    path = Path(__file__).with_name(name)
    spec = importlib.util.spec_from_file_location(f"goaltrack_seed_{path.stem}", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def downgrade() -> None:
    for column in ("title", "description"):
        op.add_column(
            "achievements",
            sa.Column(column, postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        )
    achievements = sa.table(
        "achievements",
        sa.column("code", sa.String()),
        sa.column("title", postgresql.JSONB()),
        sa.column("description", postgresql.JSONB()),
    )
    for seed in SEEDS:
        for code, _icon, _condition, _threshold, title, description in _seed(seed).CATALOGUE:
            op.execute(
                achievements.update()
                .where(achievements.c.code == code)
                .values(
                    title=dict(zip(BEFORE, title, strict=True)),
                    description=dict(zip(BEFORE, description, strict=True)),
                )
            )
    # An achievement no seed knows (none as of this revision) keeps at least its code.
    op.execute(
        "UPDATE achievements SET title = jsonb_build_object('en', code), "
        "description = jsonb_build_object('en', code) WHERE title IS NULL"
    )
    op.alter_column("achievements", "title", nullable=False)
    op.alter_column("achievements", "description", nullable=False)

    op.execute(f"UPDATE user_settings SET locale = 'en' WHERE NOT ({_locale_check(BEFORE)})")
    op.drop_constraint(op.f("ck_user_settings_locale"), "user_settings", type_="check")
    op.create_check_constraint(
        op.f("ck_user_settings_locale"), "user_settings", _locale_check(BEFORE)
    )
