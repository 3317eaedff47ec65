"""What accelerators this machine has: ``torch.accelerator`` plus the vendors' tools.

Kunlun (P800), T-Head PPU and AMD present themselves as ``cuda`` in PyTorch, so ``cuda``
does not mean Nvidia: the vendor comes from the tool that lists the devices, and the
non-Nvidia tools are asked first (``npu-smi``, ``xpu_smi``, ``ppu-smi``, ``cnmon``, then NVML
or ``nvidia-smi``). A missing tool is reported as ``absent`` and output a parser cannot read
as ``unreadable``; neither raises.

Every boundary is injectable: ``run`` executes a tool (raises ``FileNotFoundError`` when it
is not installed), ``nvml`` is the ``pynvml`` module (or a fake), ``accelerator`` describes
PyTorch's view. Tests pass fakes; the defaults touch the real machine.
"""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
from collections.abc import Callable, Sequence
from typing import Any, Literal

from mixfleet.catalog.base import Chip, load_catalog, match_chip
from mixfleet.catalog.smi import NVIDIA_CSV_FIELDS, PARSERS, SmiDevice, SmiParseError

__all__ = ["Device", "ToolStatus", "Detection", "ToolSpec", "TOOLS", "detect", "run_tool",
           "probe_tool", "torch_accelerator"]

ToolState = Literal["ok", "absent", "unreadable", "failed"]
Runner = Callable[[Sequence[str]], str]

_NV_QUERY = ["--query-gpu=" + ",".join(NVIDIA_CSV_FIELDS), "--format=csv,noheader,nounits"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class ToolSpec:
    """How to ask one vendor tool for its devices."""

    name: str
    commands: tuple[tuple[str, ...], ...]  # alternatives, first installed one wins
    parser: str  # key of mixfleet.catalog.smi.PARSERS
    vendor: str
    torch_type: str


TOOLS: tuple[ToolSpec, ...] = (
    ToolSpec(name="npu-smi", commands=(("npu-smi", "info"),), parser="npu-smi",
             vendor="huawei", torch_type="npu"),
    ToolSpec(name="xpu_smi", commands=(("xpu_smi",), ("xpu-smi",)), parser="xpu_smi",
             vendor="baidu", torch_type="cuda"),
    ToolSpec(name="ppu-smi", commands=(("ppu-smi", *_NV_QUERY),), parser="nvidia-csv",
             vendor="thead", torch_type="cuda"),
    ToolSpec(name="cnmon", commands=(("cnmon",),), parser="cnmon", vendor="cambricon",
             torch_type="mlu"),
    ToolSpec(name="nvidia-smi", commands=(("nvidia-smi", *_NV_QUERY),), parser="nvidia-csv",
             vendor="nvidia", torch_type="cuda"),
)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ToolStatus:
    """What asking one tool gave."""

    tool: str
    state: ToolState
    detail: str = ""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Device:
    """One accelerator of this machine."""

    index: int
    vendor: str
    name: str
    chip_id: str | None  # catalog id, None when the name matches no record
    memory_bytes: int | None
    driver: str | None
    torch_device: str | None  # e.g. "cuda:0"; None when this PyTorch cannot see it
    tool: str


@dataclasses.dataclass(frozen=True, kw_only=True)
class Detection:
    """The devices found, what each tool said, and PyTorch's accelerator."""

    devices: tuple[Device, ...]
    tools: tuple[ToolStatus, ...]
    accelerator: str | None  # torch.accelerator device type, None when there is none
    accelerator_count: int

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def run_tool(argv: Sequence[str], timeout_s: float = 10.0) -> str:
    """Run a tool and return its stdout; ``FileNotFoundError`` when it is not installed."""
    if shutil.which(argv[0]) is None:
        raise FileNotFoundError(argv[0])
    proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout_s,
                          check=False, errors="replace")
    if proc.returncode != 0:
        msg = (proc.stderr or proc.stdout).strip().splitlines()
        raise RuntimeError(f"exit {proc.returncode}: {msg[0] if msg else 'no output'}")
    return proc.stdout


def probe_tool(spec: ToolSpec, run: Runner = run_tool) -> tuple[ToolStatus, list[SmiDevice]]:
    """Ask one tool; never raises for an absent, failing or garbled tool."""
    for argv in spec.commands:
        try:
            text = run(argv)
        except FileNotFoundError:
            continue
        except (RuntimeError, OSError, subprocess.SubprocessError) as e:
            return ToolStatus(tool=spec.name, state="failed", detail=str(e)), []
        try:
            devs = PARSERS[spec.parser](text)
        except (SmiParseError, ValueError, IndexError) as e:
            return ToolStatus(tool=spec.name, state="unreadable",
                              detail=f"{argv[0]} printed output mixfleet cannot read: {e}"), []
        return ToolStatus(tool=spec.name, state="ok", detail=f"{len(devs)} device(s)"), devs
    return ToolStatus(tool=spec.name, state="absent", detail="not installed"), []


def _nvml_devices(nvml: Any) -> tuple[ToolStatus, list[SmiDevice]]:
    try:
        nvml.nvmlInit()
    except Exception as e:  # NVMLError_LibraryNotFound, DriverNotLoaded, ...
        return ToolStatus(tool="nvml", state="absent", detail=f"NVML unavailable ({e})"), []
    try:
        driver = nvml.nvmlSystemGetDriverVersion()
        out = []
        for i in range(nvml.nvmlDeviceGetCount()):
            h = nvml.nvmlDeviceGetHandleByIndex(i)
            name = nvml.nvmlDeviceGetName(h)
            mem = nvml.nvmlDeviceGetMemoryInfo(h)
            out.append(SmiDevice(index=i, name=name if isinstance(name, str) else name.decode(),
                                 memory_total_mib=mem.total / 2**20,
                                 driver=driver if isinstance(driver, str) else driver.decode()))
        return ToolStatus(tool="nvml", state="ok", detail=f"{len(out)} device(s)"), out
    except Exception as e:
        return ToolStatus(tool="nvml", state="failed", detail=str(e)), []
    finally:
        try:
            nvml.nvmlShutdown()
        except Exception:
            pass


def _default_nvml() -> Any:
    try:
        import pynvml  # nvidia-ml-py, optional
    except ImportError:
        return None
    return pynvml


def torch_accelerator() -> tuple[str | None, int]:
    """PyTorch's accelerator type and device count (``(None, 0)`` on a CPU-only build)."""
    import torch

    acc = getattr(torch, "accelerator", None)
    if acc is None or not acc.is_available():
        return None, 0
    dev = acc.current_accelerator()
    return (None if dev is None else dev.type), int(acc.device_count())


def detect(run: Runner = run_tool, nvml: Any = "default",
           accelerator: tuple[str | None, int] | None = None,
           catalog: dict[str, Chip] | None = None,
           tools: Sequence[ToolSpec] = TOOLS) -> Detection:
    """Find this machine's devices. ``nvml=None`` skips NVML (``nvidia-smi`` is then used)."""
    cat = load_catalog() if catalog is None else catalog
    acc_type, acc_count = torch_accelerator() if accelerator is None else accelerator
    nv = _default_nvml() if nvml == "default" else nvml
    statuses: list[ToolStatus] = []
    devices: list[Device] = []
    owner: dict[str, str] = {}  # torch device type -> vendor that owns it (first found)
    for spec in tools:
        if spec.vendor == "nvidia" and nv is not None:
            status, found = _nvml_devices(nv)
            statuses.append(status)
            if status.state != "ok":
                status, found = probe_tool(spec, run)
                statuses.append(status)
        else:
            status, found = probe_tool(spec, run)
            statuses.append(status)
        if not found:
            continue
        owner.setdefault(spec.torch_type, spec.vendor)
        for d in found:
            chip = match_chip(d.name, cat, vendor=spec.vendor)
            visible = acc_type == spec.torch_type and owner[spec.torch_type] == spec.vendor \
                and d.index < acc_count
            devices.append(Device(
                index=d.index, vendor=spec.vendor, name=d.name,
                chip_id=None if chip is None else chip.id,
                memory_bytes=None if d.memory_total_mib is None
                else int(d.memory_total_mib * 2**20),
                driver=d.driver, torch_device=f"{spec.torch_type}:{d.index}" if visible else None,
                tool=status.tool))
    return Detection(devices=tuple(devices), tools=tuple(statuses), accelerator=acc_type,
                     accelerator_count=acc_count)
