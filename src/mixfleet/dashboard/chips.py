"""The Chips page: this machine's devices (``mixfleet devices``), the throughput tables
found (``mixfleet bench``) with the origin of every figure, and the catalog's figures."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

__all__ = ["devices_view", "tables_view", "catalog_view"]

_DETECT_TTL_S = 60.0
_cache: dict[str, Any] = {}


def devices_view() -> dict[str, Any]:
    """What ``mixfleet devices --json`` says (detection runs at most once a minute)."""
    now = time.monotonic()
    hit = _cache.get("devices")
    if hit is not None and now - hit[0] < _DETECT_TTL_S:
        return dict(hit[1])
    try:
        from mixfleet.catalog.detect import detect

        doc: dict[str, Any] = {"ok": True, **detect().to_dict()}
    except Exception as e:  # detection must never take the page down
        doc = {"ok": False, "error": f"device detection failed: {type(e).__name__}: {e}"}
    _cache["devices"] = (now, doc)
    return doc


def tables_view(paths: list[Path]) -> list[dict[str, Any]]:
    """Each table's rows (every row keeps its ``origin`` and ``emulated``), or the error
    that stopped it from being read."""
    from mixfleet.catalog.table import read_table
    from mixfleet.errors import MixfleetError

    out = []
    for p in paths:
        try:
            rows = [dataclasses.asdict(r) for r in read_table(p)]
            out.append({"path": str(p), "rows": rows, "error": None})
        except (MixfleetError, OSError, ValueError, TypeError) as e:
            out.append({"path": str(p), "rows": [], "error": str(e)})
    return out


def catalog_view() -> dict[str, Any]:
    """The catalog's figures per chip, each with its source and confidence."""
    try:
        from mixfleet.catalog import load_catalog

        chips = {c.id: dataclasses.asdict(c) for c in load_catalog().values()}
        return {"ok": True, "chips": chips}
    except Exception as e:  # the catalog being unreadable is shown, not raised
        return {"ok": False, "error": f"catalog unreadable: {type(e).__name__}: {e}",
                "chips": {}}
