"""Goal reminders and digests that fire at the user's local wall-clock time, exactly once.

PostgreSQL holds what is due (`goal_reminders.next_fire_at`, `user_settings.next_digest_at`,
both indexed); beat only ticks. A tick claims due rows in batches with FOR UPDATE SKIP LOCKED (two
beats, four workers: each row goes to one of them), records each occurrence in the ledger
(`reminder_deliveries`, unique per reminder and local date, or per user, local date and time), and
writes the notification for each occurrence the ledger accepted.

A claimed row holds one pending occurrence; the dispatcher serves it and then every later
occurrence that is already due, each computed from the one served before it (never from *now*,
which would drop whatever else fell due before the tick: a second digest time a minute later, the
rest of an outage), and leaves the row at its first occurrence after now. An occurrence found later
than REMINDER_MAX_LATENESS_MINUTES is recorded as served (no notification) and counted, never
sent. A habit's reminder on a day that is not due, or already done (`only_if_not_done`), is
recorded the same way, decided at that moment under the goal's lock (`reminders.wanted`).
At most CATCH_UP occurrences per row and claim: a row further behind stays due and the next
claim (the tick loops while rows are left due) goes on from where this one stopped.
A tick's cost grows with the number of due occurrences, never with the number of users or
reminders.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import partial
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import ColumnElement, Select, and_, delete, func, select, text
from sqlalchemy.dialects.postgresql import distinct_on, insert
from sqlalchemy.ext.asyncio import AsyncSession

from goaltrack.goals.models import Goal, GoalReminder, GoalStage
from goaltrack.goals.queries import HABIT, habit_today
from goaltrack.i18n import t
from goaltrack.notifications.kinds import DigestData, ReminderData
from goaltrack.notifications.service import notify
from goaltrack.profile.models import UserSettings
from goaltrack.scheduling import digests, reminders
from goaltrack.scheduling.models import ScheduledDelivery
from goaltrack.scheduling.occurrences import Occurrence

logger = logging.getLogger(__name__)

BATCH = 500
RETENTION_BATCH = 5000
# Occurrences served (sent or recorded late) per row and claim. A row further behind (an outage of
# more than CATCH_UP periods) stays due, and the next claim, in this tick, goes on from the last one
# served. Bounded catch-up rather than a jump to the first occurrence inside the lateness window:
# every occurrence still needs its own ledger row (that row is what "served once" means, for the
# late ones too), so a jump would write as many rows in one transaction, unbounded after a long
# outage (BATCH rows x days x digest times, all their locks held to the commit); and one code path
# serves every occurrence, on time, late or after a zone change, with no second arithmetic for
# where the window starts across DST. A claim writes at most BATCH x CATCH_UP ledger rows.
CATCH_UP = 8


@dataclass(frozen=True, slots=True)
class Served:
    claimed: int = 0  # rows (schedules) claimed
    sent: int = 0  # occurrences sent
    late: int = 0  # occurrences skipped: found later than the allowed lateness
    duplicate: int = 0  # occurrences already served (ledger): another dispatcher, an earlier zone
    empty: int = 0  # digests with nothing to say (no active goal)
    unwanted: int = 0  # habit reminders not sent: the day is not due, or done already
    left_due: int = 0  # claimed rows still due: CATCH_UP reached, the next claim goes on


def reminder_claim(
    now: datetime, batch: int = BATCH
) -> Select[GoalReminder, Goal, str, str, dict[str, Any] | None]:
    """The due reminders of one batch, each with its goal, its user's zone and locale and, for a
    habit, its stored summary; claimed in `next_fire_at` order with SKIP LOCKED (a second
    dispatcher takes the next rows). The goal is locked too (FOR NO KEY UPDATE: inserts that
    reference it go on): whether a habit's day is done is read under the lock a check-in needs,
    so a check-in lands either before the decision or after the send, never in between."""
    return (
        select(GoalReminder, Goal, UserSettings.timezone, UserSettings.locale, HABIT)
        .join(Goal, Goal.id == GoalReminder.goal_id)
        .join(UserSettings, UserSettings.user_id == Goal.user_id)
        .where(GoalReminder.next_fire_at <= now)
        .order_by(GoalReminder.next_fire_at)
        .limit(batch)
        .with_for_update(of=[GoalReminder, Goal], key_share=True, skip_locked=True)
    )


def digest_claim(now: datetime, batch: int = BATCH) -> Select[UserSettings]:
    """The due digests of one batch (their settings rows), claimed like the reminders."""
    return (
        select(UserSettings)
        .where(UserSettings.next_digest_at <= now)
        .order_by(UserSettings.next_digest_at)
        .limit(batch)
        .with_for_update(skip_locked=True)
    )


def _catch_up(
    first: Occurrence,
    now: datetime,
    limit: int,
    following: Callable[[Occurrence], Occurrence | None],
) -> tuple[list[Occurrence], Occurrence | None]:
    """The due occurrences of one schedule from `first` (its pending one, due), each computed
    from the one before it, at most `limit` of them; and the schedule's next pending occurrence
    (still due when the limit cut the run short)."""
    served = [first]
    upcoming = following(first)
    while upcoming is not None and upcoming.at <= now and len(served) < limit:
        served.append(upcoming)
        upcoming = following(upcoming)
    return served, upcoming


async def dispatch_reminders(
    session: AsyncSession,
    *,
    now: datetime,
    max_lateness: timedelta,
    batch: int = BATCH,
    catch_up: int = CATCH_UP,
) -> Served:
    due = (await session.execute(reminder_claim(now, batch))).all()
    if not due:
        return Served()
    entries: list[dict[str, Any]] = []
    owners: list[tuple[GoalReminder, Goal, str]] = []  # each entry's reminder, goal and locale
    late = unwanted = left_due = 0
    for reminder, goal, zone_name, locale, habit in due:
        zone = ZoneInfo(zone_name)
        first = reminders.pending(reminder, zone)
        assert first is not None  # claimed: next_fire_at <= now
        served, upcoming = _catch_up(
            first, now, catch_up, partial(reminders.after_served, goal, reminder, zone)
        )
        for occurrence in served:
            entry = _entry("reminder", goal.user_id, reminder.id, occurrence, now, max_lateness)
            if entry["notification_id"] is None:
                late += 1
            elif not reminders.wanted(reminder, habit, occurrence.day):
                # Served (the ledger row says so), not sent: a habit's day not due, or done.
                entry["notification_id"] = None
                unwanted += 1
            entries.append(entry)
            owners.append((reminder, goal, locale))
        reminder.last_sent_date = served[-1].day
        reminders.set_next(reminder, upcoming)
        left_due += upcoming is not None and upcoming.at <= now
    accepted = await _record(session, entries, ["reminder_id", "local_date"], "reminder")
    next_stages = await _first_open_stages(session, [goal.id for _, goal, *_ in due])
    sent = 0
    for (reminder, goal, locale), entry in zip(owners, entries, strict=True):
        if entry["id"] in accepted and entry["notification_id"] is not None:
            stage_id, stage_title = next_stages.get(goal.id, (None, None))
            await notify(
                session,
                user_id=goal.user_id,
                data=ReminderData(goal_id=goal.id, stage_id=stage_id, reminder_id=reminder.id),
                title=t(locale, "reminder.title", goal=goal.title),
                body=(
                    t(locale, "reminder.body", stage=stage_title)
                    if stage_title
                    else t(locale, "reminder.body_no_stage")
                ),
                now=now,
                notification_id=entry["notification_id"],
            )
            sent += 1
    await session.flush()
    if late:
        logger.warning("scheduler: %d reminder occurrences found too late were skipped", late)
    return Served(
        claimed=len(due),
        sent=sent,
        late=late,
        duplicate=len(entries) - len(accepted),
        unwanted=unwanted,
        left_due=left_due,
    )


async def dispatch_digests(
    session: AsyncSession,
    *,
    now: datetime,
    max_lateness: timedelta,
    batch: int = BATCH,
    catch_up: int = CATCH_UP,
) -> Served:
    due = list(await session.scalars(digest_claim(now, batch)))
    if not due:
        return Served()
    today = {row.user_id: now.astimezone(ZoneInfo(row.timezone)).date() for row in due}
    summaries = await _active_goal_summaries(session, today)
    entries: list[dict[str, Any]] = []
    owners: list[UserSettings] = []  # each entry's settings row
    late = empty = left_due = 0
    for row in due:
        first = digests.pending(row)
        assert first is not None  # claimed: next_digest_at <= now
        served, upcoming = _catch_up(first, now, catch_up, partial(digests.after_served, row))
        summary = summaries.get(row.user_id)
        for occurrence in served:
            entry = _entry("digest", row.user_id, None, occurrence, now, max_lateness)
            late += entry["notification_id"] is None
            if summary is None:  # nothing to say: recorded as served, not sent
                entry["notification_id"] = None
                empty += 1
            entries.append(entry)
            owners.append(row)
        digests.set_next(row, upcoming)
        left_due += upcoming is not None and upcoming.at <= now
    accepted = await _record(session, entries, ["user_id", "local_date", "local_time"], "digest")
    sent = 0
    for row, entry in zip(owners, entries, strict=True):
        summary = summaries.get(row.user_id)
        if entry["id"] in accepted and entry["notification_id"] is not None and summary:
            await notify(
                session,
                user_id=row.user_id,
                data=DigestData(active_goals=summary.count),
                title=t(row.locale, "digest.title"),
                body=summary.text(row.locale),
                now=now,
                notification_id=entry["notification_id"],
            )
            sent += 1
    await session.flush()
    if late:
        logger.warning("scheduler: %d digest occurrences found too late were skipped", late)
    return Served(
        claimed=len(due),
        sent=sent,
        late=late,
        duplicate=len(entries) - len(accepted),
        empty=empty,
        left_due=left_due,
    )


def _entry(
    kind: str,
    user_id: uuid.UUID,
    reminder_id: uuid.UUID | None,
    occurrence: Occurrence,
    now: datetime,
    max_lateness: timedelta,
) -> dict[str, Any]:
    """The ledger row of one occurrence; without a notification id when it is found too late
    (recorded as served, never sent)."""
    return {
        "id": uuid.uuid4(),
        "kind": kind,
        "reminder_id": reminder_id,
        "user_id": user_id,
        "local_date": occurrence.day,
        "local_time": occurrence.time,
        "scheduled_for": occurrence.at,
        "notification_id": None if now - occurrence.at > max_lateness else uuid.uuid4(),
        "sent_at": now,
    }


async def _record(
    session: AsyncSession, entries: list[dict[str, Any]], key: list[str], kind: str
) -> set[uuid.UUID]:
    """Insert the ledger rows; the ids of those that were not already there."""
    accepted = await session.scalars(
        insert(ScheduledDelivery)
        .values(entries)
        .on_conflict_do_nothing(index_elements=key, index_where=text(f"kind = '{kind}'"))
        .returning(ScheduledDelivery.id)
    )
    return set(accepted)


async def _first_open_stages(
    session: AsyncSession, goal_ids: list[uuid.UUID]
) -> dict[uuid.UUID, tuple[uuid.UUID, str]]:
    """Each goal's first stage not yet completed, in one query over the batch."""
    rows = await session.execute(
        select(GoalStage.goal_id, GoalStage.id, GoalStage.title)
        .where(GoalStage.goal_id.in_(goal_ids), GoalStage.is_completed.is_(False))
        .order_by(GoalStage.goal_id, GoalStage.position)
        .ext(distinct_on(GoalStage.goal_id))
    )
    return {goal_id: (stage_id, title) for goal_id, stage_id, title in rows}


@dataclass(frozen=True, slots=True)
class _Summary:
    count: int
    nearest_title: str | None
    nearest_deadline: date | None
    today: date
    habits_to_do: int = 0  # habits due today and not done yet

    def text(self, locale: str) -> str:
        """Whole sentences, each a message of its own (with its plural forms), one after the
        other."""
        sentences = [t(locale, "digest.body", count=self.count)]
        if self.nearest_deadline is not None and self.nearest_title is not None:
            days = (self.nearest_deadline - self.today).days
            if days == 0:
                sentences.append(t(locale, "digest.due_today", goal=self.nearest_title))
            else:
                key = "digest.due" if days > 0 else "digest.overdue"
                sentences.append(t(locale, key, goal=self.nearest_title, count=abs(days)))
        if self.habits_to_do:
            sentences.append(t(locale, "digest.habits", count=self.habits_to_do))
        return " ".join(sentences)


async def _active_goal_summaries(
    session: AsyncSession, today: dict[uuid.UUID, date]
) -> dict[uuid.UUID, _Summary]:
    """Per user of the batch (with their local date): active goals (not archived, not completed)
    and the one due soonest."""
    active = and_(
        Goal.user_id.in_(list(today)), Goal.is_archived.is_(False), Goal.completed_at.is_(None)
    )
    counted = await session.execute(
        select(Goal.user_id, func.count()).where(active).group_by(Goal.user_id)
    )
    counts: dict[uuid.UUID, int] = {row[0]: row[1] for row in counted}
    nearest = {
        user_id: (title, deadline)
        for user_id, title, deadline in await session.execute(
            select(Goal.user_id, Goal.title, Goal.deadline)
            .where(active, Goal.deadline.is_not(None))
            .order_by(Goal.user_id, Goal.deadline, Goal.created_at)
            .ext(distinct_on(Goal.user_id))
        )
    }
    habits_open = await _habits_to_do(session, active, today)
    return {
        user_id: _Summary(
            count=count,
            nearest_title=nearest.get(user_id, (None, None))[0],
            nearest_deadline=nearest.get(user_id, (None, None))[1],
            today=today[user_id],
            habits_to_do=habits_open.get(user_id, 0),
        )
        for user_id, count in counts.items()
    }


async def _habits_to_do(
    session: AsyncSession, active: ColumnElement[bool], today: dict[uuid.UUID, date]
) -> dict[uuid.UUID, int]:
    """Per user of the batch: active habits due on their local date and not done yet, from each
    habit's stored summary (no check-in row is read)."""
    open_today: dict[uuid.UUID, int] = {}
    rows = await session.execute(select(Goal.user_id, HABIT).where(active, Goal.kind == "habit"))
    for user_id, habit in rows:
        figures = habit_today(habit, today[user_id])
        if figures is not None and figures.due_today and not figures.done_today:
            open_today[user_id] = open_today.get(user_id, 0) + 1
    return open_today


async def delete_expired_deliveries(
    session: AsyncSession, *, now: datetime, retention: timedelta
) -> int:
    """One batch of ledger rows older than the retention period (ix_reminder_deliveries_sent_at)."""
    batch = (
        select(ScheduledDelivery.id)
        .where(ScheduledDelivery.sent_at < now - retention)
        .limit(RETENTION_BATCH)
        .scalar_subquery()
    )
    result = await session.execute(delete(ScheduledDelivery).where(ScheduledDelivery.id.in_(batch)))
    return int(result.rowcount)  # type: ignore[attr-defined]
