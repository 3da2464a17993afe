"""Wall time, with this process's CPU time and everyone else's beside it.

On a shared 2-core machine another job can slow a run down. CPU time ÷ wall time (≈ the thread
count when undisturbed) and the CPU the rest of the machine used meanwhile (from /proc/stat)
show when a figure was taken on a busy machine.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

BUSY_CORES = 0.25
"""Other processes using more than this many cores on average make a CPU figure suspect."""


def machine_busy_seconds() -> float | None:
    """CPU seconds all processes (and the hypervisor's steal) have used since boot."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
        user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    except (OSError, ValueError, IndexError):
        return None
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


@dataclass
class Stopwatch:
    wall: float = 0.0
    cpu: float = 0.0  # this process, all its threads
    machine: float | None = None  # the whole machine, in the same interval

    @property
    def utilisation(self) -> float:
        """Cores this process kept busy on average."""
        return self.cpu / self.wall if self.wall else 0.0

    def others(self, own_cpu: float | None = None) -> float | None:
        """Cores the rest of the machine kept busy on average (``own_cpu``: for a child's run)."""
        if self.machine is None or not self.wall:
            return None
        own = self.cpu if own_cpu is None else own_cpu
        return max(self.machine - own, 0.0) / self.wall

    def as_json(self) -> dict[str, float | None]:
        return {"wall_s": self.wall, "cpu_s": self.cpu, "other_cores": self.others()}


@contextmanager
def stopwatch() -> Iterator[Stopwatch]:
    watch = Stopwatch()
    busy = machine_busy_seconds()
    wall, cpu = time.perf_counter(), time.process_time()
    try:
        yield watch
    finally:
        watch.wall = time.perf_counter() - wall
        watch.cpu = time.process_time() - cpu
        after = machine_busy_seconds()
        watch.machine = None if busy is None or after is None else after - busy
