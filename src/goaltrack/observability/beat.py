"""Beat's heartbeat: every pass of its scheduler loop sets goaltrack_beat_last_tick_timestamp_seconds
and touches a file beside the schedule, which `goaltrack health beat` reads. A beat stuck anywhere
(a publish waiting on a hung broker, a deadlock) stops both; a quiet schedule does not, since the
loop runs at least every `beat_max_loop_interval` (celery_app)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from celery.beat import PersistentScheduler

from goaltrack.observability.metrics import BEAT_LAST_TICK

HEARTBEAT_FILE = "beat-heartbeat"


def heartbeat_path(schedule_file: str | Path) -> Path:
    return Path(schedule_file).with_name(HEARTBEAT_FILE)


class HeartbeatScheduler(PersistentScheduler):  # type: ignore[misc]
    def tick(self, *args: Any, **kwargs: Any) -> float:
        interval: float = super().tick(*args, **kwargs)
        BEAT_LAST_TICK.set_to_current_time()
        heartbeat_path(self.schedule_filename).touch()
        return interval
