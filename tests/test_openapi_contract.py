"""The published contract: operation ids `<tag>_<action>`, one schema per enum, the request rules
the server enforces, the headers a client needs, typed health answers, no impossible responses,
405s with a full `Allow`, lists as `{items, next_cursor}`, and links between operations.

The document is built from an app wired as main.py is to be wired (`install_contract`; a no-op
if create_app already did it). Nothing here needs the services, except through the session app
the autouse fixtures start.
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
import re
import sys
import textwrap
import unicodedata
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, get_args

import httpx
import hypothesis
import pytest
from fastapi import APIRouter, FastAPI
from fastapi.routing import APIRoute, iter_route_contexts
from hypothesis import strategies as st

import goaltrack
from goaltrack import openapi
from goaltrack import schemas as goaltrack_schemas
from goaltrack.errors import AppError, problem_codes
from goaltrack.main import create_app
from goaltrack.notifications.kinds import NotificationData, NotificationType
from goaltrack.openapi import install_contract, operation_id
from goaltrack.schemas import (
    INVISIBLE_RANGES,
    WHITESPACE_RANGES,
    character_class,
    has_visible_character,
    is_blank,
)
from helpers import Account

METHODS = {"get", "put", "post", "delete", "patch"}

# Stable ids: a renamed route function changes the id generated clients call, so it shows here.
OPERATION_IDS = {
    ("get", "/health"): "health_live",
    ("get", "/health/ready"): "health_ready",
    ("post", "/auth/register"): "auth_register",
    ("post", "/auth/login"): "auth_login",
    ("post", "/auth/refresh"): "auth_refresh",
    ("post", "/auth/logout"): "auth_logout",
    ("post", "/auth/forgot-password"): "auth_forgot_password",
    ("post", "/auth/reset-password"): "auth_reset_password",
    ("post", "/auth/oauth/google"): "auth_oauth_google",
    ("post", "/auth/oauth/apple"): "auth_oauth_apple",
    ("get", "/account"): "account_get",
    ("delete", "/account"): "account_delete",
    ("put", "/account/password"): "account_change_password",
    ("delete", "/account/data"): "account_delete_all_data",
    ("post", "/account/export"): "account_request_export",
    ("post", "/account/restore"): "account_restore",
    ("put", "/account"): "account_update",
    ("put", "/account/email"): "account_change_email",
    ("post", "/account/email/verification"): "account_resend_verification",
    ("post", "/auth/verify-email"): "auth_verify_email",
    ("get", "/capabilities"): "health_get_capabilities",
    ("get", "/account/exports/{export_id}/download"): "account_download_export",
    ("get", "/settings"): "account_get_settings",
    ("put", "/settings"): "account_update_settings",
    ("put", "/settings/notifications"): "account_set_push_enabled",
    ("put", "/settings/notifications/frequency"): "account_set_notification_schedule",
    ("get", "/goals"): "goals_list",
    ("post", "/goals"): "goals_create",
    ("get", "/goals/archived"): "goals_list_archived",
    ("get", "/goals/{goal_id}"): "goals_get",
    ("put", "/goals/{goal_id}"): "goals_update",
    ("delete", "/goals/{goal_id}"): "goals_delete",
    ("put", "/goals/{goal_id}/archive"): "goals_archive",
    ("put", "/goals/{goal_id}/unarchive"): "goals_unarchive",
    ("post", "/goals/{goal_id}/stages"): "goals_add_stage",
    ("put", "/goals/{goal_id}/stages/order"): "goals_reorder_stages",
    ("put", "/goals/{goal_id}/stages/{stage_id}"): "goals_update_stage",
    ("delete", "/goals/{goal_id}/stages/{stage_id}"): "goals_delete_stage",
    ("put", "/goals/{goal_id}/stages/{stage_id}/complete"): "goals_complete_stage",
    ("put", "/goals/{goal_id}/stages/{stage_id}/uncomplete"): "goals_uncomplete_stage",
    ("post", "/goals/{goal_id}/attachments"): "goals_add_attachment",
    ("get", "/goals/{goal_id}/attachments"): "goals_list_attachments",
    ("delete", "/goals/{goal_id}/attachments/{attachment_id}"): "goals_delete_attachment",
    ("get", "/goals/{goal_id}/attachments/{attachment_id}/content"): "goals_get_attachment_content",
    ("post", "/goals/{goal_id}/checkins"): "goals_add_checkin",
    ("get", "/goals/{goal_id}/checkins"): "goals_list_checkins",
    ("delete", "/goals/{goal_id}/checkins/{day}"): "goals_delete_checkin",
    ("post", "/goals/{goal_id}/reminders"): "goals_add_reminder",
    ("get", "/goals/{goal_id}/reminders"): "goals_list_reminders",
    ("put", "/goals/{goal_id}/reminders/{reminder_id}"): "goals_update_reminder",
    ("delete", "/goals/{goal_id}/reminders/{reminder_id}"): "goals_delete_reminder",
    ("post", "/goals/{goal_id}/ai-sync"): "goals_split_with_ai",
    ("post", "/devices"): "devices_register",
    ("delete", "/devices/{token}"): "devices_remove",
    ("get", "/notifications"): "notifications_list",
    ("put", "/notifications/read-all"): "notifications_read_all",
    ("put", "/notifications/{notification_id}/read"): "notifications_read_one",
    ("post", "/notifications/{notification_id}/snooze"): "notifications_snooze",
    ("get", "/achievements"): "achievements_list",
    ("get", "/sync"): "sync_changes",
}


def contract_app() -> FastAPI:
    app = create_app()
    install_contract(app)
    return app


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return contract_app().openapi()


def operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method in METHODS:
                yield method, path, operation


def resolve(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = document["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def walk(node: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], Any]]:
    yield path, node
    if isinstance(node, dict):
        for key, value in node.items():
            yield from walk(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from walk(value, (*path, index))


# --- 1. operation ids --------------------------------------------------------------------------


def test_operation_ids_are_tag_and_action_and_unique(document: dict[str, Any]) -> None:
    ids = {(method, path): op["operationId"] for method, path, op in operations(document)}
    assert ids == OPERATION_IDS
    assert len(set(ids.values())) == len(ids)
    for method, path, op in operations(document):
        assert re.fullmatch(r"[a-z]+(_[a-z0-9]+)+", op["operationId"]), (method, path)
        assert op["operationId"].startswith(f"{op['tags'][0]}_"), (method, path)


def test_operation_id_works_as_the_unique_id_function() -> None:
    """The wiring main.py is to carry: `FastAPI(generate_unique_id_function=operation_id)`."""
    router = APIRouter(prefix="/notifications", tags=["notifications"])

    @router.put("/read-all")
    async def read_all() -> None: ...

    @router.get("")
    async def list_notifications() -> None: ...

    app = FastAPI(generate_unique_id_function=operation_id)
    app.include_router(router)
    paths = app.openapi()["paths"]
    assert paths["/notifications/read-all"]["put"]["operationId"] == "notifications_read_all"
    assert paths["/notifications"]["get"]["operationId"] == "notifications_list"


# --- 2. one schema per enum --------------------------------------------------------------------


def test_every_enum_is_one_named_component(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    named = {name: tuple(s["enum"]) for name, s in schemas.items() if "enum" in s}
    assert {"AiStatus", "Frequency", "Locale", "NotificationType", "Platform"} <= named.keys()
    assert len(set(named.values())) == len(named), named  # no two components for one enum
    inline = [
        (path, tuple(node["enum"]))
        for path, node in walk(document)
        if isinstance(node, dict) and "enum" in node and path[:-1] != ("components", "schemas")
    ]
    for path, values in inline:
        assert values not in named.values(), f"{'/'.join(map(str, path))} repeats a component"
    values = [values for _, values in inline]
    assert len(set(values)) == len(values), "an enum is inlined twice: name it in NAMED_ENUMS"
    props = schemas["GoalSummary"]["properties"]
    assert props["ai_status"]["$ref"] == "#/components/schemas/AiStatus"


# --- 3. request rules --------------------------------------------------------------------------


def test_request_rules_the_server_enforces_are_stated(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    for model, field in (
        ("RegisterRequest", "password"),
        ("ResetPasswordRequest", "new_password"),
        ("PasswordChange", "new_password"),
    ):
        password = schemas[model]["properties"][field]
        assert (password["minLength"], password["maxLength"]) == (8, 72), model
        assert "72 bytes" in password["description"]

    schedule = schemas["NotificationSchedule"]
    times = schedule["properties"]["times"]
    assert (times["maxItems"], times["uniqueItems"]) == (6, True)
    assert schedule["if"] == {"properties": {"frequency": {"const": "off"}}}
    assert schedule["else"] == {"properties": {"times": {"minItems": 1}}}

    for model, fields in (
        ("GoalUpdate", ("title",)),
        ("StageUpdate", ("title",)),
        ("ReminderUpdate", ("remind_time", "frequency_days")),
    ):
        for field in fields:
            prop = schemas[model]["properties"][field]
            assert "anyOf" not in prop, (model, field)
            assert prop["type"] in {"string", "integer"}, (model, field)
            assert field not in schemas[model].get("required", []), (model, field)
    assert schemas["GoalUpdate"]["properties"]["title"]["minLength"] == 1


def test_limit_states_its_cap(document: dict[str, Any]) -> None:
    """`limit` larger than 100 is capped, not refused (the team's contract: `limit=100000`
    capped), so the schema states the cap in words rather than a `maximum` it does not enforce."""
    limits = [
        parameter
        for _, _, op in operations(document)
        for parameter in op.get("parameters", [])
        if parameter["name"] == "limit"
    ]
    assert limits
    for limit in limits:
        assert limit["schema"]["minimum"] == 1
        assert "maximum" not in limit["schema"]
        assert "capped" in (limit.get("description") or limit["schema"].get("description", ""))


# --- 4. headers and problem bodies -------------------------------------------------------------


def test_headers_a_client_needs_are_declared(document: dict[str, Any]) -> None:
    for method, path, op in operations(document):
        responses = op["responses"]
        where = f"{method.upper()} {path}"
        if "429" in responses:
            assert responses["429"]["headers"]["Retry-After"]["required"] is True, where
        if op.get("security"):
            assert "401" in responses, where
        if "401" in responses:  # RFC 9110: every 401 carries a challenge
            assert responses["401"]["headers"]["WWW-Authenticate"]["required"] is True, where
        if not path.startswith("/health"):
            # Any route may meet PostgreSQL or Redis down: 503, with Retry-After.
            assert "Retry-After" in responses["503"]["headers"], where
    login = document["paths"]["/auth/login"]["post"]["responses"]["403"]
    body = resolve(document, login["content"]["application/problem+json"]["schema"])
    _, own = body["allOf"]  # a Problem, and what it adds
    assert own["properties"]["restore_until"]["format"] == "date-time"
    assert "restore_until" in own["required"]


def test_every_response_declares_its_request_id(document: dict[str, Any]) -> None:
    header = document["components"]["headers"]["X-Request-ID"]
    assert header["required"] is True
    assert re.search(header["schema"]["pattern"], uuid.uuid4().hex)
    count = 0
    for method, path, op in operations(document):
        for status, response in op["responses"].items():
            count += 1
            assert response["headers"]["X-Request-ID"] == {
                "$ref": "#/components/headers/X-Request-ID"
            }, f"{method.upper()} {path} {status}"
    assert count > 300


async def test_request_id_is_sent_as_declared(client: httpx.AsyncClient, user: Account) -> None:
    """With a 304 and a 405 too (what the fuzzer meets least)."""
    answer = await client.get("/goals", headers=user.headers)
    again = await client.get(
        "/goals", headers={**user.headers, "If-None-Match": answer.headers["ETag"]}
    )
    wrong = await client.patch("/goals", headers=user.headers)
    assert [r.status_code for r in (answer, again, wrong)] == [200, 304, 405]
    for response in (answer, again, wrong):
        assert re.fullmatch(r"[!-~]{1,128}", response.headers["X-Request-ID"])


# --- 4b. problems: one shape, one enum of codes, a type URI per kind ---------------------------


def _problem_schemas(document: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for method, path, op in operations(document):
        for status, response in op["responses"].items():
            schema = response.get("content", {}).get("application/problem+json", {}).get("schema")
            if schema is not None:
                yield f"{method.upper()} {path} {status}", schema


def test_every_problem_body_is_a_problem(document: dict[str, Any]) -> None:
    """`Problem`, or a schema that extends it (`allOf`): a client handles any error as one."""
    schemas = document["components"]["schemas"]
    problem = "#/components/schemas/Problem"
    assert schemas["Problem"]["properties"]["code"] == {"$ref": "#/components/schemas/ProblemCode"}
    assert schemas["Problem"]["properties"]["type"]["format"] == "uri"
    extended = set()
    for where, schema in _problem_schemas(document):
        if schema["$ref"] != problem:
            body = resolve(document, schema)
            assert body["allOf"][0] == {"$ref": problem}, where
            assert "code" not in body["allOf"][1]["properties"], where  # the one enum stays
            extended.add(schema["$ref"].rsplit("/", 1)[1])
    assert extended == {"ValidationProblem", "AccountDeletedProblem"}
    deleted = schemas["AccountDeletedProblem"]["allOf"][1]
    assert deleted["required"] == ["restore_until"]
    assert deleted["properties"]["restore_until"]["format"] == "date-time"
    assert schemas["ValidationProblem"]["allOf"][1]["required"] == ["errors"]


def _every_module() -> None:
    """Import all of goaltrack (an error class of a module the app does not import is still a
    code some process may answer with)."""
    for module in pkgutil.walk_packages(goaltrack.__path__, "goaltrack."):
        if module.name != "goaltrack.__main__" and ".migrations." not in module.name:
            importlib.import_module(module.name)


def _codes_given_to_problem() -> tuple[set[str], list[str]]:
    """The literal codes passed to `errors.problem` anywhere in the code base, and where a code
    is passed that is neither a literal, an error class's `.code` nor the handlers' table."""
    literal: set[str] = set()
    unknown: list[str] = []
    for source in Path(goaltrack.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            if not (
                isinstance(node, ast.Call)
                and ast.unparse(node.func) in {"problem", "errors.problem"}
            ):
                continue
            code = node.args[1] if len(node.args) > 1 else None
            if isinstance(code, ast.Constant) and isinstance(code.value, str):
                literal.add(code.value)
            elif not (
                (isinstance(code, ast.Attribute) and code.attr == "code")
                or (code is not None and ast.unparse(code).startswith("_STATUS_CODES.get("))
            ):
                unknown.append(f"{source.name}:{node.lineno}")
    return literal, unknown


def test_every_code_is_in_the_published_enum(document: dict[str, Any]) -> None:
    """ProblemCode is derived from the AppError classes and the handlers' own codes; here, every
    code raised or answered anywhere is held to it, and so is every code a response names."""
    _every_module()
    published = document["components"]["schemas"]["ProblemCode"]["enum"]
    assert published == sorted(set(published))
    assert set(problem_codes()) == set(published), "an error class the app does not import"
    errors: list[type[AppError]] = [AppError]
    for error in errors:
        errors.extend(error.__subclasses__())
        assert re.fullmatch(r"[a-z]+(_[a-z]+)*", error.code), error
    assert {error.code for error in errors} <= set(published)
    literal, unknown = _codes_given_to_problem()
    assert literal <= set(published)
    assert unknown == [], "pass a literal code or an AppError's .code to problem()"
    for where, _ in _problem_schemas(document):
        method, path, status = where.split()
        described = document["paths"][path][method.lower()]["responses"][status]["description"]
        named = set(re.findall(r"`([a-z_]+)`", described))
        assert named, where
        assert named <= set(published), where
    assert {"validation_error", "not_found", "internal_error", "account_deleted"} <= set(published)


# --- 4c. notifications: `data` typed by `type` -------------------------------------------------


def test_notification_data_is_typed_by_its_type(document: dict[str, Any]) -> None:
    """One schema per kind (goaltrack.notifications.kinds), chosen by `type`: a discriminated
    `oneOf`, referenced wherever a notification is answered."""
    schemas = document["components"]["schemas"]
    notification = schemas["Notification"]
    mapping = notification["discriminator"]["mapping"]
    assert notification["discriminator"]["propertyName"] == "type"
    assert [variant["$ref"] for variant in notification["oneOf"]] == list(mapping.values())
    kinds: list[type[NotificationData]] = list(NotificationData.__subclasses__())
    assert set(mapping) == {kind.type for kind in kinds} == set(get_args(NotificationType))
    for kind in kinds:
        variant = resolve(document, {"$ref": mapping[kind.type]})
        assert variant["properties"]["type"]["const"] == kind.type
        data = resolve(document, variant["properties"]["data"])
        assert set(data["required"]) == set(kind.model_fields), kind
        assert data.get("additionalProperties") is not True, kind
    ref = {"$ref": "#/components/schemas/Notification"}
    assert schemas["NotificationPage"]["properties"]["items"]["items"] == ref
    assert schemas["NotificationUpsert"]["properties"]["data"] == ref
    read = document["paths"]["/notifications/{notification_id}/read"]["put"]["responses"]["200"]
    assert read["content"]["application/json"]["schema"] == ref
    # Nowhere else is a union of notifications spelled out.
    variants = set(mapping.values())
    spelled = [
        path
        for path, node in walk(document)
        if isinstance(node, dict)
        and variants & {variant.get("$ref") for variant in node.get("oneOf", [])}
    ]
    assert spelled == [("components", "schemas", "Notification")]


# --- 5. health ---------------------------------------------------------------------------------


def test_readiness_is_typed_for_200_and_503(document: dict[str, Any]) -> None:
    responses = document["paths"]["/health/ready"]["get"]["responses"]
    for status in ("200", "503"):
        body = resolve(document, responses[status]["content"]["application/json"]["schema"])
        assert set(body["required"]) == {"status", "checks", "push", "stopping"}, status
        checks = resolve(document, body["properties"]["checks"])
        assert set(checks["required"]) == {"postgres", "redis"}
    live = document["paths"]["/health"]["get"]["responses"]["200"]
    assert resolve(document, live["content"]["application/json"]["schema"])["properties"]


# --- 6. no impossible responses ----------------------------------------------------------------


def test_404_is_declared_only_where_a_path_names_a_resource(document: dict[str, Any]) -> None:
    for method, path, op in operations(document):
        has_id = "{" in path
        if path.startswith("/goals/{goal_id}"):
            assert "404" in op["responses"], f"{method.upper()} {path}"
        if not has_id:
            assert "404" not in op["responses"], f"{method.upper()} {path}"


# --- 7. 405 with a full Allow ------------------------------------------------------------------


async def test_wrong_method_is_405_listing_every_method_of_the_path() -> None:
    transport = httpx.ASGITransport(app=contract_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        archived = await client.put("/goals/archived", json={"title": "x"})
        assert archived.status_code == 405, archived.text
        assert archived.headers["allow"] == "GET"
        assert archived.json()["code"] == "method_not_allowed"

        goal = await client.patch(f"/goals/{uuid.uuid4()}", json={})
        assert goal.status_code == 405
        assert goal.headers["allow"] == "GET, PUT, DELETE"

        stage = await client.post(f"/goals/{uuid.uuid4()}/stages/{uuid.uuid4()}")
        assert stage.status_code == 405
        assert stage.headers["allow"] == "PUT, DELETE"

        order = await client.delete(f"/goals/{uuid.uuid4()}/stages/order")
        assert order.status_code == 405
        assert order.headers["allow"] == "PUT"

        assert (await client.delete("/health")).headers["allow"] == "GET"
        assert (await client.get("/goals/archived/stages")).status_code == 404


def test_every_path_reaches_one_resource() -> None:
    """No id segment also matches a literal path beside it (`/goals/archived`, `/stages/order`):
    a path's methods are then exactly its documented operations, and `Allow` says so."""
    routes = [
        route
        for route in iter_route_contexts(contract_app().routes)
        if isinstance(route.original_route, APIRoute)
    ]
    for path_format in {route.path_format for route in routes}:
        concrete = re.sub(r"\{[^}]+\}", str(uuid.uuid4()), path_format)
        owners = {route.path_format for route in routes if route.path_regex.match(concrete)}
        assert owners == {path_format}, concrete


# --- 8. lists ----------------------------------------------------------------------------------


def test_lists_are_items_and_next_cursor(document: dict[str, Any]) -> None:
    for method, path, op in operations(document):
        for status, response in op["responses"].items():
            schema = response.get("content", {}).get("application/json", {}).get("schema")
            if status.startswith("2") and schema is not None:
                assert resolve(document, schema).get("type") != "array", f"{method} {path}"
    for path in ("/goals", "/goals/{goal_id}/attachments", "/goals/{goal_id}/reminders"):
        response = document["paths"][path]["get"]["responses"]["200"]
        page = resolve(document, response["content"]["application/json"]["schema"])
        assert set(page["required"]) == {"items", "next_cursor"}, path


async def test_every_401_carries_a_challenge(client: httpx.AsyncClient, user: Account) -> None:
    """Also where the credentials come in the body: login, refresh, restore."""
    answers = {
        "login": await client.post(
            "/auth/login", json={"email": user.email, "password": "not the password"}
        ),
        "refresh": await client.post("/auth/refresh", json={"refresh_token": "not-a-token"}),
        "restore": await client.post(
            "/account/restore", json={"email": user.email, "password": "not the password"}
        ),
        "access token": await client.get("/account"),
    }
    for name, response in answers.items():
        assert response.status_code == 401, (name, response.text)
        assert response.headers["WWW-Authenticate"] == "Bearer", name


# --- 9. text rules as patterns -----------------------------------------------------------------


def _string_schemas(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        if node.get("type") == "string":
            yield node
        for key in ("anyOf", "items"):
            children = node.get(key)
            for child in children if isinstance(children, list) else [children]:
                yield from _string_schemas(child)


def test_every_request_string_states_its_rule(document: dict[str, Any]) -> None:
    """No request text can carry NUL (RequestModel refuses it): each string says so or is a
    format, enum or pattern that excludes it."""
    schemas = document["components"]["schemas"]
    for model in (m.__name__ for m in openapi._request_models()):
        for field, prop in schemas.get(model, {}).get("properties", {}).items():
            for text in _string_schemas(prop):
                if "pattern" in text:
                    assert re.search(text["pattern"], "x\x00y") is None, (model, field)
                elif "const" in text or "enum" in text:
                    assert "\x00" not in str(text.get("const", text.get("enum"))), (model, field)
                else:
                    assert text.get("format") in {"uuid", "date", "binary"}, (model, field)


# The text rules as they were defined before goaltrack.schemas wrote them out as code point
# ranges: predicates over unicodedata, scanned over every code point. The tests below hold the
# ranges, the validators and the published patterns to them.
_INVISIBLE_CATEGORIES = frozenset({"Cc", "Cf", "Zs", "Zl", "Zp", "Mn", "Me"})
_BLANK_LOOKING = frozenset("\u115f\u1160\u3164\uffa0\u2800")  # Hangul fillers, Braille blank


def _defined_visible(character: str) -> bool:
    return not (
        character.isspace()
        or character in _BLANK_LOOKING
        or unicodedata.category(character) in _INVISIBLE_CATEGORIES
    )


def _scanned_ranges(predicate: Callable[[str], bool]) -> tuple[tuple[int, int], ...]:
    """The code points (surrogates left out) `predicate` holds for, as ranges: the scan openapi.py
    used to run at start-up."""
    ranges: list[list[int]] = []
    for code in range(sys.maxunicode + 1):
        if 0xD800 <= code <= 0xDFFF or not predicate(chr(code)):
            continue
        if ranges and ranges[-1][1] == code - 1:
            ranges[-1][1] = code
        else:
            ranges.append([code, code])
    return tuple((low, high) for low, high in ranges)


def _table(ranges: tuple[tuple[int, int], ...]) -> str:
    """`ranges` as goaltrack.schemas writes them, to paste there after a Unicode upgrade."""
    items = " ".join(f"{a:04x}" if a == b else f"{a:04x}-{b:04x}" for a, b in ranges)
    return "\n".join(f'    "{line} "' for line in textwrap.wrap(items, 88))


@pytest.fixture(scope="module")
def defined_ranges() -> dict[str, tuple[tuple[int, int], ...]]:
    return {
        "invisible": _scanned_ranges(lambda character: not _defined_visible(character)),
        "whitespace": _scanned_ranges(str.isspace),
    }


def test_text_rules_are_their_definitions(
    defined_ranges: dict[str, tuple[tuple[int, int], ...]],
) -> None:
    """The ranges goaltrack.schemas writes out are exactly the code points of their definitions
    (this Python's Unicode database), and the validators' regexes hold exactly those."""
    for name, table in (("invisible", INVISIBLE_RANGES), ("whitespace", WHITESPACE_RANGES)):
        assert table == defined_ranges[name], (
            f"Unicode {unicodedata.unidata_version}: the {name} code points changed; "
            f"the new table for goaltrack.schemas:\n{_table(defined_ranges[name])}"
        )
    everything = "".join(
        chr(code) for code in range(sys.maxunicode + 1) if not 0xD800 <= code <= 0xDFFF
    )
    # What each regex does not match, among all code points, is its table's code points.
    for regex, table in (
        (goaltrack_schemas._VISIBLE, INVISIBLE_RANGES),
        (goaltrack_schemas._NOT_WHITESPACE, WHITESPACE_RANGES),
    ):
        expected = "".join(chr(code) for low, high in table for code in range(low, high + 1))
        assert regex.sub("", everything) == expected, regex.pattern


def test_published_patterns_are_the_ones_the_scan_built(
    document: dict[str, Any], defined_ranges: dict[str, tuple[tuple[int, int], ...]]
) -> None:
    """The document is unchanged since the scan left start-up: the patterns, spelled from the
    definitions as openapi.py used to, are the very strings published."""
    schemas = document["components"]["schemas"]
    invisible = character_class(defined_ranges["invisible"])
    whitespace = character_class(defined_ranges["whitespace"])
    title = rf"^[^\u0000]*[^{invisible}][^\u0000]*$"
    password = rf"^[^\u0000]*[^\u0000{whitespace}][^\u0000]*$"
    for model in ("GoalCreate", "GoalUpdate", "StageCreate", "StageUpdate"):
        assert schemas[model]["properties"]["title"]["pattern"] == title, model
    assert schemas["RegisterRequest"]["properties"]["password"]["pattern"] == password


@hypothesis.settings(max_examples=300, deadline=None, database=None)
@hypothesis.given(
    text=st.text(
        st.one_of(
            st.characters(codec="utf-8"),  # anything but surrogates, astral planes included
            st.sampled_from(" \t\n\x00\x85\xa0\u115f\u200b\u0301\u2800\u3000\U000e0001"),
        ),
        max_size=12,
    )
)
@hypothesis.example(text="\u2800")  # a symbol that draws nothing
@hypothesis.example(text="\u3000\u0301")  # ideographic space, a combining mark alone
@hypothesis.example(text="\U000e0001x")  # a tag character beyond the BMP, then a letter
@hypothesis.example(text="\x1c\x85")  # whitespace to str.isspace, not to ECMA-262's \s
def test_validators_and_patterns_agree_with_the_definitions(text: str) -> None:
    """On any text: the title and password validators refuse what the definitions call blank,
    and the published patterns accept what the validators accept (NUL aside: RequestModel)."""
    visible = any(_defined_visible(c) for c in text)
    assert has_visible_character(text) == visible
    assert is_blank(text) == (not text.strip())
    no_nul = "\x00" not in text
    assert (re.search(openapi.VISIBLE_TEXT_PATTERN, text) is not None) == (visible and no_nul)
    assert (re.search(openapi.NOT_BLANK_PATTERN, text) is not None) == (
        bool(text.strip()) and no_nul
    )


def test_text_patterns_are_the_validators(document: dict[str, Any]) -> None:
    """The character classes are the rules' definitions, code point by code point, and the
    patterns accept and refuse what the models accept and refuse."""
    from pydantic import ValidationError

    from goaltrack.auth.schemas import RegisterRequest
    from goaltrack.goals.schemas import StageCreate

    schemas = document["components"]["schemas"]
    title = schemas["StageCreate"]["properties"]["title"]["pattern"]
    password = schemas["RegisterRequest"]["properties"]["password"]["pattern"]
    email = schemas["RegisterRequest"]["properties"]["email"]["pattern"]
    visible = re.compile(title)
    not_blank = re.compile(password)
    for code in range(0x110000):
        if 0xD800 <= code <= 0xDFFF:
            continue
        char = chr(code)
        assert (visible.search(char) is not None) == _defined_visible(char), hex(code)
        assert (not_blank.search(char) is not None) == (char != "\x00" and not char.isspace())

    def accepted(model: Any, **body: Any) -> bool:
        try:
            model.model_validate(body)
        except ValidationError:
            return False
        return True

    for text in ["a", " \u200b a", "\u3164", " \t\n", "\u0301", "a\x00", "\u2800x", "ok\n"]:
        assert (visible.search(text) is not None) == accepted(StageCreate, title=text), text
    for text in ["        ", "\u3000" * 8, "a" + " " * 7, "abc\x00defgh", "correct horse"]:
        expected = accepted(RegisterRequest, email="a@example.com", password=text)
        assert (not_blank.search(text) is not None) == expected, text
    for address in [
        "a@example.com",
        "a@b.test",
        "a@b.TeSt",
        "a@b.onion",
        "a@local.dev",
        "a@b.arpa",
    ]:
        expected = accepted(RegisterRequest, email=address, password="correct horse")
        assert (re.search(email, address) is not None) == expected, address
    assert schemas["RegisterRequest"]["properties"]["email"]["maxLength"] == 254


def test_time_zones_are_an_open_string_stating_the_rule(document: dict[str, Any]) -> None:
    """One schema for a zone, in requests and answers: a string whose shape every zone the server
    knows has, the rest of the rule (the tz database's names) in words; the server still refuses
    an unknown zone (tests/test_auth.py: `Mars/Olympus`)."""
    from goaltrack.schemas import _check_zone, time_zone_names

    zone = document["components"]["schemas"]["TimeZone"]
    assert zone["type"] == "string"
    assert "enum" not in zone
    assert "tz database" in zone["description"]
    names = time_zone_names()
    assert {"UTC", "Europe/Moscow", "Etc/GMT+5", "Etc/GMT-5"} <= set(names)
    for name in names:
        assert re.search(zone["pattern"], name), name
        assert len(name) <= zone["maxLength"]
    assert re.search(zone["pattern"], "Mars/Olympus")  # the shape, not the name
    with pytest.raises(ValueError, match="unknown IANA time zone"):
        _check_zone("Mars/Olympus")
    ref = "#/components/schemas/TimeZone"
    fields = [
        (name, prop)
        for name, schema in document["components"]["schemas"].items()
        for field, prop in schema.get("properties", {}).items()
        if field == "timezone"
    ]
    assert {name for name, _ in fields} >= {"RegisterRequest", "SettingsUpdate", "SettingsOut"}
    for name, prop in fields:
        assert ref in [prop.get("$ref"), *(v.get("$ref") for v in prop.get("anyOf", []))], name


def test_upload_states_its_types(document: dict[str, Any]) -> None:
    from goaltrack.uploads import EXTENSIONS

    form = document["paths"]["/goals/{goal_id}/attachments"]["post"]["requestBody"]["content"][
        "multipart/form-data"
    ]
    assert form["schema"]["properties"]["file"]["minLength"] == 1
    declared = {t.strip() for t in form["encoding"]["file"]["contentType"].split(",")}
    assert declared == set(EXTENSIONS)
    stage_ids = document["components"]["schemas"]["StageOrder"]["properties"]["stage_ids"]
    assert stage_ids["uniqueItems"] is True


# --- 10. links ---------------------------------------------------------------------------------


def _assert_always_present(
    document: dict[str, Any], schema: dict[str, Any], expression: str, where: str
) -> None:
    node = resolve(document, schema)
    for name in expression.removeprefix("$response.body#/").split("/"):
        assert name in node.get("required", []), f"{where}: {expression}"
        node = resolve(document, node["properties"][name])
        assert node.get("type") not in {None, "null", "array"}, f"{where}: {expression}"


def test_links_lead_to_operations_and_their_parameters(document: dict[str, Any]) -> None:
    by_id = {op["operationId"]: (path, op) for _, path, op in operations(document)}
    count = 0
    for method, path, op in operations(document):
        for status, response in op["responses"].items():
            for name, link in response.get("links", {}).items():
                count += 1
                where = f"{method.upper()} {path} {status} {name}"
                assert status.startswith("2"), where
                target_path, target = by_id[link["operationId"]]
                taken = {p["name"] for p in target.get("parameters", [])}
                assert set(link.get("parameters", {})) <= taken, where
                # Every path parameter of the target is supplied.
                assert set(re.findall(r"\{(\w+)\}", target_path)) <= set(
                    link.get("parameters", {})
                ), where
                for expression in link.get("parameters", {}).values():
                    if expression.startswith("$request.path."):
                        own = {p["name"] for p in op.get("parameters", [])}
                        assert expression.removeprefix("$request.path.") in own, where
                if "requestBody" in link:
                    assert "requestBody" in target, where
                # Only where the target surely exists: each value is a field every such
                # response has (not the first item of a list that may be empty).
                schema = response["content"]["application/json"]["schema"]
                values = [
                    *link.get("parameters", {}).values(),
                    *link.get("requestBody", {}).values(),
                ]
                for expression in values:
                    if expression.startswith("$response.body#/"):
                        _assert_always_present(document, schema, expression, where)
    assert count > 100
    created = document["paths"]["/goals"]["post"]["responses"]["201"]["links"]
    assert created["goals_get"]["parameters"] == {"goal_id": "$response.body#/id"}
    stage = document["paths"]["/goals/{goal_id}/stages"]["post"]["responses"]["201"]["links"]
    assert stage["goals_complete_stage"]["parameters"] == {
        "goal_id": "$request.path.goal_id",
        "stage_id": "$response.body#/id",
    }
