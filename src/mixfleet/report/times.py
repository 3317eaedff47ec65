"""When a run started and how long its restarts kept it from training: the one rule for
``mixfleet report`` (whole logs) and the dashboard (columns it reads incrementally), so both
give the same numbers.

A step record's ``t`` is when the step ended and ``step_s`` how long it ran, so a step
started at ``t - step_s``. Time between steps is not productive; the time of a restart (the
fault, its detection, the new processes' start-up and resume) is the gap between the last
step before it and the first step after it, both steps themselves left out (they count as
productive or redone time).

:func:`time_by_cause` splits the whole wall time into productive step time and the causes
of the rest (start-up, first-step warm-up, restarts, hang detection, cooling, redone steps,
other), so that the causes add up to the time not spent in productive steps
(``docs/dashboard.md``, "time lost by cause").
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from mixfleet.runs import Event

__all__ = ["run_start_time", "restart_times", "restart_downtime", "restart_gaps", "StepLedger",
           "time_by_cause", "CAUSES"]


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


def restart_gaps(events: Sequence[dict[str, Any]], t: Sequence[float] | np.ndarray,
                 step_s: Sequence[float] | np.ndarray, *, start: float
                 ) -> list[tuple[int, float, float]]:
    """The gaps between two step records (``t`` and ``step_s`` of the steps, in the order
    written) in which the run restarted: ``(index of the step after it, from, to)``, from the
    end of the step before it (``start``, the run's start, for a restart before the first
    step) to the start of the step after it. A gap counts once however many restarts it
    holds; a restart that no step has followed yet has no gap."""
    ts = np.asarray(t, dtype=float)
    ss = np.asarray(step_s, dtype=float)
    gaps = set()
    for r in restart_times(events):
        after = np.flatnonzero(ts > r)
        if after.size:
            gaps.add(int(after[0]))
    out = []
    for i in sorted(gaps):
        resumed = float(ts[i] - (ss[i] if math.isfinite(ss[i]) else 0.0))
        before = float(ts[i - 1]) if i > 0 else start
        if math.isfinite(before) and math.isfinite(resumed):
            out.append((i, before, max(before, resumed)))
    return out


def restart_downtime(events: Sequence[dict[str, Any]], t: Sequence[float] | np.ndarray,
                     step_s: Sequence[float] | np.ndarray, *, start: float) -> float:
    """Seconds lost to restarts: the length of every :func:`restart_gaps` gap."""
    return sum(b - a for _, a, b in restart_gaps(events, t, step_s, start=start))


class StepLedger:
    """The step records of a run, fed in the order written: the final history (a step seen
    again replaces the earlier record, whose time becomes redone work), the first record,
    and their step time. ``mixfleet report`` feeds it a whole log, the dashboard as it
    reads."""

    def __init__(self) -> None:
        self.final: dict[int, tuple[float, float]] = {}  # step -> (t, step_s) of its record
        self.redone = 0.0
        self.productive = 0.0  # step time of the final history
        self.first: tuple[float, float] | None = None  # (t, step_s) of the first record

    def add(self, step: int, t: float, step_s: float) -> None:
        ss = float(step_s) if _num(step_s) else 0.0
        old = self.final.get(step)
        if old is not None:
            self.redone += old[1]
            self.productive -= old[1]
        self.final[step] = (float(t), ss)
        self.productive += ss
        if self.first is None:
            self.first = (float(t), float(step_s) if _num(step_s) else math.nan)

    def is_final(self, step: float, t: float) -> bool:
        """Whether the record of ``step`` that ended at ``t`` is in the final history."""
        got = self.final.get(int(step)) if math.isfinite(step) else None
        return got is not None and got[0] == t


CAUSES = ("startup", "warmup", "restart_downtime", "hang_detection", "cooling",
          "redone_steps", "other")
"""The keys of :func:`time_by_cause`'s causes, in the order shown."""


def time_by_cause(events: Sequence[dict[str, Any]], steps: np.ndarray, t: np.ndarray,
                  step_s: np.ndarray, ledger: StepLedger, *, start: float, end: float
                  ) -> tuple[float, dict[str, float]]:
    """Productive seconds and the seconds lost by cause between ``start`` and ``end`` (the
    step records' ``steps``, ``t``, ``step_s`` in the order written, as fed to ``ledger``);
    the causes add up to ``end - start`` minus the productive seconds:

    - ``startup``: from the run's start to the start of its first step (with no restart in
      between; else that time is restart downtime);
    - ``warmup``: the first step of each start beyond the median step time (compilation,
      caches), taken out of the productive time;
    - ``restart_downtime``: the :func:`restart_gaps`, less their hang detection;
    - ``hang_detection``: rank 0's wait before it declared a hang, within a restart gap;
    - ``cooling``: thermal pauses inside a step (of any rank, overlaps once), taken out of
      that step's time;
    - ``redone_steps``: steps run again after a restart or rollback (less their cooling);
    - ``other``: the rest (time between the steps of one start), named, never dropped.
    """
    gaps = restart_gaps(events, t, step_s, start=start)
    lengths = [b - a for _, a, b in gaps]
    hang = 0.0
    for e in events:
        if e.get("event") == Event.HANG_DETECTED and e.get("rank") == 0 and _num(e.get("t")) \
                and _num(e.get("waited_s")):
            for k, (_, a, b) in enumerate(gaps):
                if a <= e["t"] <= b:
                    took = min(float(e["waited_s"]), lengths[k])
                    lengths[k] -= took
                    hang += took
                    break
    startup = 0.0
    if t.size and not (gaps and gaps[0][0] == 0):
        s0 = float(t[0]) - (float(step_s[0]) if math.isfinite(step_s[0]) else 0.0)
        startup = max(0.0, s0 - start) if math.isfinite(s0) else 0.0
    # cooling: the union of the pauses (of any rank) inside each step record's time
    paused: dict[int, list[tuple[float, float]]] = {}
    for e in events:
        if e.get("event") == Event.THERMAL_RESUMED and _num(e.get("t")) and \
                _num(e.get("paused_s")):
            i = int(np.searchsorted(t, e["t"]))  # the step record it ends within
            if i < t.size and math.isfinite(step_s[i]) and t[i] - step_s[i] <= e["t"]:
                lo = max(float(e["t"]) - float(e["paused_s"]), float(t[i] - step_s[i]))
                paused.setdefault(i, []).append((lo, float(e["t"])))
    productive, redone, cooling = ledger.productive, ledger.redone, 0.0
    carved: dict[int, float] = {}
    for i, spans in paused.items():
        took, reach = 0.0, -math.inf
        for lo, hi in sorted(spans):
            took += max(0.0, hi - max(lo, reach))
            reach = max(reach, hi)
        carved[i] = took
        cooling += took
        if ledger.is_final(steps[i], float(t[i])):
            productive -= took
        else:
            redone -= took
    warmup = 0.0
    if t.size:
        med = float(np.nanmedian(step_s)) if np.isfinite(step_s).any() else 0.0
        for i in [0] + [g[0] for g in gaps if g[0] > 0]:
            if math.isfinite(step_s[i]) and ledger.is_final(steps[i], float(t[i])):
                extra = max(0.0, float(step_s[i]) - carved.get(i, 0.0) - med)
                warmup += extra
                productive -= extra
    causes = {"startup": startup, "warmup": warmup, "restart_downtime": sum(lengths),
              "hang_detection": hang, "cooling": cooling, "redone_steps": max(0.0, redone)}
    causes["other"] = (end - start) - max(0.0, productive) - sum(causes.values())
    return max(0.0, productive), causes
