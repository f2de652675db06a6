"""The Celery runtime: how tasks are declared (`registry`), deferred until commit (`defer`) and
run with their own event loop and session (`runtime`). The Celery app itself is built by
`goaltrack.celery_app`, the worker's composition root."""
