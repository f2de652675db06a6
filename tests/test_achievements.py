"""Achievements: each condition awards once (also under concurrency) and is never revoked, the
share of users per achievement is cached in Redis (one grouped query per miss, even under a
stampede; none on a hit), the route still answers without Redis, texts follow the locale, the
daily task refreshes the cache, and the migration's backfill earns what the history earns."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
from sqlalchemy import event, select, text, update

import goaltrack
import helpers
from goaltrack import events
from goaltrack.achievements.models import Achievement, UserAchievement, UserStats
from goaltrack.celery_app import beat_schedule
from goaltrack.clock import get_now
from goaltrack.config import get_settings
from goaltrack.dev.localstack import free_port
from goaltrack.goals.events import AiPlanApplied
from goaltrack.main import create_app
from goaltrack.notifications.models import Notification
from helpers import Account, create_goal, make_image, wait_until

STATS_KEY = "achievements:stats"
LOCK_KEY = "achievements:stats:lock"
DAY = 24 * 3600
PNG = make_image("PNG")


def _load_migration(name: str = "0006_achievements") -> ModuleType:
    path = Path(goaltrack.__file__).parent / "migrations" / "versions" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"migration_{name}", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


MIGRATION = _load_migration()
# The catalogue as the migrations seed it, in order (0014 adds the streaks).
SEEDED_CATALOGUE = [*MIGRATION.CATALOGUE, *_load_migration("0014_streak_achievements").CATALOGUE]
CODES = [row[0] for row in SEEDED_CATALOGUE]
TITLES = {row[0]: row[4] for row in SEEDED_CATALOGUE}  # code -> (en, ru)
DESCRIPTIONS = {row[0]: row[5] for row in SEEDED_CATALOGUE}
COUNTERS = list(MIGRATION.BACKFILL_METRICS)


# -- helpers ----------------------------------------------------------------------------------


async def user_id_of(client: Any, account: Account) -> uuid.UUID:
    response = await client.get("/account", headers=account.headers)
    assert response.status_code == 200, response.text
    return uuid.UUID(response.json()["id"])


async def earned(app: Any, user_id: uuid.UUID) -> set[str]:
    async with app.state.sessionmaker() as session:
        return set(
            await session.scalars(
                select(Achievement.code)
                .join(UserAchievement, UserAchievement.achievement_id == Achievement.id)
                .where(UserAchievement.user_id == user_id)
            )
        )


async def notified(app: Any, user_id: uuid.UUID) -> Counter[str]:
    """Achievement notifications written for the user, per achievement code."""
    async with app.state.sessionmaker() as session:
        rows = await session.scalars(
            select(Notification).where(
                Notification.user_id == user_id, Notification.type == "achievement"
            )
        )
        return Counter(row.data["achievement_code"] for row in rows)


async def stats_row(app: Any, user_id: uuid.UUID) -> dict[str, int]:
    async with app.state.sessionmaker() as session:
        stats = await session.get(UserStats, user_id)
        assert stats is not None
        return {name: getattr(stats, name) for name in COUNTERS}


async def set_counter(app: Any, user_id: uuid.UUID, **values: int) -> None:
    async with app.state.sessionmaker() as session, session.begin():
        await session.execute(
            update(UserStats).where(UserStats.user_id == user_id).values(**values)
        )


async def add_stages(client: Any, account: Account, goal_id: str, count: int) -> list[str]:
    """The new stages' ids."""
    return [stage["id"] for stage in await helpers.add_stages(client, account, goal_id, count)]


async def mark(
    client: Any, account: Account, goal_id: str, stage_id: str, *, done: bool = True
) -> dict[str, Any]:
    action = "complete" if done else "uncomplete"
    response = await client.put(
        f"/goals/{goal_id}/stages/{stage_id}/{action}", headers=account.headers
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def completed_goal(client: Any, account: Account, **body: Any) -> str:
    """A goal with one stage, completed."""
    goal_id: str = (await create_goal(client, account, **body))["id"]
    [stage_id] = await add_stages(client, account, goal_id, 1)
    assert (await mark(client, account, goal_id, stage_id))["completed_at"] is not None
    return goal_id


async def reopen_and_complete_again(client: Any, account: Account, goal_id: str) -> None:
    """A completed goal gets a new stage (reopened), which is then completed."""
    [extra] = await add_stages(client, account, goal_id, 1)
    assert (await mark(client, account, goal_id, extra))["completed_at"] is not None


async def listing(client: Any, account: Account) -> dict[str, Any]:
    response = await client.get("/achievements", headers=account.headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert [item["code"] for item in body["items"]] == CODES  # the catalogue, in order
    return body


def by_code(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {item["code"]: item for item in body["items"]}


def at(moment: datetime) -> Callable[[], Awaitable[datetime]]:
    async def now() -> datetime:
        return moment

    return now


@contextlib.contextmanager
def statements(app: Any) -> Iterator[list[str]]:
    """Every SQL statement the API's engine sends while inside the block."""
    sent: list[str] = []

    def record(*args: Any) -> None:
        sent.append(args[2])  # (connection, cursor, statement, parameters, context, many)

    engine = app.state.engine.sync_engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        yield sent
    finally:
        event.remove(engine, "before_cursor_execute", record)


def grouped_stats_queries(sent: list[str]) -> list[str]:
    return [s for s in sent if "user_achievements" in s and "GROUP BY" in s.upper()]


# -- awarding -----------------------------------------------------------------------------------


async def test_first_goal_and_three_in_progress_are_awarded_once(
    client: Any, app: Any, user: Account
) -> None:
    user_id = await user_id_of(client, user)
    before = await listing(client, user)
    assert not any(item["earned"] or item["earned_at"] for item in before["items"])

    first = await create_goal(client, user)
    assert await earned(app, user_id) == {"first_goal"}
    # An archived goal is not in progress: two active goals are not three.
    archived = await client.put(f"/goals/{first['id']}/archive", headers=user.headers)
    assert archived.status_code == 200, archived.text
    await create_goal(client, user)
    await create_goal(client, user)
    assert await earned(app, user_id) == {"first_goal"}

    await create_goal(client, user)
    assert await earned(app, user_id) == {"first_goal", "three_in_progress"}
    await create_goal(client, user)
    assert await notified(app, user_id) == Counter({"first_goal": 1, "three_in_progress": 1})
    assert (await stats_row(app, user_id))["goals_created"] == 5

    items = by_code(await listing(client, user))
    assert {code for code, item in items.items() if item["earned"]} == {
        "first_goal",
        "three_in_progress",
    }
    assert items["first_goal"]["earned_at"] is not None
    assert items["stages_10"]["earned_at"] is None


async def test_stage_achievements_are_awarded_once_and_never_revoked(
    client: Any, app: Any, user: Account
) -> None:
    user_id = await user_id_of(client, user)
    goal_id = (await create_goal(client, user))["id"]
    stages = await add_stages(client, user, goal_id, 11)

    await mark(client, user, goal_id, stages[0])
    assert await earned(app, user_id) == {"first_goal", "first_stage"}
    for stage_id in stages[1:9]:
        await mark(client, user, goal_id, stage_id)
    assert "stages_10" not in await earned(app, user_id)  # nine
    await mark(client, user, goal_id, stages[9])
    assert "stages_10" in await earned(app, user_id)  # ten

    # Reopening revokes nothing; completing a stage again does not count again (no farming).
    await mark(client, user, goal_id, stages[9], done=False)
    await mark(client, user, goal_id, stages[9])
    await mark(client, user, goal_id, stages[0], done=False)
    assert await earned(app, user_id) == {"first_goal", "first_stage", "stages_10"}
    await mark(client, user, goal_id, stages[0])
    assert (await mark(client, user, goal_id, stages[10]))["completed_at"] is not None
    assert (await stats_row(app, user_id))["stages_completed"] == 11

    held = {"first_goal", "first_stage", "stages_10", "first_goal_completed"}
    assert await earned(app, user_id) == held
    await mark(client, user, goal_id, stages[10], done=False)  # the goal is reopened
    deleted = await client.delete(f"/goals/{goal_id}", headers=user.headers)
    assert deleted.status_code == 204, deleted.text
    assert await earned(app, user_id) == held
    assert await notified(app, user_id) == Counter(dict.fromkeys(held, 1))
    items = by_code(await listing(client, user))
    assert {code for code, item in items.items() if item["earned"]} == held


async def test_stages_50_and_100_at_their_thresholds(client: Any, app: Any, user: Account) -> None:
    """Fifty and a hundred stages through the API would be slow: the counter is set directly (as
    the history would have left it), and the next StageCompleted crosses the threshold."""
    user_id = await user_id_of(client, user)
    goal_id = (await create_goal(client, user))["id"]
    first, second, third, fourth, fifth = await add_stages(client, user, goal_id, 5)

    await set_counter(app, user_id, stages_completed=48)
    await mark(client, user, goal_id, first)  # 49
    assert "stages_50" not in await earned(app, user_id)
    await mark(client, user, goal_id, second)  # 50
    assert {"stages_50", "first_stage"} <= await earned(app, user_id)
    assert "stages_100" not in await earned(app, user_id)

    await set_counter(app, user_id, stages_completed=98)
    await mark(client, user, goal_id, third)  # 99
    assert "stages_100" not in await earned(app, user_id)
    await mark(client, user, goal_id, second, done=False)
    await mark(client, user, goal_id, second)  # a stage completed again: still 99
    assert "stages_100" not in await earned(app, user_id)
    await mark(client, user, goal_id, fourth)  # 100
    await mark(client, user, goal_id, fifth)  # 101
    counts = await notified(app, user_id)
    assert (counts["stages_50"], counts["stages_100"], counts["stages_10"]) == (1, 1, 1)


async def test_completed_goals_earn_first_and_five(client: Any, app: Any, user: Account) -> None:
    user_id = await user_id_of(client, user)
    first = await completed_goal(client, user)
    assert "first_goal_completed" in await earned(app, user_id)
    for _ in range(3):
        await completed_goal(client, user)
    assert "goals_completed_5" not in await earned(app, user_id)  # four
    # Reopening one and completing it again is still four goals.
    await reopen_and_complete_again(client, user, first)
    assert "goals_completed_5" not in await earned(app, user_id)
    await completed_goal(client, user)
    await completed_goal(client, user)
    held = await earned(app, user_id)
    assert {"first_goal_completed", "goals_completed_5"} <= held
    assert "before_deadline" not in held  # none of them had a deadline
    counts = await notified(app, user_id)
    assert (counts["first_goal_completed"], counts["goals_completed_5"]) == (1, 1)
    assert (await stats_row(app, user_id))["goals_completed"] == 6


async def test_before_deadline_in_the_users_own_zone(
    client: Any, app: Any, register: Callable[..., Any]
) -> None:
    today = datetime.now(UTC).date()
    early, late = await register(), await register()
    tokyo_in_time = await register(timezone="Asia/Tokyo")
    tokyo_late = await register(timezone="Asia/Tokyo")

    await completed_goal(client, early, deadline=(today + timedelta(days=7)).isoformat())
    assert "before_deadline" in await earned(app, await user_id_of(client, early))
    await completed_goal(client, late, deadline=(today - timedelta(days=1)).isoformat())
    late_id = await user_id_of(client, late)
    assert await earned(app, late_id) == {"first_goal", "first_stage", "first_goal_completed"}

    # The deadline day counts, and it is the user's day: 14:30 UTC is 23:30 in Tokyo (in time),
    # 15:30 UTC is already the next day there (late), though still the 10th in UTC.
    for account, moment, expected in (
        (tokyo_in_time, datetime(2024, 3, 10, 14, 30, tzinfo=UTC), True),
        (tokyo_late, datetime(2024, 3, 10, 15, 30, tzinfo=UTC), False),
    ):
        goal_id = (await create_goal(client, account, deadline="2024-03-10"))["id"]
        [stage_id] = await add_stages(client, account, goal_id, 1)
        app.dependency_overrides[get_now] = at(moment)
        try:
            await mark(client, account, goal_id, stage_id)
        finally:
            app.dependency_overrides.pop(get_now)
        held = await earned(app, await user_id_of(client, account))
        assert "first_goal_completed" in held
        assert ("before_deadline" in held) is expected


async def test_first_result_on_the_first_attachment(client: Any, app: Any, user: Account) -> None:
    user_id = await user_id_of(client, user)
    goal_id = (await create_goal(client, user))["id"]
    for name in ("one.png", "two.png"):
        response = await client.post(
            f"/goals/{goal_id}/attachments",
            files={"file": (name, PNG, "image/png")},
            headers=user.headers,
        )
        assert response.status_code == 201, response.text
    assert await earned(app, user_id) == {"first_goal", "first_result"}
    assert await notified(app, user_id) == Counter({"first_goal": 1, "first_result": 1})
    assert (await stats_row(app, user_id))["attachments_added"] == 2


async def test_first_ai_plan_on_the_event(client: Any, app: Any, user: Account) -> None:
    user_id = await user_id_of(client, user)
    goal_id = uuid.UUID((await create_goal(client, user))["id"])
    for _ in range(2):
        async with app.state.sessionmaker() as session, session.begin():
            await events.emit(
                session, AiPlanApplied(user_id=user_id, goal_id=goal_id, now=datetime.now(UTC))
            )
    assert await earned(app, user_id) == {"first_goal", "first_ai_plan"}
    assert await notified(app, user_id) == Counter({"first_goal": 1, "first_ai_plan": 1})


async def test_concurrent_events_award_once(client: Any, app: Any, user: Account) -> None:
    user_id = await user_id_of(client, user)
    await asyncio.gather(*(create_goal(client, user) for _ in range(5)))
    assert await earned(app, user_id) == {"first_goal", "three_in_progress"}
    async with app.state.sessionmaker() as session:
        rows = await session.scalar(
            text("SELECT count(*) FROM user_achievements WHERE user_id = :u"), {"u": user_id}
        )
    assert rows == 2
    assert await notified(app, user_id) == Counter({"first_goal": 1, "three_in_progress": 1})
    assert (await stats_row(app, user_id))["goals_created"] == 5  # no increment lost

    # Two goals completed at once: one first_goal_completed.
    goals = [(await create_goal(client, user))["id"] for _ in range(2)]
    stages = [(await add_stages(client, user, goal_id, 1))[0] for goal_id in goals]
    await asyncio.gather(*(mark(client, user, g, s) for g, s in zip(goals, stages, strict=True)))
    counts = await notified(app, user_id)
    assert (counts["first_goal_completed"], counts["first_stage"]) == (1, 1)
    assert (await stats_row(app, user_id))["goals_completed"] == 2


# -- the share of users -------------------------------------------------------------------------


async def test_percent_of_users_counts_only_accounts_not_deleted(
    client: Any, app: Any, register: Callable[..., Any]
) -> None:
    holder, a, _, leaving = [await register() for _ in range(4)]
    await create_goal(client, holder)

    body = await listing(client, a)
    assert body["stats_available"] is True
    items = by_code(body)
    assert items["first_goal"]["percent_of_users"] == 25.0
    assert items["first_goal"]["earned"] is False  # the caller's, not the holder's
    assert all(items[code]["percent_of_users"] == 0.0 for code in CODES if code != "first_goal")
    assert by_code(await listing(client, holder))["first_goal"]["earned"] is True

    gone = await client.request(
        "DELETE", "/account", json={"password": leaving.password}, headers=leaving.headers
    )
    assert gone.status_code == 202, gone.text
    # Cached for a day: unchanged until the key goes.
    assert by_code(await listing(client, a))["first_goal"]["percent_of_users"] == 25.0
    await app.state.redis.delete(STATS_KEY)
    assert by_code(await listing(client, a))["first_goal"]["percent_of_users"] == 33.3  # 1 / 3

    # A deleted holder is not counted either.
    gone = await client.request(
        "DELETE", "/account", json={"password": holder.password}, headers=holder.headers
    )
    assert gone.status_code == 202, gone.text
    await app.state.redis.delete(STATS_KEY)
    assert by_code(await listing(client, a))["first_goal"]["percent_of_users"] == 0.0


async def test_a_cache_hit_runs_no_statistics_query_and_the_key_lives_a_day(
    client: Any, app: Any, user: Account
) -> None:
    await create_goal(client, user)
    assert await app.state.redis.exists(STATS_KEY) == 0

    with statements(app) as miss:
        assert by_code(await listing(client, user))["first_goal"]["percent_of_users"] == 100.0
    assert len(grouped_stats_queries(miss)) == 1
    ttl = await app.state.redis.ttl(STATS_KEY)
    assert DAY - 60 < ttl <= DAY
    assert await app.state.redis.exists(LOCK_KEY) == 0  # released

    with statements(app) as hit:
        assert by_code(await listing(client, user))["first_goal"]["percent_of_users"] == 100.0
    # The listener works (it saw the miss's grouped query above); a hit sends nothing through the
    # engine at all: the catalogue is one statement on the hot reads' pool, the share from Redis.
    assert hit == []


async def test_a_cold_cache_under_load_runs_the_grouped_query_once(
    client: Any, app: Any, user: Account, other_user: Account
) -> None:
    await create_goal(client, user)
    headers = [(user, other_user)[i % 2].headers for i in range(20)]
    # Warm the pool first (a burst on a cold pool mostly waits for new connections, one at a time,
    # and would hardly be concurrent), then empty the cache.
    await asyncio.gather(*(client.get("/achievements", headers=h) for h in headers))
    await app.state.redis.delete(STATS_KEY)
    with statements(app) as sent:
        responses = await asyncio.gather(*(client.get("/achievements", headers=h) for h in headers))
    assert [r.status_code for r in responses] == [200] * 20
    for response in responses:
        body = response.json()
        assert body["stats_available"] is True
        assert by_code(body)["first_goal"]["percent_of_users"] == 50.0
    assert len(grouped_stats_queries(sent)) == 1


async def test_without_redis_the_catalogue_is_served_without_percentages(
    client: Any, user: Account
) -> None:
    await create_goal(client, user)  # registered and created through the main app
    closed = free_port()
    settings = get_settings().model_copy(update={"redis_url": f"redis://127.0.0.1:{closed}/0"})
    down = create_app(settings)
    async with down.router.lifespan_context(down):
        transport = httpx.ASGITransport(app=down)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as other:
            response = await other.get("/achievements", headers=user.headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["stats_available"] is False
    assert [item["code"] for item in body["items"]] == CODES
    assert all(item["percent_of_users"] is None for item in body["items"])
    assert by_code(body)["first_goal"]["earned"] is True  # still live from PostgreSQL


# -- texts -------------------------------------------------------------------------------------


async def test_texts_follow_the_locale(
    client: Any, app: Any, user: Account, register: Callable[..., Any]
) -> None:
    russian = await register(locale="ru")
    for account, language in ((russian, 1), (user, 0)):
        await create_goal(client, account)
        items = by_code(await listing(client, account))
        assert {code: item["title"] for code, item in items.items()} == {
            code: TITLES[code][language] for code in CODES
        }
        assert items["first_goal"]["description"] == DESCRIPTIONS["first_goal"][language]
        async with app.state.sessionmaker() as session:
            [note] = await session.scalars(
                select(Notification).where(
                    Notification.user_id == await user_id_of(client, account),
                    Notification.type == "achievement",
                )
            )
        assert note.data == {"achievement_code": "first_goal"}
        assert (note.title, note.body) == (
            TITLES["first_goal"][language],
            DESCRIPTIONS["first_goal"][language],
        )
    assert TITLES["first_goal"][1] == "Первая цель"


# -- the daily task, the backfill ---------------------------------------------------------------


async def test_the_daily_task_refreshes_the_cache(
    client: Any, app: Any, celery_app: Any, user: Account, other_user: Account
) -> None:
    schedule = beat_schedule(get_settings())["achievements.refresh_stats"]
    assert schedule["schedule"] == DAY
    await create_goal(client, user)
    assert await app.state.redis.exists(STATS_KEY) == 0

    celery_app.send_task("achievements.refresh_stats")

    async def cached() -> bool:
        return bool(await app.state.redis.exists(STATS_KEY))

    await wait_until(cached)
    assert json.loads(await app.state.redis.get(STATS_KEY)) == {
        "users": 2,
        "holders": {"first_goal": 1},
    }
    assert 0 < await app.state.redis.ttl(STATS_KEY) <= DAY
    with statements(app) as sent:
        items = by_code(await listing(client, other_user))
    assert items["first_goal"]["percent_of_users"] == 50.0
    assert grouped_stats_queries(sent) == []


async def test_the_backfill_earns_what_the_history_earns(
    client: Any, app: Any, register: Callable[..., Any]
) -> None:
    """The migration's backfill, run on a history made through the API, gives the counters and
    achievements the events gave live (the upgrade itself runs once per session, on empty tables)."""
    finisher, juggler, tokyo_in_time, tokyo_late, idle = [
        await register(**extra)
        for extra in ({}, {}, {"timezone": "Asia/Tokyo"}, {"timezone": "Asia/Tokyo"}, {})
    ]
    # Three completed stages (the goal completed) and an attachment.
    goal_id = (await create_goal(client, finisher))["id"]
    for stage_id in await add_stages(client, finisher, goal_id, 3):
        await mark(client, finisher, goal_id, stage_id)
    uploaded = await client.post(
        f"/goals/{goal_id}/attachments",
        files={"file": ("proof.png", PNG, "image/png")},
        headers=finisher.headers,
    )
    assert uploaded.status_code == 201, uploaded.text
    for _ in range(3):
        await create_goal(client, juggler)
    for account, moment in (
        (tokyo_in_time, datetime(2024, 3, 10, 14, 30, tzinfo=UTC)),
        (tokyo_late, datetime(2024, 3, 10, 15, 30, tzinfo=UTC)),
    ):
        goal_id = (await create_goal(client, account, deadline="2024-03-10"))["id"]
        [stage_id] = await add_stages(client, account, goal_id, 1)
        app.dependency_overrides[get_now] = at(moment)
        try:
            await mark(client, account, goal_id, stage_id)
        finally:
            app.dependency_overrides.pop(get_now)

    accounts = (finisher, juggler, tokyo_in_time, tokyo_late)
    ids = [await user_id_of(client, account) for account in accounts]
    live = [(await earned(app, i), await stats_row(app, i)) for i in ids]
    assert live[0][0] == {"first_goal", "first_stage", "first_goal_completed", "first_result"}
    assert live[1][0] == {"first_goal", "three_in_progress"}
    assert "before_deadline" in live[2][0]
    assert "before_deadline" not in live[3][0]

    async with app.state.sessionmaker() as session, session.begin():
        await session.execute(text("DELETE FROM user_achievements"))
        await session.execute(text("DELETE FROM user_stats"))
        for statement in MIGRATION.backfill_statements():
            await session.execute(text(statement))

    backfilled = [(await earned(app, i), await stats_row(app, i)) for i in ids]
    assert backfilled == live
    assert "stages_10" not in backfilled[0][0]
    idle_id = await user_id_of(client, idle)
    assert await earned(app, idle_id) == set()
    assert set((await stats_row(app, idle_id)).values()) == {0}
