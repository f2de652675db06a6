"""sign in with Google and Apple: users' provider identities; accounts without a password

Revision ID: d4e6f8a0b2c3
Revises: c3d5e7f9a1b2
Create Date: 2026-12-08 09:00:00
"""

import secrets
from collections.abc import Sequence

import bcrypt
import sqlalchemy as sa
from alembic import op

revision: str = "d4e6f8a0b2c3"
down_revision: str | None = "c3d5e7f9a1b2"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Also added by the e-mail verification's migration (0017): whichever runs first adds it.
    op.execute(
        "ALTER TABLE users ADD COLUMN IF NOT EXISTS email_verified boolean NOT NULL DEFAULT false"
    )
    op.alter_column("users", "password_hash", existing_type=sa.String(length=255), nullable=True)
    op.create_table(
        "user_identities",
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("provider", sa.String(length=16), nullable=False),
        sa.Column("issuer", sa.String(length=255), nullable=False),
        sa.Column("subject", sa.String(length=255), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=True),
        sa.Column("client_id", sa.String(length=255), nullable=False),
        sa.Column("refresh_token_sealed", sa.Text(), nullable=True),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "provider IN ('google', 'apple')", name=op.f("ck_user_identities_provider")
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_user_identities_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_user_identities")),
    )
    # Sign-in: WHERE issuer = ? AND subject = ?; an account's deletion: WHERE user_id = ?.
    op.create_index(
        "uq_user_identities_issuer_subject",
        "user_identities",
        ["issuer", "subject"],
        unique=True,
    )
    op.create_index(
        op.f("ix_user_identities_user_id"), "user_identities", ["user_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_user_identities_user_id"), table_name="user_identities")
    op.drop_index("uq_user_identities_issuer_subject", table_name="user_identities")
    op.drop_table("user_identities")
    # Accounts without a password get one nobody knows (a valid bcrypt hash): they sign in again
    # after a reset, as before this revision.
    unknown = bcrypt.hashpw(secrets.token_urlsafe(32).encode(), bcrypt.gensalt()).decode()
    op.execute(
        sa.text("UPDATE users SET password_hash = :unknown WHERE password_hash IS NULL").bindparams(
            unknown=unknown
        )
    )
    op.alter_column("users", "password_hash", existing_type=sa.String(length=255), nullable=False)
    # users.email_verified stays: it belongs to migration 0017 once both are merged.
