"""Telemetry: one sample shape, one reader interface.

A :class:`TelemetryReader` returns the current :class:`Sample` of each device it watches:
temperature, power, core clock, utilization, memory used and throttle reasons where the
vendor exposes them (``None`` / empty where it does not). Readers: NVML
(:mod:`.nvml`), the vendors' SMI tools parsed (:mod:`.smi`), emulated chips
(:mod:`.emulated`), and :class:`NullReader`. :class:`mixfleet.telemetry.Sampler` polls a
reader on a background thread.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Any

from mixfleet.config import Section, field

__all__ = ["Sample", "TelemetryReader", "NullReader", "TelemetryConfig", "READERS"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class Sample:
    """One reading of one device."""

    t: float  # unix time of the reading
    device: str  # "cuda:0", "npu:1", "emu:kunlun-p800", ...
    chip: str | None
    source: str  # "nvml", "npu-smi", "emulated", ...
    temp_c: float | None = None
    power_w: float | None = None
    clock_mhz: float | None = None
    util_pct: float | None = None
    mem_used_bytes: int | None = None
    throttle: tuple[str, ...] = ()
    emulated: bool = False
    device_id: str | None = None  # stable id: UUID, "pci:<bus id>" or "index:<tool index>"
    torch_index: int | None = None  # the index this process's torch gives it (its mask)

    def to_record(self) -> dict[str, Any]:
        """The ``metrics.jsonl`` record: ``{"kind": "telemetry", ...}``."""
        d = dataclasses.asdict(self)
        d["throttle"] = list(self.throttle)
        return {"kind": "telemetry", **d}


class TelemetryReader(abc.ABC):
    """Reads the current state of a set of devices. ``read`` may raise; the sampler counts
    the error and keeps going."""

    name = "reader"

    @abc.abstractmethod
    def read(self) -> list[Sample]:
        """One sample per watched device."""

    def close(self) -> None:  # noqa: B027 - optional hook, nothing to release by default
        """Release handles (NVML, subprocesses)."""


class NullReader(TelemetryReader):
    """Reads nothing (telemetry off, or no device exposes any)."""

    name = "none"

    def read(self) -> list[Sample]:
        return []


#: The names ``[telemetry] reader`` accepts.
READERS = ("auto", "nvml", "npu-smi", "xpu_smi", "ppu-smi", "cnmon", "amd-smi", "rocm-smi",
           "hl-smi", "nvidia-smi", "emulated", "none")


@dataclasses.dataclass(kw_only=True, frozen=True)
class TelemetryConfig(Section, section="telemetry"):
    """The ``[telemetry]`` table: how often to sample and with which reader."""

    hz: float = field(1.0, help="samples per second; 0 turns sampling off", ge=0, le=100)
    reader: str = field("auto", help="which reader samples the devices (auto: the first "
                        "that works here)", choices=READERS)
