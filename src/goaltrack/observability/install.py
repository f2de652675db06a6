"""`install_observability(app, settings)`: the API's wiring of `/metrics` (with METRICS_TOKEN),
METRICS_PORT and Sentry (main.py calls it)."""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.telemetry import TelemetryConfig

from goaltrack.config import Settings
from goaltrack.observability.endpoint import (
    ThreadedApiMetrics,
    metrics_endpoint,
    start_metrics_server,
)
from goaltrack.observability.metrics import mark_process_dead
from goaltrack.observability.probes import POOL_REFRESH_SECONDS, record_pool_metrics
from goaltrack.observability.request_id import REQUEST_ID_HEADER, REQUEST_ID_PATTERN
from goaltrack.observability.sentry import init_sentry

# The single module's logger name, kept for every part of the package (see __init__).
logger = logging.getLogger("goaltrack.observability")


def install_observability(app: Any, settings: Settings) -> None:
    """`/metrics` (with METRICS_TOKEN), METRICS_PORT, Sentry; the request ids and the request
    metrics are measured by the app's edge (goaltrack.middleware.Edge). Call once every router is
    included."""
    if getattr(app.state, "observability_installed", False):
        return
    app.state.observability_installed = True

    token = settings.metrics_token.get_secret_value() if settings.metrics_token else ""
    if token:
        app.add_route(
            "/metrics", metrics_endpoint(token.encode()), ["GET"], include_in_schema=False
        )

    lifespan = app.router.lifespan_context

    @asynccontextmanager
    async def with_metrics_port(application: Any) -> AsyncIterator[Any]:
        async with lifespan(application) as state:
            # Each uvicorn worker records its own pools (a scrape is answered by only one).
            refresher = asyncio.create_task(_record_pools(application.state))
            server = None
            if settings.metrics_port is not None:
                registry = ThreadedApiMetrics(application.state, asyncio.get_running_loop())
                server = start_metrics_server(
                    settings.metrics_port, settings.metrics_bind_address, registry
                )
            try:
                yield state
            finally:
                refresher.cancel()
                if server is not None:
                    server.shutdown()
                    server.server_close()
                mark_process_dead()

    app.router.lifespan_context = with_metrics_port
    _declare_request_id(app)
    init_sentry(settings)
    _check_opentelemetry()


async def _record_pools(state: Any) -> None:
    while True:
        record_pool_metrics(state)
        await asyncio.sleep(POOL_REFRESH_SECONDS)


REQUEST_ID_DECLARATION = {
    "description": "The request's id: the client's own when it sent a valid `X-Request-ID`, "
    "else a new one. Also in every problem body (`request_id`): quote it in a support request.",
    "required": True,
    "schema": {"type": "string", "pattern": REQUEST_ID_PATTERN},
}


def _declare_request_id(app: FastAPI) -> None:
    """`X-Request-ID` on every response of the OpenAPI document (one header component), on top
    of whatever else finishes it: the middleware sends it with every answer."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = generate()
            document.setdefault("components", {}).setdefault("headers", {})[REQUEST_ID_HEADER] = (
                REQUEST_ID_DECLARATION
            )
            reference = {"$ref": f"#/components/headers/{REQUEST_ID_HEADER}"}
            for item in document.get("paths", {}).values():
                for operation in item.values():  # FastAPI's path items hold operations only
                    for response in operation.get("responses", {}).values():
                        response.setdefault("headers", {})[REQUEST_ID_HEADER] = reference
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def fastapi_telemetry() -> TelemetryConfig:
    """FastAPI's own OpenTelemetry only where this process is set up to export it (FastAPI's
    auto-configuration, or any OTEL_* setting, as `opentelemetry-instrument` reads them): left
    on, FastAPI asks OpenTelemetry's global providers on every request whether one has been
    configured meanwhile, about 3 µs (0.08 µs off; timeit, two runs), some 1 % of a hot read's CPU."""
    if os.environ.get("FASTAPI_OTEL_AUTO_CONFIGURE", "").lower() == "true" or any(
        name.startswith("OTEL_") for name in os.environ
    ):
        return {}
    return {"tracing": False, "metrics": False, "logs": False}


def _check_opentelemetry() -> None:
    """FastAPI exports its own OpenTelemetry traces, metrics and logs (OTLP over HTTP) when
    FASTAPI_OTEL_AUTO_CONFIGURE=true and the `fastapi[opentelemetry]` extra is installed: say so
    when an endpoint is configured without them, rather than export nothing in silence."""
    if not os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        return
    if importlib.util.find_spec("opentelemetry.sdk") is None:
        logger.warning(
            "OTEL_EXPORTER_OTLP_ENDPOINT is set but the OpenTelemetry SDK is not installed"
            " (install fastapi[opentelemetry]); nothing is exported"
        )
    elif os.environ.get("FASTAPI_OTEL_AUTO_CONFIGURE", "").lower() != "true":
        logger.warning(
            "OTEL_EXPORTER_OTLP_ENDPOINT is set: set FASTAPI_OTEL_AUTO_CONFIGURE=true too"
            " for FastAPI to export to it"
        )
