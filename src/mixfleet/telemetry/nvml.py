"""Telemetry from NVML (``nvidia-ml-py``, optional): Nvidia GPUs only."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

from mixfleet.catalog.base import match_chip
from mixfleet.catalog.visible import env_mask, stable_id, visible_devices
from mixfleet.errors import DeviceError
from mixfleet.telemetry.base import Sample, TelemetryReader

__all__ = ["NvmlReader", "THROTTLE_BITS"]

#: NVML clock-event (throttle) reason bits (nvml.h, nvmlClocksEventReason*).
THROTTLE_BITS = {0x1: "gpu-idle", 0x2: "applications-clocks", 0x4: "sw-power-cap",
                 0x8: "hw-slowdown", 0x10: "sync-boost", 0x20: "sw-thermal",
                 0x40: "hw-thermal", 0x80: "hw-power-brake", 0x100: "display-clocks"}


def throttle_names(mask: int) -> tuple[str, ...]:
    return tuple(name for bit, name in THROTTLE_BITS.items() if mask & bit)


class NvmlReader(TelemetryReader):
    """Temperature, power, SM clock, utilization, memory and throttle reasons via NVML."""

    name = "nvml"

    def __init__(self, indices: Sequence[int] | None = None, nvml: Any = None,
                 environ: Mapping[str, str] | None = None) -> None:
        if nvml is None:
            try:
                import pynvml

                nvml = pynvml
            except ImportError:
                raise DeviceError("telemetry reader 'nvml' needs nvidia-ml-py; install "
                                  "mixfleet[nvidia] or choose another reader") from None
        self._nv = nvml
        try:
            nvml.nvmlInit()
        except Exception as e:
            raise DeviceError(f"NVML is not available ({e}); use reader = \"auto\" or "
                              f"\"none\" on machines without Nvidia GPUs") from None
        count = nvml.nvmlDeviceGetCount()
        self._idx = list(range(count)) if indices is None else list(indices)
        self._handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in self._idx]
        names = [nvml.nvmlDeviceGetName(h) for h in self._handles]
        chips = [match_chip(n if isinstance(n, str) else n.decode(), vendor="nvidia")
                 for n in names]
        self._chips = [None if c is None else c.id for c in chips]
        uuids = [self._text("nvmlDeviceGetUUID", h) for h in self._handles]
        buses = [self._bus(h) for h in self._handles]
        self._ids = [stable_id(u, b, i) for u, b, i in zip(uuids, buses, self._idx, strict=True)]
        order = visible_devices(list(range(len(self._idx))), index=self._idx, uuid=uuids,
                                mask=env_mask(os.environ if environ is None else environ,
                                              "nvidia"))
        self._torch = [order.index(k) if k in order else None for k in range(len(self._idx))]
        self._reasons = getattr(nvml, "nvmlDeviceGetCurrentClocksEventReasons", None) or \
            getattr(nvml, "nvmlDeviceGetCurrentClocksThrottleReasons", None)

    def _text(self, fn: str, h: Any) -> str | None:
        v = self._get(fn, h)
        return None if v is None else v if isinstance(v, str) else bytes(v).decode()

    def _bus(self, h: Any) -> str | None:
        info = self._get("nvmlDeviceGetPciInfo", h)
        bus = getattr(info, "busId", None)
        return None if bus is None else (bus if isinstance(bus, str) else bus.decode()).lower()

    def _get(self, fn: str, *args: Any) -> Any:
        try:
            return getattr(self._nv, fn)(*args)
        except Exception:  # NVMLError_NotSupported and friends: unknown, not fatal
            return None

    def read(self) -> list[Sample]:
        now = time.time()
        out = []
        for i, h, chip, did, tix in zip(self._idx, self._handles, self._chips, self._ids,
                                        self._torch, strict=True):
            temp = self._get("nvmlDeviceGetTemperature", h, 0)  # NVML_TEMPERATURE_GPU
            power = self._get("nvmlDeviceGetPowerUsage", h)
            clock = self._get("nvmlDeviceGetClockInfo", h, 1)  # NVML_CLOCK_SM
            util = self._get("nvmlDeviceGetUtilizationRates", h)
            mem = self._get("nvmlDeviceGetMemoryInfo", h)
            mask = None
            if self._reasons is not None:
                try:
                    mask = self._reasons(h)
                except Exception:
                    mask = None
            out.append(Sample(
                t=now, device=f"cuda:{i}", chip=chip, source="nvml",
                temp_c=None if temp is None else float(temp),
                power_w=None if power is None else power / 1000.0,
                clock_mhz=None if clock is None else float(clock),
                util_pct=None if util is None else float(util.gpu),
                mem_used_bytes=None if mem is None else int(mem.used),
                throttle=() if mask is None else throttle_names(int(mask)),
                device_id=did, torch_index=tix))
        return out

    def close(self) -> None:
        try:
            self._nv.nvmlShutdown()
        except Exception:
            pass
