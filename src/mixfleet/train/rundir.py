"""Files of a run directory that training decides on: the list of skipped batches (the
block list of drained devices is :mod:`mixfleet.train.mixed.blocklist`'s). The paths and
logs are in :mod:`mixfleet.runs` (re-exported here)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mixfleet import safefs
from mixfleet.runs import JsonLines, RunDir, read_jsonl

__all__ = ["RunDir", "JsonLines", "read_jsonl", "read_skip_list", "write_skip_list",
           "read_restage", "write_restage", "RESTAGE"]


def _write_json_atomic(path: Path, data: Any) -> None:
    safefs.write_atomic(path, (json.dumps(data, indent=1) + "\n").encode())


def _read_json(path: Path, default: Any) -> Any:
    try:
        return json.loads(safefs.read_bytes(path))  # a link in its place is refused
    except FileNotFoundError:
        return default


def read_skip_list(run: RunDir) -> set[int]:
    """Steps whose global batch is skipped (after a NaN/spike rollback)."""
    return set(_read_json(run.root / "skipped_batches.json", []))


def write_skip_list(run: RunDir, steps: set[int]) -> None:
    _write_json_atomic(run.root / "skipped_batches.json", sorted(steps))


RESTAGE = "restage.json"


def read_restage(run: RunDir) -> dict[str, Any] | None:
    """A pipeline re-split asked for by the workers (``blocks`` per stage, the reason and
    its predicted gain), or None; the launcher applies it and removes the file."""
    data = _read_json(run.root / RESTAGE, None)
    if data is None:
        return None
    blocks = data.get("blocks") if isinstance(data, dict) else None
    if not isinstance(blocks, list) or not all(type(b) is int and b > 0 for b in blocks):
        raise ValueError(f"{run.root / RESTAGE} has no valid 'blocks' list; delete it")
    return dict(data)


def write_restage(run: RunDir, data: dict[str, Any]) -> None:
    _write_json_atomic(run.root / RESTAGE, data)
