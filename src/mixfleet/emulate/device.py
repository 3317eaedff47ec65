"""An emulated chip: real computation on the CPU, padded to the chip's step time.

API: the package docstring (:mod:`mixfleet.emulate`). A step's budget is the profile's
:class:`~mixfleet.emulate.pricing.StepCost` over its micro-batches; only the work term is
divided by the relative speed and clock factor (a fixed cost is the chip's own). Time in
priced transfers (:class:`~mixfleet.emulate.links.LinkPacer`) is added to the budget,
never counted as compute. See ``docs/emulation.md``.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import math
import os
import statistics
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from mixfleet.catalog.base import get_chip
from mixfleet.catalog.table import ThroughputRow
from mixfleet.config import Section, field
from mixfleet.emulate.links import LinkPacer
from mixfleet.emulate.pricing import StepCost
from mixfleet.emulate.profile import EmuProfile, get_profile, load_profiles
from mixfleet.emulate.records import EmuSnapshot, StepReport
from mixfleet.emulate.speed import parse_emu_device, relative_speeds
from mixfleet.emulate.thermal import EVENT_OF_KIND, FaultKind, ThermalModel
from mixfleet.errors import ConfigError, MixfleetError

__all__ = ["EmulationConfig", "EmulatedDevice", "EmulatedFault"]


@dataclasses.dataclass(kw_only=True, frozen=True)
class EmulationConfig(Section, section="emulate"):
    """How emulated chips run (the ``[emulate]`` table of a config)."""

    seed: int = field(0, help="seed of the thermal and failure models")
    virtual_step_s: float = field(1.0, help="virtual seconds each step advances the thermal "
                                  "and failure clocks; larger = heat and faults sooner", gt=0)
    headroom: float | None = field(None, help="budget = calibrated step time x headroom / "
                                   "speed; none = 1.5 x max(1, local_ranks / CPU cores)",
                                   ge=1, example=1.2)
    calibration_steps: int = field(5, help="steps whose median compute time calibrates the "
                                   "budget of relative speed 1.0", ge=1)
    local_ranks: int = field(1, help="emulated ranks sharing this machine's CPU cores", ge=1)
    faults: bool = field(True, help="draw thermal crashes and MTBF failures")
    attempt: int = field(0, help="restart count, mixed into the seed so a restarted worker "
                         "does not replay the same fault", ge=0)

    def resolved_headroom(self) -> float:
        return self.headroom if self.headroom is not None else \
            1.5 * max(1.0, self.local_ranks / (os.cpu_count() or 1))


class EmulatedFault(MixfleetError):
    """The emulated chip crashed (heat) or failed (MTBF) at the end of a step."""

    def __init__(self, chip: str, kind: FaultKind, step: int, temp_c: float) -> None:
        super().__init__(f"emulated {chip} {kind} at step {step} ({temp_c:.1f} C)")
        self.chip, self.kind, self.step, self.temp_c = chip, kind, step, temp_c


class EmulatedDevice:
    """One ``emu:<chip-id>`` device. Not thread-safe except :meth:`snapshot`."""

    label = "emulated"

    def __init__(self, chip_id: str, *, speed: float = 1.0, profile: EmuProfile | None = None,
                 config: EmulationConfig | None = None, rank: int = 0,
                 slot: str | None = None, clock: Callable[[], float] = time.perf_counter,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if not 0 < speed <= 1:
            raise ConfigError(f"relative speed of emu:{chip_id} is {speed!r}; use a value in "
                              f"(0, 1] (1.0 = the fastest emulated chip)")
        self.chip_id = chip_id
        self.speed = speed
        self.profile = get_profile(chip_id) if profile is None else profile
        self.config = EmulationConfig() if config is None else config
        self.rank = rank
        self.slot = slot  # the physical device it stands for: its heat is that device's
        self._clock, self._sleep = clock, sleep
        seed = f"{self.config.seed}:{rank}:{self.config.attempt}"
        self.model = ThermalModel(self.profile, seed=seed, faults=self.config.faults)
        self._tdp = get_chip(chip_id).tdp_w.value
        self._headroom = self.config.resolved_headroom()
        self._base_s: float | None = None
        self._calib: list[float] = []
        self._pinned = False  # calibrate() fixed the base: never lowered
        self._recent = collections.deque[float](maxlen=self.config.calibration_steps)
        self.cost: StepCost = self.profile.step_cost("samples")
        self._unit_s: float | None = None  # absolute seconds per work unit (as_model)
        self._per_sample = 1.0  # work units per sample (tokens under as_model)
        self.links: LinkPacer | None = None
        self.labels: dict[str, Any] = {}  # what every record says of the pace (as_model)
        self._comm0 = (0.0, 0.0)  # links.total_s and priced_s at step_begin
        self._comm_pad = 0.0  # priced transfer time before the padding
        self._fixed = 0.0
        self.last_report: StepReport | None = None
        self._t0: float | None = None
        self._tc: float | None = None  # when the real computation started (pace_first)
        self._computes: collections.deque[float] = collections.deque(maxlen=8)
        self._padded = False
        self._external = False  # a pipeline's chunks are paced (emulate/stagepace.py)
        self._last = (0.0, 0.0, 0.0)  # compute, pad, budget of the current step
        self._forced: tuple[int, float] | None = None  # (steps left, clock) of a throttle
        self.step_count = 0
        self._dead: EmulatedFault | None = None
        self._events: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._snap = self._make_snapshot(load=0.0)

    @classmethod
    def create(cls, device: str, *, peers: Sequence[str] | None = None,
               config: EmulationConfig | None = None, rank: int = 0,
               table: Sequence[ThroughputRow] | None = None, workload: str | None = None,
               profiles_path: str | None = None, slot: str | None = None) -> EmulatedDevice:
        """``emu:<chip-id>`` with its speed relative to the fastest chip among ``peers``."""
        chip_id = parse_emu_device(device)
        chips = [parse_emu_device(p) for p in (peers or [device]) if p.startswith("emu:")]
        profiles = load_profiles(profiles_path)
        speeds = relative_speeds(sorted({*chips, chip_id}), table=table, workload=workload,
                                 profiles=profiles)
        return cls(chip_id, speed=speeds[chip_id], profile=profiles[chip_id], config=config,
                   rank=rank, slot=slot)

    @property
    def torch_device(self) -> str:
        return "cpu"

    @property
    def device_string(self) -> str:
        return f"emu:{self.chip_id}"

    def calibrate(self, base_s: float) -> None:
        """Fix the step time of relative speed 1.0 (else the fastest early step sets it)."""
        if base_s <= 0:
            raise ConfigError(f"calibrated step time must be > 0 (got {base_s!r})")
        self._base_s = base_s
        self._calib = [base_s] * self.config.calibration_steps
        self._pinned = True

    def pace_absolute(self, unit_s: float, cost: StepCost, per_sample: float = 1.0,
                      labels: dict[str, Any] | None = None) -> None:
        """Pace by absolute figures instead of a calibration (``as_model``): ``unit_s``
        seconds per work unit at full efficiency and relative speed 1 (the chip's own
        figure: the relative speed then only carries a ``[[ranks]] speed`` override),
        ``cost`` the step-cost shape in those units, ``per_sample`` units per sample;
        ``labels`` go into every record of the run (``emulated_as``, ``time_scale``)."""
        if unit_s <= 0 or per_sample <= 0:
            raise ConfigError(f"pace needs unit_s, per_sample > 0 (got {unit_s}, {per_sample})")
        self._unit_s, self.cost, self._per_sample = unit_s, cost, per_sample
        self.labels = dict(labels or {})
        self.calibrate(unit_s)

    def attach_links(self, links: LinkPacer | None) -> None:
        """The pacer of this rank's transfers (their price is added to the budget)."""
        self.links = links

    def _comm(self, priced: bool = False) -> float:
        """Time in transfers this step (``priced``: their priced part alone)."""
        lk = self.links
        return 0.0 if lk is None else (lk.priced_s - self._comm0[1] if priced
                                       else lk.total_s - self._comm0[0])

    def step_begin(self) -> None:
        """Mark the start of a step's computation (raises if the device is dead)."""
        if self._dead is not None:
            raise self._dead
        if self.links is not None:
            self._comm0 = (self.links.total_s, self.links.priced_s)
        self._comm_pad = self._fixed = 0.0
        self._t0 = self._clock()
        self._tc = None
        self._padded = False
        self._last = (0.0, 0.0, 0.0)

    def _sizes(self, work: float, micro: Sequence[float] | None) -> list[float]:
        return [work] if micro is None else [b * self._per_sample for b in micro if b > 0]

    def _cost(self, micro: Sequence[float] | None) -> StepCost:
        # without micro-batch sizes (work = "one step") the efficiency curve cannot apply
        return self.cost if micro is not None or self.cost.efficiency_exponent == 0 else \
            dataclasses.replace(self.cost, efficiency_exponent=0.0)

    def budget(self, work: float, micro: Sequence[float] | None = None) -> float:
        """The step cost of ``micro`` (micro-batch sizes in samples; None: one micro-batch
        of ``work`` units) at the current speed and clock (calibrated first)."""
        assert self._base_s is not None
        unit = self._unit_s if self._unit_s is not None else self._base_s * self._headroom
        return self._cost(micro).step_s(self._sizes(work, micro),
                                        unit / (self.speed * self._clock_factor()))

    def fixed_s(self, work: float, micro: Sequence[float] | None = None) -> float:
        """The fixed costs in :meth:`budget` (per step, and per micro-batch)."""
        c = self.cost
        return c.step_fixed_s + c.microbatch_fixed_s * len(self._sizes(work, micro))

    def pace_first(self, work: float, micro: Sequence[float] | None = None) -> None:
        """Before the step's real computation: when the budget is known (calibrated),
        wait first and compute at its end, so that the real computation finishes just
        before the budget does (twice the recent real compute time ahead, plus 2 ms).

        The chip's step takes its budget either way; what changes is when the host
        CPU does the emulation's real work: not right after the collective, where on a
        host with fewer cores than ranks it would hold back a rank still finishing it.
        """
        if self._t0 is None or self._base_s is None or \
                len(self._calib) < self.config.calibration_steps or not self._computes:
            return
        lead = self.budget(work, micro) - 2 * max(self._computes) - 0.002
        end = self._t0 + lead
        if end > self._clock():
            self._sleep(end - self._clock())
        self._tc = self._clock()

    def pace_externally(self) -> None:
        """The step's time comes from elsewhere (a pipeline's paced chunks): the step is
        not padded; heat, hazards and throttling advance as usual."""
        self._external = True

    def clock_factor(self) -> float:
        """The current clock factor (thermal throttling or an injected episode)."""
        return self._clock_factor()

    def _clock_factor(self) -> float:
        forced = self._forced[1] if self._forced is not None else 1.0
        return min(self.model.state.clock_factor, forced)

    def _pad(self, work: float, micro: Sequence[float] | None = None) -> None:
        """Calibrate on the compute so far (per unit of ``work``) and pad to the budget
        plus the priced time of the transfers so far."""
        if self._t0 is None:
            raise RuntimeError("step_end() or compute_done() without step_begin()")
        now = self._clock()
        comm = self._comm()
        # the real work, priced transfers excluded
        compute = max(0.0, now - (self._tc if self._tc is not None else self._t0) - comm)
        self._computes.append(compute)
        if len(self._calib) < self.config.calibration_steps:
            self._calib.append(compute / work)
            self._base_s = statistics.median(self._calib)
        elif not self._pinned:  # contention only slows: lower the base, never raise it
            self._recent.append(compute / work)
            if len(self._recent) == self._recent.maxlen:
                self._base_s = min(self._base_s or math.inf, statistics.median(self._recent))
        budget = self.budget(work, micro)
        # priced transfers add their price (waits for late ranks are host noise: absorbed)
        self._comm_pad, self._fixed = self._comm(priced=True), self.fixed_s(work, micro)
        end = self._t0 + budget + self._comm_pad
        pad = end - now
        if pad > 0:
            self._sleep(pad)
            while self._clock() < end - 1e-4:  # sleep() may return early
                self._sleep(end - self._clock())
        self._padded = True
        self._last = (compute, max(0.0, budget - compute), budget)

    def compute_done(self, work: float = 1.0, micro: Sequence[float] | None = None) -> None:
        """The step's computation ended (before its collective): pad to the budget now.

        ``work`` scales the budget (e.g. the samples of this rank's share, with the base
        then in seconds per sample). Padding here, before the all-reduce, makes a slow chip
        arrive late at the collective as a real one would; ``step_end`` then only advances
        heat and hazards. Use either this (with a work unit) or plain ``step_end``.
        ``micro``: the sizes (samples) of the step's micro-batches, summing to ``work``;
        each pays the micro-batch fixed cost and the efficiency curve.
        """
        if work <= 0:
            raise ValueError(f"work must be > 0 (got {work!r})")
        self._pad(work, micro)

    def force_throttle(self, steps: int, clock: float) -> None:
        """Throttle the clock to ``clock`` for the next ``steps`` steps (injected episode)."""
        if steps < 1 or not 0 < clock <= 1:
            raise ValueError(f"force_throttle needs steps >= 1 and clock in (0, 1] "
                             f"(got {steps}, {clock})")
        self._forced = (steps, clock)
        self._events.append({"kind": "throttle-start", "chip": self.chip_id, "rank": self.rank,
                             "step": self.step_count, "forced": True, "clock": clock,
                             "emulated": True})

    def step_end(self) -> StepReport:
        """Pad the step to its budget, advance heat and hazards; raise on a fault."""
        if not self._padded and self._external:
            assert self._t0 is not None
            took = self._clock() - self._t0
            self._last = (took, 0.0, took)
        elif not self._padded:
            self._pad(1.0)
        self._t0 = None
        compute, pad, budget = self._last
        st = self.model.state
        clock_factor = self._clock_factor()
        if self._forced is not None:
            left = self._forced[0] - 1
            self._forced = (left, self._forced[1]) if left > 0 else None
            if self._forced is None:
                self._events.append({"kind": "throttle-end", "chip": self.chip_id,
                                     "rank": self.rank, "step": self.step_count + 1,
                                     "forced": True, "emulated": True})
        self.step_count += 1
        was = st.throttled
        new = self.model.advance(self.config.virtual_step_s, load=1.0)
        with self._lock:
            self._snap = self._make_snapshot(load=1.0)
        if new.throttled != was:
            self._events.append({"kind": "throttle-start" if new.throttled else "throttle-end",
                                 "chip": self.chip_id, "rank": self.rank,
                                 "step": self.step_count, "temp_c": round(new.temp_c, 2),
                                 "emulated": True})
        report = StepReport(step=self.step_count, compute_s=compute, pad_s=pad,
                            budget_s=budget, temp_c=new.temp_c, clock_factor=clock_factor,
                            throttled=st.throttled or clock_factor < st.clock_factor,
                            fixed_s=self._fixed, comm_s=self._comm(),
                            comm_in_compute_s=self._comm_pad)
        self.last_report = report
        if new.fault is not None:
            self._dead = EmulatedFault(self.chip_id, new.fault, self.step_count, new.temp_c)
            self._events.append({"kind": new.fault, "chip": self.chip_id, "rank": self.rank,
                                 "step": self.step_count, "temp_c": round(new.temp_c, 2),
                                 "emulated": True})
            raise self._dead
        return report

    def end_step(self, emit: Callable[..., Any], **fields: Any) -> None:
        """:meth:`step_end`, then its events through ``emit(kind, **event, **fields)``
        (named by :data:`EVENT_OF_KIND`), also when it raises."""
        try:
            self.step_end()
        finally:
            for ev in self.drain_events():
                emit(EVENT_OF_KIND[str(ev.pop("kind"))], **{**ev, **fields})

    @contextlib.contextmanager
    def step(self) -> Iterator[None]:
        """``with device.step(): ...`` wraps one training step (compute, then padding)."""
        self.step_begin()
        yield
        self.step_end()

    def idle(self, virtual_s: float) -> None:
        """Let the chip cool for ``virtual_s`` virtual seconds (no wall time passes)."""
        if virtual_s > 0:
            self.model.advance(virtual_s, load=0.0)
            with self._lock:
                self._snap = self._make_snapshot(load=0.0)

    def _make_snapshot(self, load: float) -> EmuSnapshot:
        s = self.model.state
        power = None if self._tdp is None else \
            self._tdp * (0.2 + 0.8 * load * s.clock_factor)
        return EmuSnapshot(chip=self.chip_id, temp_c=s.temp_c, power_w=power,
                           clock_mhz=self.profile.base_clock_mhz * s.clock_factor,
                           util_pct=100.0 * load, throttled=s.throttled, step=self.step_count,
                           virtual_time_s=s.time_s)

    def snapshot(self) -> EmuSnapshot:
        """The latest telemetry (safe to call from a sampler thread)."""
        with self._lock:
            return self._snap

    def drain_events(self) -> list[dict[str, Any]]:
        """Throttle and fault events since the last call (for ``events.jsonl``)."""
        out, self._events = self._events, []
        return out

    def state_dict(self) -> dict[str, Any]:
        """Heat, calibration, step count and an injected throttle episode in progress (a
        resumed chip is as hot and as throttled as when it was saved). The state of the
        physical device ``slot``: the checkpoint restores it only onto the same one."""
        return {"model": self.model.state_dict(), "base_s": self._base_s,
                "calib": list(self._calib), "step": self.step_count,
                "forced": list(self._forced) if self._forced is not None else None}

    def load_state_dict(self, d: dict[str, Any]) -> None:
        self.model.load_state_dict(d["model"])
        self._base_s, self._calib = d["base_s"], list(d["calib"])
        self.step_count = d["step"]
        forced = d.get("forced")
        self._forced = (int(forced[0]), float(forced[1])) if forced else None
        with self._lock:
            self._snap = self._make_snapshot(load=0.0)
