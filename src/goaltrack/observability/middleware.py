"""The outermost ASGI middleware: the request id (bound, and answered in `X-Request-ID`) and the
request metrics (latency by route template and status, requests in flight)."""

from __future__ import annotations

import time
from typing import Any

from fastapi.routing import iter_route_contexts
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from goaltrack.observability.metrics import HTTP_REQUEST_DURATION, HTTP_REQUESTS_IN_PROGRESS
from goaltrack.observability.request_id import new_request_id, request_id_var, valid_request_id

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED_ROUTE = "unmatched"  # no route matched (404s): never the raw path


class ObservabilityMiddleware:
    """Pure ASGI, outermost: binds the request id, answers it in `X-Request-ID`, and measures
    the request (latency by route template and status, requests in flight)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._plain_routes: dict[Any, str] = {}

    def _route_template(self, scope: Scope) -> str:
        """The matched route's template (`/goals/{goal_id}`), never the raw path. FastAPI puts
        its APIRoute in scope["route"]; for plain Starlette routes (/docs, /metrics) only the
        endpoint is in the scope: its template is looked up in the app's routes."""
        template = getattr(scope.get("route"), "path_format", None)
        endpoint = scope.get("endpoint")
        if template is None and endpoint is not None:
            if endpoint not in self._plain_routes and "app" in scope:
                self._plain_routes = {
                    context.original_route.endpoint: context.path_format
                    for context in reversed(list(iter_route_contexts(scope["app"].routes)))
                    if hasattr(context.original_route, "endpoint") and context.path_format
                }
            template = self._plain_routes.get(endpoint)
        return template if isinstance(template, str) and template else UNMATCHED_ROUTE

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = next(
            (value for name, value in scope["headers"] if name.lower() == b"x-request-id"), None
        )
        request_id = valid_request_id(incoming.decode("latin-1") if incoming else None)
        request_id = request_id or new_request_id()
        header = (b"x-request-id", request_id.encode())
        status = 500  # the app raised before answering
        started = time.perf_counter()

        async def send_with_request_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [
                    (name, value)
                    for name, value in message.get("headers", [])
                    if name.lower() != b"x-request-id"
                ]
                message = {**message, "headers": [*headers, header]}
            await send(message)

        token = request_id_var.set(request_id)
        HTTP_REQUESTS_IN_PROGRESS.inc()
        try:
            await self.app(scope, receive, send_with_request_id)
        finally:
            HTTP_REQUESTS_IN_PROGRESS.dec()
            method = scope["method"] if scope["method"] in _METHODS else "other"
            HTTP_REQUEST_DURATION.labels(method, self._route_template(scope), str(status)).observe(
                time.perf_counter() - started
            )
            request_id_var.reset(token)
