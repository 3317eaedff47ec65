"""Visible-devices masks and stable device identity.

Every vendor runtime numbers the devices a process may use from 0 in the order of its
visible-devices variable (``CUDA_VISIBLE_DEVICES=2,3``: torch ``cuda:0`` is the tool's
device 2). :data:`VISIBLE_VARS` names that variable per vendor; :func:`visible_devices`
maps a vendor tool's device list to torch indices under it, and :func:`stable_id` names a
device by what survives a reboot or a mask (UUID, else PCI bus id, else the tool's index).

Masks are read the way the runtimes read them: entries are indices or (CUDA) UUIDs, UUID
prefixes included; the list ends at the first entry that names no device. Nvidia's runtime
orders devices fastest-first unless ``CUDA_DEVICE_ORDER=PCI_BUS_ID``; the launcher sets that
so that torch's order matches the tools' (PCI bus) order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TypeVar

__all__ = ["VISIBLE_VARS", "visible_var", "parse_mask", "visible_devices", "stable_id",
           "env_mask"]

#: The visible-devices variable of each vendor (as detection names vendors).
VISIBLE_VARS: dict[str, str] = {
    "nvidia": "CUDA_VISIBLE_DEVICES",
    "thead": "CUDA_VISIBLE_DEVICES",  # CUDA-compatible runtime
    "baidu": "XPU_VISIBLE_DEVICES",  # Kunlun XPU runtime
    "huawei": "ASCEND_RT_VISIBLE_DEVICES",
    "cambricon": "MLU_VISIBLE_DEVICES",
    "amd": "HIP_VISIBLE_DEVICES",
    "intel": "HABANA_VISIBLE_MODULES",  # Gaudi: module ids as hl-smi prints them
}

T = TypeVar("T")


def visible_var(vendor: str) -> str | None:
    """The visible-devices variable of ``vendor`` (None for a vendor without one)."""
    return VISIBLE_VARS.get(vendor)


def parse_mask(value: str | None) -> list[str] | None:
    """``"2, 3"`` -> ["2", "3"]; None when the variable is unset (every device visible)."""
    if value is None:
        return None
    return [p.strip() for p in value.split(",") if p.strip()]


def stable_id(uuid: str | None, bus_id: str | None, index: int) -> str:
    """A device's name that does not depend on masks: UUID, else PCI bus id, else index."""
    if uuid:
        return uuid
    if bus_id:
        return f"pci:{bus_id.lower()}"
    return f"index:{index}"


def _matches(entry: str, index: int, uuid: str | None) -> bool:
    if entry.lstrip("-").isdigit():
        return int(entry) == index
    if uuid and len(entry) >= 4:
        u, e = uuid.lower(), entry.lower()
        return u == e or u.startswith(e) or u.removeprefix("gpu-").startswith(
            e.removeprefix("gpu-"))
    return False


def visible_devices(devices: Sequence[T], *, index: Sequence[int],
                    uuid: Sequence[str | None], mask: list[str] | None) -> list[T]:
    """``devices`` in torch order under ``mask`` (the position in the result is the torch
    index). ``index``/``uuid`` give each device's tool index and UUID."""
    if mask is None:
        return [d for _, d in sorted(zip(index, devices, strict=True), key=lambda p: p[0])]
    out: list[T] = []
    for entry in mask:
        hit = [d for d, i, u in zip(devices, index, uuid, strict=True) if _matches(entry, i, u)]
        if len(hit) != 1 or hit[0] in out:
            break  # the runtimes stop at the first entry that names no (new) device
        out.append(hit[0])
    return out


def env_mask(env: Mapping[str, str], vendor: str) -> list[str] | None:
    """The parsed mask of ``vendor`` in ``env`` (None: unset, every device visible)."""
    var = visible_var(vendor)
    return parse_mask(env.get(var)) if var else None
