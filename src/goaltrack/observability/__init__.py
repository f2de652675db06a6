"""Observability: the request id, structured logs, Prometheus metrics and (optional) Sentry.

One module per concern; import from the module itself (this package re-exports nothing):

- `request_id`: every HTTP response carries `X-Request-ID` (the client's, when it sent a valid
  one: visible ASCII, at most 128 characters; else 128 random bits as hex). It is bound to the
  request's context (`current_request_id()`), so every log record of the request has it (through
  `logs.RequestContextFilter`), every problem+json body has it (errors.problem), and every task
  the request queues carries it in its message headers and binds it again in the worker.
- `logs`: `logging_config(format)` (cli.py) installs one stderr handler with
  `RequestContextFilter` and either `TextFormatter` or `JsonFormatter` (one JSON object per line).
- `metrics`: the Prometheus instruments (prometheus-client): request latency by route template
  and status, requests in flight, Celery task counts, failures and durations, push and AI
  outcomes (`PUSH_RESULTS`, `AI_RUNS`, incremented by their domains).
- `middleware`: the outermost ASGI middleware that binds the request id and measures requests.
- `probes`: the gauges read at scrape time: the DB pools, the Celery queue, the outbox backlog
  and the scheduler's lag, each bounded and failing alone.
- `endpoint`: `/metrics`, served by the API only when METRICS_TOKEN is set, to
  `Authorization: Bearer <METRICS_TOKEN>`; METRICS_PORT adds an unauthenticated listener
  (METRICS_BIND_ADDRESS), and WORKER_METRICS_PORT one in the Celery worker.
- `worker_signals`: Celery signals: request id propagation, task metrics, the worker's port.
- `sentry`: optional Sentry (SENTRY_DSN), scrubbed of personal data, tagged with the request id.
- `install`: `install_observability(app, settings)`, the API's wiring of all of the above.

Processes that share their metrics (uvicorn --workers N, Celery's prefork pool) need
prometheus-client's multiprocess mode: PROMETHEUS_MULTIPROC_DIR set to an empty directory (per
container, e.g. a tmpfs) before start. Without it each process counts alone.

Wiring: main.py calls `install.install_observability(app, settings)` once every router is
included; celery_app.create_celery calls `worker_signals.install_celery_signals(settings)`.

Every module logs as `goaltrack.observability` (not its own `__name__`), as the single module
did: log lines, and any filter or level set on that logger, stay as they were.
"""
