"""What the server holds between requests: the directories found and one
:class:`RunStore` per run (so each file is read once, then only its new bytes)."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from mixfleet.dashboard.config import DashboardConfig
from mixfleet.dashboard.discover import Found, discover, item_id
from mixfleet.dashboard.runstore import RunStore

__all__ = ["Dashboard"]

RESCAN_S = 2.0
"""Directories are scanned again for new runs at most this often."""


class Dashboard:
    def __init__(self, config: DashboardConfig) -> None:
        self.config = config
        self._lock = threading.Lock()
        self._found: Found | None = None
        self._scanned = 0.0
        self._stores: dict[Path, RunStore] = {}

    def found(self) -> Found:
        with self._lock:
            now = time.monotonic()
            if self._found is None or now - self._scanned > RESCAN_S:
                self._found = discover(list(self.config.runs))
                self._scanned = now
            return self._found

    def store(self, run: Path) -> RunStore:
        with self._lock:
            if run not in self._stores:
                self._stores[run] = RunStore(run)
            return self._stores[run]

    def run_by_id(self, rid: str) -> Path | None:
        return next((p for p in self.found().runs if item_id(p) == rid), None)

    def results_by_id(self, sid: str) -> Path | None:
        return next((p for p in self.found().results if item_id(p) == sid), None)

    def runs(self) -> dict[str, Any]:
        f = self.found()
        rows = []
        for p in f.runs:
            rows.append({"id": item_id(p), **self.store(p).row()})
        notes = list(f.notes)
        if not self.config.runs:
            notes.append("no RUNS_DIR given (and ./runs does not exist): start with "
                         "`mixfleet dashboard runs/`")
        return {"runs": rows, "notes": notes}
