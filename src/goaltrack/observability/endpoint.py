"""Serving the metrics: `/metrics` on the API (Bearer METRICS_TOKEN), and prometheus-client's own
HTTP server on a separate port (METRICS_PORT in the API, WORKER_METRICS_PORT in the worker)."""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest, start_http_server
from prometheus_client.core import Metric
from prometheus_client.registry import Collector
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from goaltrack.observability.metrics import process_metrics
from goaltrack.observability.probes import scrape_deadline, scrape_metrics

# The single module's logger name, kept for every part of the package (see __init__).
logger = logging.getLogger("goaltrack.observability")


class _Snapshot(Collector):
    def __init__(self, metrics: list[Metric]) -> None:
        self.metrics = metrics

    def collect(self) -> Iterable[Metric]:
        return self.metrics


async def render_metrics(state: Any) -> bytes:
    """The exposition text: the process's metrics, then the scrape-time gauges."""
    snapshot = _Snapshot(await scrape_metrics(state))
    return generate_latest(process_metrics()) + generate_latest(snapshot)


class ThreadedApiMetrics(Collector):
    """For METRICS_PORT: prometheus-client's server thread runs the probes on the app's loop."""

    def __init__(self, state: Any, loop: asyncio.AbstractEventLoop) -> None:
        self.state = state
        self.loop = loop

    def collect(self) -> Iterable[Metric]:
        yield from process_metrics().collect()
        future = asyncio.run_coroutine_threadsafe(scrape_metrics(self.state), self.loop)
        yield from future.result(timeout=scrape_deadline())


def _bearer_matches(request: Request, token: bytes) -> bool:
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(credentials.strip().encode(), token)


def metrics_endpoint(token: bytes) -> Callable[[Request], Awaitable[Response]]:
    """The `/metrics` route of the API: 401 without `Authorization: Bearer <token>`."""

    async def metrics(request: Request) -> Response:
        if not _bearer_matches(request, token):
            raise HTTPException(
                401, "Missing or invalid metrics token.", headers={"WWW-Authenticate": "Bearer"}
            )
        return Response(await render_metrics(request.app.state), media_type=CONTENT_TYPE_LATEST)

    return metrics


def start_metrics_server(port: int, address: str, registry: Collector) -> Any:
    """prometheus-client's HTTP server in a daemon thread; None when the port is taken (another
    process of this service serves it: the other uvicorn workers, in multiprocess mode)."""
    try:
        server, _ = start_http_server(port, addr=address, registry=registry)
    except OSError as exc:
        logger.warning("metrics port %s:%d not opened: %s", address, port, exc)
        return None
    logger.info("metrics on http://%s:%d/metrics", address, port)
    return server
