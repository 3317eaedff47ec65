"""A fake ``pynvml`` (nvidia-ml-py) for the fake node: the Nvidia devices of the node's state
file (``$MIXFLEET_FAKE_NODE_STATE``), re-read whenever the file changes.

Like real NVML it ignores ``CUDA_VISIBLE_DEVICES`` (NVML numbers every device of the node).
A device with ``"failed": true`` raises :class:`NVMLError` on its readings.
"""

from __future__ import annotations

import json
import os
import types
from typing import Any

NVML_TEMPERATURE_GPU = 0
NVML_CLOCK_SM = 1
_cache: dict[str, Any] = {"key": None, "devs": []}
_inited = False


class NVMLError(Exception):
    pass


class NVMLError_LibraryNotFound(NVMLError):  # noqa: N801 - pynvml's own spelling
    pass


def _devices() -> list[dict[str, Any]]:
    path = os.environ.get("MIXFLEET_FAKE_NODE_STATE")
    if not path:
        raise NVMLError_LibraryNotFound("fake NVML: MIXFLEET_FAKE_NODE_STATE is not set")
    st = os.stat(path)
    key = (path, st.st_mtime_ns, st.st_size)
    if _cache["key"] != key:
        with open(path) as f:
            state = json.load(f)
        _cache["devs"] = [d for d in state["devices"] if d["chip"].startswith("nvidia-")]
        _cache["key"] = key
    return list(_cache["devs"])


def _dev(h: Any) -> dict[str, Any]:
    d = _devices()[h.index]
    if d.get("failed"):
        raise NVMLError("Unknown Error")
    return d


def nvmlInit() -> None:  # noqa: N802 - pynvml's names
    global _inited
    _devices()
    _inited = True


def nvmlShutdown() -> None:  # noqa: N802
    global _inited
    _inited = False


def nvmlSystemGetDriverVersion() -> str:  # noqa: N802
    return "550.54.15"


def nvmlDeviceGetCount() -> int:  # noqa: N802
    return len(_devices())


def nvmlDeviceGetHandleByIndex(i: int) -> Any:  # noqa: N802
    if not 0 <= i < len(_devices()):
        raise NVMLError("Invalid Argument")
    return types.SimpleNamespace(index=i)


def nvmlDeviceGetName(h: Any) -> str:  # noqa: N802
    return str(_devices()[h.index]["name"])


def nvmlDeviceGetUUID(h: Any) -> str:  # noqa: N802
    return str(_devices()[h.index]["uuid"])


def nvmlDeviceGetPciInfo(h: Any) -> Any:  # noqa: N802
    return types.SimpleNamespace(busId=_devices()[h.index]["bus_id"].upper())


def nvmlDeviceGetMemoryInfo(h: Any) -> Any:  # noqa: N802
    d = _devices()[h.index]
    total = d["mem_total_mib"] * 2**20
    used = int(d["mem_used_mib"] * 2**20)
    return types.SimpleNamespace(total=total, used=used, free=total - used)


def nvmlDeviceGetTemperature(h: Any, sensor: int) -> int:  # noqa: N802
    return int(_dev(h)["temp_c"])


def nvmlDeviceGetPowerUsage(h: Any) -> int:  # noqa: N802
    return int(_dev(h)["power_w"] * 1000)


def nvmlDeviceGetClockInfo(h: Any, clock: int) -> int:  # noqa: N802
    return int(_dev(h)["clock_mhz"])


def nvmlDeviceGetUtilizationRates(h: Any) -> Any:  # noqa: N802
    return types.SimpleNamespace(gpu=int(_dev(h)["util_pct"]), memory=0)


def nvmlDeviceGetCurrentClocksEventReasons(h: Any) -> int:  # noqa: N802
    return 0x40 if _dev(h).get("throttled") else 0
