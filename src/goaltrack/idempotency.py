"""Idempotency keys on the authenticated POSTs (the IETF httpapi `Idempotency-Key` draft).

A client sends `Idempotency-Key: <1–255 visible ASCII>` with a POST and, when it never saw the
answer (a timeout, a dropped connection), sends the same request with the same key again: it gets
the first answer back, marked `Idempotency-Replayed: true`, and nothing runs twice. A key belongs
to the caller (the access token's user) and is kept `RETENTION`.

Where the record lives, and why: in PostgreSQL, written in the request's own transaction
(`db.SessionDep`, the same session instance as the route's). The route's effects and the record
of its answer commit together or not at all, so a retry finds both (and is answered from the
record) or neither (and runs): exactly once, including when the connection dropped after the
commit. A record in Redis would be a second write, which can succeed without the first or be
lost after it. A transaction-scoped advisory lock on (caller, key), taken before the lookup, tells
a retry that arrives while the first request still runs (409 `idempotency_in_progress`); the
commit that makes the record visible is what releases it.

A request with a key, step by step:
1. The claim (`claim`, in a dependency solved before anything with an effect): the key is checked
   (400 `invalid_idempotency_key`), the lock tried (409), then a record younger than `RETENTION`
   looked up. Another fingerprint (method, path with its query, content) is a 422
   `idempotency_key_reused`; the same one is answered from the record and nothing else runs. A
   claim that answers by itself first checks that the token is still current (`verify_owner`):
   a revoked token gets its 401, never a stored answer. Otherwise a SAVEPOINT is set and the
   claim stays on the request.
2. The route runs. `IdempotentRouteBase` wraps its handler: once the handler returned its
   response (the session is still open: `get_db_session` commits right after), the record is
   written in the same session. A raised error whose answer is below 500 is rendered by the app's
   own handler, the route's work is rolled back to the savepoint (the tasks it deferred dropped),
   and the error is recorded instead. 5xx, 401 and 429 are not recorded: they say the request was
   not carried out, and the same key must run it when retried (later, or with a fresh token).
3. `idempotency.delete_expired` (worker/tasks.py, hourly) deletes older records in batches; a
   lookup ignores them before that.

Content is the canonical JSON body (sorted keys; unparsable bytes as they are; an empty body is
its own content), or, for an upload, the file's bytes and name (a retry's multipart boundary
differs, so the raw body is never hashed; goals.dependencies.get_upload_slot). Bodies are bounded
before they get here (BodyLimits, the upload's own limit).
"""

from __future__ import annotations

import copy
import hashlib
import inspect
import re
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import IO, Any, ClassVar, Final, TypeVar

import orjson
from anyio import to_thread
from fastapi import FastAPI, Request, params
from fastapi.dependencies.models import Dependant
from fastapi.dependencies.utils import get_dependant, get_parameterless_sub_dependant
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute, iter_route_contexts
from fastapi.security.base import SecurityBase
from sqlalchemy import ForeignKey, LargeBinary, SmallInteger, String, delete, func, select, tuple_
from sqlalchemy.dialects.postgresql import JSONB, insert
from sqlalchemy.ext.asyncio import AsyncSession, AsyncSessionTransaction
from sqlalchemy.orm import Mapped, mapped_column
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.routing import compile_path

from goaltrack.clock import utcnow
from goaltrack.db import KEEP_OPEN, Base
from goaltrack.defer import deferred_mark, discard_deferred_since
from goaltrack.errors import PROBLEM_JSON, AppError, error_responses

IDEMPOTENCY_KEY: Final = "Idempotency-Key"
REPLAYED: Final = "Idempotency-Replayed"
MAX_KEY_LENGTH: Final = 255
# Visible ASCII (%x21-7E), as the published pattern says: `^[!-~]+$`, 1 to 255 characters.
KEY_PATTERN: Final = "^[!-~]+$"
_KEY = re.compile(rf"[!-~]{{1,{MAX_KEY_LENGTH}}}")
RETENTION: Final = timedelta(hours=24)
IN_PROGRESS_RETRY_AFTER: Final = 1
# The headers a replay repeats (a 201's Location, the ETag, the body's type); no others.
STORED_HEADERS: Final = ("location", "etag", "content-type")
# Answers that say the request was not carried out: never recorded (nor anything from 500 up).
NOT_RECORDED: Final = frozenset({401, 429})
SWEEP_BATCH: Final = 5000
_CLAIM = "goaltrack.idempotency"  # the request scope's key for the pending claim
_CLAIMS_KEY = "__claims_idempotency_key__"  # marks a claim dependency (`claims_key`)

F = TypeVar("F", bound=Callable[..., Any])


class IdempotencyKey(Base):
    """A caller's key and the answer its first request got."""

    __tablename__ = "idempotency_keys"

    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[str] = mapped_column(String(MAX_KEY_LENGTH), primary_key=True)
    fingerprint: Mapped[bytes] = mapped_column(LargeBinary)  # sha256 of method, path, content
    status_code: Mapped[int] = mapped_column(SmallInteger)
    headers: Mapped[dict[str, str]] = mapped_column(JSONB)  # STORED_HEADERS, lower-case names
    body: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now(), index=True)


class InvalidIdempotencyKey(AppError):
    status_code = 400
    code = "invalid_idempotency_key"
    detail = "Idempotency-Key must be sent once, as 1 to 255 visible ASCII characters."


class IdempotencyInProgress(AppError):
    status_code = 409
    code = "idempotency_in_progress"
    detail = "A request with this Idempotency-Key is still being processed; retry shortly."

    def __init__(self) -> None:
        super().__init__(headers={"Retry-After": str(IN_PROGRESS_RETRY_AFTER)})


class IdempotencyKeyReused(AppError):
    status_code = 422
    code = "idempotency_key_reused"
    detail = "This Idempotency-Key was used with another request (method, path or content)."
    location = ("header", IDEMPOTENCY_KEY)


class _Replay(Exception):
    """The claim found the answer: the route handler returns it instead of running."""

    def __init__(self, response: Response) -> None:
        super().__init__()
        self.response = response


# --- the claim ---------------------------------------------------------------------------------


def request_key(request: Request) -> str | None:
    """The request's key, None without one; 400 when malformed or sent more than once."""
    values = request.headers.getlist(IDEMPOTENCY_KEY)
    if not values:
        return None
    if len(values) > 1 or _KEY.fullmatch(values[0]) is None:
        raise InvalidIdempotencyKey
    return values[0]


def json_content(body: bytes) -> bytes:
    """A JSON body in canonical form (keys sorted, no whitespace): a retry may serialise the same
    object differently. Anything unparsable counts as its bytes; an empty body as itself."""
    try:
        return orjson.dumps(orjson.loads(body), option=orjson.OPT_SORT_KEYS)
    except (orjson.JSONDecodeError, orjson.JSONEncodeError):
        return body


async def file_content(file: IO[bytes], name: str) -> bytes:
    """An upload's content: its file name and the SHA-256 of its bytes (read off the event
    loop; the file is left at its start)."""

    def digest() -> str:
        file.seek(0)
        sha = hashlib.sha256()
        while chunk := file.read(1 << 16):
            sha.update(chunk)
        file.seek(0)
        return sha.hexdigest()

    return orjson.dumps({"file_name": name, "sha256": await to_thread.run_sync(digest)})


def fingerprint(method: str, path: str, query: str, content: bytes) -> bytes:
    # The JSON array ends where it ends: nothing in the content can pass for part of the target.
    return hashlib.sha256(orjson.dumps([method, path, query]) + content).digest()


@dataclass(slots=True)
class _Claim:
    session: AsyncSession
    owner: uuid.UUID
    key: str
    fingerprint: bytes
    savepoint: AsyncSessionTransaction
    deferred: int  # tasks the session had deferred when the route started

    async def undo(self) -> None:
        """The route's work goes; the lock (taken before the savepoint) stays."""
        await self.savepoint.rollback()
        discard_deferred_since(self.session, self.deferred)

    async def record(self, response: Response) -> None:
        body = getattr(response, "body", None)
        if not isinstance(body, bytes | memoryview):  # a streamed answer cannot be replayed
            return
        headers = {
            name: response.headers[name] for name in STORED_HEADERS if name in response.headers
        }
        row = insert(IdempotencyKey).values(
            user_id=self.owner,
            key=self.key,
            fingerprint=self.fingerprint,
            status_code=response.status_code,
            headers=headers,
            body=bytes(body),
            created_at=utcnow(),
        )
        # A row still there under this key is older than RETENTION (the lookup found none younger,
        # and the lock keeps everyone else out): it is replaced.
        await self.session.execute(
            row.on_conflict_do_update(
                index_elements=[IdempotencyKey.user_id, IdempotencyKey.key],
                set_={
                    column: row.excluded[column]
                    for column in ("fingerprint", "status_code", "headers", "body", "created_at")
                },
            )
        )


async def claim(
    request: Request,
    session: AsyncSession,
    *,
    owner: uuid.UUID,
    content: Callable[[], Awaitable[bytes]],
    verify_owner: Callable[[], Awaitable[object]],
) -> None:
    """Claim the request's key for `owner` in the request's `session` (see the module's
    docstring); nothing at all without a key. `content` is read only when there is a key;
    `verify_owner` raises when the token is no longer current."""
    key = request_key(request)
    if key is None:
        return
    url = request.url
    request_fingerprint = fingerprint(request.method, url.path, url.query, await content())
    lock = func.hashtextextended(f"idempotency:{owner}:{key}", 0)
    if not await session.scalar(select(func.pg_try_advisory_xact_lock(lock))):
        await verify_owner()
        raise IdempotencyInProgress
    stored = (
        await session.execute(
            select(
                IdempotencyKey.fingerprint,
                IdempotencyKey.status_code,
                IdempotencyKey.headers,
                IdempotencyKey.body,
            ).where(
                IdempotencyKey.user_id == owner,
                IdempotencyKey.key == key,
                IdempotencyKey.created_at > utcnow() - RETENTION,
            )
        )
    ).one_or_none()
    if stored is not None:
        await verify_owner()
        if stored.fingerprint != request_fingerprint:
            raise IdempotencyKeyReused
        raise _Replay(
            Response(
                stored.body,
                status_code=stored.status_code,
                headers={**stored.headers, REPLAYED: "true"},
            )
        )
    savepoint = await session.begin_nested()
    session.info[KEEP_OPEN] = True  # the answer is recorded in this transaction
    request.scope[_CLAIM] = _Claim(
        session, owner, key, request_fingerprint, savepoint, deferred_mark(session)
    )


def claims_key(dependency: F) -> F:
    """Mark a dependency that calls `claim`: a route declaring one (an upload, which claims its
    key after reading the file) gets no default claim from its route class."""
    setattr(dependency, _CLAIMS_KEY, True)
    return dependency


def is_claim(call: Any) -> bool:
    return getattr(call, _CLAIMS_KEY, False) is True


def dependency_calls(dependant: Dependant) -> Iterator[Any]:
    """Every dependency callable under `dependant`, in the order FastAPI solves them."""
    for sub in dependant.dependencies:
        yield from dependency_calls(sub)
        yield sub.call


# --- recording ---------------------------------------------------------------------------------


def recordable(status_code: int) -> bool:
    return status_code < 500 and status_code not in NOT_RECORDED


async def _client_error_response(request: Request, exc: Exception) -> Response | None:
    """`exc` rendered exactly as the app's exception handlers render it, when it is a client
    error (below 500); None for anything else."""
    if isinstance(exc, AppError | StarletteHTTPException):
        if exc.status_code >= 500:
            return None
    elif not isinstance(exc, RequestValidationError):
        return None
    handlers, status_handlers = request.scope.get("starlette.exception_handlers", ({}, {}))
    handler = None
    if isinstance(exc, StarletteHTTPException):
        handler = status_handlers.get(exc.status_code)
    if handler is None:
        handler = next((handlers[cls] for cls in type(exc).__mro__ if cls in handlers), None)
    if handler is None:
        return None
    if inspect.iscoroutinefunction(handler):
        response: Response = await handler(request, exc)
    else:
        response = await run_in_threadpool(handler, request, exc)
    return response


class IdempotentRouteBase(APIRoute):
    """A route class that gives every authenticated POST (a route with a security dependency)
    the subclass's `claim` dependency, after the router's own dependencies (the token) and before
    the endpoint's parameters — unless it declares a claim itself (`claims_key`) — and records
    the answer of a claimed key. Routes without a claim are left as FastAPI builds them."""

    claim: ClassVar[params.Depends | None] = None

    def __init__(
        self,
        path: str,
        endpoint: Callable[..., Any],
        *,
        methods: set[str] | list[str] | None = None,
        dependencies: Sequence[params.Depends] | None = None,
        **options: Any,
    ) -> None:
        dependencies = list(dependencies or [])
        if self.claim is not None and "POST" in {method.upper() for method in methods or ()}:
            calls = list(dependency_calls(_declared(path, endpoint, dependencies)))
            authenticated = any(isinstance(call, SecurityBase) for call in calls)
            if authenticated and not any(is_claim(call) for call in calls):
                dependencies.append(self.claim)
        super().__init__(path, endpoint, methods=methods, dependencies=dependencies, **options)

    @property
    def idempotent(self) -> bool:
        """Whether the route claims a key (and records its answers)."""
        return any(is_claim(call) for call in dependency_calls(self.dependant))

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        if not self.idempotent:
            return handler

        async def handle(request: Request) -> Response:
            try:
                response = await handler(request)
            except _Replay as replay:
                return replay.response
            except Exception as exc:
                held: _Claim | None = request.scope.pop(_CLAIM, None)
                if held is None:
                    raise
                answer = await _client_error_response(request, exc)
                if answer is None or not recordable(answer.status_code):
                    raise
                await held.undo()
                await held.record(answer)
                return answer
            held = request.scope.pop(_CLAIM, None)
            if held is not None and recordable(response.status_code):
                await held.record(response)
            return response

        return handle


def _declared(
    path: str, endpoint: Callable[..., Any], dependencies: list[params.Depends]
) -> Dependant:
    """The dependency tree the route will have, built as APIRoute builds it."""
    path_format = compile_path(path)[1]
    dependant = get_dependant(path=path_format, call=endpoint)
    dependant.dependencies[:0] = [
        get_parameterless_sub_dependant(depends=depends, path=path_format)
        for depends in dependencies
    ]
    return dependant


# --- expiry ------------------------------------------------------------------------------------


async def delete_expired(session: AsyncSession, now: datetime) -> int:
    """One batch of records older than RETENTION."""
    batch = (
        select(IdempotencyKey.user_id, IdempotencyKey.key)
        .where(IdempotencyKey.created_at <= now - RETENTION)
        .limit(SWEEP_BATCH)
        .with_for_update(skip_locked=True)
    )
    result = await session.execute(
        delete(IdempotencyKey).where(tuple_(IdempotencyKey.user_id, IdempotencyKey.key).in_(batch))
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


# --- the published contract --------------------------------------------------------------------

KEY_PARAMETER: Final[dict[str, Any]] = {
    "name": IDEMPOTENCY_KEY,
    "in": "header",
    "required": False,
    "description": "Makes the POST safe to retry: send a new unique value (a UUID) with each new "
    "request, and the same value when retrying it. The retry gets the first answer again "
    f"(`{REPLAYED}: true`) and nothing runs twice. Keys are the caller's, kept 24 hours; the same "
    "key with another method, path or content is a 422 `idempotency_key_reused`, and while the "
    "first request still runs a retry gets 409 `idempotency_in_progress`. 1 to 255 visible ASCII "
    "characters.",
    "schema": {
        "type": "string",
        "minLength": 1,
        "maxLength": MAX_KEY_LENGTH,
        "pattern": KEY_PATTERN,
    },
}
REPLAYED_HEADER: Final[dict[str, Any]] = {
    "description": "Present when this is the stored answer to an earlier request with the same "
    "`Idempotency-Key`.",
    "required": False,
    "schema": {"type": "string", "const": "true"},
}
RETRY_AFTER_HEADER: Final[dict[str, Any]] = {
    "description": f"Seconds to wait before retrying (with `{IdempotencyInProgress.code}`).",
    "schema": {"type": "integer", "minimum": 0},
}


def install_contract(app: FastAPI) -> None:
    """Document the key on every operation that claims one: the header, the 400/409/422 problems
    it adds (Retry-After with the 409) and `Idempotency-Replayed` on the answers a replay can
    give. Wired by main.py after the other finishing touches (openapi.py), on top of them."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = generate()
            for route in iter_route_contexts(app.routes):
                original = route.original_route
                if not (isinstance(original, IdempotentRouteBase) and original.idempotent):
                    continue
                if route.include_in_schema and "POST" in (route.methods or ()):
                    _declare(document["paths"][route.path_format]["post"])
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _declare(operation: dict[str, Any]) -> None:
    operation.setdefault("parameters", []).append(copy.deepcopy(KEY_PARAMETER))
    responses = operation.setdefault("responses", {})
    for error in (InvalidIdempotencyKey, IdempotencyInProgress, IdempotencyKeyReused):
        status = str(error.status_code)
        own = status not in responses  # no problem of the route's own under this status
        if own:
            responses[status] = error_responses(error)[error.status_code]
            if error.status_code == 422:  # every 422 has the ValidationProblem shape (errors.py)
                responses[status]["content"] = {
                    PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/ValidationProblem"}}
                }
        else:
            responses[status]["description"] = " / ".join(
                filter(None, [responses[status].get("description"), f"`{error.code}`"])
            )
        if error is IdempotencyInProgress:
            # Required where every 409 is ours; the route's own 409s come without it.
            responses[status].setdefault("headers", {})["Retry-After"] = {
                **RETRY_AFTER_HEADER,
                "required": own,
            }
    for status, response in responses.items():
        if status.isdigit() and recordable(int(status)) and status != "413":
            response.setdefault("headers", {})[REPLAYED] = copy.deepcopy(REPLAYED_HEADER)
