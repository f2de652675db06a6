from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.openapi.models import HTTPBearer as HTTPBearerModel
from fastapi.security.base import SecurityBase

from goaltrack.auth.models import User
from goaltrack.auth.queries import CURRENT_CALLER, caller_params
from goaltrack.auth.security import AccessClaims, Passwords, decode_access_token
from goaltrack.clock import utcnow
from goaltrack.config import Settings
from goaltrack.db import SessionDep
from goaltrack.errors import NotAuthenticated


class AccessTokenBearer(SecurityBase):
    """A well-formed, correctly signed, unexpired access token (no database work).

    One dependency that both reads the `Authorization: Bearer` header and declares the scheme in
    the OpenAPI document (FastAPI documents any SecurityBase dependency): every authenticated
    request resolves it, so it takes the request alone — settings and clock as plain reads, not
    three more dependencies (each costs CPU on the hottest path; bench/).
    Whether the token is still current (token_version, account not deleted, session live) is
    checked against the database by `get_current_user`, or inside the single statement of a hot
    read."""

    def __init__(self) -> None:
        self.model = HTTPBearerModel(description="The access token from /auth/login.")
        self.scheme_name = "HTTPBearer"

    async def __call__(self, request: Request) -> AccessClaims:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise NotAuthenticated
        settings: Settings = request.app.state.settings
        claims = decode_access_token(settings, token.strip(), utcnow())
        if claims is None:
            raise NotAuthenticated
        return claims


get_access_claims = AccessTokenBearer()
AccessClaimsDep = Annotated[AccessClaims, Depends(get_access_claims)]


async def get_current_user(session: SessionDep, claims: AccessClaimsDep) -> User:
    """The caller, from a valid access token whose version is still current (not revoked)."""
    # The same check the hot reads fold into their statement (one definition of "current").
    user = await session.scalar(CURRENT_CALLER, caller_params(claims))
    if user is None:
        raise NotAuthenticated
    return user


CurrentUser = Annotated[User, Depends(get_current_user)]


async def get_passwords(request: Request) -> Passwords:
    passwords: Passwords = request.app.state.passwords
    return passwords


PasswordsDep = Annotated[Passwords, Depends(get_passwords)]
