"""Telemetry of emulated chips (``emu:<chip-id>``); every sample is marked ``emulated``."""

from __future__ import annotations

import time
from collections.abc import Sequence

from mixfleet.emulate.device import EmulatedDevice
from mixfleet.telemetry.base import Sample, TelemetryReader

__all__ = ["EmulatedReader"]


class EmulatedReader(TelemetryReader):
    """Reads each emulated device's thermal state (thread-safe snapshots)."""

    name = "emulated"

    def __init__(self, devices: Sequence[EmulatedDevice]) -> None:
        self.devices = list(devices)

    def read(self) -> list[Sample]:
        t = time.time()
        out = []
        for d in self.devices:
            s = d.snapshot()
            out.append(Sample(t=t, device=d.device_string, chip=d.chip_id, source="emulated",
                              temp_c=s.temp_c, power_w=s.power_w, clock_mhz=s.clock_mhz,
                              util_pct=s.util_pct,
                              throttle=("emulated-thermal",) if s.throttled else (),
                              emulated=True))
        return out
