"""The request id: validated or made here, bound to the context of the request (and of the tasks
it queued), read by the logs, the problem bodies and Sentry."""

from __future__ import annotations

import os
import re
from contextvars import ContextVar

REQUEST_ID_HEADER = "X-Request-ID"
# The Celery message header that carries the request id into the tasks a request queued.
TASK_REQUEST_ID_HEADER = "goaltrack_request_id"
# Visible ASCII: no spaces, no control characters (the OpenAPI document publishes it).
REQUEST_ID_PATTERN = r"^[!-~]{1,128}$"
_VALID_REQUEST_ID = re.compile(REQUEST_ID_PATTERN.removeprefix("^").removesuffix("$"))

# Set by goaltrack.middleware.Edge (a request) and worker_signals (a task); public so
# that those modules can bind and reset them, read by everyone else through the functions below.
request_id_var: ContextVar[str | None] = ContextVar("goaltrack_request_id", default=None)
# (task name, task id) of the Celery task being run, for the log records.
task_var: ContextVar[tuple[str, str] | None] = ContextVar("goaltrack_task", default=None)


def current_request_id() -> str | None:
    """The id of the request (or of the request that queued the task) being served, if any."""
    return request_id_var.get()


def valid_request_id(value: str | None) -> str | None:
    """`value` when it may be used as a request id, else None."""
    return value if value is not None and _VALID_REQUEST_ID.fullmatch(value) else None


def new_request_id() -> str:
    # 128 random bits as 32 hex digits, as uuid4().hex reads, without building a UUID on every
    # request (less than half its CPU).
    return os.urandom(16).hex()
