"""What other domains' events mean for devices (installed by `goaltrack.subscriptions`)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from goaltrack.auth.events import AccountReclaimed, LoggedOut
from goaltrack.devices import service


async def on_logged_out(session: AsyncSession, event: LoggedOut) -> None:
    """The phone that logged out gets no more pushes for this account."""
    if event.device_token is not None:
        await service.forget_device(session, event.user_id, event.device_token)


async def on_account_reclaimed(session: AsyncSession, event: AccountReclaimed) -> None:
    """The phones of whoever held the account before its owner proved the address."""
    await service.forget_all_devices(session, event.user_id)
