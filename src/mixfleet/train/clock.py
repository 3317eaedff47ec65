"""Time as a boundary: the trainer and its health checks read a :class:`Clock` that is
passed in, so their logic runs unchanged under a fake clock in unit tests."""

from __future__ import annotations

import time
from typing import Protocol

__all__ = ["Clock", "SystemClock", "FakeClock"]


class Clock(Protocol):
    def perf(self) -> float:
        """Seconds, high resolution, for durations."""
        ...

    def monotonic(self) -> float:
        """Seconds, monotonic, for timeouts."""
        ...

    def sleep(self, seconds: float) -> None:
        ...

    def cpu(self) -> float:
        """CPU seconds of this process, every thread (what a step computed, whatever the
        load of other processes or the time spent waiting)."""
        ...

    def wall(self) -> float:
        """Seconds since the epoch (timestamps of records)."""
        ...


class SystemClock:
    """The real clock."""

    perf = staticmethod(time.perf_counter)
    monotonic = staticmethod(time.monotonic)
    sleep = staticmethod(time.sleep)
    wall = staticmethod(time.time)
    cpu = staticmethod(time.process_time)


class FakeClock:
    """A clock that only moves when told to (``advance``) or when something sleeps."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.slept: list[float] = []

    def perf(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.now

    def wall(self) -> float:
        return self.now

    def cpu(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += max(0.0, seconds)

    def advance(self, seconds: float) -> None:
        self.now += seconds
