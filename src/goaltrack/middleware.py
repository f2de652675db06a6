"""Request-body limits (Starlette reads any body size by default; we refuse large ones early) and
response compression."""

from __future__ import annotations

import re

from starlette.middleware.gzip import GZipMiddleware, GZipResponder, IdentityResponder
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from goaltrack.errors import PayloadTooLarge, problem, request_locale

UPLOAD_PATH = re.compile(r"^/goals/[^/]+/attachments/?$")


class BodySizeLimit:
    """413 for a body over the limit: at once when Content-Length says so, otherwise as soon as
    the streamed bytes pass it. Then the app is told the client went away (it stops reading), and
    whatever it answers is replaced by the 413."""

    def __init__(self, app: ASGIApp, *, json_limit: int, multipart_limit: int) -> None:
        self.app = app
        self.json_limit = json_limit
        self.multipart_limit = multipart_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        # The upload limit is the upload route's alone: a multipart Content-Type elsewhere gets
        # the JSON limit (it must not lift the cap on, say, /auth/login).
        is_upload = scope["method"] == "POST" and UPLOAD_PATH.match(scope["path"]) is not None
        limit = self.multipart_limit if is_upload else self.json_limit

        async def too_large() -> Response:  # built only when needed: this runs on every request
            return problem(
                413,
                PayloadTooLarge.code,
                "The request body is larger than {limit} bytes.",
                locale=await request_locale(Request(scope)),
                values={"limit": limit},
            )

        declared = headers.get(b"content-length", b"")
        if declared.isdigit() and int(declared) > limit:
            await (await too_large())(scope, receive, send)
            return
        received = 0
        exceeded = False

        async def limited_receive() -> Message:
            nonlocal received, exceeded
            if exceeded:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    exceeded = True
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            if not exceeded:
                await send(message)
            elif message["type"] == "http.response.start":
                await (await too_large())(scope, receive, send)

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
