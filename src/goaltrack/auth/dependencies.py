from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import select

from goaltrack.auth.models import User
from goaltrack.auth.queries import caller_is_current, caller_params
from goaltrack.auth.security import AccessClaims, Passwords, decode_access_token
from goaltrack.clock import Now
from goaltrack.db import SessionDep
from goaltrack.deps import SettingsDep
from goaltrack.errors import NotAuthenticated

bearer_scheme = HTTPBearer(auto_error=False, description="The access token from /auth/login.")


async def get_access_claims(
    settings: SettingsDep,
    now: Now,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
) -> AccessClaims:
    """A well-formed, correctly signed, unexpired access token (no database work).

    Whether it is still current (token_version, account not deleted) is checked against the
    database by `get_current_user`, or inside the single statement of a hot read."""
    if credentials is None:
        raise NotAuthenticated
    claims = decode_access_token(settings, credentials.credentials, now)
    if claims is None:
        raise NotAuthenticated
    return claims


AccessClaimsDep = Annotated[AccessClaims, Depends(get_access_claims)]


async def get_current_user(session: SessionDep, claims: AccessClaimsDep) -> User:
    """The caller, from a valid access token whose version is still current (not revoked)."""
    # The same check the hot reads fold into their statement (one definition of "current").
    user = await session.scalar(select(User).where(caller_is_current()), caller_params(claims))
    if user is None:
        raise NotAuthenticated
    return user


CurrentUser = Annotated[User, Depends(get_current_user)]


async def get_passwords(request: Request) -> Passwords:
    passwords: Passwords = request.app.state.passwords
    return passwords


PasswordsDep = Annotated[Passwords, Depends(get_passwords)]
