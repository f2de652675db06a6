"""Firebase Cloud Messaging (HTTP v1): the one module behind which FCM sits.

`FcmSender.send` makes one POST per message (a second one only after FCM rejected our access
token) and turns the answer into a `PushResult`. It never retries or sleeps: the caller, a Celery
task, owns retries (`retry_delay`), so a worker is never blocked and a test server sees exactly
what was sent.

The httpx client and the token lock are created lazily, one pair per running event loop: a
sender built at start-up works in every worker thread's own loop. Device tokens, the private key
and access tokens never reach a log line, an exception message or a `PushResult`.
"""

from __future__ import annotations

import asyncio
import json
import time
import weakref
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from goaltrack.clock import utcnow
from goaltrack.worker.registry import backoff

SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
# The JWT audience stays Google's token endpoint even when the key's token_uri points elsewhere.
TOKEN_AUDIENCE = "https://oauth2.googleapis.com/token"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
TOKEN_REFRESH_MARGIN = 300.0  # a token used near its expiry may expire in flight
QUOTA_RETRY_AFTER = 60.0
DEFAULT_TTL_SECONDS = 24 * 3600  # a goal reminder a day late is noise (FCM would keep 4 weeks)
FCM_ERROR_TYPE = "type.googleapis.com/google.firebase.fcm.v1.FcmError"


class PushOutcome(StrEnum):
    SENT = "sent"
    UNREGISTERED = "unregistered"
    SENDER_ID_MISMATCH = "sender_id_mismatch"
    INVALID_ARGUMENT = "invalid_argument"
    QUOTA_EXCEEDED = "quota_exceeded"
    UNAVAILABLE = "unavailable"
    THIRD_PARTY_AUTH_ERROR = "third_party_auth_error"


@dataclass(frozen=True, slots=True)
class PushResult:
    outcome: PushOutcome
    retry_after: float | None = None
    message_id: str | None = None
    detail: str | None = None

    @property
    def retryable(self) -> bool:
        return self.outcome in (PushOutcome.QUOTA_EXCEEDED, PushOutcome.UNAVAILABLE)

    @property
    def drop_device(self) -> bool:
        return self.outcome in (PushOutcome.UNREGISTERED, PushOutcome.SENDER_ID_MISMATCH)


@dataclass(frozen=True, slots=True)
class PushMessage:
    token: str
    title: str
    body: str
    data: dict[str, str]
    urgent: bool = False


def build_payload(
    message: PushMessage, *, ttl_seconds: int = DEFAULT_TTL_SECONDS
) -> dict[str, Any]:
    if not all(isinstance(value, str) for value in message.data.values()):
        raise TypeError("FCM data values must be strings")  # FCM would refuse the message
    urgent = message.urgent
    return {
        "message": {
            "token": message.token,
            "notification": {"title": message.title, "body": message.body},
            "data": dict(message.data),
            "android": {"priority": "high" if urgent else "normal", "ttl": f"{ttl_seconds}s"},
            "apns": {
                "headers": {
                    "apns-priority": "10" if urgent else "5",
                    "apns-expiration": str(int(time.time()) + ttl_seconds),
                },
                "payload": {"aps": {"sound": "default"} if urgent else {}},
            },
        }
    }


def retry_delay(
    result: PushResult, attempt: int, *, base: float = 10.0, cap: float = 3600.0
) -> float:
    """Seconds before the caller's retry number `attempt` (from 0): exponential backoff with
    jitter, never sooner than FCM's Retry-After (a minute after a quota error without one)."""
    quota = result.outcome is PushOutcome.QUOTA_EXCEEDED
    floor = result.retry_after or (QUOTA_RETRY_AFTER if quota else 0.0)
    # Jitter spreads the retries of a burst that failed together over the window.
    return max(backoff(attempt, base=base, cap=cap, jitter=True), floor)


class _TokenRefused(Exception):
    def __init__(self, result: PushResult) -> None:
        self.result = result


class FcmSender:
    def __init__(
        self,
        *,
        credentials_file: Path,
        project_id: str | None = None,
        base_url: str = "https://fcm.googleapis.com",
        timeout: float = 10.0,
    ) -> None:
        try:
            key = json.loads(Path(credentials_file).read_text(encoding="utf-8"))
            self._email, self._key_id = str(key["client_email"]), str(key["private_key_id"])
            self._token_uri = str(key["token_uri"])
            private_key = load_pem_private_key(key["private_key"].encode(), password=None)
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            # Name the file and the failure only: the exception text could quote key material.
            raise ValueError(
                f"unusable FCM key file {credentials_file}: {type(exc).__name__}"
            ) from None
        if key.get("type") != "service_account" or not isinstance(private_key, RSAPrivateKey):
            raise ValueError(f"{credentials_file} is not an RSA service-account key")
        if not self._token_uri.startswith(("https://", "http://")):
            raise ValueError(f"{credentials_file}: token_uri is not an http(s) URL")
        self._private_key = private_key
        self.project_id: str = project_id or key.get("project_id") or ""
        if not self.project_id:
            raise ValueError(f"{credentials_file} names no project_id; pass project_id")
        self._send_url = f"{base_url.rstrip('/')}/v1/projects/{self.project_id}/messages:send"
        self._timeout = httpx.Timeout(timeout)
        self._token: str | None = None
        self._token_valid_until = 0.0
        self._per_loop: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, tuple[httpx.AsyncClient, asyncio.Lock]
        ] = weakref.WeakKeyDictionary()

    def _http(self) -> tuple[httpx.AsyncClient, asyncio.Lock]:
        loop = asyncio.get_running_loop()
        if loop not in self._per_loop:
            self._per_loop[loop] = (httpx.AsyncClient(timeout=self._timeout), asyncio.Lock())
        return self._per_loop[loop]

    async def aclose(self) -> None:
        """Close the current event loop's connections."""
        pair = self._per_loop.pop(asyncio.get_running_loop(), None)
        if pair is not None:
            await pair[0].aclose()

    async def send(self, message: PushMessage) -> PushResult:
        body = build_payload(message)
        try:
            token = await self._access_token()
            response = await self._post(body, token)
            if response.status_code == 401 and _fcm_error(response)[0] is None:
                # A bare 401 is about our access token (revoked, expired early): not the device's.
                response = await self._post(body, await self._access_token(stale=token))
        except _TokenRefused as refused:
            return refused.result
        except httpx.TransportError as exc:  # refused, reset, timed out
            return PushResult(PushOutcome.UNAVAILABLE, detail=type(exc).__name__)
        return _classify(response)

    async def _post(self, body: dict[str, Any], token: str) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"}
        return await self._http()[0].post(self._send_url, json=body, headers=headers)

    async def _access_token(self, stale: str | None = None) -> str:
        client, lock = self._http()
        async with lock:  # concurrent sends share one fetch
            # Expiry is read on the injectable clock (a test moves it instead of sleeping); the
            # JWT's own times are for Google, which checks them against its real clock.
            if self._token not in (None, stale) and _seconds_now() < self._token_valid_until:
                return self._token
            started, now = _seconds_now(), int(time.time())
            claims = {
                "iss": self._email,
                "scope": SCOPE,
                "aud": TOKEN_AUDIENCE,
                "iat": now,
                "exp": now + 3600,
            }
            assertion = jwt.encode(
                claims, self._private_key, algorithm="RS256", headers={"kid": self._key_id}
            )
            response = await client.post(
                self._token_uri, data={"grant_type": JWT_BEARER, "assertion": assertion}
            )
            answer = _json(response)
            token, lifetime = answer.get("access_token"), answer.get("expires_in", 3600)
            if not response.is_success or not isinstance(token, str):
                # A refused grant (revoked key, skewed clock) is a configuration problem.
                busy = response.status_code >= 500 or response.status_code == 429
                outcome = PushOutcome.UNAVAILABLE if busy else PushOutcome.THIRD_PARTY_AUTH_ERROR
                detail = f"OAuth token endpoint: {response.status_code} {answer.get('error', '')}"
                raise _TokenRefused(PushResult(outcome, detail=detail.strip()))
            lifetime = lifetime if isinstance(lifetime, int | float) else 3600
            self._token, self._token_valid_until = token, started + lifetime - TOKEN_REFRESH_MARGIN
            return token


def _seconds_now() -> float:
    return utcnow().timestamp()


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        answer = response.json()
    except ValueError:
        return {}
    return answer if isinstance(answer, dict) else {}


def _fcm_error(response: httpx.Response) -> tuple[str | None, str | None]:
    """(details[].errorCode of the FcmError, error.message)."""
    error = _json(response).get("error")
    error = error if isinstance(error, dict) else {}
    details = error.get("details")
    codes = [
        d.get("errorCode")
        for d in (details if isinstance(details, list) else [])
        if isinstance(d, dict) and d.get("@type") == FCM_ERROR_TYPE
    ]
    code = next((c for c in codes if isinstance(c, str)), None)
    message = error.get("message")
    return code, message if isinstance(message, str) else None


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After", "").strip()
    if value.isdigit():
        return float(value)
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - _seconds_now())
    except (TypeError, ValueError, IndexError):
        return None


_BY_ERROR_CODE = {o.name: o for o in PushOutcome if o != PushOutcome.SENT}
_BY_ERROR_CODE["INTERNAL"] = PushOutcome.UNAVAILABLE
# Without an FcmError detail the status decides; 401 here already failed with a fresh token, and
# 401/403 then mean our credentials or project are wrong, which no device is to blame for.
_BY_STATUS = {
    400: PushOutcome.INVALID_ARGUMENT,
    401: PushOutcome.THIRD_PARTY_AUTH_ERROR,
    403: PushOutcome.THIRD_PARTY_AUTH_ERROR,
    404: PushOutcome.UNREGISTERED,
    429: PushOutcome.QUOTA_EXCEEDED,
}


def _classify(response: httpx.Response) -> PushResult:
    status = response.status_code
    if response.is_success:
        name = _json(response).get("name")
        return PushResult(PushOutcome.SENT, message_id=name if isinstance(name, str) else None)
    code, message = _fcm_error(response)
    outcome = _BY_ERROR_CODE.get(code or "") or _BY_STATUS.get(status)
    if outcome is None:
        outcome = PushOutcome.UNAVAILABLE if status >= 500 else PushOutcome.INVALID_ARGUMENT
    retry_after = (
        _retry_after(response)
        if outcome in (PushOutcome.QUOTA_EXCEEDED, PushOutcome.UNAVAILABLE)
        else None
    )
    if outcome is PushOutcome.QUOTA_EXCEEDED and retry_after is None:
        retry_after = QUOTA_RETRY_AFTER
    detail = f"{status} {code or ''}: {message or ''}"[:300]
    return PushResult(outcome, retry_after=retry_after, detail=detail)
