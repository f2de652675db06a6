"""Who is calling: one resolver for every route.

1. `AccessClaimsDep` (every authenticated route, through its router): the bearer token, signed
   and unexpired; no database work.
2. Whether the token is still *current* (its user at the token's version, not soft-deleted, in a
   live session) has one definition, `caller_is_current()`, checked in one of two ways:
   - folded into the route's own statement (the hot reads, goal creation, a stage toggle, the
     caller's goal): one round trip, and when that statement finds nothing, `raise_missing`
     tells a stale token (401) from someone else's or no row (404);
   - on its own, `require_current` (`CurrentUser` for routes that need the user row; an upload
     checks it on a short connection of its own before reading the body).
"""

from __future__ import annotations

from typing import Annotated, Any, NoReturn

from fastapi import Depends, Request
from fastapi.openapi.models import HTTPBearer as HTTPBearerModel
from fastapi.security.base import SecurityBase
from sqlalchemy import ColumnElement, and_, bindparam, exists, select
from sqlalchemy.ext.asyncio import AsyncSession

from goaltrack.auth.models import RefreshToken, User
from goaltrack.auth.security import AccessClaims, decode_access_token
from goaltrack.clock import utcnow
from goaltrack.config import Settings
from goaltrack.db import SessionDep
from goaltrack.deps import SettingsDep
from goaltrack.errors import NotAuthenticated, NotFound


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
        # Not a statement's parameter: where a hot read may run (replica.ReplicaReader).
        "issued_at": claims.issued_at,
    }


# The caller as a row (None: not authenticated), built once; bind `caller_params(claims)`.
CURRENT_CALLER = select(User).where(caller_is_current())


async def require_current(session: AsyncSession, claims: AccessClaims) -> User:
    """The caller's row, or 401 when the token is no longer current."""
    user = await session.scalar(CURRENT_CALLER, caller_params(claims))
    if user is None:
        raise NotAuthenticated
    return user


async def raise_missing(session: AsyncSession, claims: AccessClaims) -> NoReturn:
    """A statement that folds `caller_is_current()` in found nothing: 401 when the token is stale,
    otherwise 404 (whether the row does not exist or belongs to someone else)."""
    await require_current(session, claims)
    raise NotFound


class AccessTokenBearer(SecurityBase):
    """A well-formed, correctly signed, unexpired access token (no database work).

    One dependency that both reads the `Authorization: Bearer` header and declares the scheme in
    the OpenAPI document (FastAPI documents any SecurityBase dependency).
    Whether the token is still current (token_version, account not deleted, session live) is
    checked against the database by `require_current`, or inside the route's own statement."""

    def __init__(self) -> None:
        self.model = HTTPBearerModel(description="The access token from /auth/login.")
        self.scheme_name = "HTTPBearer"

    async def __call__(self, request: Request, settings: SettingsDep) -> AccessClaims:
        claims = bearer_claims(request, settings)
        if claims is None:
            raise NotAuthenticated
        return claims


def bearer_claims(request: Request, settings: Settings) -> AccessClaims | None:
    """The claims of the request's valid bearer token, or None."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        return None
    return decode_access_token(settings, token.strip(), utcnow())


get_access_claims = AccessTokenBearer()
AccessClaimsDep = Annotated[AccessClaims, Depends(get_access_claims)]


async def get_current_user(session: SessionDep, claims: AccessClaimsDep) -> User:
    """The caller as a row, for the routes whose work has no statement to fold the check into."""
    return await require_current(session, claims)


CurrentUser = Annotated[User, Depends(get_current_user)]
