"""Request-body limits. Starlette reads any body size by default; we refuse large ones early."""

from __future__ import annotations

import re

from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from goaltrack.errors import PayloadTooLarge, problem

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

        def too_large() -> Response:  # built only when needed: this runs on every request
            return problem(
                413, PayloadTooLarge.code, f"The request body is larger than {limit} bytes."
            )

        declared = headers.get(b"content-length", b"")
        if declared.isdigit() and int(declared) > limit:
            await too_large()(scope, receive, send)
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
                await too_large()(scope, receive, send)

        await self.app(scope, limited_receive, guarded_send)
