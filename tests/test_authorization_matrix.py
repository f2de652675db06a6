"""The authorization matrix: every route of the app × every state a caller can be in → the
status the route answers.

Caller states (columns):

- owner: a valid access token of the user who owns every id in the path;
- other: a second user's valid token, the ids still the owner's: 404 on every route naming an id
  (never 200/204, and the owner's data is unchanged afterwards); on routes without ids the second
  user acts on their own data, so they answer as for the owner;
- no_token, expired (signed with the app's secret, `exp` in the past), refresh_as_access (the
  refresh token sent as a bearer token), after_password_change (the access token issued before
  PUT /account/password), after_logout (the access token of a session ended with POST
  /auth/logout): 401 on every protected route, and again nothing of the owner's changes.

Public routes answer their bad-input status (never 401) whatever the caller sends.

The matrix must list exactly the app's routes: a route added without a row fails
`test_matrix_lists_every_route`.

Each state is one test: it builds the owner's data through the API, runs every row in order
(the order lets the owner's own calls all succeed: deletions come last), collects every
mismatch, then, for every state but the owner's, checks with the owner's token that nothing
changed.
"""

from __future__ import annotations

import struct
import uuid
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
from fastapi.routing import APIRoute, iter_route_contexts
from sqlalchemy import select
from starlette.routing import Route

from goaltrack.clock import utcnow
from goaltrack.devices.models import Device
from goaltrack.notifications.kinds import ReminderData
from goaltrack.notifications.service import notify
from helpers import Account, create_goal, wait_until


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


# A real 1×1 grey PNG: uploads are decoded, not only sniffed.
PNG = (
    b"\x89PNG\r\n\x1a\n"
    + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0))
    + _png_chunk(b"IDAT", zlib.compress(b"\x00\x80"))
    + _png_chunk(b"IEND", b"")
)
NEW_PASSWORD = "a brand new passphrase"

# -- caller states ------------------------------------------------------------------------------

OWNER = "owner"
OTHER = "other"
NO_TOKEN = "no_token"
EXPIRED = "expired"
REFRESH_AS_ACCESS = "refresh_as_access"
AFTER_PASSWORD_CHANGE = "after_password_change"
AFTER_LOGOUT = "after_logout"
STATES = (OWNER, OTHER, NO_TOKEN, EXPIRED, REFRESH_AS_ACCESS, AFTER_PASSWORD_CHANGE, AFTER_LOGOUT)


def protected(owner: int, *, other: int | None = None) -> dict[str, int]:
    """A route behind an access token. `other` defaults to the owner's status: set it (404) on
    every route whose path names the owner's ids."""
    return {
        OWNER: owner,
        OTHER: owner if other is None else other,
        NO_TOKEN: 401,
        EXPIRED: 401,
        REFRESH_AS_ACCESS: 401,
        AFTER_PASSWORD_CHANGE: 401,
        # Logout revokes the session (the refresh-token family) and, since access tokens carry
        # their session (`sid`, checked with the token version), the access tokens issued in it.
        # Before that change an access token outlived logout until its expiry (200 here).
        AFTER_LOGOUT: 401,
    }


def owned(owner: int) -> dict[str, int]:
    """A route whose path names the owner's ids: a stranger's 404 is the same as a missing id's."""
    return protected(owner, other=404)


def public(status: int) -> dict[str, int]:
    """A route without authentication: the same answer (never 401) whatever the caller sends."""
    return dict.fromkeys(STATES, status)


# -- the matrix ---------------------------------------------------------------------------------

Body = dict[str, Any] | Callable[["World", Account], dict[str, Any]] | None


@dataclass(frozen=True)
class Row:
    method: str
    route: str  # the path template, as the app declares it
    expect: dict[str, int]
    url: str | None = None  # the URL to call, formatted with the World's ids (default: route)
    json: Body = None
    upload: bool = False  # multipart with a small PNG
    # Acts on the caller's own account (password change, deletion): in the owner and other
    # columns it runs with a throwaway account of its own, so the run's users survive it.
    own_account: bool = False

    @property
    def key(self) -> tuple[str, str]:
        return (self.method, self.route)


def _password(world: World, caller: Account) -> dict[str, Any]:
    return {"password": caller.password}


MATRIX: list[Row] = [
    # --- public: bad input gets its own answer, never a 401 ----------------------------------
    Row("GET", "/health", public(200)),
    Row("GET", "/health/ready", public(200)),
    Row("GET", "/capabilities", public(200)),
    Row("POST", "/auth/register", public(422), json={}),
    Row("POST", "/auth/login", public(422), json={}),
    Row("POST", "/auth/refresh", public(422), json={}),
    # Unknown refresh tokens are ignored: logout is idempotent and needs no access token.
    Row("POST", "/auth/logout", public(204), json={"refresh_token": "not-a-refresh-token"}),
    Row("POST", "/auth/forgot-password", public(422), json={}),
    Row(
        "POST",
        "/auth/reset-password",
        public(400),
        json={"token": "not-a-reset-token", "new_password": NEW_PASSWORD},
    ),
    Row("POST", "/account/restore", public(422), json={}),
    # By the link's token, public; by the code, the caller's own (test_verification).
    Row("POST", "/auth/verify-email", public(400), json={"token": "not-a-verification-token"}),
    Row("GET", "/reset-password", public(200)),  # no token: the "invalid link" page
    Row("GET", "/reset-password/page.css", public(200)),
    Row("POST", "/reset-password", public(403)),  # no CSRF token
    Row("GET", "/.well-known/apple-app-site-association", public(404)),  # no IOS_APP_IDS
    Row("GET", "/.well-known/assetlinks.json", public(404)),  # no ANDROID_* settings
    Row("GET", "/openapi.json", public(200)),
    Row("GET", "/docs", public(200)),
    Row("GET", "/docs/oauth2-redirect", public(200)),
    # --- the account and its settings --------------------------------------------------------
    Row("GET", "/account", protected(200)),
    Row("GET", "/settings", protected(200)),
    Row("PUT", "/settings", protected(200), json={"timezone": "Europe/Berlin", "locale": "ru"}),
    Row("PUT", "/settings/notifications", protected(200), json={"push_enabled": False}),
    Row(
        "PUT",
        "/settings/notifications/frequency",
        protected(200),
        json={"times": ["09:00"], "frequency": "daily"},
    ),
    Row("POST", "/account/export", protected(202)),
    # An export id the caller does not have: 404 for everyone (the real one: test_account).
    Row(
        "GET",
        "/account/exports/{export_id}/download",
        protected(404),
        url=f"/account/exports/{uuid.UUID(int=1)}/download",
    ),
    Row("PUT", "/account", protected(200), json={"display_name": "Someone"}),
    Row(
        "PUT",
        "/account/email",
        protected(202),
        json=lambda world, caller: {
            "new_email": f"moved-{uuid.uuid4().hex[:8]}@example.com",
            "password": caller.password,
        },
    ),
    Row("POST", "/account/email/verification", protected(202)),
    # --- goals ---------------------------------------------------------------------------------
    Row("GET", "/goals", protected(200)),
    Row("GET", "/goals/archived", protected(200)),
    Row("POST", "/goals", protected(201), json={"title": "Someone's new goal"}),
    Row("GET", "/goals/{goal_id}", owned(200), url="/goals/{goal}"),
    Row("PUT", "/goals/{goal_id}", owned(200), url="/goals/{goal}", json={"title": "Renamed"}),
    Row("PUT", "/goals/{goal_id}/archive", owned(200), url="/goals/{goal}/archive"),
    Row("PUT", "/goals/{goal_id}/unarchive", owned(200), url="/goals/{goal}/unarchive"),
    Row(
        "PUT",
        "/goals/{goal_id}/stages/order",
        owned(200),
        url="/goals/{goal}/stages/order",
        json=lambda world, caller: {"stage_ids": [world.ids["spare_stage"], world.ids["stage"]]},
    ),
    Row(
        "POST",
        "/goals/{goal_id}/stages",
        owned(201),
        url="/goals/{goal}/stages",
        json={"title": "A third stage"},
    ),
    Row(
        "PUT",
        "/goals/{goal_id}/stages/{stage_id}",
        owned(200),
        url="/goals/{goal}/stages/{stage}",
        json={"title": "Renamed stage"},
    ),
    Row(
        "PUT",
        "/goals/{goal_id}/stages/{stage_id}/complete",
        owned(200),
        url="/goals/{goal}/stages/{stage}/complete",
    ),
    Row(
        "PUT",
        "/goals/{goal_id}/stages/{stage_id}/uncomplete",
        owned(200),
        url="/goals/{goal}/stages/{stage}/uncomplete",
    ),
    Row(
        "DELETE",
        "/goals/{goal_id}/stages/{stage_id}",
        owned(204),
        url="/goals/{goal}/stages/{spare_stage}",
    ),
    Row(
        "POST",
        "/goals/{goal_id}/attachments",
        owned(201),
        url="/goals/{goal}/attachments",
        upload=True,
    ),
    Row("GET", "/goals/{goal_id}/attachments", owned(200), url="/goals/{goal}/attachments"),
    Row(
        "GET",
        "/goals/{goal_id}/attachments/{attachment_id}/content",
        owned(302),
        url="/goals/{goal}/attachments/{attachment}/content",
    ),
    Row(
        "DELETE",
        "/goals/{goal_id}/attachments/{attachment_id}",
        owned(204),
        url="/goals/{goal}/attachments/{attachment}",
    ),
    Row(
        "POST",
        "/goals/{goal_id}/reminders",
        owned(201),
        url="/goals/{goal}/reminders",
        json={"remind_time": "08:30", "frequency_days": 2},
    ),
    Row("GET", "/goals/{goal_id}/reminders", owned(200), url="/goals/{goal}/reminders"),
    Row("GET", "/goals/{goal_id}/checkins", owned(200), url="/goals/{habit}/checkins"),
    # Today's check-in undone, then made again (a habit's dates start on its creation day).
    Row(
        "DELETE",
        "/goals/{goal_id}/checkins/{day}",
        owned(204),
        url="/goals/{habit}/checkins/{checkin_day}",
    ),
    Row("POST", "/goals/{goal_id}/checkins", owned(201), url="/goals/{habit}/checkins", json={}),
    Row(
        "PUT",
        "/goals/{goal_id}/reminders/{reminder_id}",
        owned(200),
        url="/goals/{goal}/reminders/{reminder}",
        json={"remind_time": "07:15"},
    ),
    Row(
        "DELETE",
        "/goals/{goal_id}/reminders/{reminder_id}",
        owned(204),
        url="/goals/{goal}/reminders/{reminder}",
    ),
    Row("POST", "/goals/{goal_id}/ai-sync", owned(202), url="/goals/{ai_goal}/ai-sync"),
    Row("DELETE", "/goals/{goal_id}", owned(204), url="/goals/{goal}"),
    # --- devices, notifications, achievements --------------------------------------------------
    Row(
        "POST",
        "/devices",
        protected(201),
        # The caller's own new token (a known token would move to the caller: by design).
        json=lambda world, caller: {"token": f"fcm:{uuid.uuid4().hex}", "platform": "ios"},
    ),
    Row("DELETE", "/devices/{token}", owned(204), url="/devices/{device}"),
    Row("GET", "/notifications", protected(200)),
    Row(
        "PUT",
        "/notifications/{notification_id}/read",
        owned(200),
        url="/notifications/{notification}/read",
    ),
    Row("PUT", "/notifications/read-all", protected(200)),
    Row(
        "POST",
        "/notifications/{notification_id}/snooze",
        owned(202),
        url="/notifications/{reminder_notification}/snooze",
        json={"minutes": 10},
    ),
    Row("GET", "/achievements", protected(200)),
    Row("GET", "/sync", protected(200)),
    # --- the caller's own account, last ------------------------------------------------------
    Row(
        "PUT",
        "/account/password",
        protected(200),
        json=lambda world, caller: {
            "current_password": caller.password,
            "new_password": NEW_PASSWORD,
        },
        own_account=True,
    ),
    Row("DELETE", "/account", protected(202), json=_password, own_account=True),
    Row("DELETE", "/account/data", protected(204), json=_password, own_account=True),
]


# -- the app's routes ---------------------------------------------------------------------------


def app_routes(app: Any) -> set[tuple[str, str]]:
    """(method, path template) of every route: the API routes, and Starlette's plain routes
    (the docs). HEAD is Starlette's automatic companion of GET on plain routes."""
    found = set()
    for route in iter_route_contexts(app.routes):
        original = route.original_route
        if not isinstance(original, (APIRoute, Route)):
            continue
        for method in route.methods or ():
            if method != "HEAD":
                found.add((method, route.path_format))
    return found


def test_matrix_lists_every_route(app: Any) -> None:
    keys = [row.key for row in MATRIX]
    assert len(keys) == len(set(keys)), "a route is listed twice"
    routes = app_routes(app)
    assert any(isinstance(r.original_route, APIRoute) for r in iter_route_contexts(app.routes))
    unlisted = sorted(routes - set(keys))
    gone = sorted(set(keys) - routes)
    assert not unlisted, f"routes missing from the authorization matrix: {unlisted}"
    assert not gone, f"matrix rows for routes the app does not have: {gone}"
    for row in MATRIX:
        assert row.expect.keys() == set(STATES), row.key
        if "{" in row.route:  # a stranger gets 404 on every route that names an id
            assert row.expect[OTHER] == 404, row.key


# -- the owner's data ---------------------------------------------------------------------------


@dataclass
class World:
    owner: Account
    other: Account
    ids: dict[str, str] = field(default_factory=dict)


async def build_world(client: Any, app: Any, owner: Account, other: Account) -> World:
    """A goal with two stages, an attachment and a reminder; a goal for the AI; a completed goal
    (which writes a notification); a device. All through the API, but for a reminder
    notification (the scheduler's)."""
    world = World(owner, other)
    goal = (await create_goal(client, owner, title="Owner's goal"))["id"]
    stages = []
    for title in ("First stage", "Spare stage"):
        response = await client.post(
            f"/goals/{goal}/stages", json={"title": title}, headers=owner.headers
        )
        assert response.status_code == 201, response.text
        stages.append(response.json()["id"])
    attachment = await client.post(
        f"/goals/{goal}/attachments",
        files={"file": ("proof.png", PNG, "image/png")},
        headers=owner.headers,
    )
    assert attachment.status_code == 201, attachment.text
    reminder = await client.post(
        f"/goals/{goal}/reminders",
        json={"remind_time": "20:00", "frequency_days": 1},
        headers=owner.headers,
    )
    assert reminder.status_code == 201, reminder.text
    ai_goal = (await create_goal(client, owner, title="Learn Spanish"))["id"]
    habit = (
        await create_goal(client, owner, title="Run", kind="habit", schedule={"type": "daily"})
    )["id"]
    today = datetime.now(UTC).date()  # the owner's zone is UTC
    checkin = await client.post(
        f"/goals/{habit}/checkins", json={"date": str(today)}, headers=owner.headers
    )
    assert checkin.status_code == 201, checkin.text

    done = (await create_goal(client, owner, title="Done already"))["id"]
    stage = await client.post(f"/goals/{done}/stages", json={"title": "All"}, headers=owner.headers)
    assert stage.status_code == 201, stage.text
    completed = await client.put(
        f"/goals/{done}/stages/{stage.json()['id']}/complete", headers=owner.headers
    )
    assert completed.status_code == 200, completed.text
    feed = await client.get("/notifications", headers=owner.headers)
    assert feed.status_code == 200, feed.text
    assert feed.json()["items"], "completing a goal writes a notification"

    # A reminder, as the scheduler writes it (no route writes one): what a snooze takes. Of the
    # habit, which the matrix's rows leave in progress.
    owner_id = (await client.get("/account", headers=owner.headers)).json()["id"]
    async with app.state.sessionmaker() as session, session.begin():
        reminder_notification = await notify(
            session,
            user_id=uuid.UUID(owner_id),
            data=ReminderData(
                goal_id=uuid.UUID(habit),
                stage_id=None,
                reminder_id=uuid.UUID(reminder.json()["id"]),
            ),
            title="Time for: Run",
            body="Keep going: add the next stage of this goal.",
            now=utcnow(),
        )

    device = f"fcm:owner-device-{uuid.uuid4().hex}"
    registered = await client.post(
        "/devices", json={"token": device, "platform": "android"}, headers=owner.headers
    )
    assert registered.status_code == 201, registered.text

    world.ids = {
        "goal": goal,
        "stage": stages[0],
        "spare_stage": stages[1],
        "attachment": attachment.json()["id"],
        "reminder": reminder.json()["id"],
        "ai_goal": ai_goal,
        "habit": habit,
        "checkin_day": str(today),
        "device": device,
        "notification": feed.json()["items"][0]["id"],
        "reminder_notification": str(reminder_notification.id),
    }
    return world


def _without_urls(value: Any) -> Any:
    """Presigned URLs are signed at every read: everything else must be identical."""
    if isinstance(value, dict):
        return {k: _without_urls(v) for k, v in value.items() if k != "url"}
    if isinstance(value, list):
        return [_without_urls(v) for v in value]
    return value


async def snapshot(client: Any, app: Any, world: World) -> dict[str, Any]:
    """Everything of the owner's that a row could change, read with the owner's token."""
    headers = world.owner.headers
    reads = {
        "account": "/account",
        "settings": "/settings",
        "goals": "/goals",
        "archived": "/goals/archived",
        "goal": "/goals/{goal}",
        "ai_goal": "/goals/{ai_goal}",
        "attachments": "/goals/{goal}/attachments",
        "reminders": "/goals/{goal}/reminders",
        "notifications": "/notifications",
    }
    state: dict[str, Any] = {}
    for name, url in reads.items():
        response = await client.get(url.format(**world.ids), headers=headers)
        assert response.status_code == 200, (name, response.text)
        state[name] = _without_urls(response.json())
    owner_id = uuid.UUID(state["account"]["id"])
    async with app.state.sessionmaker() as session:
        state["devices"] = sorted(
            await session.scalars(select(Device.token).where(Device.user_id == owner_id))
        )
    return state


# -- the callers --------------------------------------------------------------------------------


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _resigned(app: Any, token: str, *, expires_in: timedelta) -> str:
    """The token's own claims, re-signed with the app's secret with another expiry."""
    settings = app.state.settings
    secret = settings.jwt_secret.get_secret_value()
    claims = jwt.decode(token, secret, algorithms=["HS256"], issuer=settings.jwt_issuer)
    now = utcnow()
    claims["iat"] = int((now + expires_in - timedelta(minutes=30)).timestamp())
    claims["exp"] = int((now + expires_in).timestamp())
    return jwt.encode(claims, secret, algorithm="HS256")


async def caller_headers(client: Any, app: Any, state: str, world: World) -> dict[str, str]:
    """The Authorization header of a caller in `state`; may change the owner's tokens (a
    password change), after which `world.owner` holds the new ones."""
    owner = world.owner
    if state == OWNER:
        return owner.headers
    if state == OTHER:
        return world.other.headers
    if state == NO_TOKEN:
        return {}
    if state == EXPIRED:
        # The same claims unexpired are accepted: the 401 is the expiry's, not a bad signature's.
        fresh = _resigned(app, owner.access_token, expires_in=timedelta(minutes=5))
        assert (await client.get("/account", headers=_bearer(fresh))).status_code == 200
        return _bearer(_resigned(app, owner.access_token, expires_in=timedelta(seconds=-60)))
    if state == REFRESH_AS_ACCESS:
        return _bearer(owner.refresh_token)
    if state == AFTER_PASSWORD_CHANGE:
        old = owner.headers
        response = await client.put(
            "/account/password",
            json={"current_password": owner.password, "new_password": NEW_PASSWORD},
            headers=old,
        )
        assert response.status_code == 200, response.text
        pair = response.json()
        world.owner = Account(
            owner.email, NEW_PASSWORD, pair["access_token"], pair["refresh_token"]
        )
        return old
    if state == AFTER_LOGOUT:
        login = await client.post(
            "/auth/login", json={"email": owner.email, "password": owner.password}
        )
        assert login.status_code == 200, login.text
        pair = login.json()
        assert (await client.get("/account", headers=_bearer(pair["access_token"]))).is_success
        logout = await client.post("/auth/logout", json={"refresh_token": pair["refresh_token"]})
        assert logout.status_code == 204, logout.text
        return _bearer(pair["access_token"])
    raise AssertionError(state)


# -- the run ------------------------------------------------------------------------------------


async def call(
    client: Any, row: Row, world: World, caller: Account, headers: dict[str, str]
) -> Any:
    url = (row.url or row.route).format(**world.ids)
    body = row.json(world, caller) if callable(row.json) else row.json
    if row.upload:
        return await client.request(
            row.method, url, files={"file": ("proof.png", PNG, "image/png")}, headers=headers
        )
    return await client.request(row.method, url, json=body, headers=headers)


@pytest.mark.parametrize("state", STATES)
async def test_authorization_matrix(
    client: Any, app: Any, register: Callable[..., Any], state: str
) -> None:
    world = await build_world(client, app, await register(), await register())
    before = await snapshot(client, app, world)
    headers = await caller_headers(client, app, state, world)
    if state == AFTER_PASSWORD_CHANGE:  # the change itself is not under test: only the tokens
        before = await snapshot(client, app, world)

    mismatches = []
    for row in MATRIX:
        caller = world.other if state == OTHER else world.owner
        row_headers = headers
        if row.own_account and state in (OWNER, OTHER):
            caller = await register()
            row_headers = caller.headers
        response = await call(client, row, world, caller, row_headers)
        expected = row.expect[state]
        if response.status_code != expected:
            mismatches.append(
                f"{row.method} {row.route} [{state}]: expected {expected}, "
                f"got {response.status_code} {response.text[:200]}"
            )
        elif expected == 401:
            assert response.json()["code"] == "not_authenticated", response.text

    if state == OWNER:
        await _let_the_ai_run_finish(client, world)
    else:
        assert await snapshot(client, app, world) == before, f"{state} changed the owner's data"
        login = await client.post(
            "/auth/login", json={"email": world.owner.email, "password": world.owner.password}
        )
        assert login.status_code == 200, "the owner's password is unchanged"
    assert not mismatches, "\n" + "\n".join(mismatches)


async def _let_the_ai_run_finish(client: Any, world: World) -> None:
    """The owner's ai-sync runs on the worker: let it end before the next test's truncation."""

    async def finished() -> bool:
        response = await client.get(f"/goals/{world.ids['ai_goal']}", headers=world.owner.headers)
        return response.status_code != 200 or response.json()["ai_status"] != "pending"

    await wait_until(finished)
