from __future__ import annotations

from typing import Annotated

from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from goaltrack.auth.models import User
from goaltrack.auth.security import decode_access_token
from goaltrack.db import SessionDep
from goaltrack.deps import SettingsDep
from goaltrack.errors import NotAuthenticated

bearer_scheme = HTTPBearer(auto_error=False, description="The access token from /auth/login.")


async def get_current_user(
    session: SessionDep,
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
) -> User:
    """The caller, from a valid access token whose version is still current (not revoked)."""
    if credentials is None:
        raise NotAuthenticated
    claims = decode_access_token(settings, credentials.credentials)
    if claims is None:
        raise NotAuthenticated
    user = await session.get(User, claims.user_id)
    if user is None or user.deleted_at is not None or user.token_version != claims.token_version:
        raise NotAuthenticated
    return user


CurrentUser = Annotated[User, Depends(get_current_user)]
