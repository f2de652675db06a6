"""Operations runs: load (Locust), soak and chaos against the app in production mode.

Everything runs on a local stack started by the same code as `goaltrack dev`
(`goaltrack.dev.localstack`): PostgreSQL, Redis and SeaweedFS S3, plus an SMTP sink and a fake
OpenAI-compatible server, then the API, a Celery worker and beat as separate processes, exactly
as `goaltrack serve|worker|beat` run them. See docs/operations.md.

    python -m ops load   [--duration 600] [--users N]
    python -m ops soak   [--duration 1800] [--users N]
    python -m ops chaos  [--users N]
    python -m ops check  --database-url ... --s3-endpoint ...   (the consistency check alone)
"""
