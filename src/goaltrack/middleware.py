"""`Edge`: the one ASGI layer every HTTP request passes through, outermost (main.py installs it
around the whole stack, so that 500s get its headers too). In one pass it decides:

- who the client is behind the reverse proxies (TRUSTED_PROXY_HOPS);
- the request id (bound, and answered in `X-Request-ID`) and the request metrics (latency by
  route template and status, requests in flight);
- the security headers (precomputed; a header the response sets itself is never replaced);
- request-body limits: Starlette reads any body size, as slowly as it comes; we refuse large or
  slow ones early (413, 408);
- response compression (gzip when the client accepts it, `Vary: Accept-Encoding`).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi.routing import iter_route_contexts
from starlette.middleware.gzip import GZipResponder
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from goaltrack.errors import PayloadTooLarge, RequestTimeout, problem, request_locale
from goaltrack.observability.metrics import HTTP_REQUEST_DURATION, HTTP_REQUESTS_IN_PROGRESS
from goaltrack.observability.request_id import new_request_id, request_id_var, valid_request_id

HeaderList = list[tuple[bytes, bytes]]

UPLOAD_PATH = re.compile(r"^/goals/[^/]+/attachments/?$")
SCHEMES = {"http", "https"}
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED_ROUTE = "unmatched"  # no route matched (404s): never the raw path

# --- security headers ---------------------------------------------------------------------------

ALWAYS: HeaderList = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
]
# JSON never needs to load anything or be framed.
JSON_CSP: HeaderList = [
    (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'"),
]
HSTS: HeaderList = [
    (b"strict-transport-security", b"max-age=63072000; includeSubDomains"),
]
# Responses that carry access or refresh tokens: no cache (browser, proxy, CDN) may keep them.
NO_STORE: HeaderList = [(b"cache-control", b"no-store"), (b"pragma", b"no-cache")]
TOKEN_ROUTES = frozenset(
    {
        ("POST", "/auth/register"),
        ("POST", "/auth/login"),
        ("POST", "/auth/refresh"),
        ("PUT", "/account/password"),
        ("POST", "/account/restore"),
    }
)
# Swagger UI loads scripts and styles from a CDN: no CSP of ours there.
DOCS_PATHS = frozenset({"/docs", "/openapi.json"})


def _is_docs(path: str) -> bool:
    return path in DOCS_PATHS or path.startswith("/docs/")


def _is_json(content_type: bytes) -> bool:
    media_type = content_type.split(b";", 1)[0].strip().lower()
    return media_type == b"application/json" or (
        media_type.startswith(b"application/") and media_type.endswith(b"+json")
    )


# --- body limits ---------------------------------------------------------------------------------

# After its first BODY_READ_TIMEOUT_SECONDS a body must have come at this average at least: a
# client trickling a byte now and then, each in time, is cut off as well (a phone on a bad
# mobile link uploads well above it).
BODY_MIN_BYTES_PER_SECOND = 1024

# --- compression ---------------------------------------------------------------------------------

# Responses of 1 KiB or more are compressed (a goals page of 20 is about 8 KiB of JSON; below a
# kilobyte the gzip frame and the CPU buy little). Level 6, zlib's default: nearly all of level
# 9's saving on JSON for a fraction of its CPU.
COMPRESS_MIN_BYTES = 1024
GZIP_LEVEL = 6
# Every response not compressed says so: the same address may answer gzip to another client.
VARY_ENCODING = (b"vary", b"Accept-Encoding")


def accepts_gzip(accept_encoding: str) -> bool:
    """Whether an Accept-Encoding value allows gzip (RFC 9110, 12.5.3): `gzip` (or `x-gzip`)
    with a q-value above 0, or else `*` with one; `gzip;q=0` refuses it whatever `*` says."""
    gzip = star = None
    for item in accept_encoding.split(","):
        coding, _, parameters = item.partition(";")
        weight = 1.0
        for parameter in parameters.split(";"):
            name, _, value = parameter.partition("=")
            if name.strip().lower() == "q":
                try:
                    weight = float(value)
                except ValueError:
                    weight = 0.0
        coding = coding.strip().lower()
        if coding in ("gzip", "x-gzip"):
            gzip = weight > 0
        elif coding == "*":
            star = weight > 0
    return gzip if gzip is not None else bool(star)


class Edge:
    """See the module. `proxy_hops`: behind that many reverse proxies, the request's client and
    scheme are the ones the outermost of them saw: the `hops`-th entry from the right of
    X-Forwarded-For and of X-Forwarded-Proto (each proxy appends its own; whatever a client sent
    stands to the left, so it cannot claim another address or https). With fewer entries than
    hops, or none, the connection's own stand; with 0 (no proxy) both headers are nobody's word.

    Body limits: 413 for a body over the limit (`json_limit`; `multipart_limit` for the upload
    route alone), at once when Content-Length says so, otherwise as soon as the streamed bytes
    pass it; 408 for a body that does not come in time: each piece within `read_timeout` seconds
    of asking for it (a client that stalls), and the whole at BODY_MIN_BYTES_PER_SECOND after the
    first `read_timeout` (one that trickles). Either way the app is told the client went away
    (it stops reading), and whatever it answers is replaced by the problem; after a 408 the
    connection is closed (the rest of the body may still come).

    Security headers, where the response has not set them: nosniff, X-Frame-Options DENY,
    Referrer-Policy no-referrer on everything; a locked-down CSP on JSON (not /docs or
    /openapi.json); `Cache-Control: no-store` and `Pragma: no-cache` on the routes that answer
    with tokens; HSTS when `hsts` is on and the request came over https."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        hsts: bool,
        proxy_hops: int = 0,
        json_limit: int,
        multipart_limit: int,
        read_timeout: float,
    ) -> None:
        self.app = app
        self.proxy_hops = proxy_hops
        self.json_limit = json_limit
        self.multipart_limit = multipart_limit
        self.read_timeout = read_timeout
        # The headers every response gets, by (answers with tokens, over https).
        self._headers = {
            (tokens, https): ALWAYS
            + (NO_STORE if tokens else [])
            + (HSTS if hsts and https else [])
            for tokens in (False, True)
            for https in (False, True)
        }
        # A latency histogram's child per (method, route, status): labels() costs a lock and a
        # dictionary of tuples each time.
        self._durations: dict[tuple[str, str, int], Any] = {}
        self._plain_routes: dict[Any, str] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming_id = accept_encoding = declared = None
        chunked = False
        forwarded_for: list[str] = []
        forwarded_proto: list[str] = []
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                incoming_id = value
            elif name == b"accept-encoding":
                accept_encoding = value
            elif name == b"content-length":
                declared = value
            elif name == b"transfer-encoding":
                chunked = True
            elif self.proxy_hops and name == b"x-forwarded-for":
                forwarded_for += value.decode("latin-1").split(",")
            elif self.proxy_hops and name == b"x-forwarded-proto":
                forwarded_proto += value.decode("latin-1").split(",")
        if self.proxy_hops:
            scope = self._behind_proxies(scope, forwarded_for, forwarded_proto)

        request_id = valid_request_id(incoming_id.decode("latin-1") if incoming_id else None)
        request_id = request_id or new_request_id()
        path: str = scope["path"]
        method: str = scope["method"]
        extra = self._headers[
            (method, path.rstrip("/") or "/") in TOKEN_ROUTES, scope.get("scheme") == "https"
        ]
        json_csp = not _is_docs(path)
        own_headers = [*extra, (b"x-request-id", request_id.encode())]
        status = 500  # the app raised before answering

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers: HeaderList = []
                present = set()
                content_type = b""
                for name, value in message.get("headers", ()):
                    name = name.lower()
                    if name == b"x-request-id":
                        continue  # ours is the one
                    if name == b"content-type":
                        content_type = value
                    elif name == b"vary" and not compressing:
                        value += b", Accept-Encoding"
                    present.add(name)
                    headers.append((name, value))
                wanted = (
                    own_headers + JSON_CSP if json_csp and _is_json(content_type) else own_headers
                )
                if not compressing:
                    wanted = [*wanted, VARY_ENCODING]
                headers += [(name, value) for name, value in wanted if name not in present]
                message = {**message, "headers": headers}
            await send(message)

        app: ASGIApp = self.app
        respond: Send = send_with_headers
        if declared is not None or chunked:
            limited = self._body_limits(scope, receive, send_with_headers, declared, chunked)
            if limited is None:
                app = self._too_large(scope)
            else:
                receive, respond = limited
        accept = accept_encoding.decode("latin-1") if accept_encoding else ""
        # A client that takes gzip gets GZipResponder (it adds the Vary itself); any other gets
        # the body as it is and the Vary from here, without a responder around the app.
        compressing = bool(accept) and accepts_gzip(accept)
        responder: ASGIApp = (
            GZipResponder(app, COMPRESS_MIN_BYTES, compresslevel=GZIP_LEVEL) if compressing else app
        )

        token = request_id_var.set(request_id)
        HTTP_REQUESTS_IN_PROGRESS.inc()
        started = time.perf_counter()
        try:
            await responder(scope, receive, respond)
        finally:
            HTTP_REQUESTS_IN_PROGRESS.dec()
            self._duration(method, scope, status).observe(time.perf_counter() - started)
            request_id_var.reset(token)

    def _behind_proxies(
        self, scope: Scope, forwarded_for: list[str], forwarded_proto: list[str]
    ) -> Scope:
        client = self._outermost(forwarded_for)
        proto = (self._outermost(forwarded_proto) or "").lower()
        if not client and proto not in SCHEMES:
            return scope
        scope = dict(scope)
        if client:
            scope["client"] = (client, 0)
        if proto in SCHEMES:
            scope["scheme"] = proto
        return scope

    def _outermost(self, entries: list[str]) -> str | None:
        entries = [entry.strip() for entry in entries if entry.strip()]
        return entries[-self.proxy_hops] if len(entries) >= self.proxy_hops else None

    def _limit(self, scope: Scope) -> int:
        # The upload limit is the upload route's alone: a multipart Content-Type elsewhere gets
        # the JSON limit (it must not lift the cap on, say, /auth/login).
        is_upload = scope["method"] == "POST" and UPLOAD_PATH.match(scope["path"]) is not None
        return self.multipart_limit if is_upload else self.json_limit

    def _too_large(self, scope: Scope) -> ASGIApp:
        async def refuse(scope: Scope, receive: Receive, send: Send) -> None:
            await (await _too_large(scope, self._limit(scope)))(scope, receive, send)

        return refuse

    def _body_limits(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        declared: bytes | None,
        chunked: bool,
    ) -> tuple[Receive, Send] | None:
        """The receive and send that hold a body to the limits; None when Content-Length
        already says it is too large."""
        limit = self._limit(scope)
        if declared is not None and declared.isdigit() and int(declared) > limit:
            return None
        # Whether a piece of the body is still to come (what comes after the body is the wait
        # for a disconnect).
        more_body = (declared is not None and declared.isdigit() and int(declared) > 0) or chunked
        received = 0
        refusal: Callable[[], Awaitable[Response]] | None = None
        started: float | None = None
        read_timeout = self.read_timeout

        async def too_slow() -> Response:
            return await _too_slow(scope)

        async def too_large() -> Response:
            return await _too_large(scope, limit)

        async def limited_receive() -> Message:
            nonlocal received, refusal, more_body, started
            if refusal is not None:
                return {"type": "http.disconnect"}
            if not more_body:
                return await receive()
            now = asyncio.get_running_loop().time()
            started = now if started is None else started
            rate_deadline = started + read_timeout + received / BODY_MIN_BYTES_PER_SECOND
            try:
                async with asyncio.timeout_at(min(now + read_timeout, rate_deadline)):
                    message = await receive()
            except TimeoutError:
                refusal = too_slow
                return {"type": "http.disconnect"}
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                more_body = message.get("more_body", False)
                if received > limit:
                    refusal = too_large
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            if refusal is None:
                await send(message)
            elif message["type"] == "http.response.start":
                await (await refusal())(scope, receive, send)

        return limited_receive, guarded_send

    def _duration(self, method: str, scope: Scope, status: int) -> Any:
        method = method if method in _METHODS else "other"
        key = (method, self._route_template(scope), status)
        child = self._durations.get(key)
        if child is None:
            child = self._durations[key] = HTTP_REQUEST_DURATION.labels(method, key[1], str(status))
        return child

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


async def _too_large(scope: Scope, limit: int) -> Response:
    return problem(
        413,
        PayloadTooLarge.code,
        "The request body is larger than {limit} bytes.",
        locale=await request_locale(Request(scope)),
        values={"limit": limit},
    )


async def _too_slow(scope: Scope) -> Response:
    return problem(
        408,
        RequestTimeout.code,
        RequestTimeout.detail,
        headers={"Connection": "close"},
        locale=await request_locale(Request(scope)),
    )
