"""Sign in with Apple's token endpoints. Apple requires that deleting an account revokes its
Sign in with Apple tokens, and revoking needs a token: the app's authorization code is exchanged
once (`POST {OAUTH_APPLE_BASE_URL}/auth/token`) for a refresh token, kept sealed, and revoked
(`POST .../auth/revoke`) when the account is deleted. Both calls authenticate with a client
secret: an ES256 JWT signed with the team's key (OAUTH_APPLE_KEY_ID, the .p8 file).

These functions make one POST each and never retry: the tasks calling them (auth.tasks) do, where
the retries are visible. Codes, tokens and the key never reach a log line or an exception text.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import time
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Any

import httpx
import jwt
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from goaltrack.config import Settings

logger = logging.getLogger(__name__)

# The client secret's audience is Apple's, also when OAUTH_APPLE_BASE_URL points elsewhere.
CLIENT_SECRET_AUDIENCE = "https://appleid.apple.com"
CLIENT_SECRET_TTL_SECONDS = 300  # Apple accepts up to six months; one call needs minutes
TIMEOUT_SECONDS = 10.0
# Errors that say the code or token itself is no good: nothing to retry (or to revoke).
SPENT = {"invalid_grant", "invalid_request"}
_SEALED_CONTEXT = b"goaltrack: sealed provider token"


class Outcome(StrEnum):
    done = "done"
    spent = "spent"  # the code or token was refused as used, expired or unknown
    retry = "retry"  # Apple busy or unreachable, or our client refused (a configuration fix)


@dataclass(frozen=True, slots=True)
class Answer:
    outcome: Outcome
    detail: str = ""  # the status and Apple's error code, for the log
    refresh_token: str | None = None
    subject: str | None = None  # the `sub` of the ID token that came with a refresh token


async def exchange_code(settings: Settings, *, client_id: str, code: str) -> Answer:
    """The refresh token for an authorization code (valid five minutes, single use)."""
    response = await _post(
        settings,
        "/auth/token",
        client_id,
        {"code": code, "grant_type": "authorization_code"},
    )
    if isinstance(response, Answer):
        return response
    answer = _json(response)
    refresh_token, id_token = answer.get("refresh_token"), answer.get("id_token")
    if response.is_success and isinstance(refresh_token, str) and isinstance(id_token, str):
        try:
            # Straight from Apple over TLS: read, not verified, to bind the token to the identity.
            subject = jwt.decode(id_token, options={"verify_signature": False}).get("sub")
        except jwt.PyJWTError:
            subject = None
        return Answer(Outcome.done, refresh_token=refresh_token, subject=subject)
    return _failure(response, answer)


async def revoke_token(settings: Settings, *, client_id: str, refresh_token: str) -> Answer:
    response = await _post(
        settings,
        "/auth/revoke",
        client_id,
        {"token": refresh_token, "token_type_hint": "refresh_token"},
    )
    if isinstance(response, Answer):
        return response
    if response.is_success:
        return Answer(Outcome.done)
    return _failure(response, _json(response))


async def _post(
    settings: Settings, path: str, client_id: str, form: dict[str, str]
) -> httpx.Response | Answer:
    body = {"client_id": client_id, "client_secret": client_secret(settings, client_id), **form}
    try:
        async with httpx.AsyncClient(timeout=TIMEOUT_SECONDS) as http:
            return await http.post(f"{settings.oauth_apple_base_url}{path}", data=body)
    except httpx.TransportError as exc:  # refused, reset, timed out
        return Answer(Outcome.retry, detail=type(exc).__name__)


def _failure(response: httpx.Response, answer: dict[str, Any]) -> Answer:
    error = answer.get("error")
    error = error if isinstance(error, str) else ""
    detail = f"{response.status_code} {error}".strip()
    if response.status_code == 400 and error in SPENT:
        return Answer(Outcome.spent, detail=detail)
    if response.status_code < 500 and response.status_code != 429:
        # invalid_client and the like: our team key or client id is wrong, no token is to blame.
        # Retried (bounded), in case the configuration is fixed meanwhile.
        logger.error("Apple refused our client: %s", detail)
    return Answer(Outcome.retry, detail=detail)


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        answer = response.json()
    except ValueError:
        return {}
    return answer if isinstance(answer, dict) else {}


def client_secret(settings: Settings, client_id: str) -> str:
    """The client secret Apple's token endpoints take: a short-lived ES256 JWT of the team's.
    Its times are Apple's to check against the real clock, not our injectable one."""
    if settings.oauth_apple_private_key_file is None:
        raise RuntimeError("Apple token revocation is not configured")
    now = int(time.time())
    claims = {
        "iss": settings.oauth_apple_team_id,
        "iat": now,
        "exp": now + CLIENT_SECRET_TTL_SECONDS,
        "aud": CLIENT_SECRET_AUDIENCE,
        "sub": client_id,
    }
    key = _private_key(settings.oauth_apple_private_key_file)
    return jwt.encode(claims, key, algorithm="ES256", headers={"kid": settings.oauth_apple_key_id})


@lru_cache(maxsize=4)
def _private_key(path: Path) -> EllipticCurvePrivateKey:
    try:
        key = load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        # Name the file and the failure only: the exception text could quote key material.
        raise ValueError(f"unusable Apple key file {path}: {type(exc).__name__}") from None
    if not isinstance(key, EllipticCurvePrivateKey):
        raise ValueError(f"{path} is not an EC private key (Apple's .p8)")
    return key


# --- tokens at rest --------------------------------------------------------------------------


def seal(settings: Settings, value: str) -> str:
    """`value` encrypted (AES-256-GCM, a key derived from JWT_SECRET): what the database and the
    task outbox hold of Apple's refresh token and authorization code. A token must stay readable
    to be revoked, so it cannot be hashed like ours."""
    nonce = os.urandom(12)
    sealed = _cipher(settings).encrypt(nonce, value.encode(), _SEALED_CONTEXT)
    return base64.urlsafe_b64encode(nonce + sealed).decode()


def unseal(settings: Settings, sealed: str) -> str | None:
    """None when it cannot be opened (JWT_SECRET was changed since it was sealed)."""
    try:
        raw = base64.urlsafe_b64decode(sealed.encode())
        return _cipher(settings).decrypt(raw[:12], raw[12:], _SEALED_CONTEXT).decode()
    except (InvalidTag, binascii.Error, ValueError):
        return None


def _cipher(settings: Settings) -> AESGCM:
    return AESGCM(_sealing_key(settings.jwt_secret.get_secret_value()))


@lru_cache(maxsize=4)
def _sealing_key(secret: str) -> bytes:
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_SEALED_CONTEXT)
    return hkdf.derive(secret.encode())
