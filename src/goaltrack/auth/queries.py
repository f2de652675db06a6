from __future__ import annotations

from sqlalchemy import ColumnElement, and_, bindparam

from goaltrack.auth.models import User


def caller_is_current() -> ColumnElement[bool]:
    """The access token's user, at the token's version, not soft-deleted: bind `user_id` and
    `token_version`. A hot read joins on it, so a revoked token and the data are checked together
    (no row at all: not authenticated)."""
    return and_(
        User.id == bindparam("user_id"),
        User.token_version == bindparam("token_version"),
        User.deleted_at.is_(None),
    )
