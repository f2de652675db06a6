"""One error base class, rendered as RFC 9457 problem+json by one set of handlers.

A problem's `title` and `detail` are written in the caller's language when it is rendered: the
error's English detail is its message id in the catalogues (i18n), so an error class needs no
translation code of its own, and `code` never changes. The language is the caller's
`settings.locale` when the request carries a valid access token (one indexed read, on the error
path only: the token cannot carry the locale, which changes), else the best match of
`Accept-Language`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from http import HTTPStatus
from typing import Any, ClassVar

import redis.exceptions
import sqlalchemy.exc
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from goaltrack import i18n
from goaltrack.observability.request_id import current_request_id
from goaltrack.reads import DRIVER_CONNECTION_ERRORS, json_body

logger = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
# A problem's `type` (RFC 9457 3.1.1) is this prefix and its `code`: an identifier for each kind
# of problem, stable across deployments and versions. A tag URI (RFC 4151), not a locator: it
# promises no page to dereference (none is published), and clients switch on `code` anyway. Not
# `about:blank`, which would say "nothing beyond the status code" of problems that say more.
PROBLEM_TYPE_PREFIX = "tag:goaltrack.app,2026:problem:"
DEPENDENCY_RETRY_AFTER_SECONDS = 5
# Connection-level failures of PostgreSQL (through SQLAlchemy) and Redis, and plain network errors.
DEPENDENCY_ERRORS: tuple[type[Exception], ...] = (
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
    sqlalchemy.exc.TimeoutError,  # no pooled connection free within pool_timeout
    *DRIVER_CONNECTION_ERRORS,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    ConnectionError,
    TimeoutError,
)


class AppError(Exception):
    status_code: ClassVar[int] = 400
    code: ClassVar[str] = "bad_request"
    detail: ClassVar[str] = "The request could not be processed."
    # For 422s: where in the request the problem is, reported in `errors` like any validation error.
    location: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        detail: str | None = None,
        *,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
        values: Mapping[str, Any] | None = None,
    ) -> None:
        # The English detail is the message id; `values` fill its `{fields}` in any language.
        self.template = detail or self.detail
        self.values = dict(values or {})
        self.message = self.template.format(**self.values) if self.values else self.template
        self.headers = headers or {}
        self.extra = extra or {}
        super().__init__(self.message)


# The one authentication scheme of the API (RFC 6750 bearer tokens).
AUTH_CHALLENGE = "Bearer"


class Unauthorized(AppError):
    """Every 401: RFC 9110 (15.5.2) requires a `WWW-Authenticate` challenge with each one, also
    where the credentials came in the body (login, refresh, restore)."""

    status_code = 401

    def __init__(self, detail: str | None = None) -> None:
        super().__init__(detail, headers={"WWW-Authenticate": AUTH_CHALLENGE})


class NotAuthenticated(Unauthorized):
    code = "not_authenticated"
    detail = "Missing, invalid or expired access token."


class NotFound(AppError):
    status_code = 404
    code = "not_found"
    detail = "The resource does not exist."


class RateLimited(AppError):
    status_code = 429
    code = "rate_limited"
    detail = "Too many requests; try again later."

    def __init__(self, retry_after: int) -> None:
        super().__init__(headers={"Retry-After": str(retry_after)})


class ServiceUnavailable(AppError):
    status_code = 503
    code = "service_unavailable"
    detail = "A service the request needs is unavailable; try again later."


class PayloadTooLarge(AppError):
    status_code = 413
    code = "payload_too_large"
    detail = "The request body is too large."


class RequestTimeout(AppError):
    status_code = 408
    code = "request_timeout"
    detail = "The request body did not arrive in time; send it again."


# Finds the caller's settings.locale from the request (None: no valid access token, or no such
# user): installed by the app factory, which knows the domains (the kernel does not).
CallerLocale = Callable[[Request], Awaitable[str | None]]
# The lookup is one indexed read; on an error path it must never hold the answer up for long.
CALLER_LOCALE_TIMEOUT_SECONDS = 1.0
_LOCALE_KEY = "goaltrack.locale"


async def request_locale(request: Request, *, ask_database: bool = True) -> str:
    """The language of a problem for this request: the caller's settings.locale, else the best
    match of Accept-Language (`ask_database=False`: the latter only, when the database is the
    trouble)."""
    if (known := request.scope.get(_LOCALE_KEY)) is not None:
        return str(known)
    locale = None
    app_state = getattr(request.scope.get("app"), "state", None)
    lookup: CallerLocale | None = getattr(app_state, "caller_locale", None)
    if ask_database and lookup is not None:
        try:
            async with asyncio.timeout(CALLER_LOCALE_TIMEOUT_SECONDS):
                locale = await lookup(request)
        except Exception:  # the problem is still answered, in the browser's language
            logger.warning("caller locale unavailable for a problem body", exc_info=True)
    if locale not in i18n.CATALOGUES:
        locale = i18n.negotiate(request.headers.get("accept-language"))
    if ask_database:
        request.scope[_LOCALE_KEY] = locale
    return locale


def problem_title(status: int, locale: str) -> str:
    key = f"status.{status}"
    return i18n.t(locale, key) if key in i18n.MESSAGE_IDS else HTTPStatus(status).phrase


def problem(
    status: int,
    code: str,
    detail: str,
    *,
    locale: str = i18n.DEFAULT_LOCALE,
    values: Mapping[str, Any] | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    """A problem+json response; `title` and `detail` (an English message id, its `{fields}` from
    `values`) in `locale`. `code` is one of `problem_codes()`."""
    body = {
        "type": problem_type(code),
        "title": problem_title(status, locale),
        "status": status,
        "detail": i18n.t(locale, detail, **(values or {})),
        "code": code,
        **extra,
    }
    if (request_id := current_request_id()) is not None:
        body["request_id"] = request_id  # the response's X-Request-ID, for support and the logs
    # The words depend on the caller's language (and, without a caller, on Accept-Language).
    language = {"Content-Language": locale, "Vary": "Accept-Language"}
    return ProblemResponse(
        body, status_code=status, headers={**language, **(headers or {})}, media_type=PROBLEM_JSON
    )


class ProblemResponse(JSONResponse):
    """Rendered as every other body is (reads.json_body): a timestamp in `extra` reads `...Z`."""

    def render(self, content: Any) -> bytes:
        return json_body(content)


def problem_type(code: str) -> str:
    return PROBLEM_TYPE_PREFIX + code


def error_responses(*errors: type[AppError]) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route, so the OpenAPI names every problem it can return."""
    responses: dict[int | str, dict[str, Any]] = {}
    for error in errors:
        entry = responses.setdefault(
            error.status_code,
            {
                "description": "",
                "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
            },
        )
        entry["description"] = " / ".join(filter(None, [entry["description"], f"`{error.code}`"]))
    return responses


# The codes of Starlette's and FastAPI's own errors (`_http_error`), by status.
_STATUS_CODES = {
    400: "bad_request",
    401: "not_authenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
}


# Codes the handlers below give problems that are no AppError.
_HANDLER_CODES = frozenset(
    {*_STATUS_CODES.values(), "http_error", "validation_error", "internal_error"}
)


def problem_codes() -> list[str]:
    """Every `code` a problem body may carry, sorted: the handlers' own and every AppError's (of
    the modules imported so far: the app's document is built once every router is included)."""
    codes = set(_HANDLER_CODES)
    pending: list[type[AppError]] = [AppError]
    while pending:
        error = pending.pop()
        codes.add(error.code)
        pending.extend(error.__subclasses__())
    return sorted(codes)


async def _app_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AppError)
    # A 503 means a dependency is in trouble: the database may be it.
    locale = await request_locale(request, ask_database=exc.status_code < 500)
    extra = exc.extra
    if exc.status_code == 422:
        # Every 422 has the same shape (ValidationProblem), whichever check refused the request.
        message = i18n.t(locale, exc.template, **exc.values)
        extra = {
            "errors": [{"loc": list(exc.location), "msg": message, "type": exc.code}],
            **extra,
        }
    return problem(
        exc.status_code,
        exc.code,
        exc.template,
        locale=locale,
        values=exc.values,
        headers=exc.headers,
        **extra,
    )


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    # Pydantic's own `msg` of each error stays English (its types and `loc` are the stable part).
    errors = [
        {
            "loc": list(error.get("loc", ())),
            "msg": error.get("msg", ""),
            "type": error.get("type", ""),
        }
        for error in exc.errors()
    ]
    locale = await request_locale(request)
    return problem(
        422, "validation_error", "The request is not valid.", locale=locale, errors=errors
    )


# FastAPI's own words when a JSON body cannot even be decoded (invalid UTF-8).
_UNDECODABLE_BODY = "There was an error parsing the body"


def http_error_message(exc: StarletteHTTPException) -> str:
    """A Starlette error's detail as a message id: its status phrase (Starlette's default
    detail) reads as the problem's title does, any other text as itself."""
    phrase = HTTPStatus(exc.status_code).phrase
    if isinstance(exc.detail, str) and exc.detail != phrase:
        return exc.detail
    key = f"status.{exc.status_code}"
    return key if key in i18n.MESSAGE_IDS else phrase


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    locale = await request_locale(request)
    if exc.status_code == 400 and exc.detail == _UNDECODABLE_BODY:
        # The same answer as any other malformed JSON body.
        message = i18n.t(locale, "The body is not valid UTF-8 JSON.")
        errors = [{"loc": ["body"], "msg": message, "type": "json_invalid"}]
        return problem(
            422, "validation_error", "The request is not valid.", locale=locale, errors=errors
        )
    return problem(
        exc.status_code,
        _STATUS_CODES.get(exc.status_code, "http_error"),
        http_error_message(exc),
        locale=locale,
        headers=dict(exc.headers or {}),
    )


async def _dependency_down(request: Request, exc: Exception) -> JSONResponse:
    # PostgreSQL or Redis unreachable (restart, failover): a retryable 503, never a 500.
    logger.warning(
        "dependency unavailable on %s %s: %s", request.method, request.url.path, type(exc).__name__
    )
    return problem(
        503,
        ServiceUnavailable.code,
        ServiceUnavailable.detail,
        locale=await request_locale(request, ask_database=False),
        headers={"Retry-After": str(DEPENDENCY_RETRY_AFTER_SECONDS)},
    )


def _lost_connection(exc: BaseException) -> bool:
    """A database error that means the connection (or the server) went away, wrapped however
    the driver and SQLAlchemy wrapped it ("connection was closed in the middle of operation")."""
    if isinstance(exc, sqlalchemy.exc.DBAPIError) and exc.connection_invalidated:
        return True
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, (*DRIVER_CONNECTION_ERRORS, ConnectionError, TimeoutError)):
            return True
        current = getattr(current, "orig", None) or current.__cause__ or current.__context__
    return False


async def _database_error(request: Request, exc: Exception) -> JSONResponse:
    if _lost_connection(exc):
        return await _dependency_down(request, exc)
    return await _unexpected_error(request, exc)


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    logger.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    locale = await request_locale(request, ask_database=False)
    return problem(500, "internal_error", "An unexpected error occurred.", locale=locale)


def install_error_handlers(app: FastAPI, caller_locale: CallerLocale | None = None) -> None:
    """The handlers, and how a problem finds the caller's language (`request_locale`)."""
    app.state.caller_locale = caller_locale
    app.add_exception_handler(AppError, _app_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    for error in DEPENDENCY_ERRORS:
        app.add_exception_handler(error, _dependency_down)
    # Any other driver error: a 503 when it means the connection was lost, else a 500.
    app.add_exception_handler(sqlalchemy.exc.DBAPIError, _database_error)
    app.add_exception_handler(Exception, _unexpected_error)
