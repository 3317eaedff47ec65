"""Health checks: each observes a step's outcome and returns typed actions.

A check may register control signals (:mod:`mixfleet.train.health.signals`), set this rank's
values before the step's reduction (``publish``) and read every rank's values after it
(``observe``), so every rank decides the same at the same step. Checks never change the
trainer: they return :mod:`~mixfleet.train.health.actions` that the trainer applies in one place.
The detectors they use (watchdog, NaN/spike guard, straggler windows, thermal guard) are
in :mod:`mixfleet.train.health.detectors`; time comes from a :class:`~mixfleet.train.clock.Clock`.

To add a check: subclass :class:`~mixfleet.train.health.base.HealthCheck`, register its
signals in ``register``, and add it to the trainer's list (``Trainer(..., checks=[...])``
or the defaults in :func:`default_checks`).
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from mixfleet.runs import Event
from mixfleet.train.health.actions import (
    Action,
    Checkpoint,
    Drain,
    Pause,
    Rollback,
    SetShares,
    Shed,
    SparserSnapshots,
)
from mixfleet.train.health.base import NONE, HealthCheck, StepOutcome
from mixfleet.train.health.detectors import (
    HealthConfig,
    StepGuard,
    StragglerDetector,
    ThermalGuard,
    Watchdog,
)
from mixfleet.train.health.signals import ControlSignals
from mixfleet.train.mixed.rebalance import Rebalancer

__all__ = ["WatchdogCheck", "GuardCheck", "StragglerCheck", "ThermalCheck",
           "SnapshotPacing", "RebalanceCheck", "default_checks", "THERMAL_QUIET_STEPS"]

THERMAL_QUIET_STEPS = 20  # steps after a thermal action before another one (unless critical)
Emit = Callable[..., Any]


class WatchdogCheck(HealthCheck):
    """Beats the hang watchdog after every step (the watchdog's thread acts alone)."""

    def __init__(self, watchdog: Watchdog) -> None:
        self.watchdog = watchdog

    def observe(self, out: StepOutcome) -> Sequence[Action]:
        self.watchdog.beat(out.step)
        return NONE


class GuardCheck(HealthCheck):
    """``rollback_after`` uncommitted steps in a row → roll back and skip their batches."""

    def __init__(self, guard: StepGuard) -> None:
        self.guard = guard
        self.bad_steps: deque[int] = deque(maxlen=64)

    def observe(self, out: StepOutcome) -> Sequence[Action]:
        if out.committed:  # the guard's count of bad steps in a row is back to 0
            return NONE
        if out.reduced:
            self.bad_steps.append(out.step)
        if not self.guard.should_roll_back:
            return NONE
        bad = tuple(sorted(set(list(self.bad_steps)[-self.guard.rollback_after:])))
        return (Rollback(bad),)


class StragglerCheck(HealthCheck):
    """A rank persistently slower than the others (per sample, or per step when the shares
    follow the speeds) is reported, or excluded (drained)."""

    def __init__(self, detector: StragglerDetector, *, weights: Callable[[], list[int]],
                 exclude: bool, emit: Emit, rank: int) -> None:
        self.detector, self.weights, self.exclude = detector, weights, exclude
        self.emit, self.rank = emit, rank

    def observe(self, out: StepOutcome) -> Sequence[Action]:
        if not out.reduced:
            return NONE
        times = out.signals.per_rank("compute_s")
        slow = self.detector.add(times, self.weights())
        if slow is None:
            return NONE
        if self.rank == 0:
            self.emit(Event.STRAGGLER, rank=slow, step=out.step,
                      action="exclude" if self.exclude else "report",
                      compute_s=[round(x, 6) for x in times])
        return (Drain(slow, "straggler"),) if self.exclude else NONE


class ThermalCheck(HealthCheck):
    """This rank's chip temperature → checkpoint now, then cool (pause), shed or drain;
    critical → checkpoint and drain. The job-wide part (checkpoint, drain, shed) rides the
    next step's reduction; cooling pauses only this rank."""

    def __init__(self, guard: ThermalGuard, *, action: str, can_shed: bool, emit: Emit,
                 rank: int) -> None:
        self.guard, self.action, self.can_shed = guard, action, can_shed
        self.emit, self.rank = emit, rank
        self.want_checkpoint = self.want_drain = self.want_shed = False
        self.quiet_until = 0

    def register(self, signals: ControlSignals) -> None:
        signals.register("checkpoint")
        signals.register("drain", per_rank=True)
        signals.register("shed", per_rank=True)

    def publish(self, signals: ControlSignals) -> None:
        if self.want_checkpoint:
            signals.set("checkpoint", 1.0)
        if self.want_drain:
            signals.set("drain", 1.0)
        if self.want_shed:
            signals.set("shed", 1.0)
        self.want_checkpoint = self.want_shed = False  # once; a drain request stays

    def observe(self, out: StepOutcome) -> Sequence[Action]:
        acts: list[Action] = []
        sig = out.signals
        if out.reduced:
            if sig.total("checkpoint") > 0:
                acts.append(Checkpoint("heat"))
            drains = [r for r, v in enumerate(sig.per_rank("drain")) if v > 0]
            if drains:
                acts.append(Drain(drains[0], "heat"))
            acts += [Shed(r) for r, v in enumerate(sig.per_rank("shed")) if v > 0]
        acts += self._local(out.step)
        return acts

    def _local(self, step: int) -> list[Action]:
        g = self.guard
        g.after_step()
        level = g.level()
        if level == "ok" or self.want_drain:
            return []
        if level == "warn" and step < self.quiet_until:
            return []  # acted recently: give the action time to work
        self.quiet_until = step + THERMAL_QUIET_STEPS
        temp = round(g.temperature(), 2)
        self.want_checkpoint = True
        if level == "critical" or self.action == "drain":
            self.want_drain = True  # rides the next reduction: every rank drains then
            self.emit(Event.THERMAL_CRITICAL if level == "critical" else Event.THERMAL_WARNING,
                      rank=self.rank, step=step, temp_c=temp, warn_c=g.warn_c,
                      critical_c=g.critical_c, action="drain")
            return []
        if self.action == "shed" and self.can_shed:
            self.want_shed = True  # every rank moves half this rank's share next step
            self.emit(Event.THERMAL_WARNING, rank=self.rank, step=step, temp_c=temp,
                      warn_c=g.warn_c, action="shed")
            return []
        note = {} if self.action == "cool" else {"note": "shares are equal here (no "
                                                         "[shares]): paused instead"}
        self.emit(Event.THERMAL_WARNING, rank=self.rank, step=step, temp_c=temp,
                  warn_c=g.warn_c, resume_c=g.resume_c, action=self.action, **note)
        return [Pause(g)]


class SnapshotPacing(HealthCheck):
    """Keeps in-memory snapshots under ``max_fraction`` of the step time they cover.

    A snapshot's cost is the time it holds the step loop, the flush of the step records
    before it included. The first snapshot (which also allocates the buffer) is not
    counted; after the next ``first_window`` snapshots, and then after each window of
    ``window``, a rank whose median cost is over ``max_fraction`` x the steps one snapshot
    covers asks for the interval that brings it under (``ceil(cost / (max_fraction x
    step))``, at most ``max_interval``); every rank adopts the largest interval any rank
    asked for, at the same step (a per-rank signal). Snapshots only get sparser;
    ``max_fraction`` 0 turns pacing off."""

    def __init__(self, *, interval: Callable[[], int], max_fraction: float = 0.005,
                 window: int = 10, first_window: int = 4, max_interval: int = 64) -> None:
        self.interval, self.max_fraction = interval, max_fraction
        self.window, self.max_interval = window, max_interval
        self.costs: list[float] = []
        self.step_times: deque[float] = deque(maxlen=200)
        self.want = 0
        self._full: int | None = None  # the size of the current window (None: uncounted)
        self._first_window = first_window
        self._sparser = -1  # the slot of the "sparser" signal (set by register)

    def record(self, cost_s: float) -> None:
        """A snapshot's cost to the step loop."""
        if self._full is None:  # the first snapshot: its cost includes the allocation
            self._full = self._first_window
            return
        self.costs.append(cost_s)
        if len(self.costs) < self._full or not self.step_times or self.max_fraction <= 0:
            return
        cost, step_s = statistics.median(self.costs), statistics.median(self.step_times)
        self.costs.clear()
        self._full = self.window
        need = math.ceil(cost / max(self.max_fraction * step_s, 1e-12))
        if need > self.interval():
            self.want = min(need, self.max_interval)

    def register(self, signals: ControlSignals) -> None:
        signals.register("sparser")  # how many ranks ask (read every step: one number)
        signals.register("snapshot_every", per_rank=True)
        self._sparser = signals.slot("sparser")

    def publish(self, signals: ControlSignals) -> None:
        if self.want:
            signals.set("sparser", 1.0)
            signals.set("snapshot_every", float(self.want))
            self.want = 0

    def observe(self, out: StepOutcome) -> Sequence[Action]:
        self.step_times.append(out.step_s)
        if out.reduced and out.signals.values[self._sparser] > 0 and \
                0 < (n := self.interval()) < self.max_interval:
            want = int(max(out.signals.per_rank("snapshot_every")))
            if want > n:
                return (SparserSnapshots(want, f"a snapshot cost over {100 * self.max_fraction:g}%"
                                               f" of the steps it covered"),)
        return NONE


class RebalanceCheck(HealthCheck):
    """A mixed fleet's rebalance: measured speeds → new shares (a collective on the
    rebalancer's own group, every ``every`` steps on every rank)."""

    def __init__(self, rebalancer: Rebalancer, *, shares: Callable[[], list[int]],
                 total_steps: int) -> None:
        self.rebalancer, self.shares, self.total_steps = rebalancer, shares, total_steps

    def observe(self, out: StepOutcome) -> Sequence[Action]:
        new = self.rebalancer.after_step(out.step, self.shares(), self.total_steps,
                                         out.compute_s)
        if new is None:
            return NONE
        return (SetShares(tuple(new), "rebalance", dict(self.rebalancer.last_details)),)


def default_checks(h: HealthConfig, *, world: int, rank: int, emit: Emit, guard: StepGuard,
                   pacing: SnapshotPacing, watchdog: Watchdog | None = None,
                   thermal: ThermalGuard | None = None,
                   rebalancer: Rebalancer | None = None,
                   shares: Callable[[], list[int]], total_steps: int) -> list[HealthCheck]:
    """The built-in checks of ``[health]``, in the order they observe a step."""
    out: list[HealthCheck] = []
    if watchdog is not None:
        out.append(WatchdogCheck(watchdog))
    if rebalancer is not None:
        out.append(RebalanceCheck(rebalancer, shares=shares, total_steps=total_steps))
    # Mixed fleet: shares follow speeds, so compare step times, not time per sample.
    if world > 1:  # a straggler is slower than the others: one rank has none
        out.append(StragglerCheck(
            StragglerDetector(world=world, window=h.straggler_window,
                              factor=h.straggler_factor, windows=h.straggler_windows),
            weights=shares if rebalancer is None else (lambda: [1] * world),
            exclude=h.straggler_action == "exclude", emit=emit, rank=rank))
    if thermal is not None:
        out.append(ThermalCheck(thermal, action=h.thermal_action,
                                can_shed=rebalancer is not None and world > 1, emit=emit,
                                rank=rank))
    return out + [pacing, GuardCheck(guard)]
