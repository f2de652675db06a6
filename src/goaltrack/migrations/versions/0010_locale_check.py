"""user_settings.locale holds only the locales the API serves

Revision ID: 8e0a3c5d6b21
Revises: 4f1c9d2b7e30
Create Date: 2026-12-01 05:55:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "8e0a3c5d6b21"
down_revision: str | None = "4f1c9d2b7e30"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A row written around the API (a seed, a manual fix) with another locale made GET /settings
    # a 500; such rows fall back to English, and the constraint keeps new ones out.
    op.execute("UPDATE user_settings SET locale = 'en' WHERE locale NOT IN ('en', 'ru')")
    op.create_check_constraint(
        op.f("ck_user_settings_locale"), "user_settings", "locale IN ('en', 'ru')"
    )


def downgrade() -> None:
    op.drop_constraint(op.f("ck_user_settings_locale"), "user_settings", type_="check")
