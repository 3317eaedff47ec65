"""Devices blocked in a run directory (``blocklist.json``) and the masks that keep them out.
This module is the file's one reader and writer (the trainer, the launcher, ``mixfleet
devices --run-dir`` and the live fleet's scheduler call it).

A drain (heat, a slow or failing chip) appends ``{"rank", "step", "t", "pending": true}``
(:func:`add_drained`). Before relaunching, the launcher resolves
each pending entry to the device that rank used (:func:`resolve_pending`) and names it by a
stable id (UUID, else ``pci:<bus id>``, else ``index:<i>``) with its vendor, chip and tool
index. Every launch in that run directory then sets the vendor's visible-devices variable
(``CUDA_VISIBLE_DEVICES``, ``ASCEND_RT_VISIBLE_DEVICES``, ``XPU_VISIBLE_DEVICES``, ...) to the
node's devices minus the blocked ones (:func:`visible_env`), so a blocked device never comes
back, whatever rank would have been placed on it. Entries written before stable ids existed
(``{"rank", "device"}`` only) are read as before and block nothing by id.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mixfleet import safefs
from mixfleet.catalog.detect import Detection
from mixfleet.catalog.visible import env_mask, visible_devices
from mixfleet.errors import ConfigError
from mixfleet.train.mixed.placement import RankDevice, local_detection

__all__ = ["BLOCKLIST", "read_entries", "write_entries", "add_drained", "blocked_ids",
           "resolve_pending", "visible_env"]

BLOCKLIST = "blocklist.json"


def read_entries(run_root: str | Path) -> list[dict[str, Any]]:
    """The entries of ``RUN_DIR/blocklist.json`` ([] if none); a damaged file raises
    ConfigError naming it and the fix."""
    p = Path(run_root) / BLOCKLIST
    try:
        raw = safefs.read_bytes(p)  # a link in its place raises UnsafePathError
    except FileNotFoundError:
        return []
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise ConfigError(f"{p} is not valid JSON ({type(e).__name__}: {str(e)[:80]}); "
                          f"restore it or delete it to unblock every device") from None
    if not isinstance(data, list) or not all(isinstance(e, dict) for e in data):
        raise ConfigError(f"{p} must hold a JSON list of objects; restore it or delete it "
                          f"to unblock every device")
    return list(data)


def write_entries(run_root: str | Path, entries: Sequence[Mapping[str, Any]]) -> None:
    """Replace ``RUN_DIR/blocklist.json`` with ``entries`` (atomically, never through a
    link)."""
    safefs.write_atomic(Path(run_root) / BLOCKLIST,
                        (json.dumps(list(entries), indent=1) + "\n").encode())


def add_drained(run_root: str | Path, *, rank: int, step: int) -> None:
    """Append a pending entry for ``rank``, drained at ``step`` (the launcher resolves it to
    its device before relaunching)."""
    entries = read_entries(run_root)
    entries.append({"rank": rank, "step": step, "t": time.time(), "pending": True})
    write_entries(run_root, entries)


def blocked_ids(entries: Sequence[Mapping[str, Any]]) -> set[str]:
    """Stable ids of the devices blocked for good (resolved entries)."""
    return {str(e["device_id"]) for e in entries
            if not e.get("pending") and isinstance(e.get("device_id"), str)}


def resolve_pending(entries: list[dict[str, Any]], placements: Sequence[RankDevice]
                    ) -> list[dict[str, Any]]:
    """The entries with each pending one resolved to its rank's device (``placements``:
    every rank's device in the attempt that drained, as :func:`place_rank` gives them)."""
    out = []
    for e in entries:
        e = dict(e)
        r = e.get("rank")
        if e.get("pending") and isinstance(r, int) and 0 <= r < len(placements):
            p = placements[r]
            e.update(pending=False, device=p.spec, kind=p.kind, vendor=p.vendor, chip=p.chip,
                     device_id=p.stable_id or (None if p.index is None else f"index:{p.index}"),
                     tool_index=p.tool_index, visible_var=p.visible_var,
                     emulated=p.emulated)
        elif e.get("pending"):
            e["pending"] = False
        out.append(e)
    return out


def visible_env(entries: Sequence[Mapping[str, Any]], environ: Mapping[str, str],
                detection: Detection | None = None) -> dict[str, str]:
    """The visible-devices variables to set so that no blocked device is visible: for each
    vendor with a blocked device, its devices now visible (under ``environ``'s mask) minus
    the blocked ones, by tool index. {} when nothing real is blocked."""
    ids = blocked_ids(entries)
    by_var: dict[str, str] = {}
    if not ids:
        return by_var
    det = local_detection() if detection is None else detection
    vendors = list(dict.fromkeys(d.vendor for d in det.devices if d.stable_id in ids))
    for vendor in vendors:
        devs = [d for d in det.devices if d.vendor == vendor]
        var = devs[0].visible_var
        if var is None:
            continue
        now = visible_devices(devs, index=[d.index for d in devs], uuid=[d.uuid for d in devs],
                              mask=env_mask(environ, vendor))
        by_var[var] = ",".join(str(d.index) for d in now if d.stable_id not in ids)
    if any(v == "CUDA_VISIBLE_DEVICES" for v in by_var):
        by_var["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"  # torch's order = the tools' order
    return by_var
