"""When a run started and how long its restarts kept it from training: the one rule for
``mixfleet report`` (whole logs) and the dashboard (columns it reads incrementally), so both
give the same numbers.

A step record's ``t`` is when the step ended and ``step_s`` how long it ran, so a step
started at ``t - step_s``. Time between steps is not productive; the time of a restart (the
fault, its detection, the new processes' start-up and resume) is the gap between the last
step before it and the first step after it, both steps themselves left out (they count as
productive or redone time).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from mixfleet.runs import Event

__all__ = ["run_start_time", "restart_times", "restart_downtime"]


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def run_start_time(events: Sequence[dict[str, Any]],
                   first_step: tuple[float, float] | None) -> float:
    """The run's start: its first ``launch`` event; without one, the start of its first step
    (``first_step``: that step's ``(t, step_s)``); else its first event; else 0."""
    for e in events:
        if e.get("event") == Event.LAUNCH and _num(e.get("t")):
            return float(e["t"])
    if first_step is not None and _num(first_step[0]):
        return float(first_step[0]) - (float(first_step[1]) if _num(first_step[1]) else 0.0)
    for e in events:
        if _num(e.get("t")):
            return float(e["t"])
    return 0.0


def restart_times(events: Sequence[dict[str, Any]]) -> list[float]:
    """Times at which the run restarted: every ``run_start`` after the first, every
    ``worker_start`` of a torchrun restart (``attempt`` > 0: also one that died before it
    resumed) and every ``relaunch``."""
    out: list[float] = []
    first = True
    for e in events:
        kind, t = e.get("event"), e.get("t")
        if not isinstance(t, (int, float)) or not _num(t):
            continue
        if kind == Event.RUN_START:
            if not first:
                out.append(float(t))
            first = False
        elif kind == Event.RELAUNCH or (kind == Event.WORKER_START and
                                        _num(e.get("attempt")) and e["attempt"] > 0):
            out.append(float(t))
    return out


def restart_downtime(events: Sequence[dict[str, Any]], t: Sequence[float] | np.ndarray,
                     step_s: Sequence[float] | np.ndarray, *, start: float) -> float:
    """Seconds lost to restarts: for each gap between two step records (``t`` and
    ``step_s`` of the steps, in the order written) in which the run restarted, from the end
    of the step before it (``start``, the run's start, for a restart before the first step)
    to the start of the step after it. A gap counts once however many restarts it holds; a
    restart that no step has followed yet adds nothing."""
    ts = np.asarray(t, dtype=float)
    ss = np.asarray(step_s, dtype=float)
    gaps = set()
    for r in restart_times(events):
        after = np.flatnonzero(ts > r)
        if after.size:
            gaps.add(int(after[0]))
    total = 0.0
    for i in sorted(gaps):
        resumed = ts[i] - (ss[i] if math.isfinite(ss[i]) else 0.0)
        before = float(ts[i - 1]) if i > 0 else start
        if math.isfinite(before) and math.isfinite(resumed):
            total += max(0.0, float(resumed) - before)
    return total
