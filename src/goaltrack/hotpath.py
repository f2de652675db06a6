"""Hot routes: the reads a phone sends most, and its most frequent writes (a goal created, a stage
toggled), served without FastAPI's per-request machinery.

A route is declared hot once, with `@hot` under its router's decorator; it stays an ordinary
FastAPI route in every other respect (its parameters, `Annotated` dependencies, body and
`response_model` are its contract in the OpenAPI document). `HotRoutes`, the innermost layer
around the app's router, answers a request for a hot route itself:

- it finds the route among the hot ones alone (in the app's order; `_check_order` makes sure no
  other route before one of them could take its requests), not by walking every route, and for a
  path without parameters (`/goals`, `/notifications`) only among the routes that take that very
  path (`_RouteIndex`);
- it solves the route's dependencies from a plan compiled once (`_Plan`: each dependency's
  callable, its own parameters, FastAPI's own validation of path, query, header and cookie
  values and of a JSON body), where FastAPI walks the `Dependant` tree, opens exit stacks and
  builds a temporary response for every request;
- a dependency with `yield` (the request's session) is entered as FastAPI enters it and closed
  once the endpoint has returned or raised, before the response is sent (FastAPI's
  `scope="function"`): the transaction commits, or rolls back on the error;
- the endpoint returns its content (rows as the response model lays them out: the rendering is
  held to the model byte for byte by tests/test_reads.py) and it is written with orjson, without
  validating rows we wrote; a `Response` returned (a 304, a write's rendered goal) is sent as it
  is;
- an exception is answered by the app's own exception handlers, as ExceptionMiddleware would.

Whatever the plan cannot decide alone goes down the ordinary path, which answers exactly as it
always does: a parameter or body that fails validation (FastAPI's 422), a body that is not JSON,
a request with an Idempotency-Key to a route that claims keys (the claim and its record are the
route class's: goaltrack.idempotency), and every request while `app.dependency_overrides` is in
use (tests).
"""

from __future__ import annotations

import contextlib
import copy
import inspect
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import orjson
from fastapi import FastAPI, params
from fastapi._compat import ModelField, field_annotation_is_sequence, lenient_issubclass
from fastapi.dependencies.models import Dependant
from fastapi.dependencies.utils import (
    _should_embed_body_fields,
    request_body_to_args,
    request_params_to_args,
)
from fastapi.routing import APIRoute, RouteContext, iter_route_contexts
from pydantic import BaseModel
from starlette._utils import get_route_path
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route, compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from goaltrack.idempotency import IDEMPOTENCY_KEY, IdempotentRouteBase
from goaltrack.reads import json_body

Endpoint = TypeVar("Endpoint", bound=Callable[..., Any])
_HOT = "goaltrack_hot_route"
_KEY_HEADER = IDEMPOTENCY_KEY.lower().encode()


def hot(endpoint: Endpoint) -> Endpoint:
    """Declares the route of `endpoint` hot (place it under the router's decorator)."""
    setattr(endpoint, _HOT, True)
    return endpoint


class HotRouteError(RuntimeError):
    """A route declared hot needs what only FastAPI's own path provides."""


class _Unsolved(Exception):
    """A parameter did not validate: the ordinary path answers (its 422)."""


class _Plan:
    """A `Dependant` compiled for the hot path: what FastAPI's solve_dependencies decides for
    every request, decided once."""

    __slots__ = ("body", "dependencies", "params", "request_name", "response_name")

    def __init__(self, dependant: Dependant, route: str, *, endpoint: bool = True) -> None:
        if dependant.body_params and not endpoint:
            raise HotRouteError(f"{route}: only the endpoint itself may take the body")
        unsupported = (
            dependant.background_tasks_param_name
            or dependant.security_scopes_param_name
            or dependant.websocket_param_name
            or dependant.http_connection_param_name
        )
        if unsupported:
            raise HotRouteError(f"{route}: a hot route takes no background tasks or scopes")
        # (name, callable, its plan, the context manager of a dependency with `yield`)
        self.dependencies: list[tuple[str | None, Callable[..., Any], _Plan, Any]] = []
        for sub in dependant.dependencies:
            call = sub.call
            generator = call is not None and inspect.isasyncgenfunction(call)
            if call is None or not (generator or _is_coroutine_function(call)):
                raise HotRouteError(f"{route}: {call!r} is neither `async def` nor async `yield`")
            context = contextlib.asynccontextmanager(call) if generator else None
            self.dependencies.append((sub.name, call, _Plan(sub, route, endpoint=False), context))
        self.params = [
            (_Parameters(fields) if source in _PLAIN_SOURCES else fields, source)
            for fields, source in (
                (dependant.path_params, "path_params"),
                (dependant.query_params, "query_params"),
                (dependant.header_params, "headers"),
                (dependant.cookie_params, "cookies"),
            )
            if fields
        ]
        body = dependant.body_params
        self.body = (body, _should_embed_body_fields(body)) if body else None
        self.request_name = dependant.request_param_name
        self.response_name = dependant.response_param_name

    async def solve(self, request: Request, response: Response, solved: _Solved) -> dict[str, Any]:
        """The keyword arguments of this plan's callable; `solved`: each dependency's value by
        its callable, computed once per request (as FastAPI caches them)."""
        values: dict[str, Any] = {}
        for name, call, plan, context in self.dependencies:
            if call in solved.values:
                value = solved.values[call]
            else:
                arguments = await plan.solve(request, response, solved)
                if context is not None:
                    value = await solved.exits.enter_async_context(context(**arguments))
                else:
                    value = await call(**arguments)
                solved.values[call] = value
            if name is not None:
                values[name] = value
        for fields, source in self.params:
            received: Mapping[str, Any] = getattr(request, source)
            if isinstance(fields, _Parameters):
                fields.read(received, values)
                continue
            params, errors = request_params_to_args(fields, received)
            if errors:
                raise _Unsolved
            values.update(params)
        if self.body is not None:
            fields, embedded = self.body
            params, errors = await request_body_to_args(fields, await _json(request), embedded)
            if errors:
                raise _Unsolved
            values.update(params)
        if self.request_name is not None:
            values[self.request_name] = request
        if self.response_name is not None:
            values[self.response_name] = response
        return values


class _Solved:
    """One request's solved dependencies, and the exits of those with `yield`."""

    __slots__ = ("exits", "values")

    def __init__(self, exits: contextlib.AsyncExitStack) -> None:
        self.values: dict[Any, Any] = {}
        self.exits = exits


async def _json(request: Request) -> Any:
    """The request's JSON body (FastAPI's own path decides anything that is not plain JSON)."""
    content_type = request.headers.get("content-type", "")
    if content_type.partition(";")[0].strip().lower() != "application/json":
        raise _Unsolved
    try:
        return orjson.loads(await request.body())
    except orjson.JSONDecodeError:
        raise _Unsolved from None


# Path and query parameters of one value each are read here (headers, cookies, lists and
# models by FastAPI's own request_params_to_args).
_PLAIN_SOURCES = frozenset({"path_params", "query_params"})


class _Parameters:
    """Path or query parameters, each read as FastAPI reads it (its alias, its default, the same
    ModelField validation), without working out for every request how to read it."""

    __slots__ = ("fields", "general")

    def __init__(self, fields: list[ModelField]) -> None:
        self.general = not all(_plain(field) for field in fields)
        self.fields = [
            (field, field.alias, (field.field_info.in_.value, field.alias))  # type: ignore[attr-defined]
            for field in fields
        ]

    def read(self, received: Mapping[str, Any], values: dict[str, Any]) -> None:
        if self.general:
            params, errors = request_params_to_args([f for f, _, _ in self.fields], received)
            if errors:
                raise _Unsolved
            values.update(params)
            return
        for field, alias, loc in self.fields:
            raw = received.get(alias)
            if raw is None:
                if field.field_info.is_required():
                    raise _Unsolved
                if not field.field_info.validate_default:
                    values[field.name] = copy.deepcopy(field.default)
                    continue
                raw = copy.deepcopy(field.default)
            value, errors = field.validate(raw, values, loc=loc)
            if errors:
                raise _Unsolved
            values[field.name] = value


def _plain(field: ModelField) -> bool:
    """One value, read under its alias (no list, no model, no alias choices)."""
    info = field.field_info
    return (
        isinstance(info, (params.Path, params.Query))
        and info.validation_alias is None
        and not field_annotation_is_sequence(info.annotation)
        and not lenient_issubclass(info.annotation, BaseModel)
    )


def _is_coroutine_function(call: Callable[..., Any]) -> bool:
    return inspect.iscoroutinefunction(call) or inspect.iscoroutinefunction(
        getattr(call, "__call__", None)  # noqa: B004 (a callable instance: AccessTokenBearer)
    )


class _HotRoute:
    __slots__ = ("claims_keys", "context", "endpoint", "plan", "route", "status_code")

    def __init__(self, context: RouteContext) -> None:
        route = context.original_route
        assert isinstance(route, APIRoute)
        self.route = route
        self.context = context  # as included: the prefixes and the routers' dependencies
        self.endpoint = route.endpoint
        self.plan = _Plan(context.dependant, f"{sorted(route.methods or ())} {context.path}")
        self.status_code = route.status_code or 200
        self.claims_keys = isinstance(route, IdempotentRouteBase) and route.idempotent

    def passed_on(self, scope: Scope) -> bool:
        """A key to claim: the route class's own handler claims it and records the answer."""
        return self.claims_keys and any(name == _KEY_HEADER for name, _ in scope["headers"])

    def matches(self, scope: Scope) -> bool:
        match, child_scope = self.context.matches(scope)
        if match is not Match.FULL:
            return False
        scope.update(child_scope)
        scope["route"] = self.route  # as FastAPI sets it (the metrics read its template)
        return True

    async def respond(self, request: Request) -> Response:
        # Headers the endpoint sets (an ETag) go on the answer, as FastAPI's `Response`
        # parameter does.
        headers = Response()
        async with contextlib.AsyncExitStack() as exits:
            values = await self.plan.solve(request, headers, _Solved(exits))
            assert self.endpoint is not None
            content = await self.endpoint(**values)
        if isinstance(content, Response):
            return content
        response = Response(
            json_body(content), status_code=self.status_code, media_type="application/json"
        )
        response.headers.raw.extend(
            (name, value) for name, value in headers.raw_headers if name != b"content-length"
        )
        return response


class HotRoutes:
    """Hot routes answered here, everything else passed on to the app's stack (main.py installs
    it around the stack). See the module."""

    def __init__(self, app: ASGIApp, *, fastapi: FastAPI, cross_origin: bool = False) -> None:
        self.app = app
        self.fastapi = fastapi
        self.cross_origin = cross_origin
        self._index: _RouteIndex | None = None

    def _hot_routes(self, scope: Scope) -> list[_HotRoute]:
        """The hot routes that may take this request's path, in the app's order."""
        if self._index is None:  # built at the first request: every router is included then
            contexts = list(iter_route_contexts(self.fastapi.router.routes))
            _check_order(contexts)
            self._index = _RouteIndex([_HotRoute(c) for c in contexts if _is_hot(c)])
        return self._index.candidates(get_route_path(scope))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not self._passed_on(scope):
            for hot_route in self._hot_routes(scope):
                if hot_route.matches(scope):
                    if hot_route.passed_on(scope):
                        break
                    request = Request(scope, receive)
                    try:
                        response = await hot_route.respond(request)
                    except _Unsolved:
                        receive = _replaying(request, receive)
                        break
                    except Exception as exc:
                        response = await self._handle(request, exc)
                    await response(scope, receive, send)
                    return
        await self.app(scope, receive, send)

    def _passed_on(self, scope: Scope) -> bool:
        """Whether the ordinary path answers: overrides in use, or CORS to be answered."""
        return bool(self.fastapi.dependency_overrides) or (
            self.cross_origin and any(name == b"origin" for name, _ in scope["headers"])
        )

    async def _handle(self, request: Request, exc: Exception) -> Response:
        """The answer of the app's handler for `exc` (the nearest class that has one; the app
        has one for Exception)."""
        handlers = self.fastapi.exception_handlers
        handler = next(handlers[cls] for cls in type(exc).__mro__ if cls in handlers)
        response = handler(request, exc)
        return await response if inspect.isawaitable(response) else response


class _RouteIndex:
    """The hot routes by path: a path without parameters is looked up, and only the routes that
    take it are tried (its own, and any templated one before or after it that also matches it,
    in order); any other path can only be a templated route's."""

    __slots__ = ("by_path", "templated")

    def __init__(self, routes: list[_HotRoute]) -> None:
        paths = [(route, route.context.path or "") for route in routes]
        regexes = [(route, compile_path(path)[0]) for route, path in paths]
        self.by_path = {
            path: [route for route, regex in regexes if regex.match(path)]
            for _, path in paths
            if "{" not in path
        }
        self.templated = [route for route, path in paths if "{" in path]

    def candidates(self, path: str) -> list[_HotRoute]:
        return self.by_path.get(path, self.templated)


def _replaying(request: Request, receive: Receive) -> Receive:
    """`receive` for the ordinary path after the hot one gave up: the body it read, first."""
    body: bytes | None = getattr(request, "_body", None)
    if body is None:
        return receive
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if replayed:
            return await receive()
        replayed = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


def _is_hot(context: RouteContext) -> bool:
    route = context.original_route
    return isinstance(route, APIRoute) and getattr(route.endpoint, _HOT, False)


def _check_order(contexts: list[RouteContext]) -> None:
    """A hot route is found among the hot ones alone: no other route before it may take a
    request it takes (the ordinary router would give that request to the earlier one)."""
    for index, context in enumerate(contexts):
        if _is_hot(context):
            for earlier in contexts[:index]:
                if not _is_hot(earlier) and _may_overlap(earlier, context):
                    raise HotRouteError(
                        f"{earlier.path!r} comes before the hot route {context.path!r} and may "
                        "take its requests"
                    )


def _may_overlap(earlier: RouteContext, hot_route: RouteContext) -> bool:
    if not isinstance(earlier.original_route, Route) or earlier.path_format is None:
        return True  # a mount or anything else: assume the worst
    if earlier.methods is not None and not earlier.methods & (hot_route.methods or set()):
        return False
    if ":path}" in (earlier.path or ""):
        return True
    theirs, mine = earlier.path_format.split("/"), (hot_route.path_format or "").split("/")
    return len(theirs) == len(mine) and all(
        a == b or a.startswith("{") or b.startswith("{") for a, b in zip(theirs, mine, strict=True)
    )
