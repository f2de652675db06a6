"""A throwaway local stack (PostgreSQL, Redis; no S3) with the schema migrated, for the bench's
one-off tools; in memory when /dev/shm exists."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from goaltrack.dev.localstack import LocalStack
from goaltrack.migrations import upgrade


@contextmanager
def scratch_stack(prefix: str) -> Iterator[LocalStack]:
    base = "/dev/shm" if Path("/dev/shm").is_dir() else None
    root = Path(tempfile.mkdtemp(prefix=prefix, dir=base))
    root.chmod(0o755)
    stack = LocalStack(root, with_s3=False)
    try:
        stack.start()
        upgrade(stack.postgres.url)
        yield stack
    finally:
        stack.stop()
        shutil.rmtree(root, ignore_errors=True)
