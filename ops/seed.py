"""Accounts for the simulated users, made through the API before a run (not measured): each
registers (bcrypt at the production cost), and gets a few goals with stages, one with a
reminder. Every account registers from its own client address (X-Forwarded-For), as phones do."""

from __future__ import annotations

import json
import random
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx

PASSWORD = "correct horse battery staple"
ZONES = ("UTC", "Europe/Berlin", "America/New_York", "Asia/Tokyo", "Europe/Moscow")


def client_ip(n: int) -> str:
    return f"10.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}"


def reminder_soon(zone: str, rng: random.Random) -> dict[str, Any]:
    """A daily (or every 2-3 days) reminder 1-4 minutes from now in the user's zone: it comes due
    during the run, so the scheduler has work and the consistency check has occurrences."""
    local = datetime.now(ZoneInfo(zone)) + timedelta(minutes=rng.randint(1, 4))
    return {"remind_time": local.strftime("%H:%M"), "frequency_days": rng.randint(1, 3)}


def seed_account(base_url: str, n: int, run_id: str) -> dict[str, Any]:
    rng = random.Random(n)  # noqa: S311
    zone = rng.choice(ZONES)
    email = f"ops-{run_id}-{n}@example.com"
    headers = {"X-Forwarded-For": client_ip(n)}
    with httpx.Client(base_url=base_url, headers=headers, timeout=60) as http:
        response = http.post(
            "/auth/register", json={"email": email, "password": PASSWORD, "timezone": zone}
        )
        response.raise_for_status()
        tokens = response.json()
        http.headers["Authorization"] = f"Bearer {tokens['access_token']}"
        # A phone with push: every notification from here on must reach it once (consistency).
        device = {"token": f"ops-{run_id}-{n}", "platform": "android"}
        http.post("/devices", json=device).raise_for_status()
        for g in range(3):
            body: dict[str, Any] = {"title": f"Goal {g + 1} of {n}"}
            if g == 0:
                body["reminder"] = reminder_soon(zone, rng)
            goal = http.post("/goals", json=body)
            goal.raise_for_status()
            goal_id = goal.json()["id"]
            for s in range(rng.randint(3, 5)):
                http.post(
                    f"/goals/{goal_id}/stages", json={"title": f"Stage {s + 1}"}
                ).raise_for_status()
    return {
        "email": email,
        "timezone": zone,
        "ip": client_ip(n),
        "refresh_token": tokens["refresh_token"],
    }


def seed(base_url: str, count: int, path: Path, *, threads: int = 8) -> list[dict[str, Any]]:
    run_id = uuid.uuid4().hex[:8]
    with ThreadPoolExecutor(threads) as pool:
        accounts = list(pool.map(lambda n: seed_account(base_url, n, run_id), range(count)))
    path.write_text(json.dumps(accounts))
    return accounts
