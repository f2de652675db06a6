"""Goals and their stages. Every change to the stages updates progress in the same transaction,
with the goal row locked (the OwnedGoal dependency, or inside the statement for a stage toggle), so
concurrent changes cannot lose a count.

The two hottest writes are one statement each on their usual path (bench/): creating a goal
(`CREATE_GOAL`, the caller's check folded in) and completing or reopening a stage (`SET_STAGE`);
what only some of them need (a first reminder, achievements, the reminders' reschedule when a goal
completes or reopens) follows as events (`goals.events`), handled in the same transaction."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ARRAY,
    Boolean,
    Date,
    DateTime,
    Integer,
    Uuid,
    and_,
    bindparam,
    case,
    cast,
    delete,
    exists,
    func,
    insert,
    literal,
    literal_column,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession

from goaltrack import events
from goaltrack.auth.caller import (
    caller_is_current,
    caller_params,
    raise_missing,
    require_current,
)
from goaltrack.auth.models import User
from goaltrack.auth.security import AccessClaims
from goaltrack.config import Settings
from goaltrack.errors import NotFound
from goaltrack.files import service as files
from goaltrack.goals.errors import GoalQuota, InvalidStageOrder, StageLimit
from goaltrack.goals.events import GoalCompleted, GoalCreated, GoalStatusChanged, StageCompleted
from goaltrack.goals.models import Goal, GoalStage, UserUsage
from goaltrack.goals.schemas import GoalCreate, GoalUpdate, StageCreate, StageOrder, StageUpdate
from goaltrack.profile.models import UserSettings
from goaltrack.reads import PreparedStatement


async def get_goal(
    session: AsyncSession, *, user_id: uuid.UUID, goal_id: uuid.UUID, lock: bool
) -> Goal | None:
    """The user's goal, or None (missing or someone else's). `lock` serialises every change to one
    goal (stages, progress, limits): routes take it through `OwnedGoal`, tasks call it directly."""
    statement = select(Goal).where(Goal.id == goal_id, Goal.user_id == user_id)
    return await session.scalar(statement.with_for_update() if lock else statement)


_CALLERS_GOAL = (
    select(Goal)
    .join(User, User.id == Goal.user_id)
    .where(Goal.id == bindparam("goal_id"), caller_is_current())
)
_CALLERS_GOAL_LOCKED = _CALLERS_GOAL.with_for_update(of=Goal)


async def get_callers_goal(
    session: AsyncSession, *, caller: AccessClaims, goal_id: uuid.UUID, lock: bool
) -> Goal | None:
    """`get_goal` for a request: the goal, owned by the token's caller who is still current
    (auth.caller.caller_is_current), in one statement — the owner check and the token check
    together. None when either fails."""
    return await session.scalar(
        _CALLERS_GOAL_LOCKED if lock else _CALLERS_GOAL,
        {**caller_params(caller), "goal_id": goal_id},
    )


# A new goal, owned by the token's caller if that caller is still current (no row: 401), in
# one statement; the other columns take their server defaults.
def _local_date_now() -> Any:
    """`now` as a date in the caller's zone (a habit begins on the user's local date)."""
    zone = select(UserSettings.timezone).where(UserSettings.user_id == User.id).scalar_subquery()
    now = bindparam("now", type_=Goal.created_at.type)
    return cast(func.timezone(func.coalesce(zone, "UTC"), now), Date)


CREATE_GOAL = PreparedStatement(
    insert(Goal)
    .from_select(
        [
            "id",
            "user_id",
            "title",
            "description",
            "deadline",
            "created_at",
            "updated_at",
            "kind",
            "schedule",
            "habit_start",
        ],
        select(
            bindparam("goal_id", type_=Goal.id.type),
            User.id,
            bindparam("title", type_=Goal.title.type),
            bindparam("description", type_=Goal.description.type),
            bindparam("deadline", type_=Goal.deadline.type),
            bindparam("now", type_=Goal.created_at.type),
            bindparam("now", type_=Goal.updated_at.type),
            bindparam("kind", type_=Goal.kind.type),
            bindparam("schedule", type_=Goal.schedule.type),
            case((bindparam("is_habit", type_=Boolean()), _local_date_now()), else_=None),
        ).where(
            caller_is_current(),
            # The quota, from the counter the database keeps (no count of the user's goals).
            select(UserUsage.goals).where(UserUsage.user_id == User.id).scalar_subquery()
            < bindparam("max_goals", type_=Integer()),
        ),
        include_defaults=False,
    )
    .returning(Goal.id)
)


async def create_goal(
    session: AsyncSession,
    settings: Settings,
    *,
    caller: AccessClaims,
    body: GoalCreate,
    now: datetime,
) -> uuid.UUID:
    """The caller's new goal (with its first stages and reminder, when the body has them); its
    id."""
    stages = body.stages or []
    if len(stages) > settings.max_stages_per_goal:
        raise StageLimit
    goal_id = uuid.uuid4()
    created = await CREATE_GOAL.execute(
        session,
        {
            **caller_params(caller),
            "goal_id": goal_id,
            "title": body.title,
            "description": body.description,
            "deadline": body.deadline,
            "now": now,
            "kind": body.kind,
            # JSON text: the driver's statement takes no Python dict for jsonb.
            "schedule": body.schedule.model_dump_json() if body.schedule else None,
            "is_habit": body.kind == "habit",
            "max_goals": settings.max_goals_per_user,
        },
    )
    if not created:
        await require_current(session, caller)  # 401 when the caller is gone
        raise GoalQuota
    if stages:
        await session.execute(
            insert(GoalStage).values(
                [
                    {
                        "id": uuid.uuid4(),
                        "goal_id": goal_id,
                        "title": stage.title,
                        "description": stage.description,
                        "position": position,
                        "created_at": now,
                    }
                    for position, stage in enumerate(stages)
                ]
            )
        )
        # None done yet: the progress stays 0, only the count moves.
        await session.execute(
            update(Goal).where(Goal.id == goal_id).values(stage_count=len(stages))
        )
    await events.emit(
        session,
        GoalCreated(user_id=caller.user_id, goal_id=goal_id, now=now, reminder=body.reminder),
    )
    return goal_id


async def update_goal(
    session: AsyncSession, *, goal: Goal, body: GoalUpdate, now: datetime
) -> None:
    changes = body.model_dump(exclude_unset=True)
    for field, value in changes.items():
        setattr(goal, field, value)
    goal.updated_at = now
    await session.flush()
    if "deadline" in changes:
        await _status_changed(session, goal, now)


async def set_archived(session: AsyncSession, *, goal: Goal, archived: bool, now: datetime) -> None:
    if goal.is_archived != archived:
        goal.is_archived = archived
        goal.updated_at = now
        await session.flush()
        await _status_changed(session, goal, now)


async def _status_changed(session: AsyncSession, goal: Goal, now: datetime) -> None:
    await events.emit(session, GoalStatusChanged(user_id=goal.user_id, goal_id=goal.id, now=now))


async def delete_goal(session: AsyncSession, *, goal: Goal) -> None:
    """Stages, attachments and reminders go by cascade; the attachments' trigger queues their files."""
    await session.delete(goal)
    await session.flush()
    files.sweep_after_commit(session)


async def _stage(session: AsyncSession, goal: Goal, stage_id: uuid.UUID) -> GoalStage:
    stage = await session.scalar(
        select(GoalStage).where(GoalStage.id == stage_id, GoalStage.goal_id == goal.id)
    )
    if stage is None:
        raise NotFound
    return stage


async def add_stage(
    session: AsyncSession, settings: Settings, *, goal: Goal, body: StageCreate, now: datetime
) -> GoalStage:
    if goal.stage_count >= settings.max_stages_per_goal:
        raise StageLimit
    stage = GoalStage(
        id=uuid.uuid4(),
        goal_id=goal.id,
        title=body.title,
        description=body.description,
        position=goal.stage_count,  # appended last; positions are kept gapless
        created_at=now,
    )
    session.add(stage)
    await session.flush()
    await recompute_progress(session, goal=goal, now=now)
    return stage


async def update_stage(
    session: AsyncSession, *, goal: Goal, stage_id: uuid.UUID, body: StageUpdate, now: datetime
) -> GoalStage:
    stage = await _stage(session, goal, stage_id)
    for field, value in body.model_dump(exclude_unset=True).items():
        setattr(stage, field, value)
    goal.updated_at = now
    await session.flush()
    return stage


async def delete_stage(
    session: AsyncSession, *, goal: Goal, stage_id: uuid.UUID, now: datetime
) -> None:
    stage = await _stage(session, goal, stage_id)
    await session.execute(delete(GoalStage).where(GoalStage.id == stage.id))
    await session.execute(
        update(GoalStage)
        .where(GoalStage.goal_id == goal.id, GoalStage.position > stage.position)
        .values(position=GoalStage.position - 1)
    )
    await recompute_progress(session, goal=goal, now=now)


async def replace_open_stages(
    session: AsyncSession,
    settings: Settings,
    *,
    goal: Goal,
    drafts: Sequence[tuple[str, str | None]],
    now: datetime,
) -> int:
    """A new plan: completed stages stay first (in their order), every open stage is replaced by
    `drafts` (title, description) as far as the stage limit allows, positions gapless. Returns
    how many stages were added. The caller holds the goal's lock."""
    completed = list(
        await session.scalars(
            select(GoalStage)
            .where(GoalStage.goal_id == goal.id, GoalStage.is_completed.is_(True))
            .order_by(GoalStage.position)
        )
    )
    await session.execute(
        delete(GoalStage).where(GoalStage.goal_id == goal.id, GoalStage.is_completed.is_(False))
    )
    for position, stage in enumerate(completed):
        stage.position = position
    room = max(0, settings.max_stages_per_goal - len(completed))
    added = drafts[:room]
    for offset, (title, description) in enumerate(added):
        session.add(
            GoalStage(
                id=uuid.uuid4(),
                goal_id=goal.id,
                title=title,
                description=description,
                position=len(completed) + offset,
                created_at=now,
            )
        )
    await session.flush()
    await recompute_progress(session, goal=goal, now=now)
    return len(added)


async def reorder_stages(
    session: AsyncSession, *, goal: Goal, body: StageOrder, now: datetime
) -> None:
    current = set(await session.scalars(select(GoalStage.id).where(GoalStage.goal_id == goal.id)))
    if len(body.stage_ids) != len(set(body.stage_ids)) or set(body.stage_ids) != current:
        raise InvalidStageOrder
    # One statement; the (goal_id, position) unique constraint is checked at commit (deferred).
    order = bindparam("stage_ids", body.stage_ids, type_=ARRAY(Uuid()))
    await session.execute(
        update(GoalStage)
        .where(GoalStage.goal_id == goal.id)
        .values(position=func.array_position(order, GoalStage.id) - 1)
    )
    goal.updated_at = now
    await session.flush()


def progress(done: Any, total: Any, now: Any) -> dict[str, Any]:
    """The one definition of a goal's progress, as SQL, from its completed and total stage counts:
    ⌊100 × done / total⌋ (0 without stages); all of them done completes the goal (keeping its
    first completion's instant), anything less reopens it. Column values for an UPDATE of goals."""
    reached = and_(total > 0, done == total)
    return {
        "progress": case((total > 0, literal_column("100", Integer) * done // total), else_=0),
        "completed_at": case((reached, func.coalesce(Goal.completed_at, now))),
        "first_completed_at": case(
            (reached, func.coalesce(Goal.first_completed_at, now)),
            else_=Goal.first_completed_at,
        ),
        "updated_at": now,
    }


def _set_stage_statement() -> Any:
    """A stage completed or reopened, with its goal's counters and progress, in one round trip.

    The goal is locked first, as every stage change does (the stage's own lock comes second):
    writers of one goal stay serialised and take their locks in one order. The counters move by
    one from the locked row instead of a recount: after a wait for the lock this statement's
    snapshot predates the other writer's stages, but a locked row (and an updated one) is read at
    its latest version. Progress follows `progress`, as it does after every other stage change
    (`recompute_progress`). The row tells the route what happened (found, changed, completed)."""
    completed = bindparam("completed", type_=Boolean)
    now = bindparam("now", type_=DateTime(timezone=True))
    owned = (
        select(Goal.id, Goal.completed_at, Goal.first_completed_at)
        .join(User, User.id == Goal.user_id)
        .where(Goal.id == bindparam("goal_id"), caller_is_current())
        .with_for_update(of=Goal)
        .cte("owned")
    )
    stage = (
        select(GoalStage.id, GoalStage.first_completed_at)
        .where(
            GoalStage.id == bindparam("stage_id"),
            GoalStage.goal_id == select(owned.c.id).scalar_subquery(),
        )
        .with_for_update()
        .cte("stage")
    )
    toggled = (
        update(GoalStage)
        .where(GoalStage.id == stage.c.id, GoalStage.is_completed.is_distinct_from(completed))
        .values(
            is_completed=completed,
            completed_at=case((completed, now)),
            first_completed_at=case(
                (completed, func.coalesce(GoalStage.first_completed_at, now)),
                else_=GoalStage.first_completed_at,
            ),
        )
        .returning(GoalStage.id)
        .cte("toggled")
    )
    one = literal_column("1", Integer)
    done = Goal.completed_stage_count + case((completed, one), else_=-one)
    progressed = (
        update(Goal)
        .where(Goal.id == owned.c.id, exists(toggled.select()))
        .values(completed_stage_count=done, **progress(done, Goal.stage_count, now))
        .returning(Goal.completed_at)
        .cte("progressed")
    )
    return select(
        exists(owned.select()).label("goal_found"),
        exists(stage.select()).label("stage_found"),
        exists(toggled.select()).label("changed"),
        select(stage.c.first_completed_at.is_(None)).scalar_subquery().label("stage_first_time"),
        select(owned.c.completed_at.is_not(None)).scalar_subquery().label("was_completed"),
        select(progressed.c.completed_at.is_not(None)).scalar_subquery().label("is_completed"),
        select(owned.c.first_completed_at.is_(None)).scalar_subquery().label("goal_first_time"),
    )


SET_STAGE = PreparedStatement(_set_stage_statement())


async def set_stage_completed(
    session: AsyncSession,
    *,
    caller: AccessClaims,
    goal_id: uuid.UUID,
    stage_id: uuid.UUID,
    completed: bool,
    now: datetime,
) -> None:
    """Completes or reopens the caller's stage: one statement on the usual path; the events and
    the reminders' reschedule follow only when the data asks for them. 404 for a goal or stage
    that is not the caller's, 401 for a stale token (told apart only when nothing was found)."""
    params = {
        **caller_params(caller),
        "goal_id": goal_id,
        "stage_id": stage_id,
        "completed": completed,
        "now": now,
    }
    (outcome,) = await SET_STAGE.execute(session, params)
    if not outcome.goal_found:
        await raise_missing(session, caller)
    if not outcome.stage_found:
        raise NotFound
    if not outcome.changed:
        return
    user_id = caller.user_id
    if completed:
        await events.emit(
            session,
            StageCompleted(
                user_id=user_id,
                goal_id=goal_id,
                stage_id=stage_id,
                now=now,
                first_time=outcome.stage_first_time,
            ),
        )
    if outcome.was_completed != outcome.is_completed:
        await events.emit(session, GoalStatusChanged(user_id=user_id, goal_id=goal_id, now=now))
        if outcome.is_completed:
            await events.emit(
                session,
                GoalCompleted(
                    user_id=user_id, goal_id=goal_id, now=now, first_time=outcome.goal_first_time
                ),
            )


async def recompute_progress(session: AsyncSession, *, goal: Goal, now: datetime) -> None:
    """The goal's counters and `progress` after a change to its stages, recounted (the caller holds
    the goal's lock); completing or reopening it has its consequences (events)."""
    # Pending changes (stages, the goal's own) go first: the count sees them, the UPDATE reloads.
    await session.flush()
    was_completed = goal.completed_at is not None
    first_time = goal.first_completed_at is None
    total, done = (
        await session.execute(
            select(func.count(), func.count().filter(GoalStage.is_completed)).where(
                GoalStage.goal_id == goal.id
            )
        )
    ).one()
    await session.execute(
        update(Goal)
        .where(Goal.id == goal.id)
        .values(
            stage_count=total,
            completed_stage_count=done,
            **progress(literal(done, Integer), literal(total, Integer), now),
        )
        .returning(Goal),
        execution_options={"populate_existing": True},
    )
    is_completed = goal.completed_at is not None
    if was_completed != is_completed:
        await _status_changed(session, goal, now)
    if is_completed and not was_completed:
        await events.emit(
            session,
            GoalCompleted(user_id=goal.user_id, goal_id=goal.id, now=now, first_time=first_time),
        )
