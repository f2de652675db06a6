"""The application factory."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
from fastapi import FastAPI, Request
from redis.asyncio import Redis
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp

from goaltrack import capabilities, health, idempotency, redaction
from goaltrack.account.router import public_router as account_public_router
from goaltrack.account.router import router as account_router
from goaltrack.account.router import verification_router as account_verification_router
from goaltrack.achievements.router import router as achievements_router
from goaltrack.ai.router import router as ai_router
from goaltrack.auth.caller import bearer_claims
from goaltrack.auth.locale import caller_locale
from goaltrack.auth.oauth import IdTokenVerifier
from goaltrack.auth.router import router as auth_router
from goaltrack.auth.security import Passwords
from goaltrack.celery_app import create_publisher
from goaltrack.config import AppEnv, Settings, get_settings
from goaltrack.db import Committed, create_engine, create_sessionmaker
from goaltrack.devices.router import router as devices_router
from goaltrack.errors import PROBLEM_JSON, install_error_handlers
from goaltrack.goals.router import router as goals_router
from goaltrack.hotpath import HotRoutes
from goaltrack.middleware import Edge
from goaltrack.notifications.router import router as notifications_router
from goaltrack.observability.install import fastapi_telemetry, install_observability
from goaltrack.openapi import install_contract, operation_id
from goaltrack.ratelimit import RateLimiter
from goaltrack.reads import PoolReader, create_read_pool
from goaltrack.redis_client import create_redis
from goaltrack.replica import ReplicaReader
from goaltrack.scheduling.router import router as scheduling_router
from goaltrack.schemas import Problem
from goaltrack.storage import Storage, StorageUnavailable
from goaltrack.sync.router import router as sync_router
from goaltrack.uploads import MULTIPART_OVERHEAD
from goaltrack.web.router import router as web_router
from goaltrack.worker import outbox

logger = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    redaction.install()  # reset links carry their token in the query string

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = create_engine(settings, application_name="goaltrack-api")
        # The API only publishes tasks; create_celery (under create_publisher) also installs the
        # event subscriptions.
        producer = create_publisher(settings)
        redis = create_redis(settings, timeout=2)
        app.state.settings = settings
        if settings.fcm_credentials_file is None:
            logger.warning(
                "push is disabled: FCM_CREDENTIALS_FILE is not set (notifications go to the feed only)"
            )
        app.state.engine = engine
        app.state.read_pool = read_pool = await create_read_pool(
            settings, application_name="goaltrack-api-reads"
        )
        replica = await create_replica_reader(settings, read_pool, redis)
        app.state.reader = replica or PoolReader(read_pool)
        app.state.sessionmaker = create_sessionmaker(
            engine, producer, outbox.resend_unsent, remembering_writes(replica, settings)
        )
        app.state.redis = redis
        app.state.rate_limiter = RateLimiter(
            redis, local_fallback_seconds=settings.rate_limit_local_fallback_seconds
        )
        app.state.passwords = Passwords(settings.bcrypt_rounds, settings.bcrypt_concurrency)
        app.state.id_tokens = IdTokenVerifier(settings)  # Sign in with Google/Apple; keys cached
        app.state.storage = storage = Storage(settings)
        await storage.start()
        try:
            await storage.ensure_bucket()
        except StorageUnavailable:
            # The API still serves everything else; uploads answer 503 until S3 is back.
            logger.error("S3 is unavailable at start-up; the bucket could not be checked")
        # Everything built so far lives as long as the process: out of the collector's sight, so
        # that a full collection under load does not walk it again and again (bench/).
        gc.freeze()
        try:
            yield
        finally:
            await storage.close()
            if replica is not None:
                await replica.close()
            await redis.aclose()
            await read_pool.close()
            await engine.dispose()
            producer.close()

    app = FastAPI(
        title="Goaltrack API",
        version="0.1.0",
        lifespan=lifespan,
        docs_url="/docs" if settings.docs_on else None,
        redoc_url=None,
        openapi_url="/openapi.json" if settings.docs_on else None,
        generate_unique_id_function=operation_id,
        telemetry=fastapi_telemetry(),
    )
    install_error_handlers(app, caller_locale=caller_locale)
    if settings.cors_origin_list:  # no CORS headers at all when CORS_ORIGINS is empty
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origin_list,
            allow_methods=["GET", "POST", "PUT", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "Idempotency-Key"],
            expose_headers=["Retry-After", "X-Request-ID", "Idempotency-Replayed"],
            allow_credentials=False,
            max_age=600,
        )
    app.include_router(health.router)
    app.include_router(capabilities.router)
    app.include_router(auth_router)
    app.include_router(account_router)
    app.include_router(account_public_router)
    app.include_router(account_verification_router)
    app.include_router(goals_router)
    app.include_router(scheduling_router)
    app.include_router(ai_router)
    app.include_router(devices_router)
    app.include_router(notifications_router)
    app.include_router(achievements_router)
    app.include_router(sync_router)
    app.include_router(web_router)
    _document_problem_schema(app)
    install_contract(app)  # after the problem schemas: it completes their 401s and 422s
    idempotency.install_contract(app)  # on top of both: the Idempotency-Key and its problems
    install_observability(app, settings)  # /metrics, METRICS_PORT, Sentry
    _install_edge(app, settings)
    return app


async def create_replica_reader(
    settings: Settings, read_pool: asyncpg.Pool, redis: Redis
) -> ReplicaReader | None:
    """With DATABASE_REPLICA_URL: the hot reads' reader that may send them there (replica.py)."""
    if settings.database_replica_driver_dsn is None:
        return None
    replica_pool = await create_read_pool(
        settings, application_name="goaltrack-api-replica", dsn=settings.database_replica_driver_dsn
    )
    reader = ReplicaReader(
        read_pool, replica_pool, redis, floor_ttl=settings.replica_floor_ttl_seconds
    )
    reader.start()
    return reader


def remembering_writes(replica: ReplicaReader | None, settings: Settings) -> Committed | None:
    """After a write commits, the caller's position for the replica's read-your-writes rule."""
    if replica is None:
        return None

    async def remember(request: Request) -> None:
        claims = bearer_claims(request, settings)
        if claims is not None:
            await replica.remember_write(claims.user_id)

    return remember


def _install_edge(app: FastAPI, settings: Settings) -> None:
    """Around the whole stack (Starlette's error middleware included: a 500 gets the request id
    and the headers too), the one layer every request passes (middleware.Edge), and inside it
    the hot routes (hotpath.HotRoutes), answered before the rest of the stack sees them. With
    CORS configured, a request with an Origin goes through the CORS middleware instead."""
    build_stack = app.build_middleware_stack

    def build() -> ASGIApp:
        hot_routes = HotRoutes(
            build_stack(), fastapi=app, cross_origin=bool(settings.cors_origin_list)
        )
        return Edge(
            hot_routes,
            hsts=settings.app_env is AppEnv.production,
            proxy_hops=settings.trusted_proxy_hops,
            json_limit=settings.max_json_body_bytes,
            multipart_limit=settings.max_upload_bytes + MULTIPART_OVERHEAD,
            read_timeout=settings.body_read_timeout_seconds,
        )

    app.build_middleware_stack = build  # type: ignore[method-assign]


def _document_problem_schema(app: FastAPI) -> None:
    """Make the OpenAPI document honest about errors: every 422 is a ValidationProblem (not
    FastAPI's default shape), every secured operation may answer 401, every body may be too large
    or too slow."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()
            schemas = schema.setdefault("components", {}).setdefault("schemas", {})
            schemas.pop("HTTPValidationError", None)
            schemas.pop("ValidationError", None)
            # ValidationProblem, an extension of Problem, is openapi.install_contract's.
            schemas[Problem.__name__] = Problem.model_json_schema()
            for operation in _operations(schema):
                responses = operation.setdefault("responses", {})
                if "422" in responses:
                    responses["422"] = _problem_response(
                        "Validation error (`validation_error`)", "ValidationProblem"
                    )
                if operation.get("security"):
                    responses.setdefault(
                        "401", _problem_response("Not authenticated (`not_authenticated`)")
                    )
                if "requestBody" in operation:
                    responses.setdefault(
                        "413", _problem_response("Body too large (`payload_too_large`)")
                    )
                    responses.setdefault(
                        "408", _problem_response("Body not sent in time (`request_timeout`)")
                    )
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _operations(schema: dict[str, Any]) -> list[dict[str, Any]]:
    methods = {"get", "put", "post", "delete", "patch"}
    return [
        op
        for item in schema.get("paths", {}).values()
        for method, op in item.items()
        if method in methods
    ]


def _problem_response(description: str, model: str = "Problem") -> dict[str, Any]:
    return {
        "description": description,
        "content": {PROBLEM_JSON: {"schema": {"$ref": f"#/components/schemas/{model}"}}},
    }
