"""Host memory for in-memory snapshots: how much there is, how much a snapshot needs, and
finding the snapshot files that no running process uses any more (``mixfleet clean``).

A double-buffered snapshot holds two copies of a rank's parameters and optimizer state
(for AdamW ~2 x 12 bytes per parameter in fp32, divided by the ranks under fsdp): a 7B
model on 8 ranks needs ~28 GB of host memory per rank. Before the first step each rank
sizes its snapshot against its part of the budget (``checkpoint.snapshot_memory_gib``,
default half of the node's available memory, shared by the node's ranks) and turns
snapshots off, with an event and a line on the console, when they do not fit.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

__all__ = ["available_bytes", "snapshot_bytes", "snapshot_budget", "in_use", "stale_snapshots"]

OPTIMIZER_STATE = {"sgd": 1, "adamw": 2}  # state tensors per parameter


def available_bytes(shm: Path) -> int:
    """The smaller of MemAvailable and the free space of the snapshot filesystem."""
    free = []
    try:
        st = os.statvfs(shm)
        free.append(st.f_bavail * st.f_frsize)
    except OSError:
        pass
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                free.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    return min(free) if free else 0


def snapshot_bytes(model_bytes: int, optimizer: str, slots: int = 2) -> int:
    """Bytes of a snapshot of ``model_bytes`` of parameters and the optimizer's state."""
    return slots * model_bytes * (1 + OPTIMIZER_STATE.get(optimizer, 2))


def snapshot_budget(gib: float, local_world: int, shm: Path) -> int:
    """This rank's part of the node's snapshot budget, in bytes (``gib`` 0: half of what is
    available now)."""
    total = int(gib * 2**30) if gib > 0 else available_bytes(shm) // 2
    return total // max(1, local_world)


def in_use(paths: Iterable[Path]) -> set[Path]:
    """The paths that some process has open or mapped (from /proc)."""
    want = {str(p) for p in paths}
    used: set[Path] = set()
    for pid in filter(str.isdigit, os.listdir("/proc")) if os.path.isdir("/proc") else ():
        try:
            maps = Path(f"/proc/{pid}/maps").read_text()
        except OSError:
            continue
        for line in maps.splitlines():
            path = line.split(maxsplit=5)[-1] if line.count(" ") >= 5 else ""
            if path in want:
                used.add(Path(path))
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target in want:
                    used.add(Path(target))
        except OSError:
            continue
    return used


def stale_snapshots(files: Iterable[Path]) -> list[Path]:
    """Of ``files``, those no running process has open or mapped."""
    files = list(files)
    busy = in_use(files)
    return [f for f in files if f not in busy]
