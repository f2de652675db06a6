"""Sign in with Google and Apple: their ID tokens, verified against the provider's published keys.

An ID token is an RS256 JWT signed with a key of the provider's JWKS. It is accepted when its
signature, issuer, audience (one of our client ids), expiry and issue time (on the injectable
clock, with a small leeway) and, when the app sent one, nonce check out. Identity is
(`iss`, `sub`); the e-mail is what the provider says of the person, with whether it vouches for it.

The keys come through PyJWT's `PyJWKClient`: the set is cached as long as the provider's
`Cache-Control: max-age` says; a `kid` not in it makes one refetch (keys rotate), at most once a
`JWKS_REFETCH_INTERVAL` whatever the tokens ask for, so that forged `kid`s cannot make us hammer
the provider. PyJWKClient's own cooldown also counts the first fetch, which would refuse a key
rotated in the minute after it: the refetch is decided here instead, on our clock.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

import httpx
import jwt
from anyio import to_thread
from jwt import PyJWK, PyJWKClient

from goaltrack.auth.errors import InvalidIdToken, ProviderNotConfigured, ProviderUnavailable
from goaltrack.clock import utcnow
from goaltrack.config import Settings

logger = logging.getLogger(__name__)

ALGORITHM = "RS256"
JWKS_REFETCH_INTERVAL = timedelta(minutes=1)
JWKS_TIMEOUT_SECONDS = 5.0
# Without a max-age the set is kept this long; a max-age is honoured within the bounds.
JWKS_DEFAULT_LIFESPAN = 3600
JWKS_LIFESPAN_BOUNDS = (60, 24 * 3600)
CLOCK_LEEWAY = timedelta(seconds=60)
MAX_SUBJECT_LENGTH = 255
MAX_EMAIL_LENGTH = 254
PROVIDER_RETRY_AFTER_SECONDS = 30


class Provider(StrEnum):
    google = "google"
    apple = "apple"


# Each provider's issuers, the first being the one identities are stored under (Google signs with
# both spellings, and they name the same account).
ISSUERS: dict[Provider, tuple[str, ...]] = {
    Provider.google: ("https://accounts.google.com", "accounts.google.com"),
    Provider.apple: ("https://appleid.apple.com",),
}


@dataclass(frozen=True, slots=True)
class VerifiedIdToken:
    provider: Provider
    issuer: str  # the canonical spelling (ISSUERS[provider][0])
    subject: str
    audience: str  # the client id the token was issued to
    email: str | None  # lower-cased; None when absent or not an address
    email_verified: bool


def provider_of(token: str) -> Provider | None:
    """The provider whose issuer the token names (unverified: `verify` checks it)."""
    try:
        issuer = jwt.decode(token, options={"verify_signature": False}).get("iss")
    except jwt.PyJWTError:
        return None
    return next((p for p, issuers in ISSUERS.items() if issuer in issuers), None)


class ProviderKeys:
    """One provider's JWKS, fetched by PyJWKClient and cached; thread-safe (the fetch blocks, so
    lookups run in a worker thread)."""

    def __init__(self, jwks_url: str) -> None:
        self._client = _CachingJwkClient(jwks_url)
        self._lock = threading.Lock()
        self._last_refetch: datetime | None = None

    async def signing_key(self, kid: str) -> PyJWK | None:
        return await to_thread.run_sync(self._signing_key, kid)

    def _signing_key(self, kid: str) -> PyJWK | None:
        # One lookup at a time: concurrent sign-ins on a cold or stale cache share one fetch.
        with self._lock:
            key = self._client.match_kid(self._signing_keys(refresh=False), kid)
            if key is not None:
                return key
            now = utcnow()
            if self._last_refetch is not None and now - self._last_refetch < JWKS_REFETCH_INTERVAL:
                return None  # refetched a moment ago: the kid is not the provider's
            self._last_refetch = now
            return self._client.match_kid(self._signing_keys(refresh=True), kid)

    def _signing_keys(self, *, refresh: bool) -> list[PyJWK]:
        try:
            return self._client.get_signing_keys(refresh=refresh)
        except jwt.PyJWKClientConnectionError as exc:
            if (stale := self._keep_stale_keys()) is not None:
                logger.warning("JWKS of %s unreachable; the cached keys are used", self._client.uri)
                return stale
            failure: Exception = exc
        except jwt.PyJWTError as exc:  # no usable key in what the provider published
            logger.error("unusable JWKS from %s: %s", self._client.uri, type(exc).__name__)
            failure = exc
        retry_after = {"Retry-After": str(PROVIDER_RETRY_AFTER_SECONDS)}
        raise ProviderUnavailable(headers=retry_after) from failure

    def _keep_stale_keys(self) -> list[PyJWK] | None:
        """The provider is down: the keys it published last still verify its tokens. They are
        kept for the shortest lifespan, so that sign-ins do not each wait for a timeout."""
        cache = self._client.jwk_set_cache
        cached = cache.jwk_set_with_timestamp if cache is not None else None
        if cache is None or cached is None:
            return None
        cache.lifespan = JWKS_LIFESPAN_BOUNDS[0]
        cache.put(cached.get_jwk_set())
        return cached.get_jwk_set().keys


class _CachingJwkClient(PyJWKClient):
    """PyJWKClient whose fetch keeps the set for the provider's `Cache-Control: max-age`."""

    def __init__(self, uri: str) -> None:
        super().__init__(
            uri, lifespan=JWKS_DEFAULT_LIFESPAN, timeout=JWKS_TIMEOUT_SECONDS, cooldown_duration=0
        )

    def fetch_data(self) -> Any:
        try:
            # No redirects followed, as PyJWKClient's own fetch.
            response = httpx.get(self.uri, headers=self.headers, timeout=self.timeout)
            response.raise_for_status()
            payload = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise jwt.PyJWKClientConnectionError(
                f"JWKS fetch failed: {type(exc).__name__}"
            ) from exc
        if not isinstance(payload, dict):
            raise jwt.PyJWKClientError("The JWKS endpoint did not return a JSON object")
        if self.jwk_set_cache is not None:
            self.jwk_set_cache.lifespan = jwks_lifespan(response.headers.get("cache-control", ""))
        return payload


def jwks_lifespan(cache_control: str) -> int:
    """How long to keep a key set answered with this `Cache-Control`, in seconds."""
    for directive in cache_control.split(","):
        name, _, value = directive.strip().partition("=")
        if name.lower() == "max-age" and value.strip().isdigit():
            low, high = JWKS_LIFESPAN_BOUNDS
            return min(max(int(value), low), high)
    return JWKS_DEFAULT_LIFESPAN


class IdTokenVerifier:
    """The ID tokens of every configured provider. Created once per process (app.state)."""

    def __init__(self, settings: Settings) -> None:
        self._audiences = {
            Provider.google: tuple(settings.oauth_google_client_id_list),
            Provider.apple: tuple(settings.oauth_apple_client_id_list),
        }
        self._keys = {
            Provider.google: ProviderKeys(settings.oauth_google_jwks_url),
            Provider.apple: ProviderKeys(settings.oauth_apple_jwks_url),
        }

    def configured(self, provider: Provider) -> bool:
        return bool(self._audiences[provider])

    async def verify(
        self, provider: Provider, token: str, *, nonce: str | None, now: datetime
    ) -> VerifiedIdToken:
        """The token's identity, or InvalidIdToken whatever is wrong with it (the reason is
        logged, never the token)."""
        audiences = self._audiences[provider]
        if not audiences:
            raise ProviderNotConfigured
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise _refused(provider, "malformed") from exc
        kid = header.get("kid")
        if header.get("alg") != ALGORITHM or not isinstance(kid, str) or not kid:
            raise _refused(provider, "not RS256 with a kid")
        key = await self._keys[provider].signing_key(kid)
        if key is None:
            raise _refused(provider, "unknown kid")
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                audience=audiences,
                issuer=ISSUERS[provider],
                # Expiry and issue time against our clock, below.
                options={
                    "require": ["iss", "sub", "aud", "exp", "iat"],
                    "verify_exp": False,
                    "verify_iat": False,
                    "verify_nbf": False,
                },
            )
        except jwt.PyJWTError as exc:
            raise _refused(provider, type(exc).__name__) from exc
        return _identity(provider, claims, audiences=audiences, nonce=nonce, now=now)


def _identity(
    provider: Provider,
    claims: dict[str, Any],
    *,
    audiences: tuple[str, ...],
    nonce: str | None,
    now: datetime,
) -> VerifiedIdToken:
    expires, issued = claims["exp"], claims["iat"]
    if not isinstance(expires, int | float) or not isinstance(issued, int | float):
        raise _refused(provider, "exp or iat not a number")
    stamp, leeway = now.timestamp(), CLOCK_LEEWAY.total_seconds()
    if stamp >= expires + leeway:
        raise _refused(provider, "expired")
    if issued > stamp + leeway:
        raise _refused(provider, "issued in the future")
    if nonce is not None and not _nonce_matches(provider, claims.get("nonce"), nonce):
        raise _refused(provider, "nonce")
    subject = claims["sub"]
    if not isinstance(subject, str) or not 0 < len(subject) <= MAX_SUBJECT_LENGTH:
        raise _refused(provider, "sub")
    audience = claims["aud"]
    if isinstance(audience, list):  # several audiences: the one that is ours (decode checked it)
        audience = next(a for a in audience if a in audiences)
    email = claims.get("email")
    email = email.lower() if isinstance(email, str) and _looks_like_email(email) else None
    return VerifiedIdToken(
        provider=provider,
        issuer=ISSUERS[provider][0],
        subject=subject,
        audience=str(audience),
        email=email,
        # Apple sends it as the string "true".
        email_verified=email is not None and claims.get("email_verified") in (True, "true"),
    )


def _nonce_matches(provider: Provider, claimed: Any, given: str) -> bool:
    """Apple's token carries the SHA-256 (hex) of the app's raw nonce, which the app sends us;
    Google's carries the nonce as the app passed it."""
    if not isinstance(claimed, str):
        return False
    expected = hashlib.sha256(given.encode()).hexdigest() if provider is Provider.apple else given
    return hmac.compare_digest(claimed.encode(), expected.encode())


def _looks_like_email(value: str) -> bool:
    local, at, domain = value.rpartition("@")
    return bool(at and local and "." in domain) and len(value) <= MAX_EMAIL_LENGTH


def _refused(provider: Provider, reason: str) -> InvalidIdToken:
    logger.info("%s ID token refused: %s", provider.value, reason)
    return InvalidIdToken()
