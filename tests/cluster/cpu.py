"""CPU time of processes and what they started, read from /proc: what each part of the cluster
spent on the jobs of a run.

    meter = CpuMeter({"gateway 1": pid, "RabbitMQ node 1": pid})
    ...                                   # the run
    meter.spent()                         # {"gateway 1": 12.3, ...} seconds since the meter
"""

from __future__ import annotations

import os
import time
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")


def group_cpu(leader: int) -> float:
    """CPU seconds (user and system) of ``leader`` and every live process in its process
    group (a server's, started in a session of its own), and of the children they reaped."""
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(entry.name) == leader or int(fields[2]) == leader:  # the process, its group
            total += sum(int(value) for value in fields[11:15])  # utime stime cutime cstime
    return total / TICK


class CpuMeter:
    def __init__(self, leaders: dict[str, int]) -> None:
        self._leaders = leaders
        self._start = {name: group_cpu(pid) for name, pid in leaders.items()}
        self._started = time.monotonic()
        self.seconds = 0.0
        """How long the meter ran, once :meth:`spent` was read."""

    def spent(self) -> dict[str, float]:
        self.seconds = time.monotonic() - self._started
        return {name: group_cpu(pid) - self._start[name] for name, pid in self._leaders.items()}
