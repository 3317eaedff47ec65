"""The deterministic event core: a heap of (time, priority, seq, kind, job, version).

``seq`` is a counter owned by each queue, so two events at the same time and priority
come out in the order they were pushed: a run depends on its inputs and seed only.
"""

from __future__ import annotations

import heapq

__all__ = ["EventQueue", "COMPLETE", "FAIL", "THROTTLE_END", "THROTTLE_START", "CHECKPOINT",
           "ARRIVAL", "ROUND", "KIND_NAMES"]

# Kinds double as priorities: at equal times, lower first.
COMPLETE, FAIL, THROTTLE_END, THROTTLE_START, CHECKPOINT, ARRIVAL, ROUND = range(7)
KIND_NAMES = ("complete", "fail", "throttle_end", "throttle_start", "checkpoint", "arrival",
              "round")

Event = tuple[float, int, int, int, int]


class EventQueue:
    """A min-heap of events ordered by (time, kind, seq)."""

    __slots__ = ("_heap", "_seq", "popped")

    def __init__(self) -> None:
        self._heap: list[Event] = []
        self._seq = 0
        self.popped = 0

    def push(self, time: float, kind: int, job: int = -1, version: int = 0) -> None:
        """Schedule an event of ``kind`` for job index ``job`` (valid while ``version``
        matches the job's)."""
        self._seq += 1
        heapq.heappush(self._heap, (time, kind, self._seq, job, version))

    def pop(self) -> Event:
        self.popped += 1
        return heapq.heappop(self._heap)

    def peek_time(self) -> float | None:
        return self._heap[0][0] if self._heap else None

    def __len__(self) -> int:
        return len(self._heap)
