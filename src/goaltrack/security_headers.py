"""Security headers on every HTTP response (pure ASGI: streaming and background tasks untouched).

A header the response already carries is never replaced: the reset page sets its own CSP and
`Cache-Control`, and a route may always say more than this default."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

HeaderList = list[tuple[bytes, bytes]]

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


class SecurityHeaders:
    """Adds, where the response has not set them: nosniff, X-Frame-Options DENY,
    Referrer-Policy no-referrer on everything; a locked-down CSP on JSON (not /docs or
    /openapi.json); `Cache-Control: no-store` and `Pragma: no-cache` on the routes that
    answer with tokens; HSTS when `hsts` is on and the request came over https."""

    def __init__(self, app: ASGIApp, *, hsts: bool) -> None:
        self.app = app
        self.hsts = hsts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        extra: HeaderList = list(ALWAYS)
        if (scope["method"], path.rstrip("/") or "/") in TOKEN_ROUTES:
            extra += NO_STORE
        if self.hsts and scope.get("scheme") == "https":
            extra += HSTS
        json_csp = not _is_docs(path)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers: HeaderList = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                wanted = list(extra)
                if json_csp:
                    content_type = next(
                        (value for name, value in headers if name.lower() == b"content-type"),
                        b"",
                    )
                    if _is_json(content_type):
                        wanted += JSON_CSP
                headers += [(name, value) for name, value in wanted if name not in present]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)
