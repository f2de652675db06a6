"""bench/host.py: the CPU the benchmark's own processes spent during a run."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
Spent = Callable[[dict[tuple[int, int], float], dict[tuple[int, int], float]], float]


@pytest.fixture(scope="module")
def spent() -> Spent:
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(ROOT))
        function: Spent = importlib.import_module("bench.host").spent
    return function


def test_a_process_that_ended_during_the_run_takes_nothing_away(spent: Spent) -> None:
    """A PostgreSQL backend closed mid-run had 19 s of CPU behind it: subtracting its lifetime made
    the rest of the machine's work look like 3 cores of someone else's."""
    before = {(1, 100): 10.0, (2, 100): 19.0}
    after = {(1, 100): 11.5}  # pid 2 ended
    assert spent(before, after) == pytest.approx(1.5)


def test_a_new_process_counts_whole_even_under_an_old_pid(spent: Spent) -> None:
    before = {(1, 100): 10.0, (2, 100): 5.0}
    # pid 2 ended and a new process took its number (it started later); pid 3 is new.
    after = {(1, 100): 10.25, (2, 900): 6.0, (3, 950): 2.0}
    assert spent(before, after) == pytest.approx(0.25 + 6.0 + 2.0)
