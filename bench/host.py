"""What else the machine did during a measured run: its busy CPU time (/proc/stat) minus the
benchmark's own (this process, the apps, Redis and wrk, all its descendants, plus the benchmark's
PostgreSQL server and its backends), and the hypervisor's steal. On a 2-core host another job's
tests or build show up here as `foreign_cores`, the CPU they took from the measurement."""

from __future__ import annotations

import contextlib
import os
import resource
from dataclasses import dataclass
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _machine() -> tuple[float, float]:
    """(busy, steal) CPU seconds of the whole machine since boot."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + irq + softirq) / CLOCK_TICKS, steal / CLOCK_TICKS


def _processes() -> dict[int, tuple[int, float, int]]:
    """Every live process: its parent, its CPU seconds (user + system) and when it started (clock
    ticks since boot: a pid used again is another process)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            found[int(entry.name)] = (
                int(fields[1]),
                (int(fields[11]) + int(fields[12])) / CLOCK_TICKS,
                int(fields[19]),
            )
    return found


Process = tuple[int, int]  # pid, start


def _ours(roots: set[int]) -> tuple[dict[Process, float], float]:
    """CPU seconds of the `roots` (this process, the benchmark's PostgreSQL) and of each of their
    live descendants, and of this process's reaped children (each wrk run)."""
    processes = _processes()
    children: dict[int, list[int]] = {}
    for pid, (parent, _, _) in processes.items():
        children.setdefault(parent, []).append(pid)
    found: dict[Process, float] = {}
    stack = [pid for pid in roots if pid in processes]
    while stack:
        pid = stack.pop()
        _, cpu, start = processes[pid]
        if (pid, start) not in found:
            found[pid, start] = cpu
            stack.extend(children.get(pid, ()))
    reaped = resource.getrusage(resource.RUSAGE_CHILDREN)
    return found, reaped.ru_utime + reaped.ru_stime


def spent(before: dict[Process, float], after: dict[Process, float]) -> float:
    """CPU seconds the processes spent between two readings. One that ended meanwhile (a
    PostgreSQL backend whose idle connection its pool closed) is left out: taking its lifetime's
    CPU away once put 3.1 cores of "other work" on a 2-core machine; what it spent in the window
    before it ended counts as other work. A process that started meanwhile counts whole."""
    return sum(cpu - before.get(process, 0.0) for process, cpu in after.items())


@dataclass(frozen=True, slots=True)
class Mark:
    busy: float
    steal: float
    ours: dict[Process, float]
    reaped: float


class HostLoad:
    """`mark()` before a run, `since(mark, seconds)` after it."""

    def __init__(self, postgres_data_dir: Path) -> None:
        self.postmaster_pid = Path(postgres_data_dir) / "postmaster.pid"

    def _roots(self) -> set[int]:
        roots = {os.getpid()}
        with contextlib.suppress(OSError, ValueError, IndexError):
            roots.add(int(self.postmaster_pid.read_text().split()[0]))
        return roots

    def mark(self) -> Mark:
        busy, steal = _machine()
        return Mark(busy, steal, *_ours(self._roots()))

    def since(self, mark: Mark, seconds: float) -> dict[str, float]:
        busy, steal = _machine()
        now, reaped = _ours(self._roots())
        ours = spent(mark.ours, now) + reaped - mark.reaped
        return {
            # Cores' worth of CPU the machine spent on other work meanwhile (of os.cpu_count()).
            "foreign_cores": max(0.0, (busy - mark.busy) - ours) / seconds,
            "steal_cores": (steal - mark.steal) / seconds,
        }
