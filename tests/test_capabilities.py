"""GET /capabilities: what this deployment offers, before the user meets a 503 or a limit."""

from __future__ import annotations

from typing import Any


async def test_capabilities_state_the_configuration(client: Any, app: Any) -> None:
    response = await client.get("/capabilities")  # no token: the app asks before sign-in
    assert response.status_code == 200
    body = response.json()
    settings = app.state.settings
    assert body["ai"] is bool(settings.ai_api_key.get_secret_value())
    assert body["push"] is (settings.fcm_credentials_file is not None)
    assert "en" in body["locales"]
    assert body["limits"] == {
        "max_stages_per_goal": settings.max_stages_per_goal,
        "max_reminders_per_goal": settings.max_reminders_per_goal,
        "max_upload_bytes": settings.max_upload_bytes,
        "habit_backfill_days": settings.habit_backfill_days,
        "max_goals_per_user": settings.max_goals_per_user,
        "max_stored_bytes_per_user": settings.max_stored_bytes_per_user,
    }
    assert response.headers["Cache-Control"] == "public, max-age=300"


async def test_without_an_ai_key_the_app_is_told(client: Any, app: Any) -> None:
    configured = app.state.settings
    app.state.settings = configured.model_copy(
        update={"ai_api_key": type(configured.ai_api_key)("")}
    )
    try:
        assert (await client.get("/capabilities")).json()["ai"] is False
    finally:
        app.state.settings = configured
