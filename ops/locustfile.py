"""The mobile-user mix (Locust). Run by `python -m ops load|soak|chaos`, or by hand:

    OPS_ACCOUNTS=accounts.json OPS_TIMELINE=timeline.json \\
        locust -f ops/locustfile.py --headless -u 50 -r 10 -t 60s --host http://127.0.0.1:8000

A user is a phone with the app open: it comes back with its stored refresh token (no password,
as the app does), then lists its goals, opens one, completes stages, reads the feed, uploads a
small photo (a real PNG or JPEG made by Pillow: uploads are decoded server-side), creates goals
(some with a reminder a few minutes ahead), asks for an AI plan now and then, and rarely logs in
with its password or registers a new account (bcrypt at the production cost). Each user has its
own client address (X-Forwarded-For behind one trusted proxy), so per-IP limits apply per phone.

Besides Locust's own CSV/JSON, every request lands in a timeline of 5-second windows (count,
failures, a mergeable latency histogram per request name), written to OPS_TIMELINE at exit.
"""

from __future__ import annotations

import io
import itertools
import json
import os
import random
import sys
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

from locust import FastHttpUser, LoadTestShape, between, events, task
from locust.env import Environment
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ops.hist import Histogram
from ops.seed import PASSWORD, ZONES, client_ip, reminder_soon

WINDOW_SECONDS = 5
ACCESS_REFRESH_AFTER = 1500  # seconds; access tokens live 1800 s
MAX_ATTACHMENTS = 20

_accounts_path = os.environ.get("OPS_ACCOUNTS")
ACCOUNTS: list[dict[str, Any]] = (
    json.loads(Path(_accounts_path).read_text()) if _accounts_path else []
)
_next_account = itertools.count()
_next_ip = itertools.count(1 << 20)  # registrations from addresses no seeded account uses
_rng = random.Random()  # noqa: S311 - load generation, not security


def _image(kind: str, seed: int) -> bytes:
    rng = random.Random(seed)  # noqa: S311
    size = rng.choice((32, 48, 64))
    image = Image.frombytes("RGB", (size, size), rng.randbytes(size * size * 3))
    buffer = io.BytesIO()
    image.save(buffer, kind)
    return buffer.getvalue()


PHOTOS = [("photo.png", "image/png", _image("PNG", i)) for i in range(4)] + [
    ("photo.jpg", "image/jpeg", _image("JPEG", 10 + i)) for i in range(4)
]


def _multipart(file_name: str, content_type: str, data: bytes) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = (
        (
            f"--{boundary}\r\n"
            f'Content-Disposition: form-data; name="file"; filename="{file_name}"\r\n'
            f"Content-Type: {content_type}\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


# -- the timeline -----------------------------------------------------------------------------


class Timeline:
    def __init__(self) -> None:
        self.windows: dict[int, dict[str, dict[str, Any]]] = defaultdict(dict)
        self.users: dict[int, int] = {}
        self.errors: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        # Non-2xx answers the mix treats as the app's correct answer (counted, not failures).
        self.expected: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self.environment: Environment | None = None

    def record(self, name: str, ms: float, failed: bool, status: int | str) -> None:
        window = int(time.time() // WINDOW_SECONDS * WINDOW_SECONDS)
        entry = self.windows[window].get(name)
        if entry is None:
            entry = self.windows[window][name] = {"n": 0, "fail": 0, "hist": Histogram()}
        entry["n"] += 1
        entry["hist"].add(ms)
        if failed:
            entry["fail"] += 1
            self.errors[name][str(status)] += 1
        runner = self.environment.runner if self.environment else None
        if runner is not None:
            self.users[window] = max(self.users.get(window, 0), runner.user_count)

    def to_json(self) -> dict[str, Any]:
        return {
            "window_seconds": WINDOW_SECONDS,
            "windows": [
                {
                    "t": window,
                    "users": self.users.get(window, 0),
                    "requests": {
                        name: {"n": e["n"], "fail": e["fail"], "hist": e["hist"].to_json()}
                        for name, e in names.items()
                    },
                }
                for window, names in sorted(self.windows.items())
            ],
            "errors": {name: dict(codes) for name, codes in self.errors.items()},
            "expected": {name: dict(codes) for name, codes in self.expected.items()},
        }

    def expect(self, response: Any, name: str) -> None:
        self.expected[name][str(response.status_code)] += 1
        response.success()


TIMELINE = Timeline()
# Refresh tokens as rotated during the run, written back at exit for the next run's users.
ROTATED: dict[str, str] = {}


@events.init.add_listener
def _on_init(environment: Environment, **_: Any) -> None:
    TIMELINE.environment = environment


@events.request.add_listener
def _on_request(
    name: str,
    response_time: float,
    exception: BaseException | None,
    response: Any = None,
    **_: Any,
) -> None:
    status = getattr(response, "status_code", 0) or type(exception).__name__
    TIMELINE.record(name, response_time, exception is not None, status)


@events.quitting.add_listener
def _on_quitting(**_: Any) -> None:
    path = os.environ.get("OPS_TIMELINE")
    if path:
        Path(path).write_text(json.dumps(TIMELINE.to_json()))
    if _accounts_path and ROTATED:
        for account in ACCOUNTS:
            if account["email"] in ROTATED:
                account["refresh_token"] = ROTATED[account["email"]]
        Path(_accounts_path).write_text(json.dumps(ACCOUNTS))


# -- the user ---------------------------------------------------------------------------------


class MobileUser(FastHttpUser):
    wait_time = between(1, 2)
    connection_timeout = 10
    network_timeout = 30

    def on_start(self) -> None:
        self.goals: list[str] = []
        self.details: dict[str, dict[str, Any]] = {}
        self.unread: list[str] = []
        self.ai_goals: set[str] = set()
        self.access = ""
        self.refresh_token = ""
        self.issued = 0.0
        n = next(_next_account)
        if n < len(ACCOUNTS):  # one phone per account: a shared refresh token looks stolen
            account = ACCOUNTS[n]
            self.email, self.ip = account["email"], account["ip"]
            self.zone = account["timezone"]
            stored = ROTATED.get(self.email) or account.get("refresh_token")
            if not (stored and self._refresh(stored, resumed=True)):
                self.login()
        else:
            self.register()
        self.list_goals()

    # -- helpers -------------------------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        if time.monotonic() - self.issued > ACCESS_REFRESH_AFTER and self.refresh_token:
            self._refresh(self.refresh_token)
        return {"Authorization": f"Bearer {self.access}", "X-Forwarded-For": self.ip}

    def _tokens(self, body: dict[str, Any]) -> None:
        self.access, self.refresh_token = body["access_token"], body["refresh_token"]
        self.issued = time.monotonic()
        ROTATED[self.email] = self.refresh_token

    def _refresh(self, token: str, *, resumed: bool = False) -> bool:
        with self.client.post(
            "/auth/refresh",
            json={"refresh_token": token},
            headers={"X-Forwarded-For": self.ip},
            name="POST /auth/refresh",
            catch_response=True,
        ) as response:
            if response.status_code == 200:
                self._tokens(response.json())
                return True
            if response.status_code == 401 and resumed:
                # A stored token an earlier run has rotated since: log in instead.
                TIMELINE.expect(response, "POST /auth/refresh")
            return False

    def _goal(self) -> str | None:
        return _rng.choice(self.goals) if self.goals else None

    def _open(self, goal_id: str) -> dict[str, Any] | None:
        with self.client.get(
            f"/goals/{goal_id}",
            headers=self._headers(),
            name="GET /goals/{id}",
            catch_response=True,
        ) as response:
            if response.status_code == 200:
                detail: dict[str, Any] = response.json()
                self.details[goal_id] = detail
                return detail
            if response.status_code == 404 and goal_id not in self.goals:
                TIMELINE.expect(response, "GET /goals/{id}")  # deleted meanwhile by this user
        return None

    # -- authentication ------------------------------------------------------------------------

    @task(1)
    def login(self) -> None:
        response = self.client.post(
            "/auth/login",
            json={"email": self.email, "password": PASSWORD},
            headers={"X-Forwarded-For": self.ip},
            name="POST /auth/login",
        )
        if response.status_code == 200:
            self._tokens(response.json())

    @task(1)
    def register(self) -> None:
        self.email = f"ops-new-{uuid.uuid4().hex[:12]}@example.com"
        self.ip = client_ip(next(_next_ip))
        self.zone = _rng.choice(ZONES)
        response = self.client.post(
            "/auth/register",
            json={"email": self.email, "password": PASSWORD, "timezone": self.zone},
            headers={"X-Forwarded-For": self.ip},
            name="POST /auth/register",
        )
        if response.status_code == 201:
            self._tokens(response.json())
            self.goals, self.details, self.unread = [], {}, []
            self.create_goal()

    @task(6)
    def refresh(self) -> None:
        if self.refresh_token:
            self._refresh(self.refresh_token)

    # -- reads ---------------------------------------------------------------------------------

    @task(90)
    def list_goals(self) -> None:
        response = self.client.get("/goals", headers=self._headers(), name="GET /goals")
        if response.status_code == 200:
            self.goals = [item["id"] for item in response.json()["items"]]

    @task(75)
    def open_goal(self) -> None:
        if goal_id := self._goal():
            self._open(goal_id)

    @task(45)
    def feed(self) -> None:
        response = self.client.get(
            "/notifications", headers=self._headers(), name="GET /notifications"
        )
        if response.status_code == 200:
            page = response.json()
            self.unread = [item["id"] for item in page["items"] if not item["is_read"]]
            if page["next_cursor"] and _rng.random() < 0.2:
                self.client.get(
                    "/notifications",
                    params={"cursor": page["next_cursor"]},
                    headers=self._headers(),
                    name="GET /notifications?cursor",
                )

    @task(9)
    def achievements(self) -> None:
        self.client.get("/achievements", headers=self._headers(), name="GET /achievements")

    @task(6)
    def attachments(self) -> None:
        if goal_id := self._goal():
            with self.client.get(
                f"/goals/{goal_id}/attachments",
                headers=self._headers(),
                name="GET /goals/{id}/attachments",
                catch_response=True,
            ) as response:
                if response.status_code == 404 and goal_id not in self.goals:
                    TIMELINE.expect(response, "GET /goals/{id}/attachments")

    # -- writes --------------------------------------------------------------------------------

    @task(30)
    def complete_stage(self) -> None:
        open_goals = [
            goal_id
            for goal_id, detail in self.details.items()
            if goal_id in self.goals and any(not s["is_completed"] for s in detail["stages"])
        ]
        goal_id = _rng.choice(open_goals) if open_goals else self._goal()
        if goal_id is None:
            return
        detail = self.details.get(goal_id) or self._open(goal_id)
        if detail is None:
            return
        stages = [s for s in detail["stages"] if not s["is_completed"]]
        done = [s for s in detail["stages"] if s["is_completed"]]
        # Now and then a stage is reopened (and with it, a completed goal).
        action, pool = (
            ("uncomplete", done) if done and _rng.random() < 0.05 else ("complete", stages)
        )
        if not pool:
            return
        stage = min(pool, key=lambda s: s["position"])
        with self.client.put(
            f"/goals/{goal_id}/stages/{stage['id']}/{action}",
            headers=self._headers(),
            name=f"PUT /goals/{{id}}/stages/{{id}}/{action}",
            catch_response=True,
        ) as response:
            if response.status_code == 200:
                self.details[goal_id] = response.json()
            elif response.status_code == 404 and goal_id in self.ai_goals:
                # The AI plan (applied in the background) replaced the goal's open stages after
                # this phone last read them: the app's documented answer, not a failure.
                self.details.pop(goal_id, None)
                TIMELINE.expect(response, f"PUT /goals/{{id}}/stages/{{id}}/{action}")

    @task(9)
    def create_goal(self) -> None:
        body: dict[str, Any] = {"title": f"Goal {uuid.uuid4().hex[:6]}"}
        if _rng.random() < 0.5:
            body["reminder"] = reminder_soon(self.zone, _rng)
        response = self.client.post(
            "/goals", json=body, headers=self._headers(), name="POST /goals"
        )
        if response.status_code != 201:
            return
        goal_id = response.json()["id"]
        self.goals.insert(0, goal_id)
        for n in range(_rng.randint(2, 5)):
            self.client.post(
                f"/goals/{goal_id}/stages",
                json={"title": f"Stage {n + 1}"},
                headers=self._headers(),
                name="POST /goals/{id}/stages",
            )
        self.details.pop(goal_id, None)

    @task(9)
    def upload_photo(self) -> None:
        candidates = [
            g
            for g in self.goals
            if len(self.details.get(g, {}).get("attachments", [])) < MAX_ATTACHMENTS - 2
        ]
        if not candidates:
            return
        goal_id = _rng.choice(candidates)
        file_name, content_type, data = _rng.choice(PHOTOS)
        body, multipart_type = _multipart(file_name, content_type, data)
        response = self.client.post(
            f"/goals/{goal_id}/attachments",
            data=body,
            headers={**self._headers(), "Content-Type": multipart_type},
            name="POST /goals/{id}/attachments",
        )
        if response.status_code == 201 and goal_id in self.details:
            self.details[goal_id].setdefault("attachments", []).append(response.json())

    @task(3)
    def delete_attachment(self) -> None:
        with_files = [(g, d) for g, d in self.details.items() if d.get("attachments")]
        if not with_files:
            return
        goal_id, detail = _rng.choice(with_files)
        attachment = detail["attachments"].pop(0)
        with self.client.delete(
            f"/goals/{goal_id}/attachments/{attachment['id']}",
            headers=self._headers(),
            name="DELETE /goals/{id}/attachments/{id}",
            catch_response=True,
        ) as response:
            if response.status_code == 404:  # a stale copy of the goal: already gone
                TIMELINE.expect(response, "DELETE /goals/{id}/attachments/{id}")

    @task(9)
    def read_notifications(self) -> None:
        if self.unread and _rng.random() < 0.7:
            notification_id = self.unread.pop()
            self.client.put(
                f"/notifications/{notification_id}/read",
                headers=self._headers(),
                name="PUT /notifications/{id}/read",
            )
        else:
            self.client.put(
                "/notifications/read-all",
                headers=self._headers(),
                name="PUT /notifications/read-all",
            )
            self.unread = []

    @task(3)
    def retire_goal(self) -> None:
        """Completed goals are deleted (their files follow from the outbox) or archived."""
        completed = [
            g for g, d in self.details.items() if g in self.goals and d.get("completed_at")
        ]
        if len(self.goals) < 6 or not completed:
            return
        goal_id = _rng.choice(completed)
        self.goals.remove(goal_id)
        self.details.pop(goal_id, None)
        if _rng.random() < 0.7:
            self.client.delete(
                f"/goals/{goal_id}", headers=self._headers(), name="DELETE /goals/{id}"
            )
        else:
            self.client.put(
                f"/goals/{goal_id}/archive", headers=self._headers(), name="PUT /goals/{id}/archive"
            )

    @task(2)
    def ai_plan(self) -> None:
        goal_id = self._goal()
        if goal_id is None:
            return
        with self.client.post(
            f"/goals/{goal_id}/ai-sync",
            headers=self._headers(),
            name="POST /goals/{id}/ai-sync",
            catch_response=True,
        ) as response:
            self.ai_goals.add(goal_id)
            if response.status_code in (409, 429):  # a run in progress, or the daily quota
                TIMELINE.expect(response, "POST /goals/{id}/ai-sync")
        self.details.pop(goal_id, None)


# -- the ramp (only when OPS_STEPS is set: otherwise -u/-r/-t apply) ---------------------------

if os.environ.get("OPS_STEPS"):

    class StepShape(LoadTestShape):
        steps = [int(step) for step in os.environ["OPS_STEPS"].split(",")]
        step_seconds = float(os.environ.get("OPS_STEP_SECONDS", "45"))

        def tick(self) -> tuple[int, float] | None:
            index = int(self.get_run_time() // self.step_seconds)
            if index >= len(self.steps):
                return None
            return self.steps[index], 50.0
