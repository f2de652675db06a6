from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from goaltrack.auth.oauth import IdTokenVerifier
from goaltrack.auth.security import Passwords


async def get_passwords(request: Request) -> Passwords:
    passwords: Passwords = request.app.state.passwords
    return passwords


PasswordsDep = Annotated[Passwords, Depends(get_passwords)]


async def get_id_tokens(request: Request) -> IdTokenVerifier:
    verifier: IdTokenVerifier = request.app.state.id_tokens
    return verifier


IdTokensDep = Annotated[IdTokenVerifier, Depends(get_id_tokens)]
