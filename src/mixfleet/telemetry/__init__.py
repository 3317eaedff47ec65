"""Telemetry of accelerators: temperature, power, clocks, utilization, memory, throttling.

One interface (:class:`TelemetryReader` -> :class:`Sample`), several readers (NVML, the
vendors' SMI tools, emulated chips), and a background :class:`Sampler`. :func:`open_reader`
picks a reader by name (``auto`` = NVML if it answers, else the first vendor tool that
lists devices, else none).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from mixfleet.errors import DeviceError
from mixfleet.telemetry.base import NullReader, Sample, TelemetryConfig, TelemetryReader
from mixfleet.telemetry.sampler import JsonlSink, Sampler
from mixfleet.telemetry.table import (
    DeviceTable,
    TableFile,
    device_temperature,
    rank_device_id,
    read_devices,
    table_path,
)

if TYPE_CHECKING:
    from mixfleet.emulate.device import EmulatedDevice

__all__ = ["Sample", "TelemetryReader", "NullReader", "TelemetryConfig", "Sampler",
           "JsonlSink", "open_reader", "DeviceTable", "TableFile", "device_temperature",
           "rank_device_id", "read_devices", "table_path", "open_readers"]


def open_reader(kind: str = "auto",
                emulated: Sequence[EmulatedDevice] = ()) -> TelemetryReader:
    """A reader by name; ``auto`` never raises (falls back to :class:`NullReader`)."""
    from mixfleet.catalog.detect import TOOLS, probe_tool
    from mixfleet.telemetry.emulated import EmulatedReader
    from mixfleet.telemetry.nvml import NvmlReader
    from mixfleet.telemetry.smi import SmiReader

    if kind == "none":
        return NullReader()
    if kind == "emulated" or (kind == "auto" and emulated):
        return EmulatedReader(emulated)
    if kind == "nvml":
        return NvmlReader()
    if kind != "auto":
        return SmiReader(kind)
    try:
        return NvmlReader()
    except DeviceError:
        pass
    for spec in TOOLS:
        status, _ = probe_tool(spec)
        if status.state == "ok":
            return SmiReader(spec.name)
    return NullReader()


def open_readers(kind: str = "auto") -> list[TelemetryReader]:
    """Every reader a node needs: with ``auto``, NVML (if it answers) plus each other vendor
    tool that lists devices (a node of H20 + P800 needs NVML and ``xpu_smi``); one reader
    per vendor. Another ``kind`` gives ``[open_reader(kind)]``. Never raises for ``auto``."""
    from mixfleet.catalog.detect import TOOLS, probe_tool
    from mixfleet.telemetry.nvml import NvmlReader
    from mixfleet.telemetry.smi import SmiReader

    if kind != "auto":
        reader = open_reader(kind)
        return [] if isinstance(reader, NullReader) else [reader]
    out: list[TelemetryReader] = []
    vendors: set[str] = set()
    try:
        out.append(NvmlReader())
        vendors.add("nvidia")
    except DeviceError:
        pass
    for spec in TOOLS:
        if spec.vendor in vendors:
            continue
        status, _ = probe_tool(spec)
        if status.state == "ok":
            out.append(SmiReader(spec.name))
            vendors.add(spec.vendor)
    return out
