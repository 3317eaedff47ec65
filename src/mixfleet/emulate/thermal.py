"""Seeded thermal and failure model of one emulated chip, in virtual seconds.

Temperature relaxes toward ``ambient + (load_temp - ambient) * load * clock`` with time
constant ``tau_s`` (plus seeded noise). At ``throttle_c`` the clock drops to
``throttle_clock`` (so the chip cools and steps slow down) until the temperature falls below
``recover_c``. Within ``crash_band_c`` of ``limit_c`` a crash hazard rises quadratically to
``crash_rate_per_s``; independently, a constant hazard ``1 / mtbf`` fails the device.

Everything is a pure function of the seed and the sequence of ``advance(dt, load)`` calls,
so every run with the same seed and the same steps repeats exactly.
"""

from __future__ import annotations

import dataclasses
import math
import random
from typing import Any, Literal

from mixfleet.emulate.profile import EmuProfile
from mixfleet.runs import Event

__all__ = ["ThermalModel", "ThermalState", "FaultKind", "EVENT_OF_KIND"]

FaultKind = Literal["thermal-crash", "failure"]

EVENT_OF_KIND = {"throttle-start": Event.THROTTLE_START, "throttle-end": Event.THROTTLE_END,
                 "thermal-crash": Event.THERMAL_CRASH, "failure": Event.FAILURE}
"""The ``events.jsonl`` name of each kind of event an emulated chip reports (its throttle
episodes and the faults above)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class ThermalState:
    """The model after one ``advance``."""

    time_s: float
    temp_c: float
    clock_factor: float
    throttled: bool
    fault: FaultKind | None = None


class ThermalModel:
    """Heat, throttle and failure hazard of one chip (see the module docstring)."""

    def __init__(self, profile: EmuProfile, seed: int | str = 0, faults: bool = True) -> None:
        self.profile = profile
        self.faults = faults
        self._rng = random.Random(f"thermal:{profile.chip}:{seed}")
        self.state = ThermalState(time_s=0.0, temp_c=profile.ambient_c, clock_factor=1.0,
                                  throttled=False)

    def crash_hazard(self, temp_c: float) -> float:
        """Crash hazard per second at ``temp_c``."""
        p = self.profile
        x = (temp_c - (p.limit_c - p.crash_band_c)) / p.crash_band_c
        return 0.0 if x <= 0 else p.crash_rate_per_s * x * x

    def advance(self, dt: float, load: float = 1.0) -> ThermalState:
        """Advance ``dt`` virtual seconds at ``load`` in [0, 1]; returns the new state."""
        p, s = self.profile, self.state
        target = p.ambient_c + (p.load_temp_c - p.ambient_c) * load * s.clock_factor
        noise = self._rng.gauss(0.0, 1.0) * p.noise_c
        u_crash, u_fail = self._rng.random(), self._rng.random()
        temp = target + (s.temp_c - target) * math.exp(-dt / p.tau_s) + noise
        throttled = temp >= p.throttle_c if not s.throttled else temp > p.recover_c
        fault: FaultKind | None = None
        if self.faults:
            if u_crash < 1.0 - math.exp(-self.crash_hazard(temp) * dt):
                fault = "thermal-crash"
            elif p.mtbf_h is not None and u_fail < 1.0 - math.exp(-dt / (p.mtbf_h * 3600.0)):
                fault = "failure"
        self.state = ThermalState(time_s=s.time_s + dt, temp_c=temp, throttled=throttled,
                                  clock_factor=p.throttle_clock if throttled else 1.0,
                                  fault=fault)
        return self.state

    def state_dict(self) -> dict[str, Any]:
        return {"state": dataclasses.asdict(self.state), "rng": self._rng.getstate()}

    def load_state_dict(self, d: dict[str, Any]) -> None:
        self.state = ThermalState(**d["state"])
        rng = d["rng"]
        self._rng.setstate((rng[0], tuple(rng[1]), rng[2]))
