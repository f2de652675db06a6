"""Password hashing (pwdlib + bcrypt) and access tokens (PyJWT, HS256 only)."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cached_property, lru_cache

import jwt
from anyio import CapacityLimiter, to_thread
from pwdlib import PasswordHash
from pwdlib.hashers.bcrypt import BcryptHasher

from goaltrack.config import Settings

JWT_ALGORITHM = "HS256"
ACCESS_TOKEN_TYPE = "access"
BCRYPT_MAX_BYTES = 72
MAX_ACCESS_TOKEN_LENGTH = 1024


class Passwords:
    """bcrypt through pwdlib, in worker threads: a login never stalls the event loop.

    At most `concurrency` hashes run at once in this process (the others queue): twenty
    concurrent logins would otherwise put twenty CPU-bound threads beside the event loop, and
    the reads would get a twenty-first of the CPU (bench: goals_list_under_login_flood)."""

    def __init__(self, rounds: int, concurrency: int = 1) -> None:
        self._hasher = PasswordHash((BcryptHasher(rounds=rounds),))
        self._limiter = CapacityLimiter(concurrency)

    @cached_property
    def _dummy_hash(self) -> str:
        return self._hasher.hash(secrets.token_urlsafe(16))

    async def hash(self, password: str) -> str:
        return await to_thread.run_sync(self._hasher.hash, password, limiter=self._limiter)

    async def verify(self, password: str, password_hash: str | None) -> bool:
        """Compare against a dummy hash when there is no user, so timing does not reveal it.

        No stored password is longer than bcrypt's 72 bytes (registration refuses them), so a
        longer one cannot match; it is still hashed (truncated) so that it takes the usual time."""
        fits = len(password.encode()) <= BCRYPT_MAX_BYTES
        candidate = (
            password if fits else password.encode()[:BCRYPT_MAX_BYTES].decode(errors="ignore")
        )
        target = password_hash if password_hash is not None else self._dummy_hash
        matches = await to_thread.run_sync(
            self._hasher.verify, candidate, target, limiter=self._limiter
        )
        return matches and fits and password_hash is not None


@dataclass(frozen=True, slots=True)
class AccessClaims:
    user_id: uuid.UUID
    token_version: int
    # The refresh-token family (one login on one device): logging out or a detected replay
    # ends the session's access tokens too, not only its refresh tokens.
    session_id: uuid.UUID
    # When the token was issued (Unix seconds): a token newer than what a replica has replayed
    # may belong to a session the replica does not have yet (replica.py).
    issued_at: int


def create_access_token(
    settings: Settings,
    user_id: uuid.UUID,
    token_version: int,
    now: datetime,
    *,
    session_id: uuid.UUID,
) -> str:
    claims = {
        "sub": str(user_id),
        "iat": int(now.timestamp()),
        "exp": int((now + timedelta(seconds=settings.access_token_ttl_seconds)).timestamp()),
        "typ": ACCESS_TOKEN_TYPE,
        "tv": token_version,
        "sid": str(session_id),
        "iss": settings.jwt_issuer,
    }
    return jwt.encode(claims, settings.jwt_secret.get_secret_value(), algorithm=JWT_ALGORITHM)


def decode_access_token(settings: Settings, token: str, now: datetime) -> AccessClaims | None:
    """The claims of a valid access token unexpired at `now`, or None for anything else (never raises)."""
    if len(token) > MAX_ACCESS_TOKEN_LENGTH:
        return None  # ours are ~250 characters; nothing longer is worth verifying (or caching)
    verified = _verify(token, settings.jwt_secret.get_secret_value(), settings.jwt_issuer)
    if verified is None:
        return None
    claims, expires_at = verified
    return claims if now.timestamp() < expires_at else None


@lru_cache(maxsize=8192)
def _verify(token: str, secret: str, issuer: str) -> tuple[AccessClaims, int] | None:
    """Signature and claims, checked once per token: a client sends the same token for its whole
    30 minutes, and verifying it is a good part of a hot read's CPU. Expiry is checked by the
    caller at every use; revocation (token_version) against the database, as always."""
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[JWT_ALGORITHM],
            issuer=issuer,
            options={
                "require": ["sub", "iat", "exp", "typ", "tv", "sid", "iss"],
                "verify_exp": False,
            },
        )
        if claims["typ"] != ACCESS_TOKEN_TYPE or type(claims["tv"]) is not int:
            return None
        if type(claims["exp"]) is not int or type(claims["iat"]) is not int:
            return None
        access = AccessClaims(
            user_id=uuid.UUID(claims["sub"]),
            token_version=claims["tv"],
            session_id=uuid.UUID(claims["sid"]),
            issued_at=claims["iat"],
        )
        return access, claims["exp"]
    except (jwt.PyJWTError, ValueError, TypeError, AttributeError):
        return None


def new_opaque_token() -> str:
    """256 bits of randomness, URL-safe."""
    return secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    """Tokens at rest are stored as their sha256: a database leak yields no usable token."""
    return hashlib.sha256(token.encode()).hexdigest()
