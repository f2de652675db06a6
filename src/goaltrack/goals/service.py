"""Goals and their stages. Every change to the stages recomputes progress in the same transaction,
with the goal row locked (the OwnedGoal dependency), so concurrent changes cannot lose a count."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import ARRAY, Uuid, bindparam, delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from goaltrack import events
from goaltrack.auth.models import User
from goaltrack.auth.queries import caller_is_current, caller_params
from goaltrack.auth.security import AccessClaims
from goaltrack.config import Settings
from goaltrack.errors import NotFound
from goaltrack.files import service as files
from goaltrack.goals import reminders
from goaltrack.goals.errors import InvalidStageOrder, StageLimit
from goaltrack.goals.events import GoalCompleted, GoalCreated, StageCompleted
from goaltrack.goals.models import Goal, GoalStage
from goaltrack.goals.schemas import GoalCreate, GoalUpdate, StageCreate, StageOrder, StageUpdate


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
    (auth.queries.caller_is_current), in one statement — the owner check and the token check
    together. None when either fails."""
    return await session.scalar(
        _CALLERS_GOAL_LOCKED if lock else _CALLERS_GOAL,
        {**caller_params(caller), "goal_id": goal_id},
    )


async def create_goal(
    session: AsyncSession,
    settings: Settings,
    *,
    user_id: uuid.UUID,
    body: GoalCreate,
    now: datetime,
) -> Goal:
    goal = Goal(
        id=uuid.uuid4(),
        user_id=user_id,
        title=body.title,
        description=body.description,
        deadline=body.deadline,
        created_at=now,
        updated_at=now,
    )
    session.add(goal)
    await session.flush()
    if body.reminder is not None:
        await reminders.add_reminder(session, settings, goal=goal, body=body.reminder, now=now)
    await events.emit(session, GoalCreated(user_id=user_id, goal_id=goal.id, now=now))
    return goal


async def update_goal(
    session: AsyncSession, *, goal: Goal, body: GoalUpdate, now: datetime
) -> None:
    changes = body.model_dump(exclude_unset=True)
    for field, value in changes.items():
        setattr(goal, field, value)
    goal.updated_at = now
    await session.flush()
    if "deadline" in changes:
        await reminders.reschedule_goal(session, goal=goal, now=now)


async def set_archived(session: AsyncSession, *, goal: Goal, archived: bool, now: datetime) -> None:
    if goal.is_archived != archived:
        goal.is_archived = archived
        goal.updated_at = now
        await session.flush()
        await reminders.reschedule_goal(session, goal=goal, now=now)


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


async def set_stage_completed(
    session: AsyncSession, *, goal: Goal, stage_id: uuid.UUID, completed: bool, now: datetime
) -> None:
    stage = await _stage(session, goal, stage_id)
    if stage.is_completed != completed:
        stage.is_completed = completed
        stage.completed_at = now if completed else None
        first_time = completed and stage.first_completed_at is None
        if first_time:
            stage.first_completed_at = now
        await session.flush()
        if completed:
            await events.emit(
                session,
                StageCompleted(
                    user_id=goal.user_id,
                    goal_id=goal.id,
                    stage_id=stage.id,
                    now=now,
                    first_time=first_time,
                ),
            )
        await recompute_progress(session, goal=goal, now=now)


async def recompute_progress(session: AsyncSession, *, goal: Goal, now: datetime) -> None:
    """progress = ⌊100 × completed / all⌋; reaching 100 completes the goal, dropping below reopens it."""
    total, completed = (
        await session.execute(
            select(func.count(), func.count().filter(GoalStage.is_completed)).where(
                GoalStage.goal_id == goal.id
            )
        )
    ).one()
    was_completed = goal.completed_at is not None
    goal.stage_count = total
    goal.completed_stage_count = completed
    goal.progress = 100 * completed // total if total else 0
    goal.completed_at = (goal.completed_at or now) if goal.progress == 100 else None
    goal.updated_at = now
    await session.flush()
    if was_completed != (goal.completed_at is not None):
        await reminders.reschedule_goal(session, goal=goal, now=now)
    if goal.completed_at is not None and not was_completed:
        first_time = goal.first_completed_at is None
        if first_time:
            goal.first_completed_at = now
            await session.flush()
        await events.emit(
            session,
            GoalCompleted(user_id=goal.user_id, goal_id=goal.id, now=now, first_time=first_time),
        )
