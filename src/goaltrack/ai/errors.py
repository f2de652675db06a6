from __future__ import annotations

from goaltrack.errors import AppError, RateLimited


class AiInProgress(AppError):
    status_code = 409
    code = "ai_in_progress"
    detail = "Stages are already being generated for this goal."


class AiUnavailable(AppError):
    status_code = 503
    code = "ai_unavailable"
    detail = "Generating stages with AI is not configured on this server (AI_API_KEY)."


class AiDailyLimit(RateLimited):
    code = "ai_daily_limit"
    detail = "The daily number of AI plans is used up; try again later."
