"""Telemetry from a vendor SMI tool (``npu-smi``, ``xpu_smi``, ``ppu-smi``, ``cnmon``,
``amd-smi``, ``rocm-smi``, ``hl-smi``, ``nvidia-smi``), parsed with
:mod:`mixfleet.catalog.smi`.

Starting a process costs milliseconds of CPU, so the tool is run at most every
``min_interval_s`` (default 1 s), at the lowest CPU priority (``nice -n 19``); faster polls
get the cached reading. ``npu-smi info``
prints no clock: the AI core clock comes from ``npu-smi info -t common -i <id>``, one call
per NPU, at most every ``clock_interval_s`` (default 10 s).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Mapping, Sequence

from mixfleet.catalog.base import match_chip
from mixfleet.catalog.detect import TOOLS, Runner, ToolSpec, run_spec, run_tool
from mixfleet.catalog.smi import PARSERS, SmiDevice, SmiParseError, parse_npu_smi_common
from mixfleet.catalog.visible import env_mask, stable_id, visible_devices
from mixfleet.errors import ConfigError
from mixfleet.telemetry.base import Sample, TelemetryReader

__all__ = ["SmiReader", "tool_spec", "run_tool_low_priority"]


def run_tool_low_priority(argv: Sequence[str], timeout_s: float = 10.0) -> str:
    """:func:`run_tool` at the lowest CPU priority (``nice -n 19``, where ``nice`` exists), so
    a sampler's tool never takes CPU time from the training it watches."""
    if shutil.which(argv[0]) is None:
        raise FileNotFoundError(argv[0])
    nice = shutil.which("nice")
    return run_tool([nice, "-n", "19", *argv] if nice else list(argv), timeout_s)


def tool_spec(name: str) -> ToolSpec:
    for spec in TOOLS:
        if spec.name == name:
            return spec
    raise ConfigError(f"unknown SMI tool {name!r}; use one of "
                      f"{', '.join(s.name for s in TOOLS)}")


class SmiReader(TelemetryReader):
    """Polls one vendor tool. A garbled output raises ``SmiParseError`` from ``read``."""

    def __init__(self, tool: str, run: Runner = run_tool_low_priority,
                 min_interval_s: float = 1.0,
                 clock: Callable[[], float] = time.monotonic,
                 environ: Mapping[str, str] | None = None,
                 clock_interval_s: float = 10.0) -> None:
        self.spec = tool_spec(tool)
        self.name = tool
        self._run, self._min, self._clock = run, min_interval_s, clock
        self._env = os.environ if environ is None else environ
        self._last: tuple[float, list[Sample]] | None = None
        self._clock_every = clock_interval_s
        self._clocks: tuple[float, dict[int, float | None]] | None = None
        self._chips: dict[str, str | None] = {}  # device name -> catalog id (parsed once)

    def _chip(self, name: str) -> str | None:
        if name not in self._chips:
            chip = match_chip(name, vendor=self.spec.vendor)
            self._chips[name] = None if chip is None else chip.id
        return self._chips[name]

    def _npu_clocks(self, devs: list[SmiDevice], now: float) -> dict[int, float | None]:
        if self._clocks is not None and now - self._clocks[0] < self._clock_every:
            return self._clocks[1]
        out: dict[int, float | None] = {}
        for d in devs:
            try:
                out[d.index] = parse_npu_smi_common(self._run(
                    ("npu-smi", "info", "-t", "common", "-i", str(d.index))))["clock_mhz"]
            except (SmiParseError, RuntimeError, OSError):
                out[d.index] = None  # an older npu-smi without `-t common`: clock unknown
        self._clocks = (now, out)
        return out

    def read(self) -> list[Sample]:
        now = self._clock()
        if self._last is not None and now - self._last[0] < self._min:
            return self._last[1]
        try:
            text = run_spec(self.spec, self._run)
        except FileNotFoundError:
            raise FileNotFoundError(f"{self.spec.name} is not installed") from None
        devs = PARSERS[self.spec.parser](text)
        clocks = self._npu_clocks(devs, now) if self.spec.name == "npu-smi" else {}
        order = visible_devices(devs, index=[d.index for d in devs], uuid=[d.uuid for d in devs],
                                mask=env_mask(self._env, self.spec.vendor))
        t = time.time()
        out = []
        for d in devs:
            out.append(Sample(
                t=t, device=f"{self.spec.torch_type}:{d.index}",
                chip=self._chip(d.name), source=self.spec.name,
                temp_c=d.temp_c, power_w=d.power_w,
                clock_mhz=clocks.get(d.index, d.clock_mhz) if clocks else d.clock_mhz,
                util_pct=d.util_pct,
                mem_used_bytes=None if d.memory_used_mib is None
                else int(d.memory_used_mib * 2**20), throttle=d.throttle,
                device_id=stable_id(d.uuid, d.bus_id, d.index),
                torch_index=next((k for k, v in enumerate(order) if v is d), None)))
        self._last = (now, out)
        return out
