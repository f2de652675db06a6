"""The notification feed (GET/PUT /notifications) and the push of every notification to the
user's devices through the real Celery worker and the fake FCM server.

A push that must not happen is proven by a positive signal: the push task's outbox row is gone
(the task ran to its end), and only then the fake is checked for what it received."""

from __future__ import annotations

import asyncio
import base64
import types
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any, Union, get_args, get_origin

import pytest
from sqlalchemy import delete, func, select
from sqlalchemy.dialects.postgresql import insert

from fakes.fcm import FakeFcm
from goaltrack.achievements.models import Achievement
from goaltrack.clock import utcnow
from goaltrack.defer import send_deferred
from goaltrack.devices.models import Device
from goaltrack.notifications.kinds import DigestData, GoalCompletedData, NotificationData
from goaltrack.notifications.models import PushDelivery
from goaltrack.notifications.service import PUSH, notify
from goaltrack.worker.outbox import OUTBOX_LEASE, OutboxTask, defer_durably
from helpers import Account, TestClock, assert_problem, wait_until

TOKEN = "fcm:phone-" + "a" * 140
OTHER_TOKEN = "fcm:tablet-" + "b" * 140
ITEM_FIELDS = {"id", "type", "title", "body", "data", "is_read", "created_at"}


# -- helpers ----------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
async def without_achievements(app: Any) -> AsyncIterator[None]:
    """These tests count the pushes of one notification; the achievements a first goal earns
    would add pushes of their own. The catalogue is set aside and put back afterwards."""
    async with app.state.sessionmaker() as session, session.begin():
        catalogue = [
            {column.key: getattr(row, column.key) for column in Achievement.__table__.columns}
            for row in await session.scalars(select(Achievement))
        ]
        await session.execute(delete(Achievement))
    yield
    async with app.state.sessionmaker() as session, session.begin():
        await session.execute(insert(Achievement).values(catalogue).on_conflict_do_nothing())


async def user_id_of(client: Any, account: Account) -> uuid.UUID:
    response = await client.get("/account", headers=account.headers)
    assert response.status_code == 200, response.text
    return uuid.UUID(response.json()["id"])


async def add_device(client: Any, account: Account, token: str = TOKEN) -> None:
    response = await client.post(
        "/devices", json={"token": token, "platform": "android"}, headers=account.headers
    )
    assert response.status_code == 201, response.text


async def complete_goal(client: Any, account: Account, title: str = "Run a marathon") -> str:
    """A goal with one stage, completed: the GoalCompleted event writes a notification."""
    goal = await client.post("/goals", json={"title": title}, headers=account.headers)
    assert goal.status_code == 201, goal.text
    goal_id = goal.json()["id"]
    stage = await client.post(
        f"/goals/{goal_id}/stages", json={"title": "Only stage"}, headers=account.headers
    )
    assert stage.status_code == 201, stage.text
    done = await client.put(
        f"/goals/{goal_id}/stages/{stage.json()['id']}/complete", headers=account.headers
    )
    assert done.status_code == 200, done.text
    return str(goal_id)


async def write_notifications(
    app: Any, user_id: uuid.UUID, times: list[datetime], *, push: bool = False
) -> list[tuple[datetime, uuid.UUID]]:
    """One notification per instant, written with `notify`; their push tasks are sent only if
    `push` (otherwise the outbox rows just sit there until the next test's truncation)."""
    written = []
    async with app.state.sessionmaker() as session, session.begin():
        for index, now in enumerate(times):
            row = await notify(
                session,
                user_id=user_id,
                data=DigestData(active_goals=index),
                title=f"Notification {index}",
                body=f"Body {index}",
                now=now,
            )
            written.append((now, row.id))
    if push:
        await asyncio.to_thread(send_deferred, session)
    return written


async def push_tasks_pending(app: Any, user_id: uuid.UUID) -> int:
    async with app.state.sessionmaker() as session:
        return int(
            await session.scalar(
                select(func.count())
                .select_from(OutboxTask)
                .where(OutboxTask.name == PUSH, OutboxTask.user_id == user_id)
            )
            or 0
        )


async def wait_for_push_tasks_done(app: Any, user_id: uuid.UUID, timeout: float = 15) -> None:
    """Positive signal that every push task of the user ran to its end: its outbox row is gone."""

    async def done() -> bool:
        return await push_tasks_pending(app, user_id) == 0

    await wait_until(done, timeout)


async def push_task_not_before(app: Any, user_id: uuid.UUID) -> datetime | None:
    async with app.state.sessionmaker() as session:
        not_before: datetime | None = await session.scalar(
            select(OutboxTask.not_before).where(
                OutboxTask.name == PUSH, OutboxTask.user_id == user_id
            )
        )
    return not_before


async def wait_until_postponed(app: Any, user_id: uuid.UUID, beyond: datetime) -> None:
    """The push task asked for a retry: its outbox row's not_before moved past `beyond`."""

    async def postponed() -> bool:
        not_before = await push_task_not_before(app, user_id)
        return not_before is not None and not_before >= beyond

    await wait_until(postponed)


async def deliveries(app: Any) -> list[tuple[str, str]]:
    """(device token, outcome) of every push_deliveries row."""
    async with app.state.sessionmaker() as session:
        rows = await session.execute(
            select(Device.token, PushDelivery.outcome).join(
                Device, Device.id == PushDelivery.device_id
            )
        )
        return sorted((token, outcome) for token, outcome in rows)


async def device_tokens(app: Any) -> set[str]:
    async with app.state.sessionmaker() as session:
        return set(await session.scalars(select(Device.token)))


async def feed(client: Any, account: Account, **params: Any) -> dict[str, Any]:
    response = await client.get("/notifications", params=params, headers=account.headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def newest_first(written: list[tuple[datetime, uuid.UUID]]) -> list[str]:
    return [str(row_id) for _, row_id in sorted(written, reverse=True)]


# -- the feed ---------------------------------------------------------------------------------


async def test_feed_pages_45_rows_20_20_5_newest_first_without_duplicates(
    client: Any, app: Any, user: Account
) -> None:
    start = utcnow() - timedelta(minutes=5)
    # Three rows share each instant: page boundaries fall inside a tie, decided by id.
    times = [start + timedelta(seconds=index // 3) for index in range(45)]
    written = await write_notifications(app, await user_id_of(client, user), times)

    pages = [await feed(client, user)]
    while pages[-1]["next_cursor"] is not None:
        pages.append(await feed(client, user, cursor=pages[-1]["next_cursor"]))

    assert [len(page["items"]) for page in pages] == [20, 20, 5]
    ids = [item["id"] for page in pages for item in page["items"]]
    assert ids == newest_first(written)
    assert len(set(ids)) == 45
    assert all(page["unread_count"] == 45 for page in pages)
    index = {str(row_id): position for position, (_, row_id) in enumerate(written)}
    for item in (pages[0]["items"][0], pages[2]["items"][-1]):
        assert item.keys() == ITEM_FIELDS
        assert item["type"] == "digest"
        assert item["title"] == f"Notification {index[item['id']]}"
        assert item["data"] == {"active_goals": index[item["id"]]}
        assert item["is_read"] is False


async def test_feed_limit_is_capped_at_100(client: Any, app: Any, user: Account) -> None:
    start = utcnow() - timedelta(minutes=5)
    times = [start + timedelta(milliseconds=index) for index in range(101)]
    written = await write_notifications(app, await user_id_of(client, user), times)

    page = await feed(client, user, limit=1000)
    assert [item["id"] for item in page["items"]] == newest_first(written)[:100]
    assert page["next_cursor"] is not None
    rest = await feed(client, user, limit=1000, cursor=page["next_cursor"])
    assert [item["id"] for item in rest["items"]] == newest_first(written)[100:]
    assert rest["next_cursor"] is None

    few = await feed(client, user, limit=3)
    assert [item["id"] for item in few["items"]] == newest_first(written)[:3]
    response = await client.get("/notifications", params={"limit": 0}, headers=user.headers)
    assert_problem(response, 422, "validation_error")


def encoded(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).rstrip(b"=").decode()


@pytest.mark.parametrize(
    "cursor",
    [
        "not-a-cursor",
        encoded("hello"),
        encoded(f"2024-01-01T00:00:00|{uuid.UUID(int=0)}"),  # no time zone
        encoded("2024-01-01T00:00:00+00:00|not-a-uuid"),
    ],
)
async def test_bad_cursor_is_422_invalid_cursor(client: Any, user: Account, cursor: str) -> None:
    response = await client.get("/notifications", params={"cursor": cursor}, headers=user.headers)
    assert_problem(response, 422, "invalid_cursor")


async def test_empty_feed(client: Any, user: Account) -> None:
    assert await feed(client, user) == {"items": [], "next_cursor": None, "unread_count": 0}


async def test_read_one_returns_it_read_and_lowers_the_unread_count(
    client: Any, app: Any, user: Account
) -> None:
    start = utcnow() - timedelta(minutes=1)
    written = await write_notifications(
        app, await user_id_of(client, user), [start, start + timedelta(seconds=1)]
    )
    target = str(written[0][1])

    response = await client.put(f"/notifications/{target}/read", headers=user.headers)

    assert response.status_code == 200, response.text
    body = response.json()
    assert body.keys() == ITEM_FIELDS
    assert body["id"] == target
    assert body["is_read"] is True
    assert body["title"] == "Notification 0"
    page = await feed(client, user)
    assert page["unread_count"] == 1
    assert {item["id"]: item["is_read"] for item in page["items"]} == {
        target: True,
        str(written[1][1]): False,
    }
    # Reading it again changes nothing.
    again = await client.put(f"/notifications/{target}/read", headers=user.headers)
    assert again.status_code == 200
    assert (await feed(client, user))["unread_count"] == 1


async def test_read_all_counts_what_it_marked_and_is_idempotent(
    client: Any, app: Any, user: Account
) -> None:
    start = utcnow() - timedelta(minutes=1)
    written = await write_notifications(
        app, await user_id_of(client, user), [start + timedelta(seconds=i) for i in range(3)]
    )
    await client.put(f"/notifications/{written[0][1]}/read", headers=user.headers)

    first = await client.put("/notifications/read-all", headers=user.headers)
    assert first.status_code == 200, first.text
    assert first.json() == {"updated": 2}
    page = await feed(client, user)
    assert page["unread_count"] == 0
    assert all(item["is_read"] for item in page["items"])

    second = await client.put("/notifications/read-all", headers=user.headers)
    assert second.status_code == 200
    assert second.json() == {"updated": 0}


async def test_feed_and_read_need_a_token(client: Any) -> None:
    for method, path in (
        ("GET", "/notifications"),
        ("PUT", "/notifications/read-all"),
        ("PUT", f"/notifications/{uuid.uuid4()}/read"),
    ):
        assert_problem(await client.request(method, path), 401, "not_authenticated")


async def test_another_users_notification_is_invisible_and_unreadable(
    client: Any, app: Any, user: Account, other_user: Account
) -> None:
    [(_, mine)] = await write_notifications(app, await user_id_of(client, user), [utcnow()])

    assert await feed(client, other_user) == {"items": [], "next_cursor": None, "unread_count": 0}
    for notification_id in (mine, uuid.uuid4()):
        response = await client.put(
            f"/notifications/{notification_id}/read", headers=other_user.headers
        )
        assert_problem(response, 404, "not_found")
    read_all = await client.put("/notifications/read-all", headers=other_user.headers)
    assert read_all.json() == {"updated": 0}

    page = await feed(client, user)
    assert page["unread_count"] == 1
    assert [(item["id"], item["is_read"]) for item in page["items"]] == [(str(mine), False)]


# -- push, end to end -------------------------------------------------------------------------


async def test_completed_goal_is_pushed_once_to_the_users_device(
    client: Any, app: Any, fcm: FakeFcm, user: Account
) -> None:
    user_id = await user_id_of(client, user)
    await add_device(client, user)

    goal_id = await complete_goal(client, user, "Run a marathon")

    [record] = await fcm.wait_for(1)
    [item] = (await feed(client, user))["items"]
    assert item["type"] == "goal_completed"
    assert item["title"] == "Goal completed!"
    assert item["body"] == "You completed every stage of 'Run a marathon'. Well done!"
    assert item["data"] == {"goal_id": goal_id}
    message = record["message"]
    assert message["token"] == TOKEN
    assert message["notification"] == {"title": item["title"], "body": item["body"]}
    assert message["data"] == {
        "type": "goal_completed",
        "notification_id": item["id"],
        "goal_id": goal_id,
    }
    await wait_for_push_tasks_done(app, user_id)
    assert len(fcm.messages_to(TOKEN)) == 1
    assert await deliveries(app) == [(TOKEN, "sent")]


async def test_each_of_two_devices_gets_one_push(
    client: Any, app: Any, fcm: FakeFcm, user: Account
) -> None:
    user_id = await user_id_of(client, user)
    await add_device(client, user, TOKEN)
    await add_device(client, user, OTHER_TOKEN)

    await complete_goal(client, user)

    await fcm.wait_for(2)
    await wait_for_push_tasks_done(app, user_id)
    assert [r["status"] for r in fcm.messages_to(TOKEN)] == [200]
    assert [r["status"] for r in fcm.messages_to(OTHER_TOKEN)] == [200]
    assert len(fcm.messages) == 2
    assert await deliveries(app) == sorted([(TOKEN, "sent"), (OTHER_TOKEN, "sent")])


async def test_push_disabled_keeps_the_feed_row_and_pushes_nothing(
    client: Any, app: Any, fcm: FakeFcm, user: Account
) -> None:
    user_id = await user_id_of(client, user)
    await add_device(client, user)
    response = await client.put(
        "/settings/notifications", json={"push_enabled": False}, headers=user.headers
    )
    assert response.status_code == 200, response.text
    assert response.json()["push_enabled"] is False

    await complete_goal(client, user)

    await wait_for_push_tasks_done(app, user_id)
    assert [item["type"] for item in (await feed(client, user))["items"]] == ["goal_completed"]
    assert fcm.messages == []
    assert await deliveries(app) == []


async def test_soft_deleted_user_is_not_pushed(
    client: Any, app: Any, fcm: FakeFcm, user: Account
) -> None:
    user_id = await user_id_of(client, user)
    await add_device(client, user)
    response = await client.request(
        "DELETE", "/account", json={"password": user.password}, headers=user.headers
    )
    assert response.status_code == 202, response.text

    await write_notifications(app, user_id, [utcnow()], push=True)

    await wait_for_push_tasks_done(app, user_id)
    assert fcm.messages == []
    assert await device_tokens(app) == {TOKEN}  # kept: the account may still be restored


async def test_texts_follow_the_users_locale(
    client: Any, app: Any, fcm: FakeFcm, register: Any
) -> None:
    account = await register(locale="ru")
    await add_device(client, account)

    await complete_goal(client, account, "Пробежать марафон")

    [record] = await fcm.wait_for(1)
    [item] = (await feed(client, account))["items"]
    assert item["title"] == "Цель достигнута!"
    assert item["body"] == "Все этапы цели «Пробежать марафон» выполнены. Отличная работа!"
    assert record["message"]["notification"] == {"title": item["title"], "body": item["body"]}


# -- FCM errors -------------------------------------------------------------------------------


@pytest.mark.parametrize("error_code", ["UNREGISTERED", "SENDER_ID_MISMATCH"])
async def test_dead_or_foreign_token_is_forgotten_without_retry(
    client: Any, app: Any, fcm: FakeFcm, user: Account, error_code: str
) -> None:
    user_id = await user_id_of(client, user)
    await add_device(client, user)
    fcm.fail_next(error_code, token=TOKEN)

    await complete_goal(client, user)

    await wait_for_push_tasks_done(app, user_id)
    assert [r["error_code"] for r in fcm.messages_to(TOKEN)] == [error_code]
    assert await device_tokens(app) == set()
    assert await deliveries(app) == []  # went with the device


@pytest.mark.parametrize(
    ("error_code", "outcome"),
    [
        ("INVALID_ARGUMENT", "invalid_argument"),
        ("THIRD_PARTY_AUTH_ERROR", "third_party_auth_error"),
    ],
)
async def test_permanent_error_keeps_the_device_and_is_not_retried(
    client: Any, app: Any, fcm: FakeFcm, user: Account, error_code: str, outcome: str
) -> None:
    user_id = await user_id_of(client, user)
    await add_device(client, user)
    fcm.fail_next(error_code, token=TOKEN)

    await complete_goal(client, user)

    await wait_for_push_tasks_done(app, user_id)
    assert [r["error_code"] for r in fcm.messages_to(TOKEN)] == [error_code]
    assert await device_tokens(app) == {TOKEN}
    assert await deliveries(app) == [(TOKEN, outcome)]


async def test_unavailable_releases_the_claim_and_the_retry_delivers(
    client: Any, app: Any, fcm: FakeFcm, user: Account
) -> None:
    """The first retry comes 5-10 s later (10 s, jittered): on the test clock, not in real time
    (the real worker retries the real task), and held until the postponement is seen."""
    clock = TestClock(hold_countdowns=True).install()
    user_id = await user_id_of(client, user)
    await add_device(client, user)
    fcm.fail_next("UNAVAILABLE", token=TOKEN)
    before = utcnow()

    await complete_goal(client, user)

    await wait_until_postponed(app, user_id, before + OUTBOX_LEASE + timedelta(seconds=5))
    assert await deliveries(app) == []  # unclaimed: the retry sends to the device again
    assert [r["status"] for r in fcm.messages_to(TOKEN)] == [503]

    clock.release()  # the countdown passes: the worker retries
    await fcm.wait_for(1, timeout=20)
    await wait_for_push_tasks_done(app, user_id)
    assert [r["status"] for r in fcm.messages_to(TOKEN)] == [503, 200]
    assert await deliveries(app) == [(TOKEN, "sent")]
    [waited] = clock.advanced  # the one retry waited its backoff
    assert 5 <= waited <= 10


async def test_quota_exceeded_postpones_the_push_by_at_least_a_minute(
    client: Any, app: Any, fcm: FakeFcm, user: Account
) -> None:
    user_id = await user_id_of(client, user)
    await add_device(client, user)
    fcm.fail_next("QUOTA_EXCEEDED", token=TOKEN)
    before = utcnow()

    await complete_goal(client, user)

    await wait_until_postponed(app, user_id, before + OUTBOX_LEASE + timedelta(seconds=60))
    assert [r["status"] for r in fcm.messages_to(TOKEN)] == [429]
    assert fcm.delivered == []
    assert await deliveries(app) == []
    assert await device_tokens(app) == {TOKEN}


async def test_redelivered_push_task_does_not_push_twice(
    client: Any, app: Any, fcm: FakeFcm, user: Account
) -> None:
    user_id = await user_id_of(client, user)
    await add_device(client, user)
    await complete_goal(client, user)
    await fcm.wait_for(1)
    await wait_for_push_tasks_done(app, user_id)
    [item] = (await feed(client, user))["items"]

    # The same task again, as a broker re-delivery or an outbox sweep would send it.
    async with app.state.sessionmaker() as session, session.begin():
        defer_durably(session, PUSH, item["id"], now=utcnow(), user_id=user_id)
    assert await push_tasks_pending(app, user_id) == 1
    await asyncio.to_thread(send_deferred, session)

    await wait_for_push_tasks_done(app, user_id)
    assert len(fcm.messages_to(TOKEN)) == 1
    assert await deliveries(app) == [(TOKEN, "sent")]


async def test_direct_notify_pushes_data_as_strings(
    client: Any, app: Any, fcm: FakeFcm, user: Account
) -> None:
    """A notification written with `notify` (not through an event) is pushed after the commit."""
    user_id = await user_id_of(client, user)
    await add_device(client, user)
    goal_id = uuid.uuid4()
    async with app.state.sessionmaker() as session, session.begin():
        row = await notify(
            session,
            user_id=user_id,
            data=GoalCompletedData(goal_id=goal_id),
            title="Done",
            body="All of it",
            now=utcnow(),
        )
    await asyncio.to_thread(send_deferred, session)

    [record] = await fcm.wait_for(1)
    assert record["message"]["data"] == {
        "type": "goal_completed",
        "notification_id": str(row.id),
        "goal_id": str(goal_id),
    }
    assert record["message"]["notification"] == {"title": "Done", "body": "All of it"}


def test_every_kinds_data_is_an_object_of_scalars() -> None:
    """The feed's statement writes `data` member by member (jsontext.jsonb_members), each as jsonb
    writes it: a member holding an object or an array would keep jsonb's spaces."""
    scalars = (str, int, bool, uuid.UUID, datetime, type(None))
    kinds = list(NotificationData.__subclasses__())
    for kind in kinds:
        kinds.extend(kind.__subclasses__())
        for name, field in kind.model_fields.items():
            annotation = field.annotation
            # Only a type itself or a union of them: list[str] has scalar arguments too.
            members = (
                get_args(annotation)
                if get_origin(annotation) in (Union, types.UnionType)
                else (annotation,)
            )
            assert all(member in scalars for member in members), (kind.__name__, name)
