"""Typed settings read from the environment (and `.env`); invalid configuration fails at start-up."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Annotated, ClassVar, Literal

from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PLACEHOLDER_SECRETS = {
    "",
    "changeme",
    "change-me",
    "secret",
    "development-only-secret",
    "replace-with-at-least-32-random-bytes",
}
DEVELOPMENT_S3_SECRET = "goaltrack-secret"
DEVELOPMENT_JWT_SECRET = "development-only-secret"
# "aaaa...", "abababab..." are not random: a production secret has at least this many.
MIN_SECRET_DISTINCT_CHARACTERS = 8
# A client id of a sign-in provider (Google's `...apps.googleusercontent.com`, an Apple bundle or
# services id): visible ASCII.
OAUTH_CLIENT_ID = re.compile(r"[!-~]{1,255}")
# An exact browser origin: scheme, host, optional port (CORS compares the Origin header as text).
CORS_ORIGIN = re.compile(r"https?://([A-Za-z0-9.\-]+|\[[0-9A-Fa-f:.]+\])(:[0-9]{1,5})?")


class PoolMode(StrEnum):
    """What sits between the app and PostgreSQL: `session` (PostgreSQL itself, or PgBouncer in
    session mode) or `transaction` (PgBouncer's pool_mode=transaction, where consecutive
    transactions of one client connection may run on different server connections)."""

    session = "session"
    transaction = "transaction"


class AppEnv(StrEnum):
    development = "development"
    test = "test"
    production = "production"


@dataclass(frozen=True, slots=True)
class RateLimit:
    """`N/period` where period is second, minute, hour or day (`5/minute`)."""

    count: int
    window_seconds: int

    PERIODS: ClassVar[dict[str, int]] = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}

    @classmethod
    def parse(cls, value: str) -> RateLimit:
        count, _, period = value.strip().partition("/")
        return cls(count=int(count), window_seconds=cls.PERIODS[period])


RateLimitSetting = Annotated[str, Field(pattern=r"^\s*[1-9]\d*/(second|minute|hour|day)\s*$")]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", frozen=True)

    # Production's checks of the secrets that serve users (JWT, mail, S3, Sign in with Apple):
    # the API's and the worker's. SettingsWithoutUserSecrets turns them off.
    HOLDS_USER_SECRETS: ClassVar[bool] = True

    app_env: AppEnv = AppEnv.development
    database_url: str = "postgresql+asyncpg://postgres@127.0.0.1:5432/goaltrack"
    database_pool_size: int = 10
    # The hot reads' own asyncpg pool (reads.py), beside the engine's: per API process. The
    # default is chosen by bench/sizing.py (its figures: the README's Performance section).
    database_read_pool_size: Annotated[int, Field(ge=1)] = 20
    # `transaction` behind PgBouncer in transaction mode: no named prepared statements at all
    # (they live on one server connection, and the next transaction may run on another).
    database_pool_mode: PoolMode = PoolMode.session
    # A streaming replica for the hot reads (replica.py); unset = every read on DATABASE_URL.
    database_replica_url: str | None = None
    # How long a user's last write keeps their hot reads off a replica that has not replayed
    # it, and the most a replica may lag before no read goes there.
    replica_floor_ttl_seconds: int = Field(default=60, ge=1, le=3600)
    # redis://[:password@]host:port/db. With REDIS_SENTINELS its password and database stand and
    # the master is the one the Sentinels name (redis_client.py).
    redis_url: str = "redis://127.0.0.1:6379/0"
    # Sentinels, "host:port,host:port" (same password as the master); empty = REDIS_URL's server.
    redis_sentinels: str = ""
    redis_sentinel_master: str = Field(default="goaltrack", pattern=r"^[A-Za-z0-9._-]+$")
    # The longest an API publish waits for the broker (connect, send, reply): past it the request
    # goes on and the task is left to the outbox.
    broker_timeout_seconds: float = Field(default=2.0, gt=0, le=60)
    # /docs and /openapi.json: unset = on except in production (see `docs_on`).
    docs_enabled: bool | None = None
    # Browser origins allowed by CORS, comma-separated ("https://app.example.com"); empty = none.
    cors_origins: str = ""

    jwt_secret: SecretStr = SecretStr(DEVELOPMENT_JWT_SECRET)
    jwt_issuer: str = "goaltrack"
    access_token_ttl_seconds: int = 1800
    refresh_token_ttl_days: int = 7
    password_reset_ttl_minutes: int = 30
    bcrypt_rounds: int = Field(default=12, ge=4, le=31)
    # bcrypt hashes running at once per API process (the rest queue): leaves the event loop a core.
    bcrypt_concurrency: Annotated[int, Field(ge=1)] = 1
    account_deletion_grace_days: int = Field(default=7, ge=0)
    password_reset_url: str = "http://127.0.0.1:8000/reset-password?token={token}"
    # The link of a verification mail: the app's link (it posts the token to /auth/verify-email).
    email_verify_url: str = "goaltrack://verify-email?token={token}"
    email_verification_ttl_minutes: int = Field(default=24 * 60, ge=5)
    # Where the reset page's "Open Goaltrack" button goes after a successful reset.
    app_open_url: str = "goaltrack://"
    # The export mail's link: the app, which downloads through GET /account/exports/{id}/download
    # with its own token (a mail must not carry a download link that outlives the session).
    export_open_url: str = "goaltrack://exports/{export_id}"
    # App links (comma-separated lists): the same https link opens the app where installed.
    ios_app_ids: str = ""  # TEAMID.bundle.id
    android_package_name: str = ""
    android_cert_sha256: str = ""  # AA:BB:... fingerprints of the signing certificates

    mail_server: str | None = None
    mail_port: int = 587
    mail_from: str = "noreply@goaltrack.example.com"
    mail_from_name: str = "Goaltrack"
    mail_username: str = ""
    mail_password: SecretStr = SecretStr("")
    mail_starttls: bool = True
    mail_ssl_tls: bool = False

    rate_limit_login: RateLimitSetting = "5/minute"
    rate_limit_register: RateLimitSetting = "10/hour"
    rate_limit_forgot: RateLimitSetting = "3/hour"
    # Reset mails asked for from one client IP, whatever the address (one per address would let
    # a client mail every address it knows).
    rate_limit_forgot_ip: RateLimitSetting = "10/hour"
    # Password spraying: every login attempt from one client IP, whatever the e-mail.
    rate_limit_login_ip: RateLimitSetting = "30/minute"
    # Routes that confirm the current password (change, delete, delete data), per user.
    rate_limit_password_check: RateLimitSetting = "5/minute"
    # Verification mails asked for again, per user; codes tried, per user (a code also dies after
    # 5 wrong tries): a 6-digit code must not fall to a few thousand guesses.
    rate_limit_verification_mail: RateLimitSetting = "3/hour"
    rate_limit_verification_code: RateLimitSetting = "10/hour"
    # While the limiter's Redis does not answer (a failover), each process counts the limits
    # itself for at most this long, then refuses the limited actions (503) until Redis is back.
    # 0 = refuse at once.
    rate_limit_local_fallback_seconds: int = Field(default=60, ge=0, le=600)
    # A rotated refresh token presented again this soon is a client retry, not a replay.
    refresh_reuse_grace_seconds: int = Field(default=5, ge=0, le=60)
    trusted_proxy_hops: int = Field(default=0, ge=0)

    s3_endpoint_url: str = "http://127.0.0.1:9000"
    # Presigned URLs are signed for the host the clients reach (in compose: not `seaweedfs:8333`).
    s3_public_endpoint_url: str | None = None
    s3_bucket: str = "goaltrack"
    s3_access_key_id: str = "goaltrack"
    s3_secret_access_key: SecretStr = SecretStr(DEVELOPMENT_S3_SECRET)
    s3_region: str = "us-east-1"
    max_upload_bytes: int = Field(default=10 * 1024 * 1024, ge=1)
    max_json_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    # A request body's pieces must each come within this long (then 408), and the whole at
    # 1 KiB/s on average after it (middleware.BodyLimits).
    body_read_timeout_seconds: float = Field(default=30, gt=0, le=600)
    attachment_url_ttl_seconds: int = Field(default=900, ge=1, le=7 * 24 * 3600)

    scheduler_interval_seconds: int = Field(default=60, ge=1)
    # An occurrence found later than this (beat or workers were down) is skipped, not sent late.
    reminder_max_lateness_minutes: int = Field(default=60, ge=1)
    notification_retention_days: int = Field(default=180, ge=1)
    # How far back a habit's check-in may be made (local days).
    habit_backfill_days: int = Field(default=7, ge=0, le=60)
    # Writes to goals and settings without If-Match get 428 (once every client sends it).
    require_if_match: bool = False
    # GET /sync keeps deletions (tombstones) this long; an older cursor is answered 410.
    sync_tombstone_days: int = Field(default=30, ge=1)

    # Push through FCM HTTP v1; without a service-account key file push is off (the feed works).
    fcm_credentials_file: Path | None = None
    fcm_project_id: str | None = None  # default: the key file's project_id
    fcm_base_url: str = "https://fcm.googleapis.com"

    # "Split into stages with AI": any OpenAI-compatible chat API; empty key = the feature is off.
    ai_api_key: SecretStr = SecretStr("")
    ai_base_url: str = "https://api.deepseek.com"
    ai_model: str = "deepseek-v4-flash"
    ai_timeout_seconds: int = Field(default=90, ge=5)  # a run's total deadline, retries included
    ai_daily_limit: int = Field(default=20, ge=1)  # runs per user per 24 h

    max_stages_per_goal: int = Field(default=100, ge=1)
    max_attachments_per_goal: int = Field(default=20, ge=1)
    max_reminders_per_goal: int = Field(default=5, ge=1)
    # Per-user quotas (409 goal_quota / storage_quota), read from counters the database keeps.
    max_goals_per_user: int = Field(default=5000, ge=1)
    max_stored_bytes_per_user: int = Field(default=2 * 1024**3, ge=1)

    # Sign in with Google / Apple (auth.oauth): the client ids an ID token's `aud` may name
    # (comma-separated: the Android, iOS and web ids differ); empty = that provider answers 503.
    oauth_google_client_ids: str = ""
    oauth_apple_client_ids: str = ""
    oauth_google_jwks_url: str = "https://www.googleapis.com/oauth2/v3/certs"
    oauth_apple_jwks_url: str = "https://appleid.apple.com/auth/keys"
    # Apple's token and revocation endpoints (`/auth/token`, `/auth/revoke`), and the key that
    # signs our client secret there: deleting an account revokes its Sign in with Apple tokens.
    oauth_apple_base_url: str = "https://appleid.apple.com"
    oauth_apple_team_id: str = ""
    oauth_apple_key_id: str = ""
    # The .p8 file (EC P-256, PKCS#8 PEM). Read by the worker only, when it calls Apple (like
    # FCM_CREDENTIALS_FILE): the other processes need not have it.
    oauth_apple_private_key_file: Path | None = None

    # Observability (goaltrack.observability). /metrics on the API only with a token (Bearer).
    metrics_token: SecretStr | None = None
    # An unauthenticated metrics listener in each API process / in the worker / in beat; unset =
    # none.
    metrics_port: int | None = Field(default=None, ge=1, le=65535)
    worker_metrics_port: int | None = Field(default=None, ge=1, le=65535)
    beat_metrics_port: int | None = Field(default=None, ge=1, le=65535)
    # Where those listeners bind: 0.0.0.0 inside a container on a private network.
    metrics_bind_address: str = "127.0.0.1"
    # text or json; unset = json in production, text elsewhere.
    log_format: Literal["text", "json"] | None = None
    sentry_dsn: SecretStr | None = None

    @field_validator("database_url", "database_replica_url")
    @classmethod
    def _asyncpg_driver(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        for prefix in ("postgresql://", "postgres://"):
            if value.startswith(prefix):
                return "postgresql+asyncpg://" + value.removeprefix(prefix)
        if not value.startswith("postgresql+asyncpg://"):
            raise ValueError(f"{(info.field_name or '').upper()} must be a postgresql:// URL")
        return value

    @field_validator("redis_sentinels")
    @classmethod
    def _sentinel_addresses(cls, value: str) -> str:
        for address in (item.strip() for item in value.split(",")):
            host, _, port = address.rpartition(":")
            if address and not (host and port.isdigit()):
                raise ValueError(f"REDIS_SENTINELS: {address!r} is not host:port")
        return value

    @field_validator("export_open_url")
    @classmethod
    def _export_link_has_id(cls, value: str) -> str:
        if "{export_id}" not in value:
            raise ValueError("EXPORT_OPEN_URL must contain '{export_id}'")
        return value

    @field_validator("password_reset_url", "email_verify_url")
    @classmethod
    def _link_has_token(cls, value: str, info: ValidationInfo) -> str:
        if "{token}" not in value:
            raise ValueError(f"{(info.field_name or '').upper()} must contain '{{token}}'")
        return value

    @field_validator("cors_origins")
    @classmethod
    def _cors_origins_are_origins(cls, value: str) -> str:
        for origin in (item.strip() for item in value.split(",")):
            if origin and not CORS_ORIGIN.fullmatch(origin):
                raise ValueError(
                    f"CORS_ORIGINS: {origin!r} is not an origin like https://app.example.com "
                    "(scheme and host, optional port, no path or trailing slash, no '*')"
                )
        return value

    @field_validator("oauth_google_client_ids", "oauth_apple_client_ids")
    @classmethod
    def _client_ids(cls, value: str) -> str:
        for client_id in (item.strip() for item in value.split(",")):
            if client_id and not OAUTH_CLIENT_ID.fullmatch(client_id):
                raise ValueError(f"{client_id!r} is not a client id (printable, no spaces)")
        return value

    @field_validator("oauth_google_jwks_url", "oauth_apple_jwks_url", "oauth_apple_base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("https://", "http://")):
            raise ValueError(f"{value!r} is not an http(s) URL")
        return value.rstrip("/")

    @field_validator("oauth_apple_private_key_file", "database_replica_url", mode="before")
    @classmethod
    def _unset_when_empty(cls, value: object) -> object:
        return None if value == "" else value  # `DATABASE_REPLICA_URL=` in an env file

    @model_validator(mode="after")
    def _apple_revocation_key_is_whole(self) -> Settings:
        apple_key = (
            self.oauth_apple_team_id,
            self.oauth_apple_key_id,
            self.oauth_apple_private_key_file,
        )
        if any(apple_key) and not all(apple_key):
            raise ValueError(
                "OAUTH_APPLE_TEAM_ID, OAUTH_APPLE_KEY_ID and OAUTH_APPLE_PRIVATE_KEY_FILE go together"
            )
        return self

    @model_validator(mode="after")
    def _refuse_weak_secrets_in_production(self) -> Settings:
        if not self.jwt_secret.get_secret_value():
            raise ValueError("JWT_SECRET must not be empty (leave it unset in development)")
        if self.app_env is AppEnv.production and self.HOLDS_USER_SECRETS:
            secret = self.jwt_secret.get_secret_value()
            if (
                secret in PLACEHOLDER_SECRETS
                or len(secret.encode()) < 32
                or len(set(secret)) < MIN_SECRET_DISTINCT_CHARACTERS
            ):
                raise ValueError(
                    "JWT_SECRET must be a random value of at least 32 bytes in production"
                    f" (with at least {MIN_SECRET_DISTINCT_CHARACTERS} distinct characters)"
                )
            if not self.mail_server:
                raise ValueError("MAIL_SERVER is required in production")
            if self.s3_secret_access_key.get_secret_value() in PLACEHOLDER_SECRETS | {
                DEVELOPMENT_S3_SECRET
            }:
                raise ValueError("S3_SECRET_ACCESS_KEY must be set in production")
            if not self.password_reset_url.startswith("https://"):
                raise ValueError("PASSWORD_RESET_URL must be an https:// link in production")
            if self.oauth_apple_client_id_list and not self.apple_revocation_on:
                # Apple requires that deleting an account revokes its Sign in with Apple tokens.
                raise ValueError(
                    "OAUTH_APPLE_CLIENT_IDS needs OAUTH_APPLE_TEAM_ID, OAUTH_APPLE_KEY_ID and "
                    "OAUTH_APPLE_PRIVATE_KEY_FILE in production (token revocation)"
                )
        return self

    @property
    def database_driver_dsn(self) -> str:
        """DATABASE_URL as asyncpg itself takes it (no SQLAlchemy driver suffix)."""
        return _driver_dsn(self.database_url)

    @property
    def database_replica_driver_dsn(self) -> str | None:
        return None if self.database_replica_url is None else _driver_dsn(self.database_replica_url)

    @property
    def database_statement_cache_size(self) -> int:
        """asyncpg's per-connection prepared-statement cache: off in transaction pooling, where
        statements go unnamed and are parsed with each execution (asyncpg's default otherwise)."""
        return 0 if self.database_pool_mode is PoolMode.transaction else 100

    @property
    def redis_sentinel_addresses(self) -> list[tuple[str, int]]:
        addresses = (item.strip() for item in self.redis_sentinels.split(","))
        return [
            (host, int(port))
            for host, _, port in (address.rpartition(":") for address in addresses if address)
        ]

    @property
    def docs_on(self) -> bool:
        """DOCS_ENABLED when set; otherwise on everywhere but production."""
        if self.docs_enabled is not None:
            return self.docs_enabled
        return self.app_env is not AppEnv.production

    @property
    def cors_origin_list(self) -> list[str]:
        return [item.strip() for item in self.cors_origins.split(",") if item.strip()]

    @property
    def ios_app_id_list(self) -> list[str]:
        return [item.strip() for item in self.ios_app_ids.split(",") if item.strip()]

    @property
    def android_cert_fingerprints(self) -> list[str]:
        return [item.strip() for item in self.android_cert_sha256.split(",") if item.strip()]

    @property
    def oauth_google_client_id_list(self) -> list[str]:
        return [item.strip() for item in self.oauth_google_client_ids.split(",") if item.strip()]

    @property
    def oauth_apple_client_id_list(self) -> list[str]:
        return [item.strip() for item in self.oauth_apple_client_ids.split(",") if item.strip()]

    @property
    def apple_revocation_on(self) -> bool:
        return self.oauth_apple_private_key_file is not None

    @property
    def login_limit(self) -> RateLimit:
        return RateLimit.parse(self.rate_limit_login)

    @property
    def register_limit(self) -> RateLimit:
        return RateLimit.parse(self.rate_limit_register)

    @property
    def forgot_limit(self) -> RateLimit:
        return RateLimit.parse(self.rate_limit_forgot)

    @property
    def forgot_ip_limit(self) -> RateLimit:
        return RateLimit.parse(self.rate_limit_forgot_ip)

    @property
    def login_ip_limit(self) -> RateLimit:
        return RateLimit.parse(self.rate_limit_login_ip)

    @property
    def password_check_limit(self) -> RateLimit:
        return RateLimit.parse(self.rate_limit_password_check)

    @property
    def verification_mail_limit(self) -> RateLimit:
        return RateLimit.parse(self.rate_limit_verification_mail)

    @property
    def verification_code_limit(self) -> RateLimit:
        return RateLimit.parse(self.rate_limit_verification_code)


class SettingsWithoutUserSecrets(Settings):
    """The settings of `goaltrack migrate` and `goaltrack beat`, which serve no user: migrate
    reads DATABASE_URL, beat REDIS_URL and its tick, and docker-compose.yml gives them only those
    (least privilege: no JWT, mail, S3 or sign-in secret in their environment). Production's
    checks of those secrets are the API's and the worker's; the fields keep their development
    defaults here, which these processes never read."""

    HOLDS_USER_SECRETS = False


def _driver_dsn(url: str) -> str:
    return "postgresql://" + url.removeprefix("postgresql+asyncpg://")


@lru_cache
def get_settings() -> Settings:
    return Settings()
