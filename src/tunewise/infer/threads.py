"""How many threads a generation step should use now: fewer while other processes keep the cores busy.

llama.cpp's CPU threads meet at a barrier after every operation of the graph (hundreds per token) and wait for
each other by spinning. When the machine has other busy processes, one of them is often descheduled, and every
barrier then costs the others a scheduler time slice: measured on 2 cores beside 2-3 busy single-threaded
processes, 4 short receipts took 264 s with 2 threads and 5.7 s with 1. So the llama.cpp backend asks a
``ThreadGovernor`` before each step, and it answers the configured count while the cores are free for it, and
fewer (at least 1) while other processes use them.

The governor reads the machine's busy CPU time from ``/proc/stat`` and subtracts this process's own
(``os.times``), every ``interval`` seconds; what is left is the other processes' load, in cores. Where
``/proc/stat`` does not exist (not Linux) it always answers the configured count. ``TUNEWISE_ENGINE_ADAPTIVE_THREADS=0``
turns it off.
"""

from __future__ import annotations

import math
import os
import time

SLACK = 0.3
"""Cores the other processes may use before a thread is given up: below it, background noise."""


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _busy_seconds() -> float | None:
    """CPU time the whole machine has spent busy (user, nice, system, irq, softirq, steal), in seconds."""
    try:
        with open("/proc/stat", "rb") as f:
            fields = f.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != b"cpu" or len(fields) < 8:
        return None
    user, nice, system, _idle, _iowait, irq, softirq = (int(x) for x in fields[1:8])
    steal = int(fields[8]) if len(fields) > 8 else 0
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _own_seconds() -> float:
    t = os.times()
    return t.user + t.system


class ThreadGovernor:
    """``threads()``: the configured count while the cores are free, fewer while other processes use them."""

    def __init__(self, threads: int, interval: float = 0.5, enabled: bool | None = None) -> None:
        self.max_threads = max(1, int(threads))
        self.interval = interval
        if enabled is None:
            enabled = os.environ.get("TUNEWISE_ENGINE_ADAPTIVE_THREADS", "1") != "0"
        self.cores = _cpu_count()
        self.enabled = enabled and self.max_threads > 1 and _busy_seconds() is not None
        self._current = self.max_threads
        self._last = (time.monotonic(), _busy_seconds() or 0.0, _own_seconds())
        self.others = 0.0
        """The other processes' load at the last reading, in cores."""

    def threads(self) -> int:
        if not self.enabled:
            return self.max_threads
        now = time.monotonic()
        then, busy0, own0 = self._last
        if now - then < self.interval:
            return self._current
        busy, own = _busy_seconds(), _own_seconds()
        if busy is None:
            return self._current
        self._last = (now, busy, own)
        self.others = max(0.0, ((busy - busy0) - (own - own0)) / (now - then))
        free = self.cores - math.ceil(max(0.0, self.others - SLACK))
        self._current = max(1, min(self.max_threads, free))
        return self._current
