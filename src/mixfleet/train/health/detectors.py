"""Health of a rank: hang watchdog, NaN/spike guard, straggler detector, thermal guard.

All four decide from data that every rank shares after the step's all-reduce (the control
signals that ride the step's reduction, see :mod:`mixfleet.train.health.signals`), so every
rank reaches the same decision at the same step without an extra collective — except the
watchdog, which by definition acts alone when its rank stops making progress.
"""

from __future__ import annotations

import contextlib
import dataclasses
import faulthandler
import math
import os
import statistics
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

from mixfleet import safefs
from mixfleet.config import Section, field
from mixfleet.config import require as _require
from mixfleet.train.clock import Clock

__all__ = ["HealthConfig", "Watchdog", "StepGuard", "StragglerDetector", "ThermalGuard",
           "HANG_EXIT_CODE"]

HANG_EXIT_CODE = 75


DEFAULT_WARN_C, DEFAULT_CRITICAL_C = 85.0, 95.0  # a real chip whose limits are not set


def thermal_thresholds(warn_c: float | None, critical_c: float | None,
                       profile: Any | None = None) -> tuple[float, float, str]:
    """(warning, critical, where they come from): the configured values, else an emulated
    chip's profile (throttle point - 2, limit - 3), else 85 / 95 degC. The one owner of
    these defaults: the worker's guard and the dashboard's chart both call it."""
    if profile is not None:
        dw, dc, src = profile.throttle_c - 2, profile.limit_c - 3, "emulated chip profile"
    else:
        dw, dc, src = DEFAULT_WARN_C, DEFAULT_CRITICAL_C, "trainer default"
    if warn_c is not None:
        src = "config"
    return (float(dw if warn_c is None else warn_c),
            float(dc if critical_c is None else critical_c), src)


@dataclasses.dataclass(kw_only=True, frozen=True)
class HealthConfig(Section, section="health"):
    """The ``[health]`` table."""

    hang_factor: float = field(20.0, help="a rank hangs when no step completes within "
                                          "hang_factor x the median step time ...", ge=1)
    hang_floor_s: float = field(30.0, help="... or this many seconds, whichever is larger",
                                gt=0)
    nan_guard: bool = field(True, help="skip steps with a non-finite loss or gradient")
    spike_factor: float = field(0.0, help="skip steps whose gradient norm exceeds this x the "
                                          "running median (0: off; else > 1)", ge=0)
    rollback_after: int = field(3, help="skipped steps in a row before rolling back to the "
                                        "last snapshot/checkpoint and skipping those batches",
                                ge=1)
    straggler_window: int = field(20, help="steps per straggler window", ge=2)
    straggler_factor: float = field(2.0, help="a rank slower than the others' median by "
                                              "this factor in a window is slow", gt=1)
    straggler_windows: int = field(5, help="slow windows in a row before acting", ge=1)
    straggler_action: Literal["report", "exclude"] = field(
        "report", help="report (an event), or exclude (drain the rank and block its device)")
    thermal_action: Literal["cool", "shed", "drain"] = field(
        "cool", help="past the warning threshold: cool (pause with back-off), shed (lower "
                     "the share; pause while shares are equal), or drain the device")
    warn_c: float | None = field(None, help="warning temperature (default: the emulated "
                                            "chip's throttle point - 2, else 85)")
    critical_c: float | None = field(None, help="critical temperature: checkpoint and drain "
                                                "(default: the emulated chip's limit - 3, "
                                                "else 95)")
    resume_margin_c: float = field(8.0, help="a paused rank resumes below warn_c - this")

    def __post_init__(self) -> None:
        _require(self.spike_factor == 0 or self.spike_factor > 1, f"health.spike_factor "
                 f"must be 0 (off) or > 1 (got {self.spike_factor}); set [health] "
                 f"spike_factor = 0")
        if self.warn_c is not None and self.critical_c is not None:
            _require(self.warn_c < self.critical_c, f"health.warn_c ({self.warn_c}) must be "
                     f"below health.critical_c ({self.critical_c}); lower warn_c or remove it")


class Watchdog:
    """Exits the process when no step completes within the bound, after dumping stacks.

    ``beat()`` after every step. The bound is ``max(factor x median step time, floor)``;
    on expiry every thread's stack goes to ``stacks_dir/rank{r}.txt``, ``on_hang`` is called
    (events) and the process exits with :data:`HANG_EXIT_CODE`; the launcher restarts
    the group (its peers' collectives fail, or their own watchdogs fire).
    """

    def __init__(self, *, factor: float, floor_s: float, stacks_dir: Path, rank: int,
                 on_hang: Callable[[dict[str, Any]], object],
                 clock: Callable[[], float] = time.monotonic,
                 exit: Callable[[int], None] = os._exit) -> None:
        self.factor, self.floor_s, self.rank = factor, floor_s, rank
        self.stacks_dir, self.on_hang = stacks_dir, on_hang
        self._clock, self._exit = clock, exit
        self._times: deque[float] = deque(maxlen=101)
        self._last = clock()
        self._step = 0
        self._stop = threading.Event()
        self._paused = 0
        self._thread = threading.Thread(target=self._run, name="watchdog", daemon=True)

    def bound(self) -> float:
        med = statistics.median(self._times) if self._times else 0.0
        return max(self.factor * med, self.floor_s)

    def start(self) -> Watchdog:
        self._last = self._clock()
        self._thread.start()
        return self

    def beat(self, step: int) -> None:
        now = self._clock()
        if step > self._step:
            self._times.append(now - self._last)
        self._step, self._last = step, now

    def pause(self) -> None:
        """Suspend (e.g. while deliberately cooling); ``resume()`` restarts the clock."""
        self._paused += 1

    def resume(self) -> None:
        self._paused = max(0, self._paused - 1)
        self._last = self._clock()

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """:meth:`pause` inside, :meth:`resume` on the way out (also on an exception)."""
        self.pause()
        try:
            yield
        finally:
            self.resume()

    def check(self) -> bool:
        """True (and acts) when the bound has passed without a beat."""
        if self._paused:
            return False
        waited, bound = self._clock() - self._last, self.bound()
        if waited <= bound:
            return False
        safefs.make_dir(self.stacks_dir)
        path = self.stacks_dir / f"rank{self.rank}.txt"
        with os.fdopen(safefs.open_append(path), "a") as f:  # never through a link
            f.write(f"--- rank {self.rank}: no step for {waited:.1f}s (bound {bound:.1f}s) "
                    f"after step {self._step} ---\n")
            f.flush()
            faulthandler.dump_traceback(file=f, all_threads=True)
        self.on_hang({"rank": self.rank, "step": self._step, "waited_s": round(waited, 3),
                      "bound_s": round(bound, 3), "stacks": str(path)})
        self._exit(HANG_EXIT_CODE)
        return True

    def _run(self) -> None:
        while not self._stop.wait(min(0.25, self.floor_s / 8)):
            if self.check():
                return

    def stop(self) -> None:
        self._stop.set()


class StepGuard:
    """Decides whether a step's update is committed: finite loss and gradient norm, and
    (optionally) no gradient-norm spike over the running median."""

    def __init__(self, *, nan_guard: bool, spike_factor: float, rollback_after: int) -> None:
        self.nan_guard, self.spike_factor = nan_guard, spike_factor
        self.rollback_after = rollback_after
        self.norms: deque[float] = deque(maxlen=50)
        self.bad_in_a_row = 0

    def verdict(self, loss: float, grad_norm: float) -> str | None:
        """None to commit the step, else the reason it is not committed."""
        reason = None
        if self.nan_guard and not (math.isfinite(loss) and math.isfinite(grad_norm)):
            reason = "non-finite loss or gradient"
        elif (self.spike_factor and len(self.norms) >= 20 and
              grad_norm > self.spike_factor * statistics.median(self.norms)):
            reason = (f"gradient norm {grad_norm:.3g} > {self.spike_factor} x median "
                      f"{statistics.median(self.norms):.3g}")
        if reason is None:
            if self.spike_factor:  # the norms matter only to spike detection
                self.norms.append(grad_norm)
            self.bad_in_a_row = 0
        else:
            self.bad_in_a_row += 1
        return reason

    def reset(self) -> None:
        """Forget the bad steps in a row (after a rollback)."""
        self.bad_in_a_row = 0

    @property
    def should_roll_back(self) -> bool:
        return self.bad_in_a_row >= self.rollback_after

    def state_dict(self) -> dict[str, Any]:
        # the recent norms matter only to spike detection (kept out of every snapshot else)
        return {"norms": list(self.norms) if self.spike_factor else []}

    def load_state_dict(self, d: dict[str, Any]) -> None:
        self.norms = deque(d.get("norms", []), maxlen=50)
        self.bad_in_a_row = 0


class StragglerDetector:
    """Flags a rank whose compute time per sample exceeds the others' median by a factor
    in ``windows`` consecutive windows. Fed the same per-rank times on every rank."""

    def __init__(self, *, world: int, window: int, factor: float, windows: int) -> None:
        self.world, self.window, self.factor, self.windows = world, window, factor, windows
        self._sum = [0.0] * world
        self._n = 0
        self.slow_count = [0] * world

    def add(self, per_rank_s: list[float], shares: list[int]) -> int | None:
        """Add one step's per-rank compute times; the rank to act on, or None."""
        for r, t in enumerate(per_rank_s):
            self._sum[r] += t / max(1, shares[r])
        self._n += 1
        if self._n < self.window or self.world < 2:
            return None
        per_sample = self._sum
        self._sum, self._n = [0.0] * self.world, 0
        flagged = None
        for r in range(self.world):
            others = [per_sample[q] for q in range(self.world) if q != r]
            slow = per_sample[r] > self.factor * statistics.median(others)
            self.slow_count[r] = self.slow_count[r] + 1 if slow else 0
            if self.slow_count[r] >= self.windows and flagged is None:
                flagged = r
        return flagged


class ThermalGuard:
    """Watches one rank's chip temperature and says what to do about it.

    ``read()`` returns the chip's temperature (or None). An injected overheat adds a
    temperature offset that decays while the chip rests (``cool``) and slowly otherwise.
    """

    def __init__(self, *, warn_c: float, critical_c: float, resume_c: float,
                 read: Callable[[], float | None]) -> None:
        self.warn_c, self.critical_c, self.resume_c = warn_c, critical_c, resume_c
        self._read = read
        self.offset_c = 0.0
        self.base_c = 45.0  # a device without a reading sits here

    def temperature(self) -> float:
        t = self._read()
        return (self.base_c if t is None else t) + self.offset_c

    def inject(self, celsius_above_warn: float) -> None:
        self.offset_c = max(0.0, self.warn_c + celsius_above_warn - self.temperature()
                            + self.offset_c)

    def after_step(self) -> None:
        self.offset_c *= 0.995  # heat dissipates slowly under load

    def rest(self, seconds: float) -> None:
        self.offset_c *= math.exp(-seconds / 2.0)  # and fast at rest

    def cool(self, clock: Clock, idle: Callable[[float], None] | None = None) -> float:
        """Wait with back-off (0.05 s doubling to 1 s) until the chip is below
        ``resume_c``; ``idle(virtual_s)`` lets an emulated chip rest. Seconds waited."""
        t0, wait = clock.monotonic(), 0.05
        while self.temperature() >= self.resume_c:
            clock.sleep(wait)
            if idle is not None:
                idle(20 * wait)
            self.rest(wait)
            wait = min(2 * wait, 1.0)
        return clock.monotonic() - t0

    def level(self) -> Literal["ok", "warn", "critical"]:
        t = self.temperature()
        if t >= self.critical_c:
            return "critical"
        return "warn" if t >= self.warn_c else "ok"
