"""One error base class, rendered as RFC 9457 problem+json by one set of handlers."""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any, ClassVar

import redis.exceptions
import sqlalchemy.exc
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from goaltrack.observability.request_id import current_request_id
from goaltrack.reads import DRIVER_CONNECTION_ERRORS

logger = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
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
    ) -> None:
        self.message = detail or self.detail
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


def problem(
    status: int,
    code: str,
    detail: str,
    *,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body = {
        "type": "about:blank",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        "code": code,
        **extra,
    }
    if (request_id := current_request_id()) is not None:
        body["request_id"] = request_id  # the response's X-Request-ID, for support and the logs
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM_JSON)


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


async def _app_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AppError)
    extra = exc.extra
    if exc.status_code == 422:
        # Every 422 has the same shape (ValidationProblem), whichever check refused the request.
        extra = {
            "errors": [{"loc": list(exc.location), "msg": exc.message, "type": exc.code}],
            **extra,
        }
    return problem(exc.status_code, exc.code, exc.message, headers=exc.headers, **extra)


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {
            "loc": list(error.get("loc", ())),
            "msg": error.get("msg", ""),
            "type": error.get("type", ""),
        }
        for error in exc.errors()
    ]
    return problem(422, "validation_error", "The request is not valid.", errors=errors)


# FastAPI's own words when a JSON body cannot even be decoded (invalid UTF-8).
_UNDECODABLE_BODY = "There was an error parsing the body"


async def _http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 400 and exc.detail == _UNDECODABLE_BODY:
        # The same answer as any other malformed JSON body.
        errors = [
            {"loc": ["body"], "msg": "The body is not valid UTF-8 JSON.", "type": "json_invalid"}
        ]
        return problem(422, "validation_error", "The request is not valid.", errors=errors)
    code = _STATUS_CODES.get(exc.status_code, "http_error")
    detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
    return problem(exc.status_code, code, detail, headers=dict(exc.headers or {}))


async def _dependency_down(request: Request, exc: Exception) -> JSONResponse:
    # PostgreSQL or Redis unreachable (restart, failover): a retryable 503, never a 500.
    logger.warning(
        "dependency unavailable on %s %s: %s", request.method, request.url.path, type(exc).__name__
    )
    return problem(
        503,
        ServiceUnavailable.code,
        ServiceUnavailable.detail,
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
    return problem(500, "internal_error", "An unexpected error occurred.")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(AppError, _app_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    for error in DEPENDENCY_ERRORS:
        app.add_exception_handler(error, _dependency_down)
    # Any other driver error: a 503 when it means the connection was lost, else a 500.
    app.add_exception_handler(sqlalchemy.exc.DBAPIError, _database_error)
    app.add_exception_handler(Exception, _unexpected_error)
