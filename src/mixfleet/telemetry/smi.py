"""Telemetry from a vendor SMI tool (``npu-smi``, ``xpu_smi``, ``ppu-smi``, ``cnmon``,
``nvidia-smi``), parsed with :mod:`mixfleet.catalog.smi`.

Starting a process costs milliseconds of CPU, so the tool is run at most every
``min_interval_s`` (default 1 s); faster polls get the cached reading.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from mixfleet.catalog.base import match_chip
from mixfleet.catalog.detect import TOOLS, Runner, ToolSpec, run_tool
from mixfleet.catalog.smi import PARSERS
from mixfleet.errors import ConfigError
from mixfleet.telemetry.base import Sample, TelemetryReader

__all__ = ["SmiReader", "tool_spec"]


def tool_spec(name: str) -> ToolSpec:
    for spec in TOOLS:
        if spec.name == name:
            return spec
    raise ConfigError(f"unknown SMI tool {name!r}; use one of "
                      f"{', '.join(s.name for s in TOOLS)}")


class SmiReader(TelemetryReader):
    """Polls one vendor tool. A garbled output raises ``SmiParseError`` from ``read``."""

    def __init__(self, tool: str, run: Runner = run_tool, min_interval_s: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.spec = tool_spec(tool)
        self.name = tool
        self._run, self._min, self._clock = run, min_interval_s, clock
        self._last: tuple[float, list[Sample]] | None = None

    def read(self) -> list[Sample]:
        now = self._clock()
        if self._last is not None and now - self._last[0] < self._min:
            return self._last[1]
        text = None
        for argv in self.spec.commands:
            try:
                text = self._run(argv)
                break
            except FileNotFoundError:
                continue
        if text is None:
            raise FileNotFoundError(f"{self.spec.name} is not installed")
        devs = PARSERS[self.spec.parser](text)
        t = time.time()
        out = []
        for d in devs:
            chip = match_chip(d.name, vendor=self.spec.vendor)
            out.append(Sample(
                t=t, device=f"{self.spec.torch_type}:{d.index}",
                chip=None if chip is None else chip.id, source=self.spec.name,
                temp_c=d.temp_c, power_w=d.power_w, clock_mhz=d.clock_mhz, util_pct=d.util_pct,
                mem_used_bytes=None if d.memory_used_mib is None
                else int(d.memory_used_mib * 2**20), throttle=d.throttle))
        self._last = (now, out)
        return out
