"""What an emulated chip reports: one step (:class:`StepReport`) and its telemetry
(:class:`EmuSnapshot`); both always say ``emulated``."""

from __future__ import annotations

import dataclasses

__all__ = ["StepReport", "EmuSnapshot"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class StepReport:
    """What one emulated step did (``emulated`` is always true)."""

    step: int
    compute_s: float  # the real computation (priced transfers excluded)
    pad_s: float
    budget_s: float  # the step cost (fixed costs included, priced transfers not)
    temp_c: float
    clock_factor: float
    throttled: bool
    fixed_s: float = 0.0  # the budget's fixed costs (per step and per micro-batch)
    comm_s: float = 0.0  # time in priced transfers during the whole step (waits included)
    comm_in_compute_s: float = 0.0  # priced transfer time before the padding (added to it)
    emulated: bool = True


@dataclasses.dataclass(frozen=True, kw_only=True)
class EmuSnapshot:
    """Telemetry of an emulated chip (read by the emulated telemetry reader)."""

    chip: str
    temp_c: float
    clock_mhz: float
    power_w: float | None
    util_pct: float
    throttled: bool
    step: int
    virtual_time_s: float
    emulated: bool = True
