"""Fake Sign in with Google / Apple servers: each publishes a JWKS (GET) of RSA keys the test
holds and mints ID tokens with them, as the provider's SDK hands them to the app; keys can be
rotated in and tokens forged. Apple's also speaks its token endpoints: `/auth/token` exchanges an
authorization code it issued for a refresh token, `/auth/revoke` revokes one, both checking our
client secret (an ES256 JWT signed with the team key it wrote, `write_key`); revocations can be
made to fail. Every request is counted. Runs on fakes.server.FakeHttpServer (a thread of its own).
"""

from __future__ import annotations

import json
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import RSAAlgorithm

from fakes.server import Answer, FakeHttpServer
from goaltrack.clock import utcnow

CLIENT_SECRET_AUDIENCE = "https://appleid.apple.com"
# The client ids the test app is configured with (its Android and iOS apps; Apple's app and web).
GOOGLE_CLIENT_IDS = (
    "100-android.apps.googleusercontent.com",
    "100-ios.apps.googleusercontent.com",
)
APPLE_CLIENT_IDS = ("com.goaltrack.app", "com.goaltrack.web")


def _rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


class FakeIdentityProvider(FakeHttpServer):
    """`jwks_requests` counts the GETs of the key set. `reset()` publishes the first key alone
    again (a key set the app may have cached keeps verifying it)."""

    def __init__(self, name: str, issuer: str, jwks_path: str) -> None:
        super().__init__()
        self.name = name
        self.issuer = issuer
        self.jwks_path = jwks_path
        self.first_kid = f"{name}-key-1"
        self._keys: dict[str, rsa.RSAPrivateKey] = {self.first_kid: _rsa_key()}
        self._published: set[str] = {self.first_kid}
        self.max_age: int | None = 3600
        self.jwks_requests = 0

    @property
    def jwks_url(self) -> str:
        return f"{self.url}{self.jwks_path}"

    # -- keys -----------------------------------------------------------------------------

    def new_key(self, *, publish: bool = True) -> str:
        """A new key (a rotation when published); its kid."""
        kid = f"{self.name}-key-{uuid.uuid4().hex[:8]}"
        with self._lock:
            self._keys[kid] = _rsa_key()
            if publish:
                self._published.add(kid)
        return kid

    def publish(self, kid: str) -> None:
        with self._lock:
            self._published.add(kid)

    def reset(self) -> None:
        with self._lock:
            self._published = {self.first_kid}
            self.max_age = 3600
            self.jwks_requests = 0

    # -- tokens ---------------------------------------------------------------------------

    def mint(
        self,
        *,
        sub: str,
        aud: str | list[str],
        email: str | None = None,
        email_verified: Any = True,
        nonce: str | None = None,
        kid: str | None = None,
        issuer: str | None = None,
        issued_at: datetime | None = None,
        lifetime: timedelta = timedelta(hours=1),
        forged: bool = False,
        **claims: Any,
    ) -> str:
        """An RS256 ID token as the provider signs it (by default: now on the app's clock, its
        first key). `forged`: signed with another key under the same kid (a bad signature)."""
        kid = kid or self.first_kid
        issued_at = issued_at or utcnow()
        body: dict[str, Any] = {
            "iss": issuer or self.issuer,
            "sub": sub,
            "aud": aud,
            "iat": int(issued_at.timestamp()),
            "exp": int((issued_at + lifetime).timestamp()),
            **claims,
        }
        if email is not None:
            body["email"] = email
            if email_verified is not None:  # None: the claim left out
                body["email_verified"] = email_verified
        if nonce is not None:
            body["nonce"] = nonce
        with self._lock:
            key = _rsa_key() if forged else self._keys[kid]
        return jwt.encode(body, key, algorithm="RS256", headers={"kid": kid})

    # -- the server side (handler threads) --------------------------------------------------

    def handle_get(self, path: str, headers: Any) -> Answer:
        if path != self.jwks_path:
            return 404, b"", {}
        with self._lock:
            self.jwks_requests += 1
            keys = [
                {
                    **RSAAlgorithm.to_jwk(self._keys[kid].public_key(), as_dict=True),
                    "kid": kid,
                    "alg": "RS256",
                    "use": "sig",
                }
                for kid in sorted(self._published)
            ]
            max_age = self.max_age
        extra = {"Content-Type": "application/json"}
        if max_age is not None:
            extra["Cache-Control"] = f"public, max-age={max_age}, must-revalidate, no-transform"
        return 200, json.dumps({"keys": keys}).encode(), extra

    def handle(self, path: str, headers: Any, body: bytes) -> Answer:
        return 404, b"", {}


@dataclass
class Revocation:
    token: str
    client_id: str
    status: int


class FakeApple(FakeIdentityProvider):
    """Apple: the JWKS at /auth/keys, and the token and revocation endpoints. `refresh_tokens`
    maps each refresh token issued to (sub, client_id); `revocations` records every revocation
    request, in order, with the status answered."""

    team_id = "TEAMFAKE01"
    key_id = "KEYFAKE001"

    def __init__(self) -> None:
        super().__init__("apple", "https://appleid.apple.com", "/auth/keys")
        self._team_key = ec.generate_private_key(ec.SECP256R1())
        self._codes: dict[str, tuple[str, str]] = {}
        self.refresh_tokens: dict[str, tuple[str, str]] = {}
        self.revocations: list[Revocation] = []
        self.token_requests = 0
        self._revoke_failures = 0

    def write_key(self, path: Path) -> Path:
        """The team's .p8 key file (PKCS#8 PEM), as Apple's developer site hands it out."""
        pem = self._team_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        path.write_bytes(pem)
        path.chmod(0o600)
        return path

    def issue_code(self, *, sub: str, client_id: str) -> str:
        """An authorization code, as Apple gives the app beside the ID token."""
        code = "c" + secrets.token_hex(16) + ".0.fake"
        with self._lock:
            self._codes[code] = (sub, client_id)
        return code

    def fail_revocations(self, times: int) -> None:
        """The next `times` revocation requests answer 503."""
        with self._lock:
            self._revoke_failures += times

    def reset(self) -> None:
        super().reset()
        with self._lock:
            self._codes.clear()
            self.refresh_tokens.clear()
            self.revocations.clear()
            self.token_requests = 0
            self._revoke_failures = 0

    def revoked(self) -> list[str]:
        """The tokens revoked (answered 200), in order."""
        with self._lock:
            return [r.token for r in self.revocations if r.status == 200]

    # -- the server side (handler threads) --------------------------------------------------

    def handle(self, path: str, headers: Any, body: bytes) -> Answer:
        form = {k: v[0] for k, v in parse_qs(body.decode("ascii", "replace")).items()}
        if path == "/auth/token":
            status, answer = self._token(form)
        elif path == "/auth/revoke":
            status, answer = self._revoke(form)
        else:
            return 404, b"", {}
        data = json.dumps(answer).encode() if answer is not None else b""
        return status, data, {"Content-Type": "application/json"} if data else {}

    def _client_refused(self, form: dict[str, str]) -> bool:
        try:
            header = jwt.get_unverified_header(form.get("client_secret", ""))
            jwt.decode(
                form["client_secret"],
                self._team_key.public_key(),
                algorithms=["ES256"],
                audience=CLIENT_SECRET_AUDIENCE,
                issuer=self.team_id,
                subject=form.get("client_id"),
                options={"require": ["iss", "iat", "exp", "aud", "sub"]},
            )
        except (jwt.PyJWTError, KeyError):
            return True
        return header.get("kid") != self.key_id

    def _token(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        with self._lock:
            self.token_requests += 1
        if self._client_refused(form):
            return 400, {"error": "invalid_client"}
        if form.get("grant_type") != "authorization_code":
            return 400, {"error": "unsupported_grant_type"}
        with self._lock:
            issued = self._codes.pop(form.get("code", ""), None)  # single use
        if issued is None or issued[1] != form.get("client_id"):
            return 400, {"error": "invalid_grant"}
        sub, client_id = issued
        refresh_token = "r" + secrets.token_hex(16) + ".0.fake"
        with self._lock:
            self.refresh_tokens[refresh_token] = (sub, client_id)
        return 200, {
            "access_token": "a" + secrets.token_hex(16),
            "token_type": "Bearer",
            "expires_in": 3600,
            "refresh_token": refresh_token,
            "id_token": self.mint(sub=sub, aud=client_id),
        }

    def _revoke(self, form: dict[str, str]) -> tuple[int, dict[str, Any] | None]:
        token, client_id = form.get("token", ""), form.get("client_id", "")
        with self._lock:
            failing = self._revoke_failures > 0
            self._revoke_failures -= failing
        if failing:
            status, answer = 503, None
        elif self._client_refused(form):
            status, answer = 400, {"error": "invalid_client"}
        elif form.get("token_type_hint") not in ("refresh_token", "access_token"):
            status, answer = 400, {"error": "invalid_request"}
        else:
            status, answer = 200, None
        with self._lock:
            self.revocations.append(Revocation(token, client_id, status))
        return status, answer
