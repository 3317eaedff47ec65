"""Devices through ``torch.accelerator``: resolve, synchronize, collective backend, memory.

``auto`` is the machine's accelerator (``torch.accelerator.current_accelerator()``), else
the CPU. Kunlun and T-Head PPU present themselves as ``cuda``; Ascend as ``npu`` (through
torch_npu); Cambricon ``mlu``; Intel ``xpu``. Device code never calls ``torch.cuda``.
"""

from __future__ import annotations

import os

import torch

from mixfleet.errors import ConfigError, DeviceError
from mixfleet.train.mixed.placement import RankDevice, on_fake_node

__all__ = ["resolve_device", "backend_for", "synchronize",
           "KNOWN_DEVICE_TYPES", "BACKENDS"]

KNOWN_DEVICE_TYPES = ("cpu", "cuda", "npu", "xpu", "mlu", "mps", "hpu")
BACKENDS = {"cpu": "gloo", "cuda": "nccl", "npu": "hccl", "xpu": "xccl", "mlu": "cncl",
            "hpu": "hccl", "mps": "gloo"}


def check_device_spec(spec: str) -> None:
    """Validate the form of a device string without touching hardware."""
    if spec == "auto":
        return
    if spec.startswith("emu:"):
        from mixfleet.emulate import parse_emu_device

        parse_emu_device(spec)  # unknown chip id -> DeviceError naming the known ones
        return
    kind = spec.split(":", 1)[0]
    if kind not in KNOWN_DEVICE_TYPES:
        raise DeviceError(f"launch.device {spec!r} is unknown; use auto, "
                          f"{', '.join(KNOWN_DEVICE_TYPES)} (optionally with :index), or "
                          f"emu:<chip-id> for an emulated chip")


def _accelerator_type() -> str | None:
    acc = torch.accelerator.current_accelerator() if torch.accelerator.is_available() else None
    return acc.type if acc is not None else None


def resolve_device(spec: str, local_rank: int = 0, *,
                   placement: RankDevice | None = None) -> torch.device:
    """The torch device for ``spec`` on this process; an unavailable one raises DeviceError.

    Torch numbers the devices of a visible-devices mask from 0, so after a drain (the
    launcher masks the blocked device out) ``local_rank % count`` lands on the kept ones.
    ``placement`` (:func:`mixfleet.train.mixed.placement.place_rank`) gives the index on a node
    whose ranks share one device type across vendors. On the tests' fake node a device type
    this PyTorch lacks computes on the CPU (the last step; everything before it is real).
    """
    check_device_spec(spec)
    if spec.startswith("emu:"):  # emulated chips compute on the CPU
        return torch.device("cpu")
    if placement is not None and placement.index is not None:
        if _accelerator_type() != placement.torch_type and on_fake_node():
            return torch.device("cpu")
        spec = f"{placement.torch_type}:{placement.index}"
    if spec == "auto":
        kind = _accelerator_type()
        if kind is None:
            return torch.device("cpu")
        return torch.device(kind, local_rank % max(1, torch.accelerator.device_count()))
    dev = torch.device(spec)
    if dev.type == "cpu":
        return dev
    if _accelerator_type() != dev.type:
        if on_fake_node():
            return torch.device("cpu")
        found = _accelerator_type() or "none (CPU only)"
        raise DeviceError(f"launch.device {spec!r} is not available on this machine "
                          f"(accelerator found: {found}); use --device auto or cpu")
    if dev.index is None:
        dev = torch.device(dev.type, local_rank % max(1, torch.accelerator.device_count()))
    return dev


def backend_for(device: torch.device, override: str = "auto") -> str:
    """The collective backend: the device's native one, or ``override``."""
    if override != "auto":
        return override
    return BACKENDS.get(device.type, "gloo")


def synchronize(device: torch.device) -> None:
    """Wait for queued work on ``device`` (no-op on CPU)."""
    if device.type != "cpu":
        torch.get_device_module(device).synchronize(device)


THREADS_VAR = "MIXFLEET_CPU_THREADS"


def cpu_threads(local_world_size: int) -> int:
    """Intra-op threads per rank so that ranks on one host do not oversubscribe it;
    ``MIXFLEET_CPU_THREADS`` fixes the number (a live fleet sets 1 for its emulated devices,
    which share one host's cores with the other jobs: docs/fleet-live.md)."""
    fixed = os.environ.get(THREADS_VAR)
    if fixed:
        if not fixed.isdigit() or int(fixed) < 1:
            raise ConfigError(f"{THREADS_VAR}={fixed!r} is invalid; set it to a positive "
                              f"integer (intra-op CPU threads per rank) or unset it")
        return int(fixed)
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, (n or 1) // max(1, local_world_size))
