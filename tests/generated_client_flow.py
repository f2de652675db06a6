"""App code written against the client openapi-python-client generates (`goaltrack_client`, renamed
per test run): the error handler switches on `code` exhaustively, and the feed reads each
notification's `data` narrowed by its `type`, with no cast, no `Any` and no `type: ignore`.

Not a test module: tests/test_generated_client.py type-checks it with `mypy --strict` against the
generated package (a new problem code or notification kind the switch does not handle fails
there: decide here what the app does with it), then runs it on the server's real answers.
"""

from __future__ import annotations

from typing import Literal, assert_never

from goaltrack_client.models import (
    AccountDeletedProblem,
    NotificationPage,
    Problem,
    ProblemCode,
    ValidationProblem,
)

# What the app does about an error.
Step = Literal[
    "sign_in",  # the session is gone or the credentials are wrong
    "offer_restore",  # the account is scheduled for deletion
    "retry_later",  # a dependency or the caller's pace: the same request may succeed later
    "reload",  # the client's copy or cursor is stale, or the thing is gone
    "fix_input",  # the user can correct what was sent
    "explain",  # a limit or a state the user should be told about
    "report",  # the client sent what it never should: a bug to report
]


def next_step(problem: Problem | ValidationProblem | AccountDeletedProblem) -> Step:
    match problem.code:
        case (
            ProblemCode.NOT_AUTHENTICATED
            | ProblemCode.INVALID_CREDENTIALS
            | ProblemCode.INVALID_TOKEN
            | ProblemCode.INVALID_ID_TOKEN
        ):
            return "sign_in"
        case ProblemCode.ACCOUNT_DELETED:
            return "offer_restore"
        case (
            ProblemCode.RATE_LIMITED
            | ProblemCode.SERVICE_UNAVAILABLE
            | ProblemCode.STORAGE_UNAVAILABLE
            | ProblemCode.PROVIDER_UNAVAILABLE
            | ProblemCode.AI_UNAVAILABLE
            | ProblemCode.AI_IN_PROGRESS
            | ProblemCode.EXPORT_IN_PROGRESS
            | ProblemCode.IDEMPOTENCY_IN_PROGRESS
            | ProblemCode.REQUEST_TIMEOUT
        ):
            return "retry_later"
        case (
            ProblemCode.NOT_FOUND
            | ProblemCode.PRECONDITION_FAILED
            | ProblemCode.PRECONDITION_REQUIRED
            | ProblemCode.INVALID_CURSOR
            | ProblemCode.SYNC_CURSOR_EXPIRED
        ):
            return "reload"
        case (
            ProblemCode.VALIDATION_ERROR
            | ProblemCode.EMAIL_TAKEN
            | ProblemCode.INVALID_PASSWORD
            | ProblemCode.RESET_TOKEN_INVALID
            | ProblemCode.VERIFICATION_INVALID
            | ProblemCode.INVALID_RANGE
            | ProblemCode.INVALID_STAGE_ORDER
            | ProblemCode.CHECKIN_DATE_OUT_OF_RANGE
            | ProblemCode.UNSUPPORTED_FILE_TYPE
            | ProblemCode.FILE_TOO_LARGE
            | ProblemCode.PAYLOAD_TOO_LARGE
        ):
            return "fix_input"
        case (
            ProblemCode.AI_DAILY_LIMIT
            | ProblemCode.ALREADY_CHECKED_IN
            | ProblemCode.ATTACHMENT_LIMIT
            | ProblemCode.GOAL_QUOTA
            | ProblemCode.STAGE_LIMIT
            | ProblemCode.REMINDER_LIMIT
            | ProblemCode.STORAGE_QUOTA
            | ProblemCode.NOT_A_HABIT
            | ProblemCode.NOT_SNOOZABLE
            | ProblemCode.NOTHING_TO_VERIFY
            | ProblemCode.RESTORE_EXPIRED
            | ProblemCode.EXPORT_EXPIRED
            | ProblemCode.PROVIDER_NOT_CONFIGURED
        ):
            return "explain"
        case (
            ProblemCode.BAD_REQUEST
            | ProblemCode.FORBIDDEN
            | ProblemCode.HTTP_ERROR
            | ProblemCode.INTERNAL_ERROR
            | ProblemCode.METHOD_NOT_ALLOWED
            | ProblemCode.NOT_ACCEPTABLE
            | ProblemCode.UNSUPPORTED_MEDIA_TYPE
            | ProblemCode.INVALID_IDEMPOTENCY_KEY
            | ProblemCode.IDEMPOTENCY_KEY_REUSED
        ):
            return "report"
        case _:
            assert_never(problem.code)


def feed_lines(page: NotificationPage) -> list[str]:
    """One line per notification, from the fields its kind's `data` has (and only that kind's)."""
    lines = []
    for item in page.items:
        if item.type_ == "reminder":
            stage = "" if item.data.stage_id is None else f" stage {item.data.stage_id}"
            line = f"reminder {item.data.reminder_id}: goal {item.data.goal_id}{stage}"
        elif item.type_ == "digest":
            line = f"digest: {item.data.active_goals} active goals"
        elif item.type_ == "achievement":
            line = f"achievement {item.data.achievement_code}"
        elif item.type_ == "goal_completed":
            line = f"goal {item.data.goal_id} completed"
        elif item.type_ == "ai_stages_ready":
            line = f"goal {item.data.goal_id}: AI stages ready"
        elif item.type_ == "ai_failed":
            line = f"goal {item.data.goal_id}: AI failed ({item.data.reason})"
        elif item.type_ == "export_ready":
            line = f"export {item.data.export_id} at {item.data.url} until {item.data.expires_at:%Y-%m-%d}"
        else:
            assert_never(item)
        lines.append(line)
    return lines
