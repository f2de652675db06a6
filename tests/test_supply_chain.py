"""The locked dependencies against the OSV vulnerability database (`uv audit`, on uv.lock).

The machines this suite runs on here reach only the package registries, not api.osv.dev: the
audit is then skipped, and says why. Wherever the service answers, a known vulnerability in any
locked package fails the suite."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
UNREACHABLE = ("dns error", "error sending request", "Connect", "timed out")


def test_no_locked_dependency_has_a_known_vulnerability() -> None:
    uv = shutil.which("uv") or str(Path.home() / ".local/bin/uv")
    done = subprocess.run(
        [uv, "audit", "--frozen", "--preview-features", "audit-command"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "NO_COLOR": "1"},
    )
    if done.returncode != 0 and any(sign in done.stderr for sign in UNREACHABLE):
        pytest.skip(f"the vulnerability service is unreachable: {done.stderr.strip()[-200:]}")
    # uv audit exits non-zero when it finds a vulnerability; its report says which.
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
