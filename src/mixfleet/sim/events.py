"""The deterministic event core: a heap of (time, priority, seq, kind, job, version).

``seq`` is a counter owned by each queue, so two events at the same time and priority
come out in the order they were pushed: a run depends on its inputs and seed only.

Events outdated by a later version of their job stay in the heap until they come due (a
preempted job's failure draw may lie weeks ahead); :meth:`EventQueue.compact` drops those
the owner names, so a run that preempts often keeps a small heap. Keys are unique, so the
events left come out in the same order, and a dropped event counts as popped (a run drains
its queue, so it would have been): ``popped`` is the same with or without compaction.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable

__all__ = ["EventQueue", "COMPLETE", "FAIL", "THROTTLE_END", "THROTTLE_START", "CHECKPOINT",
           "ARRIVAL", "ROUND", "KIND_NAMES"]

# Kinds double as priorities: at equal times, lower first.
COMPLETE, FAIL, THROTTLE_END, THROTTLE_START, CHECKPOINT, ARRIVAL, ROUND = range(7)
KIND_NAMES = ("complete", "fail", "throttle_end", "throttle_start", "checkpoint", "arrival",
              "round")

Event = tuple[float, int, int, int, int]


class EventQueue:
    """A min-heap of events ordered by (time, kind, seq)."""

    __slots__ = ("_heap", "_seq", "popped", "next_compact", "_floor")

    def __init__(self, compact_floor: float = 1 << 16) -> None:
        self._heap: list[Event] = []
        self._seq = 0
        self.popped = 0
        self._floor = compact_floor
        self.next_compact = compact_floor
        """Size of the heap at which its owner should call :meth:`compact`: twice what the
        last compaction left, at least ``compact_floor`` (inf: never), so compaction costs
        O(1) per push amortized."""

    def push(self, time: float, kind: int, job: int = -1, version: int = 0) -> None:
        """Schedule an event of ``kind`` for job index ``job`` (valid while ``version``
        matches the job's)."""
        self._seq += 1
        heapq.heappush(self._heap, (time, kind, self._seq, job, version))

    def pop(self) -> Event:
        self.popped += 1
        return heapq.heappop(self._heap)

    def compact(self, outdated: Callable[[Event], bool]) -> int:
        """Drop the events for which ``outdated`` is true (each must be one whose pop its
        owner would ignore); they count as popped. Returns how many were dropped."""
        keep = [e for e in self._heap if not outdated(e)]
        dropped = len(self._heap) - len(keep)
        heapq.heapify(keep)
        self._heap = keep
        self.popped += dropped
        self.next_compact = max(self._floor, 2 * len(keep))
        return dropped

    def peek_time(self) -> float | None:
        return self._heap[0][0] if self._heap else None

    def __len__(self) -> int:
        return len(self._heap)
