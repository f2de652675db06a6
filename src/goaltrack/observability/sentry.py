"""Optional Sentry (SENTRY_DSN): no personal data, no tracing, events tagged with the request id."""

from __future__ import annotations

import threading
from typing import Any

from goaltrack.config import Settings
from goaltrack.observability.request_id import current_request_id

_sentry_lock = threading.Lock()
_sentry_on = False


def _tag_request_id(event: dict[str, Any], _hint: dict[str, Any]) -> dict[str, Any]:
    if (request_id := current_request_id()) is not None:
        event.setdefault("tags", {})["request_id"] = request_id
    return event


def init_sentry(settings: Settings) -> bool:
    """Sentry with its automatic integrations (FastAPI, Celery, SQLAlchemy, Redis, logging:
    ERROR records become events), no personal data, no tracing; once per process."""
    global _sentry_on
    dsn = settings.sentry_dsn.get_secret_value() if settings.sentry_dsn else ""
    if not dsn:
        return False
    with _sentry_lock:
        if not _sentry_on:
            import sentry_sdk

            sentry_sdk.init(
                dsn=dsn,
                environment=settings.app_env.value,
                send_default_pii=False,
                traces_sample_rate=0.0,
                before_send=_tag_request_id,  # type: ignore[arg-type]
            )
            _sentry_on = True
    return True
