"""The published HTTP contract: operation ids, the OpenAPI document's finishing touches, and the
405 answer the document cannot describe.

What the schemas themselves cannot say is added here, after FastAPI has built the document:
one component per enum, the request rules enforced by validators (password bytes, distinct
times, non-null partial updates) and the response headers a client needs (`Retry-After`,
`WWW-Authenticate`). Every response also carries `X-Request-ID` (goaltrack.observability).

Wiring (main.py): `FastAPI(..., generate_unique_id_function=operation_id)`, then
`install_contract(app)` once every router is included and after `_document_problem_schema(app)`
(this post-processing runs on top of that one: its 401s and 422s are already in place).
"""

from __future__ import annotations

import re
from datetime import datetime
from enum import Enum
from http import HTTPStatus
from typing import Any, get_args

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute, iter_route_contexts
from pydantic import AfterValidator
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from goaltrack.account.schemas import MAX_NOTIFICATION_TIMES, Frequency
from goaltrack.auth.schemas import PASSWORD_MIN_CHARS, NewPassword
from goaltrack.auth.security import BCRYPT_MAX_BYTES
from goaltrack.devices.schemas import Platform
from goaltrack.errors import DEPENDENCY_RETRY_AFTER_SECONDS, PROBLEM_JSON, problem
from goaltrack.goals.schemas import AiStatus
from goaltrack.health import HealthStatus
from goaltrack.notifications.kinds import NotificationType
from goaltrack.schemas import Locale, Problem, RequestModel

# One component per enum, referenced wherever its values appear. A new Literal used in more than
# one place belongs here (tests/test_openapi_contract.py finds repeated inline enums).
NAMED_ENUMS: dict[str, Any] = {
    "AiStatus": AiStatus,
    "Frequency": Frequency,
    "HealthStatus": HealthStatus,
    "Locale": Locale,
    "NotificationType": NotificationType,
    "Platform": Platform,
}

# Partial updates where a field may be left out but not sent as null (their `reject_null`).
NON_NULLABLE_UPDATES: dict[str, tuple[str, ...]] = {
    "GoalUpdate": ("title",),
    "StageUpdate": ("title",),
    "ReminderUpdate": ("remind_time", "frequency_days"),
}

NEW_PASSWORD_SCHEMA: dict[str, Any] = {
    "minLength": PASSWORD_MIN_CHARS,
    # JSON Schema counts characters; bcrypt's limit is in bytes. ASCII passwords reach it exactly.
    "maxLength": BCRYPT_MAX_BYTES,
    "description": f"At least {PASSWORD_MIN_CHARS} characters, not blank, and at most "
    f"{BCRYPT_MAX_BYTES} bytes in UTF-8 (bcrypt reads no more; a longer password is refused, "
    "not truncated): a non-ASCII password reaches the limit before maxLength.",
}

TIMES_DESCRIPTION = (
    f"1 to {MAX_NOTIFICATION_TIMES} distinct times of day; empty only when frequency is `off`."
)

RETRY_AFTER = "Retry-After"
WWW_AUTHENTICATE = "WWW-Authenticate"
_METHODS = ("get", "head", "post", "put", "patch", "delete", "options")
_ALLOW_ORDER = {method.upper(): index for index, method in enumerate(_METHODS)}
# Paths that touch no database, Redis or S3 (the readiness probe answers its own 503).
_NO_DEPENDENCIES = {"/health", "/health/ready"}


class AccountDeletedProblem(Problem):
    """403 `account_deleted`: the account can still be restored (POST /account/restore)."""

    restore_until: datetime


def operation_id(route: Any) -> str:
    """`<first tag>_<action>`, the action being the route function's name without the tag's word
    (`list_goals` under `goals` → `goals_list`, `read_all` → `notifications_read_all`); the HTTP
    method when nothing else is left. For `generate_unique_id_function`."""
    tags = [tag.value if isinstance(tag, Enum) else str(tag) for tag in route.tags]
    if not tags:
        return str(route.name)
    tag = re.sub(r"\W+", "_", tags[0].lower()).strip("_")
    redundant = {tag, tag.removesuffix("s")}
    words = [word for word in str(route.name).lower().split("_") if word and word not in redundant]
    action = "_".join(words) or sorted(route.methods)[0].lower()
    return f"{tag}_{action}"


def install_contract(app: FastAPI) -> None:
    """Finish the app's OpenAPI document (on top of whatever already post-processes it) and list
    every method of the path in the `Allow` header of a 405. Idempotent."""
    if getattr(app.state, "openapi_contract_installed", False):
        return
    app.state.openapi_contract_installed = True
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = generate()
            _finish(app, document)
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    app.add_exception_handler(405, _method_not_allowed)


# --- the document ------------------------------------------------------------------------------


def _finish(app: FastAPI, document: dict[str, Any]) -> None:
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    _set_operation_ids(app, document)
    _state_request_rules(schemas)
    _hoist_enums(document)
    schemas[AccountDeletedProblem.__name__] = AccountDeletedProblem.model_json_schema(
        ref_template="#/components/schemas/{model}"
    )
    for path, item in document.get("paths", {}).items():
        for method, operation in item.items():
            if method in _METHODS:
                _declare_responses(path, operation)


def _set_operation_ids(app: FastAPI, document: dict[str, Any]) -> None:
    """The ids from `operation_id`, whether or not the app was built with it; all unique."""
    seen: dict[str, str] = {}
    for route in iter_route_contexts(app.routes):
        if not isinstance(route.original_route, APIRoute) or not route.include_in_schema:
            continue
        item = document["paths"][route.path_format]
        for method in sorted(route.methods or ()):
            name = route.operation_id or operation_id(route)
            where = f"{method} {route.path_format}"
            if seen.setdefault(name, where) != where:
                raise ValueError(f"operation id {name!r} of {where} is taken by {seen[name]}")
            item[method.lower()]["operationId"] = name


def _state_request_rules(schemas: dict[str, Any]) -> None:
    """Rules the validators enforce that Pydantic's schemas do not show."""
    for model, field in _fields_of_type(NewPassword):
        if model in schemas:
            schemas[model]["properties"][field].update(NEW_PASSWORD_SCHEMA)
    for model, fields in NON_NULLABLE_UPDATES.items():
        for field in fields:
            prop = schemas[model]["properties"][field]
            variants = [v for v in prop.pop("anyOf", [prop.copy()]) if v != {"type": "null"}]
            (only,) = variants
            prop.update(only)
            prop.setdefault("description", "May be left out, but not null.")
    schedule = schemas["NotificationSchedule"]
    schedule["properties"]["times"].update(
        uniqueItems=True, maxItems=MAX_NOTIFICATION_TIMES, description=TIMES_DESCRIPTION
    )
    schedule["if"] = {"properties": {"frequency": {"const": "off"}}}
    schedule["else"] = {"properties": {"times": {"minItems": 1}}}


def _fields_of_type(annotated: Any) -> list[tuple[str, str]]:
    """(model name, JSON field name) of every request-model field declared as `annotated`, known
    by the validators it carries."""
    validators = [m for m in get_args(annotated)[1:] if isinstance(m, AfterValidator)]
    found = []
    pending: list[type[RequestModel]] = [RequestModel]
    while pending:
        model = pending.pop()
        pending.extend(model.__subclasses__())
        for name, field in model.model_fields.items():
            if validators and all(v in field.metadata for v in validators):
                found.append((model.__name__, field.alias or name))
    return found


def _hoist_enums(document: dict[str, Any]) -> None:
    names = {tuple(get_args(alias)): name for name, alias in NAMED_ENUMS.items()}

    def visit(node: Any) -> None:
        children = node.values() if isinstance(node, dict) else node
        for child in children:
            if isinstance(child, dict):
                name = names.get(tuple(child.get("enum", ())))
                if name is not None:
                    for key in ("enum", "type", "title"):
                        child.pop(key, None)
                    child["$ref"] = f"#/components/schemas/{name}"
                    continue
            if isinstance(child, dict | list):
                visit(child)

    visit(document)
    schemas = document["components"]["schemas"]
    for name, alias in NAMED_ENUMS.items():
        schemas[name] = {"type": "string", "enum": list(get_args(alias)), "title": name}


def _declare_responses(path: str, operation: dict[str, Any]) -> None:
    responses = operation.setdefault("responses", {})
    if path not in _NO_DEPENDENCIES:
        # Any route may meet PostgreSQL, Redis or S3 down: a retryable 503 (errors.py).
        unavailable = responses.setdefault(
            "503",
            {
                "description": "",
                "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
            },
        )
        if "`service_unavailable`" not in unavailable["description"]:
            unavailable["description"] = " / ".join(
                filter(None, [unavailable["description"], "`service_unavailable`"])
            )
        unavailable.setdefault("headers", {})[RETRY_AFTER] = {
            "description": "Seconds to wait before retrying (sent when the outage is expected "
            f"to be short, e.g. {DEPENDENCY_RETRY_AFTER_SECONDS} for a database failover).",
            "required": False,
            "schema": {"type": "integer", "minimum": 0},
        }
    if "429" in responses:
        responses["429"].setdefault("headers", {})[RETRY_AFTER] = {
            "description": "Seconds until the limit's window lets a request through again.",
            "required": True,
            "schema": {"type": "integer", "minimum": 0},
        }
    codes = re.findall(r"`(\w+)`", responses.get("401", {}).get("description", ""))
    if "not_authenticated" in codes:
        # Sent with every `not_authenticated` (a missing, invalid or expired access token).
        responses["401"].setdefault("headers", {})[WWW_AUTHENTICATE] = {
            "description": "The scheme to authenticate with.",
            "required": codes == ["not_authenticated"],
            "schema": {"type": "string", "examples": ["Bearer"]},
        }
    forbidden = responses.get("403", {})
    if "`account_deleted`" in forbidden.get("description", ""):
        ref = f"#/components/schemas/{AccountDeletedProblem.__name__}"
        forbidden["content"] = {PROBLEM_JSON: {"schema": {"$ref": ref}}}


# --- 405 ---------------------------------------------------------------------------------------


async def _method_not_allowed(request: Request, exc: Exception) -> JSONResponse:
    """Starlette's 405 lists the methods of the first route matching the path only; a path is
    often served by several (GET, PUT and DELETE /goals/{goal_id})."""
    assert isinstance(exc, StarletteHTTPException)
    methods: set[str] = set()
    for route in iter_route_contexts(request.app.routes):
        route_methods = getattr(route, "methods", None)
        if route_methods and route.matches(request.scope)[0] != Match.NONE:
            methods |= route_methods
    allow = ", ".join(sorted(methods, key=lambda method: _ALLOW_ORDER.get(method, 99)))
    headers = {**(exc.headers or {}), **({"Allow": allow} if allow else {})}
    detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(405).phrase
    return problem(405, "method_not_allowed", detail, headers=headers)
