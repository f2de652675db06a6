"""The published HTTP contract: operation ids, the OpenAPI document's finishing touches, and the
405 answer the document cannot describe.

What the schemas themselves cannot say is added here, after FastAPI has built the document:
one component per enum, the request rules enforced by validators (password bytes, distinct
times, non-null partial updates, text without NUL, visible titles, known time zones, no
special-use e-mail domains, upload types), the response headers a client needs (`Retry-After`,
and `WWW-Authenticate` on every 401) and links from each response to the operations taking what
it names. Every response also carries `X-Request-ID` (goaltrack.observability). The fuzzer
(tests/test_fuzz_api.py) holds the server to all of it.

Wiring (main.py): `FastAPI(..., generate_unique_id_function=operation_id)`, then
`install_contract(app)` once every router is included and after `_document_problem_schema(app)`
(this post-processing runs on top of that one: its 401s and 422s are already in place).
"""

from __future__ import annotations

import re
from datetime import datetime
from enum import Enum
from functools import cache
from typing import Any, get_args

from email_validator import SPECIAL_USE_DOMAIN_NAMES
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute, iter_route_contexts
from pydantic import AfterValidator
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from goaltrack.account.schemas import MAX_NOTIFICATION_TIMES, DisplayName, Frequency
from goaltrack.auth.schemas import PASSWORD_MIN_CHARS, NewPassword
from goaltrack.auth.security import BCRYPT_MAX_BYTES
from goaltrack.devices.schemas import Platform
from goaltrack.errors import (
    AUTH_CHALLENGE,
    DEPENDENCY_RETRY_AFTER_SECONDS,
    PROBLEM_JSON,
    PROBLEM_TYPE_PREFIX,
    http_error_message,
    problem,
    problem_codes,
    request_locale,
)
from goaltrack.goals.schemas import AiStatus, GoalKind, Title
from goaltrack.health import HealthStatus
from goaltrack.notifications.kinds import NotificationType
from goaltrack.notifications.schemas import NotificationOut
from goaltrack.schemas import (
    INVISIBLE_CHARACTERS,
    TIME_ZONE_NAME_MAX_LENGTH,
    TIME_ZONE_NAME_PATTERN,
    WHITESPACE_CHARACTERS,
    Locale,
    Problem,
    RequestModel,
    TimeZoneName,
    ValidationProblem,
)
from goaltrack.uploads import EXTENSIONS

# One component per enum, referenced wherever its values appear. A new Literal used in more than
# one place belongs here (tests/test_openapi_contract.py finds repeated inline enums).
NAMED_ENUMS: dict[str, Any] = {
    "AiStatus": AiStatus,
    "Frequency": Frequency,
    "GoalKind": GoalKind,
    "HealthStatus": HealthStatus,
    "Locale": Locale,
    "NotificationType": NotificationType,
    "Platform": Platform,
}

# One component per discriminated union, referenced wherever it appears (Pydantic inlines it).
NAMED_UNIONS: dict[str, tuple[Any, str]] = {
    "Notification": (
        NotificationOut,
        "One notification; its `type` says which `data` it carries (the discriminator).",
    ),
}

# Partial updates where a field may be left out but not sent as null (their `reject_null`).
NON_NULLABLE_UPDATES: dict[str, tuple[str, ...]] = {
    "GoalUpdate": ("title",),
    "StageUpdate": ("title",),
    "ReminderIn": ("frequency_days", "weekdays", "only_if_not_done"),
    "ReminderUpdate": ("remind_time", "frequency_days", "weekdays", "only_if_not_done"),
    "PushToggle": ("push_enabled",),
    "PasswordConfirmation": ("password", "id_token"),
}

NEW_PASSWORD_SCHEMA: dict[str, Any] = {
    "minLength": PASSWORD_MIN_CHARS,
    # JSON Schema counts characters; bcrypt's limit is in bytes. ASCII passwords reach it exactly.
    "maxLength": BCRYPT_MAX_BYTES,
    "description": f"At least {PASSWORD_MIN_CHARS} characters, not blank, and at most "
    f"{BCRYPT_MAX_BYTES} bytes in UTF-8 (bcrypt reads no more; a longer password is refused, "
    "not truncated): a non-ASCII password reaches the limit before maxLength.",
}

# Text rules, as patterns. Every request string is refused with a NUL character in it (PostgreSQL
# cannot store one: RequestModel's validator); a title needs a visible character (goals.schemas),
# a new password a non-whitespace one (auth.schemas). The classes are the very ones the
# validators match with (goaltrack.schemas: INVISIBLE_RANGES, WHITESPACE_RANGES). Each pattern
# reads the same in ECMA-262 (OpenAPI's dialect) and Python `re`, and lets a trailing newline
# through as both dialects do (`$` differs there).
NO_NUL_PATTERN = r"^[^\u0000]*$"
# No NUL, and at least one character that draws something.
VISIBLE_TEXT_PATTERN = rf"^[^\u0000]*[^{INVISIBLE_CHARACTERS}][^\u0000]*$"
# No NUL, and at least one character that is not whitespace (what `str.strip` removes).
NOT_BLANK_PATTERN = rf"^[^\u0000]*[^\u0000{WHITESPACE_CHARACTERS}][^\u0000]*$"
# RFC 6761 special-use domains: email-validator (behind EmailStr) refuses an address there.
SPECIAL_USE_DOMAINS = tuple(SPECIAL_USE_DOMAIN_NAMES)
# Formats that cannot hold a NUL character anyway.
_NON_TEXT_FORMATS = frozenset({"uuid", "date", "date-time", "binary"})
# An open string, not an enum of today's ~600 names: tzdata adds and renames zones, and a client
# generated from an enum would refuse a settings body naming a zone newer than itself.
TIMEZONE_DESCRIPTION = (
    "An IANA time zone name (`Europe/Berlin`, `America/Argentina/Buenos_Aires`, `UTC`), one the "
    "server's tz database knows: a request naming any other is refused (422), as are the "
    "non-zones `localtime`, `Factory`, `posixrules` and the `posix/` and `right/` copies. Every "
    "answer carries a name a request may send back."
)
# Response fields holding a zone a request set (requests' zones are found by their validator).
RESPONSE_ZONES = (("SettingsOut", "timezone"),)
UPLOAD_DESCRIPTION = (
    "One file of these types, recognised by its content (not its name or declared type) and "
    "decoded in full: {types}."
)

TIMES_DESCRIPTION = (
    f"1 to {MAX_NOTIFICATION_TIMES} distinct times of day; empty only when frequency is `off`."
)

RETRY_AFTER = "Retry-After"
WWW_AUTHENTICATE = "WWW-Authenticate"
_METHODS = ("get", "head", "post", "put", "patch", "delete", "options")
_ALLOW_ORDER = {method.upper(): index for index, method in enumerate(_METHODS)}
# Paths that touch no database, Redis or S3 (the readiness probe answers its own 503).
_NO_DEPENDENCIES = {"/health", "/health/ready"}


PROBLEM_CODE_DESCRIPTION = (
    "What went wrong, stable across versions and languages (switch on it; `title` and "
    "`detail` are for people). Each response names the codes it may carry; this is all of them."
)
PROBLEM_TYPE_DESCRIPTION = (
    f"The problem kind's URI (RFC 9457): `{PROBLEM_TYPE_PREFIX}` and the `code`. A tag URI, "
    "an identifier: there is nothing to dereference."
)


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
    _state_text_rules(schemas)
    _hoist_enums(document)
    _hoist_unions(document)
    _state_problems(schemas)
    schemas["TimeZone"] = _time_zone_schema()
    for model, field in RESPONSE_ZONES:
        schemas[model]["properties"][field] = {"$ref": "#/components/schemas/TimeZone"}
    for path, item in document.get("paths", {}).items():
        for method, operation in item.items():
            if method in _METHODS:
                _declare_responses(path, operation)
                _declare_conditions(method, path, operation)
                _state_upload_rules(operation)
    _declare_links(document)
    # Relative: the document describes whichever host served it (behind a proxy too).
    document["servers"] = [{"url": "/", "description": "The server that serves this document"}]


def _state_problems(schemas: dict[str, Any]) -> None:
    """Every `code` in one enum, each kind's `type` URI, and every problem body a `Problem`:
    the bodies with more to say extend it (`allOf`), so a client handles any error as one."""
    problem = schemas[Problem.__name__]["properties"]
    problem["code"] = {"$ref": "#/components/schemas/ProblemCode"}
    problem["type"].update(format="uri", description=PROBLEM_TYPE_DESCRIPTION)
    schemas["ProblemCode"] = {
        "type": "string",
        "enum": problem_codes(),
        "title": "ProblemCode",
        "description": PROBLEM_CODE_DESCRIPTION,
    }
    shared = Problem.model_fields.keys()
    for model in (ValidationProblem, AccountDeletedProblem):
        full = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(full.pop("$defs", {}))
        own = {name: prop for name, prop in full["properties"].items() if name not in shared}
        schemas[model.__name__] = {
            "title": model.__name__,
            "description": full["description"],
            "allOf": [
                {"$ref": f"#/components/schemas/{Problem.__name__}"},
                {
                    "type": "object",
                    "properties": own,
                    "required": [name for name in full["required"] if name in own],
                },
            ],
        }


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
    stage_order = schemas["StageOrder"]["properties"]["stage_ids"]
    stage_order["uniqueItems"] = True
    stage_order.setdefault("description", "Every stage of the goal, each once, in the new order.")
    for model, fields in NON_NULLABLE_UPDATES.items():
        for field in fields:
            prop = schemas[model]["properties"][field]
            variants = [v for v in prop.pop("anyOf", [prop.copy()]) if v != {"type": "null"}]
            (only,) = variants
            prop.update(only)
            prop.setdefault("description", "May be left out, but not null.")
    # PUT /settings/notifications: push_enabled, quiet_hours or both (its validator).
    schemas["PushToggle"]["minProperties"] = 1
    schedule = schemas["NotificationSchedule"]
    schedule["properties"]["times"].update(
        uniqueItems=True, maxItems=MAX_NOTIFICATION_TIMES, description=TIMES_DESCRIPTION
    )
    schedule["if"] = {"properties": {"frequency": {"const": "off"}}}
    schedule["else"] = {"properties": {"times": {"minItems": 1}}}
    # A habit has a schedule, and only a habit does (GoalCreate's validator).
    goal = schemas["GoalCreate"]
    goal["if"] = {"properties": {"kind": {"const": "habit"}}, "required": ["kind"]}
    goal["then"] = {"required": ["schedule"], "properties": {"schedule": {"not": {"type": "null"}}}}
    goal["else"] = {"properties": {"schedule": {"type": "null"}}}
    # A reminder's rhythm: every N days or on weekdays, not both (their `_one_rhythm`).
    for model in ("ReminderIn", "ReminderUpdate"):
        schemas[model]["not"] = {"required": ["frequency_days", "weekdays"]}
    # A deletion is confirmed by the password or an ID token: one of the two.
    schemas["PasswordConfirmation"]["oneOf"] = [
        {"required": ["password"]},
        {"required": ["id_token"]},
    ]


def _request_models() -> list[type[RequestModel]]:
    found: list[type[RequestModel]] = []
    pending: list[type[RequestModel]] = [RequestModel]
    while pending:
        model = pending.pop()
        pending.extend(model.__subclasses__())
        found.append(model)
    return found


def _fields_of_type(annotated: Any) -> list[tuple[str, str]]:
    """(model name, JSON field name) of every request-model field declared as `annotated` (or as
    `annotated | None`), known by the validators it carries."""
    validators = [m for m in get_args(annotated)[1:] if isinstance(m, AfterValidator)]
    found = []
    for model in _request_models():
        for name, field in model.model_fields.items():
            metadata = list(field.metadata)
            for variant in get_args(field.annotation):  # `X | None`: X keeps its own metadata
                metadata.extend(getattr(variant, "__metadata__", ()))
            if validators and all(v in metadata for v in validators):
                found.append((model.__name__, field.alias or name))
    return found


def _state_text_rules(schemas: dict[str, Any]) -> None:
    """The text rules of NO_NUL_PATTERN's comment, and the zone names a request may carry."""
    titles = set(_fields_of_type(Title)) | set(_fields_of_type(DisplayName))
    passwords = set(_fields_of_type(NewPassword))
    zones = set(_fields_of_type(TimeZoneName))
    for model in _request_models():
        for field, prop in schemas.get(model.__name__, {}).get("properties", {}).items():
            where = (model.__name__, field)
            for text in _string_variants(prop):
                if where in zones:
                    text.clear()
                    text["$ref"] = "#/components/schemas/TimeZone"
                elif where in titles:
                    text["pattern"] = VISIBLE_TEXT_PATTERN
                elif where in passwords:
                    text["pattern"] = NOT_BLANK_PATTERN
                elif text.get("format") == "email":
                    text["pattern"] = _email_pattern()
                elif not {"pattern", "enum", "const"} & text.keys() and (
                    text.get("format") not in _NON_TEXT_FORMATS
                ):
                    text["pattern"] = NO_NUL_PATTERN


def _string_variants(prop: dict[str, Any]) -> list[dict[str, Any]]:
    """The string schemas a property is made of (itself, its `anyOf` members, its items)."""
    if prop.get("type") == "string":
        return [prop]
    found = []
    for variant in prop.get("anyOf", []):
        found.extend(_string_variants(variant))
    if isinstance(prop.get("items"), dict):
        found.extend(_string_variants(prop["items"]))
    return found


@cache
def _email_pattern() -> str:
    """Beside `format: email`: no NUL, and no special-use domain (`x@y.test`), in any case."""
    names = "|".join(
        "".join(f"[{c.upper()}{c}]" if c.isalpha() else re.escape(c) for c in name)
        for name in SPECIAL_USE_DOMAINS
    )
    return rf"^(?![\s\S]*[@.](?:{names})$)[^\u0000]*$"


def _time_zone_schema() -> dict[str, Any]:
    return {
        "type": "string",
        "minLength": 1,
        "maxLength": TIME_ZONE_NAME_MAX_LENGTH,
        "pattern": TIME_ZONE_NAME_PATTERN,
        "title": "TimeZone",
        "description": TIMEZONE_DESCRIPTION,
        "examples": ["Europe/Berlin", "UTC"],
    }


def _state_upload_rules(operation: dict[str, Any]) -> None:
    """A file part: the types the server recognises (by content) and no empty file."""
    form = operation.get("requestBody", {}).get("content", {}).get("multipart/form-data")
    if form is None:
        return
    types = list(EXTENSIONS)
    for name, prop in form.get("schema", {}).get("properties", {}).items():
        if prop.get("format") == "binary":
            prop["minLength"] = 1
            prop.setdefault("description", UPLOAD_DESCRIPTION.format(types=", ".join(types)))
            form.setdefault("encoding", {})[name] = {"contentType": ", ".join(types)}


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


def _hoist_unions(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    for name, (union, description) in NAMED_UNIONS.items():
        members = {
            f"#/components/schemas/{model.__name__}" for model in get_args(get_args(union)[0])
        }
        component: dict[str, Any] | None = None
        for _, node in _nodes(document):
            if {variant.get("$ref") for variant in node.get("oneOf", [{}])} == members:
                if component is None:
                    component = {
                        "title": name,
                        "description": description,
                        "oneOf": node["oneOf"],
                        "discriminator": node["discriminator"],
                    }
                for key in ("oneOf", "discriminator", "title"):
                    node.pop(key, None)
                node["$ref"] = f"#/components/schemas/{name}"
        if component is None:
            raise ValueError(f"{name} appears nowhere in the document")
        schemas[name] = component


def _nodes(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[tuple[Any, ...], dict[str, Any]]]:
    """Every object in the document (a list, so the caller may change what it visits)."""
    found: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
    children = node.items() if isinstance(node, dict) else enumerate(node)
    if isinstance(node, dict):
        found.append((path, node))
    for key, child in children:
        if isinstance(child, dict | list):
            found.extend(_nodes(child, (*path, key)))
    return found


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
    if "201" in responses:
        # Sent with every 201: where the new resource is (a path on this API).
        responses["201"].setdefault("headers", {})["Location"] = {
            "description": "The created resource's path on this API.",
            "required": True,
            "schema": {"type": "string"},
        }
    if "429" in responses:
        responses["429"].setdefault("headers", {})[RETRY_AFTER] = {
            "description": "Seconds until the limit's window lets a request through again.",
            "required": True,
            "schema": {"type": "integer", "minimum": 0},
        }
    if "401" in responses:
        # Sent with every 401 (errors.Unauthorized), as RFC 9110 requires.
        responses["401"].setdefault("headers", {})[WWW_AUTHENTICATE] = {
            "description": "The scheme to authenticate with.",
            "required": True,
            "schema": {"type": "string", "examples": [AUTH_CHALLENGE]},
        }
    forbidden = responses.get("403", {})
    if "`account_deleted`" in forbidden.get("description", ""):
        ref = f"#/components/schemas/{AccountDeletedProblem.__name__}"
        forbidden["content"] = {PROBLEM_JSON: {"schema": {"$ref": ref}}}


# --- conditional requests (goaltrack.changes) --------------------------------------------------

# The representations with an ETag, and the writes that take `If-Match` (a goal and everything
# under it, settings): generated clients expose the headers, the 304 and the 412.
CONDITIONAL_READS = {
    ("get", "/goals"),
    ("get", "/goals/archived"),
    ("get", "/goals/{goal_id}"),
    ("get", "/settings"),
    ("get", "/account"),
}


def _is_conditional_write(method: str, path: str) -> bool:
    return method in {"post", "put", "delete"} and (
        path.startswith("/goals/{goal_id}") or path.startswith("/settings")
    )


ETAG_HEADER = {
    "description": "The representation's version (strong; the same whatever the encoding).",
    "required": True,
    "schema": {"type": "string"},
}


def _header_parameter(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "header",
        "required": False,
        "description": description,
        "schema": {"type": "string"},
    }


def _declare_conditions(method: str, path: str, operation: dict[str, Any]) -> None:
    responses = operation["responses"]
    parameters = operation.setdefault("parameters", [])
    if (method, path) in CONDITIONAL_READS:
        parameters.append(
            _header_parameter(
                "If-None-Match",
                "The ETag of the copy the client holds: 304 with no body while it is current.",
            )
        )
        cache_control = {
            "description": "`private, no-cache`: keep it, and revalidate with If-None-Match.",
            "required": True,
            "schema": {"type": "string"},
        }
        headers = {"ETag": ETAG_HEADER, "Cache-Control": cache_control}
        responses["200"].setdefault("headers", {}).update(headers)
        responses["304"] = {
            "description": "Not modified: the client's copy (If-None-Match) is current.",
            "headers": headers,
        }
    elif _is_conditional_write(method, path):
        parameters.append(
            _header_parameter(
                "If-Match",
                "The goal's (or the settings') ETag the change is based on: 412 "
                "`precondition_failed` and nothing changes when it is no longer current; "
                "428 `precondition_required` without it when the server requires it.",
            )
        )
        for status in ("200", "201"):
            if status in responses:
                responses[status].setdefault("headers", {})["ETag"] = {
                    **ETAG_HEADER,
                    "description": "The goal's (or the settings') new version.",
                }
        for status, code in (("412", "precondition_failed"), ("428", "precondition_required")):
            responses.setdefault(
                status,
                {
                    "description": f"`{code}`",
                    "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
                },
            )


# --- links ---------------------------------------------------------------------------------------

# What a response names and which operations take it: OpenAPI links, for clients and for the
# fuzzer's stateful phase, which follows them to run operations on resources it really created
# (tests/test_fuzz_api.py). Only where the target surely exists: every value a link takes is a
# required, non-null field of the response (or the request's own path), never the first item of
# a list that may be empty (`items/0/id`, `stages/0/id`).
GOAL_OPERATIONS = (
    "goals_get",
    "goals_update",
    "goals_delete",
    "goals_archive",
    "goals_unarchive",
    "goals_add_stage",
    "goals_reorder_stages",
    "goals_add_attachment",
    "goals_list_attachments",
    "goals_add_reminder",
    "goals_list_reminders",
    "goals_split_with_ai",
)
STAGE_OPERATIONS = (
    "goals_update_stage",
    "goals_delete_stage",
    "goals_complete_stage",
    "goals_uncomplete_stage",
)
REMINDER_OPERATIONS = ("goals_update_reminder", "goals_delete_reminder")
ATTACHMENT_OPERATIONS = ("goals_delete_attachment",)
_BODY = "$response.body#"
_PATH_GOAL = "$request.path.goal_id"


def _links_to(operations: tuple[str, ...], **parameters: str) -> dict[str, dict[str, Any]]:
    return {target: {"operationId": target, "parameters": parameters} for target in operations}


# Response schema → its links. Sub-resources of a goal take the goal from the request's path.
LINKS: dict[str, dict[str, dict[str, Any]]] = {
    "GoalOut": _links_to(GOAL_OPERATIONS, goal_id=f"{_BODY}/id"),
    "Stage": {
        **_links_to(GOAL_OPERATIONS, goal_id=_PATH_GOAL),
        **_links_to(STAGE_OPERATIONS, goal_id=_PATH_GOAL, stage_id=f"{_BODY}/id"),
    },
    "Reminder": _links_to(REMINDER_OPERATIONS, goal_id=_PATH_GOAL, reminder_id=f"{_BODY}/id"),
    "Attachment": _links_to(ATTACHMENT_OPERATIONS, goal_id=_PATH_GOAL, attachment_id=f"{_BODY}/id"),
    "DeviceOut": _links_to(("devices_remove",), token=f"{_BODY}/token"),
    "TokenPair": {
        target: {
            "operationId": target,
            "requestBody": {"refresh_token": f"{_BODY}/refresh_token"},
        }
        for target in ("auth_refresh", "auth_logout")
    },
    # A soft-deleted account can be restored with its e-mail and password.
    "DeletionScheduled": {"account_restore": {"operationId": "account_restore"}},
}


def _declare_links(document: dict[str, Any]) -> None:
    known = {
        operation["operationId"]
        for item in document["paths"].values()
        for method, operation in item.items()
        if method in _METHODS
    }
    for item in document["paths"].values():
        for method, operation in item.items():
            if method not in _METHODS:
                continue
            for status, response in operation["responses"].items():
                schema = response.get("content", {}).get("application/json", {}).get("schema", {})
                name = schema.get("$ref", "").rsplit("/", 1)[-1]
                if not status.startswith("2") or name not in LINKS:
                    continue
                links = {
                    link_name: link
                    for link_name, link in LINKS[name].items()
                    if link["operationId"] in known
                    and (
                        _PATH_GOAL not in link.get("parameters", {}).values()
                        or "goal_id" in {p["name"] for p in operation.get("parameters", [])}
                    )
                }
                if links:
                    response["links"] = links


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
    return problem(
        405,
        "method_not_allowed",
        http_error_message(exc),
        locale=await request_locale(request),
        headers=headers,
    )
