"""Who the client is behind the reverse proxies, request-body limits (Starlette reads any body
size, as slowly as it comes, by default; we refuse large or slow ones early) and response
compression."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable

from starlette.middleware.gzip import GZipMiddleware, GZipResponder, IdentityResponder
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from goaltrack.errors import PayloadTooLarge, RequestTimeout, problem, request_locale

UPLOAD_PATH = re.compile(r"^/goals/[^/]+/attachments/?$")
SCHEMES = {"http", "https"}


class TrustedProxies:
    """Behind `hops` reverse proxies (TRUSTED_PROXY_HOPS), the request's client and scheme are
    the ones the outermost of them saw: the `hops`-th entry from the right of X-Forwarded-For and
    of X-Forwarded-Proto (each proxy appends its own; whatever a client sent stands to the left,
    so it cannot claim another address or https). With fewer entries than hops, or none, the
    connection's own stand. Installed only with hops > 0: without a proxy both headers are
    nobody's word. Everything after it (rate limits, Secure cookies, HSTS) reads `scope`."""

    def __init__(self, app: ASGIApp, *, hops: int) -> None:
        self.app = app
        self.hops = hops

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            forwarded_for: list[str] = []
            forwarded_proto: list[str] = []
            for name, value in scope["headers"]:
                if name == b"x-forwarded-for":
                    forwarded_for += value.decode("latin-1").split(",")
                elif name == b"x-forwarded-proto":
                    forwarded_proto += value.decode("latin-1").split(",")
            client = self._outermost(forwarded_for)
            proto = (self._outermost(forwarded_proto) or "").lower()
            # In place, not on a copy: the observability middleware outside this one reads the
            # route that routing writes into this same scope (a copy left every request's
            # metrics labelled route="unmatched" behind the proxy).
            if client:
                scope["client"] = (client, 0)
            if proto in SCHEMES:
                scope["scheme"] = proto
        await self.app(scope, receive, send)

    def _outermost(self, entries: list[str]) -> str | None:
        entries = [entry.strip() for entry in entries if entry.strip()]
        return entries[-self.hops] if len(entries) >= self.hops else None


# After its first BODY_READ_TIMEOUT_SECONDS a body must have come at this average at least: a
# client trickling a byte now and then, each in time, is cut off as well (a phone on a bad
# mobile link uploads well above it).
BODY_MIN_BYTES_PER_SECOND = 1024


class BodyLimits:
    """413 for a body over the limit: at once when Content-Length says so, otherwise as soon as
    the streamed bytes pass it. 408 for a body that does not come in time: each piece within
    `read_timeout` seconds of asking for it (a client that stalls), and the whole at
    BODY_MIN_BYTES_PER_SECOND after the first `read_timeout` (one that trickles). Either way the
    app is told the client went away (it stops reading), and whatever it answers is replaced by
    the problem; after a 408 the connection is closed (the rest of the body may still come)."""

    def __init__(
        self, app: ASGIApp, *, json_limit: int, multipart_limit: int, read_timeout: float
    ) -> None:
        self.app = app
        self.json_limit = json_limit
        self.multipart_limit = multipart_limit
        self.read_timeout = read_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        # The upload limit is the upload route's alone: a multipart Content-Type elsewhere gets
        # the JSON limit (it must not lift the cap on, say, /auth/login).
        is_upload = scope["method"] == "POST" and UPLOAD_PATH.match(scope["path"]) is not None
        limit = self.multipart_limit if is_upload else self.json_limit

        # Built only when needed: this runs on every request.
        async def too_large() -> Response:
            return problem(
                413,
                PayloadTooLarge.code,
                "The request body is larger than {limit} bytes.",
                locale=await request_locale(Request(scope)),
                values={"limit": limit},
            )

        async def too_slow() -> Response:
            return problem(
                408,
                RequestTimeout.code,
                RequestTimeout.detail,
                headers={"Connection": "close"},
                locale=await request_locale(Request(scope)),
            )

        declared = headers.get(b"content-length", b"")
        if declared.isdigit() and int(declared) > limit:
            await (await too_large())(scope, receive, send)
            return
        # Whether a piece of the body is still to come (a bodiless GET's one empty message is
        # there at once, and what comes after the body is the wait for a disconnect).
        more_body = (declared.isdigit() and int(declared) > 0) or b"transfer-encoding" in headers
        received = 0
        refusal: Callable[[], Awaitable[Response]] | None = None
        started: float | None = None

        async def limited_receive() -> Message:
            nonlocal received, refusal, more_body, started
            if refusal is not None:
                return {"type": "http.disconnect"}
            if not more_body:
                return await receive()
            now = asyncio.get_running_loop().time()
            started = now if started is None else started
            rate_deadline = started + self.read_timeout + received / BODY_MIN_BYTES_PER_SECOND
            try:
                async with asyncio.timeout_at(min(now + self.read_timeout, rate_deadline)):
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

        await self.app(scope, limited_receive, guarded_send)


# Responses of 1 KiB or more are compressed (a goals page of 20 is about 8 KiB of JSON; below a
# kilobyte the gzip frame and the CPU buy little). Level 6, zlib's default: nearly all of level
# 9's saving on JSON for a fraction of its CPU.
COMPRESS_MIN_BYTES = 1024
GZIP_LEVEL = 6


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


class Compression(GZipMiddleware):
    """gzip for responses of COMPRESS_MIN_BYTES or more when the client accepts it, with
    `Vary: Accept-Encoding` on every response that size (compressed or not), so that caches keep
    the two apart. Starlette's, but for how it reads Accept-Encoding (a substring test would
    compress for `gzip;q=0`)."""

    def __init__(self, app: ASGIApp) -> None:
        super().__init__(app, minimum_size=COMPRESS_MIN_BYTES, compresslevel=GZIP_LEVEL)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        accept = next(
            (value for name, value in scope["headers"] if name == b"accept-encoding"), b""
        )
        responder: ASGIApp
        if accepts_gzip(accept.decode("latin-1")):
            responder = GZipResponder(
                self.app,
                self.minimum_size,
                compresslevel=self.compresslevel,
                thread_minimum_size=self.thread_minimum_size,
                exclude_content_types=self.exclude_content_types,
            )
        else:
            responder = IdentityResponder(
                self.app, self.minimum_size, exclude_content_types=self.exclude_content_types
            )
        await responder(scope, receive, send)
