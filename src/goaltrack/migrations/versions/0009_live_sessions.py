"""live sessions: access tokens name their session, checked by one index probe

Revision ID: 4f1c9d2b7e30
Revises: 2d8e5f7a4c19
Create Date: 2026-12-01 05:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "4f1c9d2b7e30"
down_revision: str | None = "2d8e5f7a4c19"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Every authenticated request: EXISTS (a live token of the access token's family).
    op.create_index(
        "ix_refresh_tokens_family_id_live",
        "refresh_tokens",
        ["family_id"],
        postgresql_where=sa.text("revoked_at IS NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_refresh_tokens_family_id_live", table_name="refresh_tokens")
