"""What a person watching a training run sees: a rich progress bar on a terminal, plain
lines otherwise, and one line per notable event (restart, resume, checkpoint failure).

The snapshot pacing changes its interval several times while it finds one that costs little
enough; every change is an event in ``events.jsonl``, but the person watching gets one line
once the interval has settled (unchanged for four intervals and 100 steps, or at
the end)."""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from mixfleet.runs import Event

__all__ = ["TrainProgress"]

# the snapshot interval counts as settled once unchanged for this many intervals and steps
SETTLED_INTERVALS, SETTLED_STEPS = 4, 100

_EVENT_LINES = {
    Event.SNAPSHOT_REFUSED: lambda e: (f"in-memory snapshot refused on rank {e['rank']}: "
                                       f"{e['path']}: {e['reason']}; not read (snapshots off)"),
    Event.SNAPSHOT_SINGLE_BUFFER: lambda e: (
        f"in-memory snapshots in a single buffer on rank {e['rank']}: two copies need "
        f"{e['need_bytes'] / 2**30:.2f} GiB, the budget is {e['budget_bytes'] / 2**30:.2f} GiB "
        f"per rank (a crash during a copy then resumes from disk)"),
    Event.SNAPSHOTS_OFF: lambda e: (f"in-memory snapshots off on rank {e['rank']}: they need "
                                    f"{e['need_bytes'] / 2**30:.2f} GiB, the budget is "
                                    f"{e['budget_bytes'] / 2**30:.2f} GiB per rank; {e['fix']}"),
    Event.SNAPSHOT_PLAN: lambda e: (f"in-memory snapshots every {e['interval']} step(s): "
                                    f"{e['need_bytes'] / 2**30:.3f} GiB of host memory per rank "
                                    f"(budget {e['budget_bytes'] / 2**30:.2f} GiB)"),
    Event.RUN_START: lambda e: (
        f"resumed from step {e['resumed_from']} after restart #{e['attempt']} "
        f"(steps lost: {e['steps_lost']})" if e.get("resumed_from") is not None and
        e.get("attempt") else
        f"resumed from step {e['resumed_from']} (steps lost: {e['steps_lost']})"
        if e.get("resumed_from") is not None else
        f"restart #{e['attempt']}: no committed checkpoint yet, starting from step 0"
        if e.get("attempt") else None),
    Event.CHECKPOINT_FAILED: lambda e: (
        f"WARNING checkpoint at step {e['step']} failed: {e['error']}; keeping step "
        f"{e.get('kept')}"),
    Event.CHECKPOINT_SKIPPED: lambda e: f"WARNING skipped checkpoint {e['dir']}: {e['reason']}",
    Event.FAULT_INJECTED: lambda e: (f"fault injected: {e['kind']} rank {e['rank']} at step "
                                     f"{e['step']}"),
}


class TrainProgress:
    """Receives step records and events on rank 0 and renders them."""

    def __init__(self, total: int, *, mode: str = "auto", stream: TextIO | None = None,
                 log_every: int = 50, label: str = "train") -> None:
        self.stream = stream or sys.stdout
        if mode == "auto":
            mode = "rich" if self.stream.isatty() else "plain"
        self.mode, self.total, self.log_every, self.label = mode, total, log_every, label
        self._bar: Any = None
        self._task: Any = None
        self._last = 0.0
        self._pacing: dict[str, Any] | None = None  # the latest interval, not yet shown
        self._paced_from: int | None = None  # the step of the first change not yet shown

    def start(self, step: int) -> None:
        if self.mode == "rich":
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
            )

            self._bar = Progress(TextColumn(f"[bold]{self.label}"), BarColumn(),
                                 MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                                 TimeRemainingColumn(),
                                 console=Console(file=self.stream), transient=False)
            self._bar.start()
            self._task = self._bar.add_task(self.label, total=self.total, completed=step,
                                            info="")

    def step(self, rec: dict[str, Any]) -> None:
        s = rec["step"]
        if self._pacing is not None and \
                s >= self._pacing["step"] + max(SETTLED_INTERVALS * self._pacing["interval"],
                                                SETTLED_STEPS):
            self._show_pacing()
        if self.mode == "rich":
            now = time.monotonic()
            if now - self._last >= 0.1 or s == self.total:
                self._last = now
                self._bar.update(self._task, completed=s,
                                 info=f"loss {rec['loss']:.4f}  {rec['samples_per_s']:.0f} "
                                      f"samples/s")
        elif s % self.log_every == 0 or s == self.total:
            print(f"[{self.label}] step {s}/{self.total} loss {rec['loss']:.4f} "
                  f"{rec['samples_per_s']:.0f} samples/s", file=self.stream, flush=True)

    def event(self, rec: dict[str, Any]) -> None:
        if rec.get("event") == Event.SNAPSHOT_INTERVAL:  # shown once it settles
            if self._paced_from is None:
                self._paced_from = rec["step"]
            self._pacing = rec
            return
        fmt = _EVENT_LINES.get(rec.get("event", ""))
        line = fmt(rec) if fmt else None
        if line:
            self.line(line)

    def line(self, text: str) -> None:
        if self._bar is not None:
            self._bar.console.print(text)
        else:
            print(f"[{self.label}] {text}", file=self.stream, flush=True)

    def _show_pacing(self) -> None:
        e, first = self._pacing, self._paced_from
        self._pacing = self._paced_from = None
        if e is not None:
            since = f" (paced from step {first})" if first is not None and first < e["step"] \
                else ""
            self.line(f"in-memory snapshots every {e['interval']} steps from step "
                      f"{e['step']}{since}: {e['reason']}")

    def close(self) -> None:
        self._show_pacing()
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
