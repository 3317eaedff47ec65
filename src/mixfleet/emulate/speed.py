"""Relative speed of emulated chips: from a throughput table, else from the catalog."""

from __future__ import annotations

from collections.abc import Sequence

from mixfleet.catalog.base import Chip, get_chip, load_catalog
from mixfleet.catalog.table import ThroughputRow
from mixfleet.emulate.profile import EmuProfile, load_profiles
from mixfleet.errors import ConfigError, DeviceError

__all__ = ["parse_emu_device", "chip_throughput", "relative_speeds", "is_emulated"]

PREFIX = "emu:"


def is_emulated(device: str) -> bool:
    """Whether a device string names an emulated chip (``emu:<chip-id>``)."""
    return device.startswith(PREFIX)


def parse_emu_device(device: str, catalog: dict[str, Chip] | None = None) -> str:
    """The catalog chip id of ``emu:<chip-id>``; anything else raises DeviceError."""
    if not is_emulated(device):
        raise DeviceError(f"device {device!r} is not an emulated chip; write emu:<chip-id>, "
                          f"e.g. emu:kunlun-p800")
    chip_id = device[len(PREFIX):]
    cat = load_catalog() if catalog is None else catalog
    if chip_id not in cat:
        raise DeviceError(f"device {device!r}: unknown chip id {chip_id!r}; use emu:<id> with "
                          f"an id from `mixfleet catalog` ({', '.join(sorted(cat))})")
    return chip_id


def chip_throughput(chip_id: str, *, table: Sequence[ThroughputRow] | None = None,
                    workload: str | None = None, catalog: dict[str, Chip] | None = None,
                    profiles: dict[str, EmuProfile] | None = None) -> tuple[float, str]:
    """A throughput figure of ``chip_id`` and where it came from.

    Measured (non-emulated) rows of ``table`` for ``workload`` come first (best samples/s
    over batches); else the catalog BF16 peak; else the profile's ``relative_tflops``.
    Figures from different sources are only compared within one source (see
    :func:`relative_speeds`).
    """
    if table is not None and workload is not None:
        rows = [r for r in table if r.chip == chip_id and r.workload == workload
                and not r.emulated and r.origin == "measured"]
        if rows:
            return max(r.samples_per_s for r in rows), "table"
    chip = get_chip(chip_id, catalog)
    if chip.bf16_tflops.value is not None:
        return chip.bf16_tflops.value, "catalog"
    prof = (load_profiles(catalog=catalog) if profiles is None else profiles).get(chip_id)
    if prof is not None and prof.relative_tflops is not None:
        return prof.relative_tflops, "catalog"
    raise ConfigError(f"speed of {chip_id!r} is unknown (no measured row in the throughput "
                      f"table and no BF16 figure in the catalog); measure it with `mixfleet "
                      f"bench`, or set relative_tflops in [chips.{chip_id}] of the profile file")


def relative_speeds(chip_ids: Sequence[str], *, table: Sequence[ThroughputRow] | None = None,
                    workload: str | None = None, catalog: dict[str, Chip] | None = None,
                    profiles: dict[str, EmuProfile] | None = None) -> dict[str, float]:
    """Speed of each chip relative to the fastest of ``chip_ids`` (which gets 1.0).

    The table is used only when it covers every chip (so all ratios come from one source);
    otherwise all speeds come from the catalog.
    """
    if not chip_ids:
        return {}
    figs = {c: chip_throughput(c, table=table, workload=workload, catalog=catalog,
                               profiles=profiles) for c in chip_ids}
    if len({src for _, src in figs.values()}) > 1:
        figs = {c: chip_throughput(c, catalog=catalog, profiles=profiles) for c in chip_ids}
    top = max(v for v, _ in figs.values())
    return {c: v / top for c, (v, _) in figs.items()}
