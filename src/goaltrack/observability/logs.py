"""Log records with the request context, as text or one JSON object per line (LOG_FORMAT)."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any, Literal

from goaltrack.config import AppEnv, Settings
from goaltrack.observability.request_id import request_id_var, task_var

LogFormat = Literal["text", "json"]


class RequestContextFilter(logging.Filter):
    """Adds `request_id`, `task_name` and `task_id` (None when there is none) to every record.

    Put it on handlers (not loggers: a logger's filters do not see propagated records); it runs
    in the thread that logs, where the request's or the task's context is."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        task = task_var.get()
        record.task_name, record.task_id = task if task is not None else (None, None)
        return True


def _context_fields(record: logging.LogRecord) -> dict[str, str]:
    fields = {}
    for name in ("request_id", "task_name", "task_id"):
        value = getattr(record, name, None)
        if value is not None:
            fields[name] = str(value)
    return fields


class TextFormatter(logging.Formatter):
    """`time LEVEL logger [request_id=… task_name=…]: message` (the context part when any)."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s%(context)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 (logging's name)
        fields = _context_fields(record)
        context = " [" + " ".join(f"{k}={v}" for k, v in fields.items()) + "]" if fields else ""
        return self._fmt % {**record.__dict__, "context": context} if self._fmt else ""


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message, request_id, and
    task_name/task_id inside a task, exception (the traceback) and stack when the record has
    them."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", None),
        }
        for name in ("task_name", "task_id"):
            if (value := getattr(record, name, None)) is not None:
                entry[name] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def resolve_log_format(settings: Settings) -> LogFormat:
    """LOG_FORMAT when set; otherwise json in production, text elsewhere."""
    if settings.log_format is not None:
        return settings.log_format
    return "json" if settings.app_env is AppEnv.production else "text"


def logging_config(log_format: LogFormat, level: str = "INFO") -> dict[str, Any]:
    """A `logging.config.dictConfig` document: one stderr handler on the root logger, with the
    request context, in `log_format`; uvicorn's loggers propagate to it (uvicorn.run takes this
    as `log_config`, and applies it in every worker process)."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"context": {"()": f"{__name__}.RequestContextFilter"}},
        "formatters": {
            "text": {"()": f"{__name__}.TextFormatter"},
            "json": {"()": f"{__name__}.JsonFormatter"},
        },
        "handlers": {
            "default": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
                "formatter": log_format,
                "filters": ["context"],
            }
        },
        "root": {"level": level, "handlers": ["default"]},
        "loggers": {
            name: {"level": level, "handlers": [], "propagate": True}
            for name in ("uvicorn", "uvicorn.error", "uvicorn.access")
        },
    }
