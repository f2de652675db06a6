from __future__ import annotations

from fastapi import APIRouter

from goaltrack.account.schemas import AccountOut
from goaltrack.auth.dependencies import CurrentUser

router = APIRouter(tags=["account"])


@router.get("/account")
async def get_account(user: CurrentUser) -> AccountOut:
    return AccountOut.model_validate(user)
