from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import delete, literal_column
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from goaltrack.devices.models import Device
from goaltrack.devices.schemas import DeviceOut
from goaltrack.errors import NotFound


async def register_device(
    session: AsyncSession, user_id: uuid.UUID, token: str, platform: str, now: datetime
) -> tuple[DeviceOut, bool]:
    """Upsert by token in one race-free statement: a known token moves to the caller.
    Returns the device and whether it is new."""
    statement: Any = (
        insert(Device)
        .values(
            id=uuid.uuid4(),
            user_id=user_id,
            token=token,
            platform=platform,
            created_at=now,
            last_seen_at=now,
        )
        .on_conflict_do_update(
            index_elements=[Device.token],
            set_={"user_id": user_id, "platform": platform, "last_seen_at": now},
        )
        # xmax is 0 only on a row version this statement inserted (PostgreSQL's upsert idiom).
        .returning(
            Device.id,
            Device.token,
            Device.platform,
            Device.created_at,
            Device.last_seen_at,
            literal_column("xmax = 0").label("inserted"),
        )
    )
    row = (await session.execute(statement)).one()
    return DeviceOut.model_validate(row._mapping), bool(row.inserted)


async def remove_device(session: AsyncSession, user_id: uuid.UUID, token: str) -> None:
    deleted = await session.scalar(
        delete(Device).where(Device.token == token, Device.user_id == user_id).returning(Device.id)
    )
    if deleted is None:
        raise NotFound


async def forget_device(session: AsyncSession, user_id: uuid.UUID, token: str) -> None:
    """At logout: the token stops receiving this user's pushes (no error if unknown)."""
    await session.execute(delete(Device).where(Device.token == token, Device.user_id == user_id))


async def forget_all_devices(session: AsyncSession, user_id: uuid.UUID) -> None:
    """No phone receives this user's pushes until it registers again."""
    await session.execute(delete(Device).where(Device.user_id == user_id))
