"""A client generated from `/openapi.json` by openapi-python-client drives the mobile flow.

register → goal → stages → complete → upload → list → archive → refresh → settings → logout,
with the generated functions and models only, and no `Any` in the declared fields of the
models the flow touches.
"""

from __future__ import annotations

import ast
import asyncio
import enum
import importlib
import io
import json
import sys
import tokenize
import types
import typing
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest

from goaltrack.clock import utcnow
from goaltrack.defer import send_deferred
from goaltrack.errors import problem_type
from goaltrack.notifications.kinds import (
    AchievementData,
    AiFailedData,
    AiStagesReadyData,
    DigestData,
    ExportReadyData,
    GoalCompletedData,
    NotificationData,
    NotificationType,
    ReminderData,
)
from goaltrack.notifications.service import notify
from helpers import Account, make_image

# The catch-all the generator adds to every schema that does not say
# `additionalProperties: false` (all response schemas): not a declared field of the API.
CATCH_ALL = "additional_properties"

# Undeclared properties the server is known to send (none: found and fixed — `Problem` now
# declares the `request_id` every problem body carries).
SPEC_GAPS: dict[str, set[str]] = {}


async def _generate(spec: dict[str, Any], root: Path, package: str) -> Path:
    spec_path = root / "openapi.json"
    spec_path.write_text(json.dumps(spec))
    config = root / "config.json"
    config.write_text(json.dumps({"package_name_override": package}))
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "openapi_python_client",
        "generate",
        "--path",
        str(spec_path),
        "--output-path",
        str(root / package),
        "--meta",
        "none",
        "--config",
        str(config),
        "--fail-on-warning",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), timeout=60)
    text = output.decode()
    assert process.returncode == 0, text
    # The generator reports schema problems as "Warning(s) encountered" and skips the
    # endpoints or models it cannot build: none is acceptable.
    assert "Warning(s) encountered" not in text, text
    assert "Error(s) encountered" not in text, text
    return root / package


@pytest.fixture
async def generated(client: httpx.AsyncClient, tmp_path: Path) -> AsyncIterator[types.ModuleType]:
    response = await client.get("/openapi.json")
    assert response.status_code == 200, response.text
    package = f"goaltrack_client_{uuid.uuid4().hex[:12]}"
    await _generate(response.json(), tmp_path, package)
    sys.path.insert(0, str(tmp_path))
    try:
        yield importlib.import_module(package)
    finally:
        sys.path.remove(str(tmp_path))
        for name in [m for m in sys.modules if m == package or m.startswith(package + ".")]:
            del sys.modules[name]


def _model_any_fields(cls: type, package: str) -> list[str]:
    """Fields (`Model.field`) of `cls` and of every generated model reachable from it whose type
    is or contains `typing.Any`. The generator's `additional_properties` catch-all is left out
    (it is checked to be empty at run time instead)."""
    found: list[str] = []
    seen: set[type] = set()

    def visit_type(hint: Any, where: str) -> None:
        if hint is Any:
            found.append(where)
            return
        for arg in typing.get_args(hint):
            visit_type(arg, where)
        if isinstance(hint, type) and hint.__module__.startswith(package + "."):
            visit_model(hint)

    def visit_model(model: type) -> None:
        if model in seen or issubclass(model, enum.Enum) or not attrs.has(model):
            return
        seen.add(model)
        module = sys.modules[model.__module__]
        namespace = {
            **vars(importlib.import_module(package + ".models")),
            **vars(importlib.import_module(package + ".types")),
            **vars(module),
        }
        hints = typing.get_type_hints(model, globalns=namespace)
        for field in attrs.fields(model):
            if field.name != CATCH_ALL:
                visit_type(hints[field.name], f"{model.__name__}.{field.name}")

    visit_model(cls)
    return found


def _no_extras(model: Any) -> None:
    """The parsed model and its nested models carry nothing undeclared."""
    if isinstance(model, list):
        for item in model:
            _no_extras(item)
        return
    if not attrs.has(type(model)):
        return
    for field in attrs.fields(type(model)):
        value = getattr(model, field.name)
        if field.name == CATCH_ALL:
            name = type(model).__name__
            allowed = SPEC_GAPS.get(name, set())
            assert value.keys() <= allowed, f"{name} got undeclared {value}"
        else:
            _no_extras(value)


async def test_mobile_flow_with_generated_client(app: Any, generated: types.ModuleType) -> None:
    package = generated.__name__
    api = importlib.import_module(package + ".api")
    models = importlib.import_module(package + ".models")
    gtypes = importlib.import_module(package + ".types")
    ops = {
        name: importlib.import_module(f"{package}.api.{tag}.{name}")
        for tag, name in [
            ("auth", "auth_register"),
            ("auth", "auth_refresh"),
            ("auth", "auth_logout"),
            ("goals", "goals_create"),
            ("goals", "goals_add_stage"),
            ("goals", "goals_complete_stage"),
            ("goals", "goals_add_attachment"),
            ("goals", "goals_list"),
            ("goals", "goals_archive"),
            ("goals", "goals_list_archived"),
            ("account", "account_update_settings"),
            ("account", "account_set_push_enabled"),
        ]
    }
    assert api is not None
    touched: set[type] = set()

    def parsed(response: Any, status: int, model: type) -> Any:
        assert response.status_code == status, response.content
        assert isinstance(response.parsed, model), response.parsed
        _no_extras(response.parsed)
        touched.add(model)
        return response.parsed

    transport = httpx.ASGITransport(app=app)
    base = "http://testserver"

    def authenticated(token: str) -> Any:
        return generated.AuthenticatedClient(
            base_url=base,
            token=token,
            raise_on_unexpected_status=True,
            httpx_args={"transport": transport},
        )

    anonymous = generated.Client(
        base_url=base, raise_on_unexpected_status=True, httpx_args={"transport": transport}
    )
    email = f"mobile-{uuid.uuid4().hex[:12]}@example.com"

    # register
    register_body = models.RegisterRequest(
        email=email, password="correct horse battery", timezone="Europe/Berlin"
    )
    touched.add(models.RegisterRequest)
    async with anonymous:
        tokens = parsed(
            await ops["auth_register"].asyncio_detailed(client=anonymous, body=register_body),
            201,
            models.TokenPair,
        )
    assert tokens.access_token
    assert tokens.refresh_token

    async with authenticated(tokens.access_token) as me:
        # goal
        goal = parsed(
            await ops["goals_create"].asyncio_detailed(
                client=me,
                body=models.GoalCreate(title="Run a marathon", description="42 km"),
            ),
            201,
            models.GoalOut,
        )
        touched.add(models.GoalCreate)
        assert isinstance(goal.id, uuid.UUID)
        assert goal.title == "Run a marathon"
        assert goal.progress == 0
        assert goal.stages == []
        assert goal.ai_status in models.AiStatus

        # stages
        stages = []
        for title in ("Run 5 km", "Run 21 km", "Run 42 km"):
            stage = parsed(
                await ops["goals_add_stage"].asyncio_detailed(
                    goal.id, client=me, body=models.StageCreate(title=title)
                ),
                201,
                models.Stage,
            )
            assert stage.title == title
            assert stage.is_completed is False
            stages.append(stage)
        touched.add(models.StageCreate)
        assert [s.position for s in stages] == sorted(s.position for s in stages)

        # complete
        goal = parsed(
            await ops["goals_complete_stage"].asyncio_detailed(goal.id, stages[0].id, client=me),
            200,
            models.GoalOut,
        )
        assert goal.stage_count == 3
        assert goal.completed_stage_count == 1
        assert 0 < goal.progress < 100
        done = next(s for s in goal.stages if s.id == stages[0].id)
        assert done.is_completed is True
        assert done.completed_at is not None

        # upload
        png = make_image("PNG")
        attachment = parsed(
            await ops["goals_add_attachment"].asyncio_detailed(
                goal.id,
                client=me,
                body=models.GoalsAddAttachmentBody(
                    file=gtypes.File(
                        payload=io.BytesIO(png), file_name="pixel.png", mime_type="image/png"
                    )
                ),
            ),
            201,
            models.Attachment,
        )
        touched.add(models.GoalsAddAttachmentBody)
        assert attachment.file_name == "pixel.png"
        assert attachment.file_type == "image/png"
        assert attachment.size == len(png)
        assert attachment.url

        # list
        page = parsed(
            await ops["goals_list"].asyncio_detailed(client=me, limit=10),
            200,
            models.ListPageGoalSummary,
        )
        assert [g.id for g in page.items] == [goal.id]
        assert page.items[0].completed_stage_count == 1
        assert page.next_cursor is None

        # archive
        archived = parsed(
            await ops["goals_archive"].asyncio_detailed(goal.id, client=me),
            200,
            models.GoalOut,
        )
        assert archived.is_archived is True
        assert [a.id for a in archived.attachments] == [attachment.id]
        page = parsed(
            await ops["goals_list"].asyncio_detailed(client=me), 200, models.ListPageGoalSummary
        )
        assert page.items == []
        page = parsed(
            await ops["goals_list_archived"].asyncio_detailed(client=me),
            200,
            models.ListPageGoalSummary,
        )
        assert [g.id for g in page.items] == [goal.id]

        # refresh (public endpoint; an authenticated client works as well)
        fresh = parsed(
            await ops["auth_refresh"].asyncio_detailed(
                client=me, body=models.RefreshRequest(refresh_token=tokens.refresh_token)
            ),
            200,
            models.TokenPair,
        )
        touched.add(models.RefreshRequest)
        assert fresh.refresh_token != tokens.refresh_token

    async with authenticated(fresh.access_token) as me:
        # settings
        settings = parsed(
            await ops["account_update_settings"].asyncio_detailed(
                client=me,
                body=models.SettingsUpdate(timezone="Asia/Tokyo", locale=models.Locale.RU),
            ),
            200,
            models.SettingsOut,
        )
        touched.add(models.SettingsUpdate)
        assert settings.timezone == "Asia/Tokyo"
        assert settings.locale is models.Locale.RU
        assert isinstance(settings.notification_frequency, models.Frequency)
        settings = parsed(
            await ops["account_set_push_enabled"].asyncio_detailed(
                client=me, body=models.PushToggle(push_enabled=False)
            ),
            200,
            models.SettingsOut,
        )
        touched.add(models.PushToggle)
        assert settings.push_enabled is False

        # logout: 204, no body (the generator types a body-less 204 as `Any`, parsed as None)
        response = await ops["auth_logout"].asyncio_detailed(
            client=me, body=models.LogoutRequest(refresh_token=fresh.refresh_token)
        )
        touched.add(models.LogoutRequest)
        assert response.status_code == 204, response.content
        assert response.parsed is None

        # the revoked refresh token is refused with a typed problem
        response = await ops["auth_refresh"].asyncio_detailed(
            client=me, body=models.RefreshRequest(refresh_token=fresh.refresh_token)
        )
        problem = parsed(response, 401, models.Problem)
        assert problem.status == 401
        assert problem.code == "invalid_token"
        assert problem.request_id == response.headers["x-request-id"]  # typed, declared

    # No `Any` in the declared fields of any model the flow sent or received (recursively).
    offenders = {m.__name__: _model_any_fields(m, package) for m in touched}
    assert {name: fields for name, fields in offenders.items() if fields} == {}
    assert {m.__name__ for m in touched} >= {
        "TokenPair",
        "GoalOut",
        "Stage",
        "Attachment",
        "ListPageGoalSummary",
        "SettingsOut",
        "Problem",
    }


# --- the app's code: an exhaustive switch on `code`, `data` narrowed by `type` -----------------

FLOW = Path(__file__).with_name("generated_client_flow.py")
# The flow, broken two ways a type checker must catch: a code left unhandled, and a field read
# from another kind's `data`.
BROKEN_FLOWS = {
    "flow_without_a_code": ("            | ProblemCode.FORBIDDEN\n", ""),
    "flow_reading_another_kind": ("item.data.active_goals", "item.data.reason"),
}
MYPY_CONFIG = """\
[mypy]
python_version = 3.11
strict = True
warn_unreachable = True
# The generated package is read for its types; its own style is the generator's business.
follow_imports = silent
"""


def _escape_hatches(source: str) -> list[str]:
    """Where the code steps around the type checker: a cast, `Any`, a `type: ignore`."""
    names = [
        node.id if isinstance(node, ast.Name) else node.attr
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Name | ast.Attribute)
    ]
    comments = [
        token.string
        for token in tokenize.generate_tokens(io.StringIO(source).readline)
        if token.type == tokenize.COMMENT
    ]
    return [name for name in names if name in {"cast", "Any"}] + [
        comment for comment in comments if "type:" in comment
    ]


async def _mypy(root: Path, *modules: Path) -> str:
    config = root / "mypy.ini"
    config.write_text(MYPY_CONFIG)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "mypy",
        "--config-file",
        str(config),
        "--cache-dir",
        str(root / ".mypy_cache"),
        *map(str, modules),
        cwd=root,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), timeout=120)
    return output.decode()


async def _write_notifications(app: Any, user_id: uuid.UUID) -> dict[str, NotificationData]:
    """One notification of every kind, written as the code base writes them (`notify`)."""
    goal_id, other_id = uuid.uuid4(), uuid.uuid4()
    written: list[NotificationData] = [
        ReminderData(goal_id=goal_id, stage_id=None, reminder_id=uuid.uuid4()),
        DigestData(active_goals=3),
        AchievementData(achievement_code="first_goal"),
        GoalCompletedData(goal_id=goal_id),
        AiStagesReadyData(goal_id=other_id),
        AiFailedData(goal_id=other_id, reason="timeout"),
        ExportReadyData(
            export_id=uuid.uuid4(),
            url=f"/account/exports/{uuid.uuid4()}/download",
            expires_at=utcnow() + timedelta(days=7),
        ),
    ]
    assert {data.type for data in written} == set(typing.get_args(NotificationType))
    async with app.state.sessionmaker() as session, session.begin():
        for data in written:
            await notify(
                session, user_id=user_id, data=data, title=data.type, body=".", now=utcnow()
            )
    await asyncio.to_thread(send_deferred, session)
    return {data.type: data for data in written}


async def test_app_flow_switches_on_code_and_narrows_data_by_type(
    app: Any, client: httpx.AsyncClient, user: Account, generated: types.ModuleType
) -> None:
    package = generated.__name__
    root = Path(generated.__file__).parent.parent
    source = FLOW.read_text()
    assert _escape_hatches(source) == []
    flow = root / f"flow_{package}.py"
    flow.write_text(source.replace("goaltrack_client", package))
    broken = {}
    for name, (good, bad) in BROKEN_FLOWS.items():
        assert good in source, name
        broken[name] = root / f"{name}.py"
        broken[name].write_text(source.replace("goaltrack_client", package).replace(good, bad))

    # Type-checked: the flow passes, and each broken copy fails where it was broken.
    report = await _mypy(root, flow, *broken.values())
    failing = {line.split(":", 1)[0] for line in report.splitlines() if ": error:" in line}
    assert failing == {f"{name}.py" for name in broken}, report
    assert 'incompatible type "Literal[ProblemCode.FORBIDDEN]"' in report, report
    assert '"DigestData" has no attribute "reason"' in report, report

    # Run on the server's answers: every kind parsed to its own class, every problem switched on.
    steps = importlib.import_module(flow.stem)
    account = await client.get("/account", headers=user.headers)
    written = await _write_notifications(app, uuid.UUID(account.json()["id"]))
    feed = importlib.import_module(f"{package}.api.notifications.notifications_list")
    get_goal = importlib.import_module(f"{package}.api.goals.goals_get")
    list_goals = importlib.import_module(f"{package}.api.goals.goals_list")
    transport = httpx.ASGITransport(app=app)

    def authenticated(token: str) -> Any:
        return generated.AuthenticatedClient(
            base_url="http://testserver",
            token=token,
            raise_on_unexpected_status=True,
            httpx_args={"transport": transport},
        )

    async with authenticated(user.access_token) as me:
        page = (await feed.asyncio_detailed(client=me, limit=100)).parsed
        assert {type(item).__name__ for item in page.items} == {
            f"{type(data).__name__.removesuffix('Data')}Notification" for data in written.values()
        }
        for item in page.items:
            _no_extras(item)
            data = written[item.type_]
            fields = {name: getattr(item.data, name) for name in type(data).model_fields}
            assert fields == dict(data), item.type_
        lines = steps.feed_lines(page)
        assert len(lines) == len(written)
        assert "digest: 3 active goals" in lines
        assert "achievement first_goal" in lines

        missing = await get_goal.asyncio_detailed(uuid.uuid4(), client=me)
        bad_cursor = await list_goals.asyncio_detailed(client=me, cursor="not-a-cursor")
    async with authenticated("not-a-token") as stranger:
        refused = await list_goals.asyncio_detailed(client=stranger)
    models = importlib.import_module(package + ".models")
    for response, status, model, step in (
        (missing, 404, models.Problem, "reload"),
        (bad_cursor, 422, models.ValidationProblem, "reload"),
        (refused, 401, models.Problem, "sign_in"),
    ):
        problem = response.parsed
        assert response.status_code == status, response.content
        assert isinstance(problem, model), problem
        assert problem.type_ == problem_type(problem.code)
        assert steps.next_step(problem) == step
