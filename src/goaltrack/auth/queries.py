from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, and_, bindparam, exists, select

from goaltrack.auth.models import RefreshToken, User
from goaltrack.auth.security import AccessClaims


def session_is_live(session_id: Any) -> ColumnElement[bool]:
    """The token's session (refresh-token family) still has a live token: logout and a replay
    revoke them all (ix_refresh_tokens_family_id_live: one index probe)."""
    return exists().where(RefreshToken.family_id == session_id, RefreshToken.revoked_at.is_(None))


def caller_is_current() -> ColumnElement[bool]:
    """The access token's user, at the token's version, not soft-deleted, in a live session:
    bind `caller_params(claims)`. A hot read joins on it, so a revoked token and the data are
    checked together (no row at all: not authenticated)."""
    return and_(
        User.id == bindparam("user_id"),
        User.token_version == bindparam("token_version"),
        User.deleted_at.is_(None),
        session_is_live(bindparam("session_id")),
    )


def caller_params(claims: AccessClaims) -> dict[str, Any]:
    return {
        "user_id": claims.user_id,
        "token_version": claims.token_version,
        "session_id": claims.session_id,
    }


# The caller as a row (None: not authenticated), built once; bind `caller_params(claims)`.
CURRENT_CALLER = select(User).where(caller_is_current())
