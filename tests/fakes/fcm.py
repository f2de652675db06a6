"""A fake Firebase Cloud Messaging server speaking the HTTP v1 wire protocol.

It issues OAuth tokens for a JWT-bearer grant signed with the service-account key it wrote
(`write_credentials`), checks the Bearer token and the message on every send, records what it
received, and answers either like FCM on success or with a scripted FCM error. It runs a stdlib
`ThreadingHTTPServer` in a daemon thread, so it works whatever event loop (or none) the code under
test uses: the API, a Celery worker thread, a CLI (fakes.server.FakeHttpServer).
"""

from __future__ import annotations

import json
import re
import secrets
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from fakes.server import Answer, FakeHttpServer

SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
TOKEN_AUDIENCE = "https://oauth2.googleapis.com/token"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
FCM_ERROR_TYPE = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
MAX_PAYLOAD_BYTES = 4096

# errorCode -> (HTTP status, google.rpc status), as FCM answers them.
ERRORS: dict[str, tuple[int, str]] = {
    "UNREGISTERED": (404, "NOT_FOUND"),
    "INVALID_ARGUMENT": (400, "INVALID_ARGUMENT"),
    "SENDER_ID_MISMATCH": (403, "PERMISSION_DENIED"),
    "QUOTA_EXCEEDED": (429, "RESOURCE_EXHAUSTED"),
    "UNAVAILABLE": (503, "UNAVAILABLE"),
    "INTERNAL": (500, "INTERNAL"),
    "THIRD_PARTY_AUTH_ERROR": (401, "UNAUTHENTICATED"),
}
MESSAGE_FIELDS = {"name", "token", "topic", "condition", "notification", "data", "android"}
MESSAGE_FIELDS |= {"apns", "webpush", "fcm_options"}
_SEND_PATH = re.compile(r"^/v1/projects/([^/]+)/messages:send$")


@dataclass(frozen=True)
class _Scripted:
    status: int
    error_code: str | None  # None: a bare answer without body
    token: str | None
    retry_after: int | str | None


class FakeFcm(FakeHttpServer):
    """`messages` holds one record per send request, in arrival order: `{"message": <the parsed
    message object>, "status": <HTTP status answered>, "name": <message name if 200>,
    "error_code": <scripted errorCode or None>}`. `reset()` keeps issued access tokens valid, so
    a long-lived sender's cached token survives from test to test."""

    project_id = "goaltrack-test"

    name = "fake-fcm"

    def __init__(self) -> None:
        super().__init__()
        self._key: rsa.RSAPrivateKey | None = None
        self.key_id = secrets.token_hex(20)
        self.client_email = f"firebase-adminsdk-test@{self.project_id}.iam.gserviceaccount.com"
        self.token_lifetime = 3600  # the `expires_in` of the tokens issued from now on
        self._issued: set[str] = set()
        self._script: deque[_Scripted] = deque()
        self._always: _Scripted | None = None
        self.messages: list[dict[str, Any]] = []
        self.requests = 0
        self.token_requests = 0

    def handle(self, path: str, headers: Any, body: bytes) -> Answer:
        if path == "/token":
            status, data, extra = self._token(body)
        elif match := _SEND_PATH.match(path):
            status, data, extra = self._send(match[1], headers, body)
        else:
            status, data, extra = 404, b"", {}
        if data:
            extra = {**extra, "Content-Type": "application/json; charset=UTF-8"}
        return status, data, extra

    def write_credentials(self, path: Path) -> Path:
        """A service-account key file whose token_uri is this server."""
        with self._lock:
            if self._key is None:
                self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            pem = self._key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ).decode()
        key = {
            "type": "service_account",
            "project_id": self.project_id,
            "private_key_id": self.key_id,
            "private_key": pem,
            "client_email": self.client_email,
            "client_id": "100000000000000000000",
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": f"{self.url}/token",
            "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
            "client_x509_cert_url": "https://www.googleapis.com/robot/v1/metadata/x509/test",
            "universe_domain": "googleapis.com",
        }
        path.write_text(json.dumps(key, indent=2), encoding="utf-8")
        path.chmod(0o600)
        return path

    # -- scripting ---------------------------------------------------------------------------

    def fail_next(
        self,
        error_code: str,
        *,
        times: int = 1,
        token: str | None = None,
        retry_after: int | str | None = None,
    ) -> None:
        """The next `times` sends (to `token` only, if given) answer FCM error `error_code`."""
        status = ERRORS[error_code][0]
        with self._lock:
            self._script.extend([_Scripted(status, error_code, token, retry_after)] * times)

    def fail_next_bare(
        self, status: int, *, times: int = 1, retry_after: int | str | None = None
    ) -> None:
        """The next `times` sends answer `status` with an empty body (a proxy, an outage)."""
        with self._lock:
            self._script.extend([_Scripted(status, None, None, retry_after)] * times)

    def fail_always(self, error_code: str | None) -> None:
        """Every send answers `error_code` (after the queued ones) until `fail_always(None)`."""
        with self._lock:
            self._always = (
                None
                if error_code is None
                else _Scripted(ERRORS[error_code][0], error_code, None, None)
            )

    def revoke_tokens(self) -> None:
        """Access tokens issued so far are refused with a bare 401, as after a key rotation."""
        with self._lock:
            self._issued.clear()

    def reset(self) -> None:
        with self._lock:
            self._script.clear()
            self._always = None
            self.messages.clear()
            self.requests = 0
            self.token_requests = 0
            self.token_lifetime = 3600

    # -- inspection --------------------------------------------------------------------------

    @property
    def delivered(self) -> list[dict[str, Any]]:
        """The records of the sends answered 200."""
        with self._lock:
            return [r for r in self.messages if r["status"] == 200]

    def messages_to(self, token: str) -> list[dict[str, Any]]:
        with self._lock:
            return [r for r in self.messages if r["message"].get("token") == token]

    async def wait_for(self, count: int, timeout: float = 15) -> list[dict[str, Any]]:
        """At least `count` delivered messages (records: message, status, name, error_code)."""
        return await self._wait_for(
            lambda: len(self.delivered) >= count, lambda: self.delivered, timeout
        )

    # -- the server side (handler threads) --------------------------------------------------

    def _token(self, raw: bytes) -> tuple[int, bytes, dict[str, str]]:
        form = {k: v[0] for k, v in parse_qs(raw.decode("ascii", "replace")).items()}
        with self._lock:
            self.token_requests += 1
            key = self._key
        if form.get("grant_type") != JWT_BEARER or "assertion" not in form or key is None:
            return _oauth_error("unsupported_grant_type", "expected a JWT-bearer grant")
        try:
            header = jwt.get_unverified_header(form["assertion"])
            claims = jwt.decode(
                form["assertion"],
                key.public_key(),
                algorithms=["RS256"],
                audience=TOKEN_AUDIENCE,
                issuer=self.client_email,
                options={"require": ["iss", "aud", "iat", "exp"]},
            )
        except jwt.PyJWTError as exc:
            return _oauth_error("invalid_grant", f"invalid JWT: {exc}")
        if header.get("kid") != self.key_id:
            return _oauth_error("invalid_grant", "kid is not the key's private_key_id")
        if SCOPE not in str(claims.get("scope", "")).split():
            return _oauth_error("invalid_scope", f"scope must include {SCOPE}")
        if not 0 < claims["exp"] - claims["iat"] <= 3600:
            return _oauth_error("invalid_grant", "exp must be at most 1 hour after iat")
        token = "ya29.fake-" + secrets.token_urlsafe(32)
        with self._lock:
            self._issued.add(token)
            lifetime = self.token_lifetime
        answer = {"access_token": token, "expires_in": lifetime, "token_type": "Bearer"}
        return 200, json.dumps(answer).encode(), {}

    def _send(self, project: str, headers: Any, raw: bytes) -> tuple[int, bytes, dict[str, str]]:
        bearer = str(headers.get("Authorization", "")).removeprefix("Bearer ")
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        message = body.get("message") if isinstance(body, dict) else None
        message = message if isinstance(message, dict) else {}
        record: dict[str, Any] = {"message": message, "status": 0, "name": None, "error_code": None}
        with self._lock:
            self.requests += 1
            number = self.requests
            self.messages.append(record)
            authorized = bearer in self._issued
        scripted: _Scripted | None = None
        answer: dict[str, Any] | None
        if not authorized:
            # What Google answers for a missing, expired or revoked access token: no FcmError.
            status, answer, extra = _error(
                401, "UNAUTHENTICATED", "Request had invalid authentication credentials."
            )
        elif project != self.project_id:
            status, answer, extra = _error(
                403, "PERMISSION_DENIED", f"Permission denied on project {project}."
            )
        elif problem := _validate(body):
            field, description = problem
            status, answer, extra = _error(
                400, "INVALID_ARGUMENT", description, error_code="INVALID_ARGUMENT", field=field
            )
        else:
            with self._lock:
                scripted = self._take_script(message.get("token"))
            if scripted is not None:
                status, answer, extra = _scripted_answer(scripted)
            else:
                status, extra = 200, {}
                answer = {"name": f"projects/{project}/messages/0:{number}%fake"}
        with self._lock:
            record["status"] = status
            record["name"] = answer.get("name") if status == 200 and answer else None
            record["error_code"] = scripted.error_code if scripted else None
        return status, json.dumps(answer).encode() if answer is not None else b"", extra

    def _take_script(self, token: Any) -> _Scripted | None:
        for i, entry in enumerate(self._script):
            if entry.token is None or entry.token == token:
                del self._script[i]
                return entry
        return self._always


def _oauth_error(error: str, description: str) -> tuple[int, bytes, dict[str, str]]:
    return 400, json.dumps({"error": error, "error_description": description}).encode(), {}


def _error(
    status: int,
    rpc_status: str,
    message: str,
    *,
    error_code: str | None = None,
    field: str | None = None,
) -> tuple[int, dict[str, Any], dict[str, str]]:
    details: list[dict[str, Any]] = []
    if error_code is not None:
        details.append({"@type": FCM_ERROR_TYPE, "errorCode": error_code})
    if field is not None:
        details.append(
            {
                "@type": "type.googleapis.com/google.rpc.BadRequest",
                "fieldViolations": [{"field": field, "description": message}],
            }
        )
    error: dict[str, Any] = {"code": status, "message": message, "status": rpc_status}
    if details:
        error["details"] = details
    return status, {"error": error}, {}


def _scripted_answer(
    scripted: _Scripted,
) -> tuple[int, dict[str, Any] | None, dict[str, str]]:
    headers = {} if scripted.retry_after is None else {"Retry-After": str(scripted.retry_after)}
    if scripted.error_code is None:
        return scripted.status, None, headers
    status, rpc_status = ERRORS[scripted.error_code]
    _, answer, _ = _error(
        status, rpc_status, f"Scripted {scripted.error_code}.", error_code=scripted.error_code
    )
    return status, answer, headers


def _validate(body: Any) -> tuple[str, str] | None:
    """(field, description) of the first problem FCM would reject, or None."""
    if not isinstance(body, dict) or not isinstance(body.get("message"), dict):
        return "message", "Request body must be a JSON object with a message."
    message = body["message"]
    if unknown := set(message) - MESSAGE_FIELDS:
        return "message", f"Unknown name {sorted(unknown)[0]!r}: Cannot find field."
    if not isinstance(message.get("token"), str) or not message["token"]:
        return "message.token", "The registration token is not a valid FCM registration token"
    notification = message.get("notification")
    if not isinstance(notification, dict) or not all(
        isinstance(notification.get(f), str) for f in ("title", "body")
    ):
        return "message.notification", "notification.title and notification.body are required."
    data = message.get("data", {})
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        return "message.data", "Invalid value: data values must be strings."
    android = message.get("android", {})
    if not isinstance(android, dict):
        return "message.android", "Invalid value at 'message.android'."
    if str(android.get("priority", "normal")).lower() not in ("normal", "high"):
        return "message.android.priority", "Invalid value at 'message.android.priority'."
    if "ttl" in android and not re.fullmatch(r"\d+(\.\d{1,9})?s", str(android["ttl"])):
        return "message.android.ttl", "Invalid value at 'message.android.ttl'."
    apns = message.get("apns", {})
    apns_headers = apns.get("headers", {}) if isinstance(apns, dict) else None
    if not isinstance(apns_headers, dict) or not all(
        isinstance(v, str) for v in apns_headers.values()
    ):
        return "message.apns.headers", "Invalid value: APNs header values must be strings."
    if apns_headers.get("apns-priority", "10") not in ("5", "10"):
        return "message.apns.headers", "apns-priority must be 5 or 10."
    payload = {"notification": notification, "data": data}
    size = len(json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode())
    if size > MAX_PAYLOAD_BYTES:
        return "message", f"Message is too big: {size} bytes (limit {MAX_PAYLOAD_BYTES})."
    return None
