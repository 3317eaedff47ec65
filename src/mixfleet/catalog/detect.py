"""What accelerators this machine has: ``torch.accelerator`` plus the vendors' tools.

Kunlun (P800), T-Head PPU and AMD present themselves as ``cuda`` in PyTorch, so ``cuda``
does not mean Nvidia: the vendor comes from the tool that lists the devices, and the
non-Nvidia tools are asked first (``npu-smi``, ``xpu_smi``, ``ppu-smi``, ``cnmon``,
``amd-smi`` (else ``rocm-smi``), ``hl-smi``, then NVML or ``nvidia-smi``). A missing tool is
reported as ``absent`` and output a parser cannot read as ``unreadable``; neither raises.

Each device carries a stable id (UUID, else PCI bus id, else the tool's index) and its
torch index under the vendor's visible-devices mask (``CUDA_VISIBLE_DEVICES=2,3``: the
tool's device 2 is ``cuda:0``), see :mod:`mixfleet.catalog.visible`.

Every boundary is injectable: ``run`` executes a tool (raises ``FileNotFoundError`` when it
is not installed), ``nvml`` is the ``pynvml`` module (or a fake), ``accelerator`` describes
PyTorch's view. Tests pass fakes; the defaults touch the real machine.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

from mixfleet.catalog.base import Chip, load_catalog, match_chip
from mixfleet.catalog.smi import NVIDIA_CSV_FIELDS, PARSERS, SmiDevice, SmiParseError
from mixfleet.catalog.smi_extra import AMD_SMI_COMMANDS, HL_SMI_FIELDS, ROCM_SMI_ARGS
from mixfleet.catalog.visible import env_mask, stable_id, visible_devices, visible_var

__all__ = ["Device", "ToolStatus", "Detection", "ToolSpec", "TOOLS", "detect", "run_tool",
           "probe_tool", "run_spec", "torch_accelerator"]

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
    then: tuple[tuple[str, ...], ...] = ()  # more commands whose outputs are appended


TOOLS: tuple[ToolSpec, ...] = (
    ToolSpec(name="npu-smi", commands=(("npu-smi", "info"),), parser="npu-smi",
             vendor="huawei", torch_type="npu"),
    ToolSpec(name="xpu_smi", commands=(("xpu_smi",), ("xpu-smi",)), parser="xpu_smi",
             vendor="baidu", torch_type="cuda"),
    ToolSpec(name="ppu-smi", commands=(("ppu-smi", *_NV_QUERY),), parser="nvidia-csv",
             vendor="thead", torch_type="cuda"),
    ToolSpec(name="cnmon", commands=(("cnmon",),), parser="cnmon", vendor="cambricon",
             torch_type="mlu"),
    ToolSpec(name="amd-smi", commands=(("amd-smi", *AMD_SMI_COMMANDS[0]),), parser="amd-smi",
             vendor="amd", torch_type="cuda",
             then=tuple(("amd-smi", *c) for c in AMD_SMI_COMMANDS[1:])),
    ToolSpec(name="rocm-smi", commands=(("rocm-smi", *ROCM_SMI_ARGS),), parser="rocm-smi",
             vendor="amd", torch_type="cuda"),
    ToolSpec(name="hl-smi", commands=(("hl-smi", "-Q", ",".join(HL_SMI_FIELDS), "-f",
                                       "csv,nounits"),), parser="hl-smi", vendor="intel",
             torch_type="hpu"),
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
    uuid: str | None = None
    bus_id: str | None = None
    stable_id: str = ""  # UUID, else "pci:<bus id>", else "index:<tool index>"
    torch_type: str | None = None  # the device type the vendor's PyTorch plugin uses
    torch_index: int | None = None  # index under the vendor's mask; None: masked out
    visible_var: str | None = None  # the vendor's visible-devices variable


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


def run_spec(spec: ToolSpec, run: Runner = run_tool) -> str:
    """The tool's output (the first installed command, then ``spec.then``);
    ``FileNotFoundError`` when none is installed."""
    for argv in spec.commands:
        try:
            text = run(argv)
        except FileNotFoundError:
            continue
        return text + "".join("\n" + run(more) for more in spec.then)
    raise FileNotFoundError(spec.name)


def probe_tool(spec: ToolSpec, run: Runner = run_tool) -> tuple[ToolStatus, list[SmiDevice]]:
    """Ask one tool; never raises for an absent, failing or garbled tool."""
    try:
        text = run_spec(spec, run)
    except FileNotFoundError:
        return ToolStatus(tool=spec.name, state="absent", detail="not installed"), []
    except (RuntimeError, OSError, subprocess.SubprocessError) as e:
        return ToolStatus(tool=spec.name, state="failed", detail=str(e)), []
    try:
        devs = PARSERS[spec.parser](text)
    except (SmiParseError, ValueError, IndexError, RecursionError) as e:
        return ToolStatus(tool=spec.name, state="unreadable",
                          detail=f"{spec.name} printed output mixfleet cannot read: {e}"), []
    return ToolStatus(tool=spec.name, state="ok", detail=f"{len(devs)} device(s)"), devs


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
            out.append(SmiDevice(index=i, name=_text(name), memory_total_mib=mem.total / 2**20,
                                 driver=_text(driver), uuid=_optional(nvml, "UUID", h),
                                 bus_id=_bus_id(nvml, h)))
        return ToolStatus(tool="nvml", state="ok", detail=f"{len(out)} device(s)"), out
    except Exception as e:
        return ToolStatus(tool="nvml", state="failed", detail=str(e)), []
    finally:
        try:
            nvml.nvmlShutdown()
        except Exception:
            pass


def _text(v: Any) -> str:
    return v if isinstance(v, str) else bytes(v).decode(errors="replace")


def _optional(nvml: Any, what: str, h: Any) -> str | None:
    try:
        return _text(getattr(nvml, f"nvmlDeviceGet{what}")(h))
    except Exception:  # not supported by this driver / fake
        return None


def _bus_id(nvml: Any, h: Any) -> str | None:
    try:
        bus = nvml.nvmlDeviceGetPciInfo(h).busId
    except Exception:
        return None
    return _text(bus).lower()


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
           tools: Sequence[ToolSpec] = TOOLS,
           environ: Mapping[str, str] | None = None) -> Detection:
    """Find this machine's devices. ``nvml=None`` skips NVML (``nvidia-smi`` is then used);
    ``environ`` (default ``os.environ``) holds the visible-devices masks."""
    cat = load_catalog() if catalog is None else catalog
    acc_type, acc_count = torch_accelerator() if accelerator is None else accelerator
    nv = _default_nvml() if nvml == "default" else nvml
    statuses: list[ToolStatus] = []
    devices: list[Device] = []
    owner: dict[str, str] = {}  # torch device type -> vendor that owns it (first found)
    env = os.environ if environ is None else environ
    for spec in tools:
        if any(d.vendor == spec.vendor for d in devices):
            continue  # a vendor's devices come from its first tool that lists them
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
        order = visible_devices(found, index=[d.index for d in found],
                                uuid=[d.uuid for d in found], mask=env_mask(env, spec.vendor))
        for d in found:
            chip = match_chip(d.name, cat, vendor=spec.vendor)
            tix = next((i for i, v in enumerate(order) if v is d), None)
            visible = acc_type == spec.torch_type and owner[spec.torch_type] == spec.vendor \
                and tix is not None and tix < acc_count
            devices.append(Device(
                index=d.index, vendor=spec.vendor, name=d.name,
                chip_id=None if chip is None else chip.id,
                memory_bytes=None if d.memory_total_mib is None
                else int(d.memory_total_mib * 2**20),
                driver=d.driver, torch_device=f"{spec.torch_type}:{tix}" if visible else None,
                tool=status.tool, uuid=d.uuid, bus_id=d.bus_id,
                stable_id=stable_id(d.uuid, d.bus_id, d.index), torch_type=spec.torch_type,
                torch_index=tix, visible_var=visible_var(spec.vendor)))
    return Detection(devices=tuple(devices), tools=tuple(statuses), accelerator=acc_type,
                     accelerator_count=acc_count)
