"""bench/host.py: the CPU the benchmark's own processes spent during a run."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
Spent = Callable[[dict[int, float], dict[int, float]], float]


@pytest.fixture(scope="module")
def spent() -> Spent:
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(ROOT))
        function: Spent = importlib.import_module("bench.host").spent
    return function


def test_a_process_that_ended_during_the_run_takes_nothing_away(spent: Spent) -> None:
    """A PostgreSQL backend closed mid-run had 19 s of CPU behind it: subtracting its lifetime made
    the rest of the machine's work look like 3 cores of someone else's."""
    before = {1: 10.0, 2: 19.0}
    after = {1: 11.5}  # pid 2 ended
    assert spent(before, after) == pytest.approx(1.5)


def test_new_processes_count_whole_and_a_reused_pid_counts_from_zero(spent: Spent) -> None:
    before = {1: 10.0, 2: 5.0}
    after = {1: 10.25, 2: 0.5, 3: 2.0}  # pid 2 is a new process with an old number
    assert spent(before, after) == pytest.approx(0.25 + 0.5 + 2.0)
