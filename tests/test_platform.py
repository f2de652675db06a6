from __future__ import annotations

import asyncio
import secrets
import uuid
from typing import Any

import httpx
import pytest
from alembic import command
from pydantic import ValidationError

from goaltrack.config import Settings, get_settings
from goaltrack.dev.localstack import free_port
from goaltrack.main import create_app
from goaltrack.migrations import alembic_config
from helpers import Account, TestClock, assert_problem


async def test_health(client: Any) -> None:
    response = await client.get("/health")
    assert response.json() == {"status": "ok"}
    ready = await client.get("/health/ready")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"postgres": "ok", "redis": "ok"}
    assert ready.json()["push"] == "configured"  # the test session points FCM at its fake


async def test_ready_is_503_when_a_dependency_is_down() -> None:
    closed = free_port()
    settings = get_settings().model_copy(
        update={
            "redis_url": f"redis://127.0.0.1:{closed}/0",
            "rate_limit_local_fallback_seconds": 0,
        }
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            response = await client.get("/health/ready")
            assert response.status_code == 503
            assert response.json()["checks"] == {"postgres": "ok", "redis": "unavailable"}
            # Without a local fallback the rate limiter fails closed: no Redis, no login attempts.
            login = await client.post(
                "/auth/login", json={"email": "a@example.com", "password": "x" * 8}
            )
            assert_problem(login, 503, "service_unavailable")


async def test_without_redis_logins_are_limited_locally_for_a_bounded_time(
    user: Account,
) -> None:
    """A failover: each process counts the login limit itself (5/minute per e-mail and IP) for
    RATE_LIMIT_LOCAL_FALLBACK_SECONDS after the first failure, then refuses logins (503)."""
    clock = TestClock().install()
    closed = free_port()
    settings = get_settings().model_copy(update={"redis_url": f"redis://127.0.0.1:{closed}/0"})
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:

            async def login(password: str) -> httpx.Response:
                body = {"email": user.email, "password": password}
                return await client.post("/auth/login", json=body)

            assert (await login(user.password)).status_code == 200
            for _ in range(4):
                assert_problem(await login("wrong password"), 401, "invalid_credentials")
            assert_problem(await login(user.password), 429, "rate_limited")
            clock.advance(settings.rate_limit_local_fallback_seconds)
            assert_problem(await login(user.password), 503, "service_unavailable")


def test_migrations_match_the_models(stack: Any) -> None:
    """`alembic check`: the models and the migrations describe the same schema."""
    command.check(alembic_config(stack.postgres.url))


def test_migrations_downgrade_and_upgrade_again(stack: Any) -> None:
    stack.postgres.create_database("goaltrack_roundtrip")
    url = stack.postgres.url_for("goaltrack_roundtrip")
    config = alembic_config(url)
    command.upgrade(config, "head")
    command.downgrade(config, "base")
    command.upgrade(config, "head")


async def test_unknown_path_and_method_are_problem_json(client: Any) -> None:
    assert_problem(await client.get("/nope"), 404, "not_found")
    assert_problem(await client.delete("/health"), 405, "method_not_allowed")


async def test_openapi_declares_the_bearer_scheme_and_problem_schema(client: Any) -> None:
    schema = (await client.get("/openapi.json")).json()
    schemes = schema["components"]["securitySchemes"]
    assert any(s["type"] == "http" and s["scheme"] == "bearer" for s in schemes.values())
    assert "Problem" in schema["components"]["schemas"]
    assert schema["paths"]["/account"]["get"]["security"]
    docs = await client.get("/docs")
    assert docs.status_code == 200


async def test_docs_can_be_disabled() -> None:
    app = create_app(get_settings().model_copy(update={"docs_enabled": False}))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        assert (await client.get("/openapi.json")).status_code == 404
        assert (await client.get("/docs")).status_code == 404


@pytest.mark.parametrize(
    "secret",
    [
        "",
        "changeme",
        "short-secret",
        "development-only-secret",
        "replace-with-at-least-32-random-bytes",
    ],
)
def test_production_refuses_weak_jwt_secret(secret: str) -> None:
    with pytest.raises(ValidationError, match="JWT_SECRET"):
        Settings(**{**PRODUCTION, "jwt_secret": secret})


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("mail_server", None, "MAIL_SERVER"),
        ("s3_secret_access_key", "goaltrack-secret", "S3_SECRET_ACCESS_KEY"),
        ("password_reset_url", "http://127.0.0.1:8000/reset?token={token}", "PASSWORD_RESET_URL"),
    ],
)
def test_production_refuses_development_defaults(field: str, value: Any, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Settings(**{**PRODUCTION, field: value})


PRODUCTION = {
    "app_env": "production",
    "jwt_secret": secrets.token_urlsafe(48),
    "mail_server": "smtp.example.com",
    "s3_secret_access_key": "a-real-minio-password",
    "password_reset_url": "https://app.example.com/reset?token={token}",
}


def test_production_accepts_strong_secret_and_normalises_database_url() -> None:
    settings = Settings(**PRODUCTION, database_url="postgresql://u:p@db/goaltrack")
    assert settings.database_url == "postgresql+asyncpg://u:p@db/goaltrack"


def test_invalid_configuration_fails_fast() -> None:
    with pytest.raises(ValidationError):
        Settings(rate_limit_login="five per minute")
    with pytest.raises(ValidationError):
        Settings(password_reset_url="https://example.com/reset")
    with pytest.raises(ValidationError):
        Settings(database_url="mysql://db/goaltrack")


async def test_unexpected_errors_are_problem_json_without_internals(app: Any) -> None:
    from goaltrack.auth.caller import get_current_user

    def broken() -> None:
        raise RuntimeError("secret internals")

    app.dependency_overrides[get_current_user] = broken
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        response = await client.get("/account")
    assert_problem(response, 500, "internal_error")
    assert "secret internals" not in response.text


async def test_oversized_json_body_is_413(client: Any, user: Any) -> None:
    huge = b'{"title": "' + b"x" * (1024 * 1024) + b'"}'
    declared = await client.post(
        "/goals", content=huge, headers={**user.headers, "Content-Type": "application/json"}
    )
    assert_problem(declared, 413, "payload_too_large")

    async def chunks() -> Any:
        for _ in range(20):
            yield b"x" * 100_000

    streamed = await client.post(
        "/goals", content=chunks(), headers={**user.headers, "Content-Type": "application/json"}
    )
    assert_problem(streamed, 413, "payload_too_large")


async def test_database_down_is_503_not_500(user: Any) -> None:
    closed = free_port()
    settings = get_settings().model_copy(
        update={"database_url": f"postgresql+asyncpg://postgres@127.0.0.1:{closed}/goaltrack"}
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            response = await client.get("/account", headers=user.headers)
            assert_problem(response, 503, "service_unavailable")
            assert response.headers["Retry-After"] == "5"
            login = await client.post(
                "/auth/login", json={"email": user.email, "password": user.password}
            )
            assert_problem(login, 503, "service_unavailable")


async def test_undecodable_json_is_422_like_any_malformed_body(client: Any) -> None:
    response = await client.post(
        "/auth/login",
        content=b'{"email": "\xc3\x28"}',
        headers={"Content-Type": "application/json"},
    )
    body = assert_problem(response, 422, "validation_error")
    assert body["errors"][0]["type"] == "json_invalid"


async def test_text_with_nul_characters_is_422(client: Any, user: Any) -> None:
    response = await client.post("/goals", json={"title": "a\x00b"}, headers=user.headers)
    assert_problem(response, 422, "validation_error")


async def test_overlong_password_on_login_is_a_plain_mismatch(client: Any, user: Any) -> None:
    """bcrypt refuses > 72 bytes; a check of such a password fails like any wrong one (not 500)."""
    for password in ("a" * 73, "é" * 40, user.password + "x" * 72):
        response = await client.post(
            "/auth/login", json={"email": user.email, "password": password}
        )
        assert_problem(response, 401, "invalid_credentials")
    wrong = await client.request(
        "DELETE", "/account", json={"password": "a" * 100}, headers=user.headers
    )
    assert_problem(wrong, 400, "invalid_password")


async def test_openapi_documents_problem_responses(client: Any) -> None:
    schema = (await client.get("/openapi.json")).json()
    register = schema["paths"]["/auth/register"]["post"]["responses"]
    assert register["422"]["content"]["application/problem+json"]["schema"]["$ref"].endswith(
        "ValidationProblem"
    )
    account = schema["paths"]["/account"]["get"]["responses"]
    assert "401" in account
    assert "HTTPValidationError" not in schema["components"]["schemas"]


def test_beat_schedules_every_periodic_job(celery_app: Any) -> None:
    scheduled = {entry["task"] for entry in celery_app.conf.beat_schedule.values()}
    assert scheduled == {
        "files.process_file_deletions",
        "account.purge_deleted_accounts",
        "account.maintain_exports",
        "worker.sweep_outbox",
        "scheduling.dispatch_due",
        "scheduling.delete_expired_deliveries",
        "sync.delete_expired_tombstones",
        "notifications.delete_expired",
        "notifications.fire_snoozes",
        "achievements.refresh_stats",
        "ai.fail_stale_runs",
        "idempotency.delete_expired",
    }
    assert scheduled <= set(celery_app.tasks)


async def test_extreme_cursor_and_nul_in_path_are_4xx(client: Any, user: Any) -> None:
    import base64

    for instant in ("0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"):
        raw = f"{instant}|{uuid.uuid4()}".encode()
        cursor = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
        response = await client.get("/goals", params={"cursor": cursor}, headers=user.headers)
        assert_problem(response, 422, "invalid_cursor")
    assert_problem(
        await client.delete("/devices/%00x", headers=user.headers), 422, "validation_error"
    )


@pytest.mark.usefixtures("renewed_pools")
async def test_hot_reads_survive_a_dropped_connection(app: Any, client: Any, user: Any) -> None:
    """PostgreSQL restarts (here: every backend of the pool is terminated): the read answers 503
    at worst, and the next one works."""
    from sqlalchemy import text

    for _ in range(3):
        # Fill the pool with connections, then kill them all.
        await asyncio.gather(*(client.get("/goals", headers=user.headers) for _ in range(10)))
        async with app.state.sessionmaker() as session:
            await session.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE application_name = 'goaltrack-api' AND pid <> pg_backend_pid() "
                    "AND datname = current_database()"  # not another xdist worker's
                )
            )
        statuses = [
            (await client.get("/goals", headers=user.headers)).status_code for _ in range(12)
        ]
        concurrent = await asyncio.gather(
            *(client.get("/goals", headers=user.headers) for _ in range(10))
        )
        assert set(statuses) | {r.status_code for r in concurrent} <= {200, 503}
        assert statuses[-1] == 200
        assert (await client.get("/account", headers=user.headers)).status_code in {200, 503}


def test_the_start_up_heap_is_frozen_out_of_the_collectors_sight(app: Any) -> None:
    """gc.freeze() at the end of start-up: without it a full collection under load walks the
    whole start-up heap again and again (bench: GET /goals 730 → 499 µs CPU per request)."""
    import gc

    assert gc.get_freeze_count() > 10_000
