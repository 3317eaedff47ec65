"""The Fleet page: a live fleet's state, read loosely from ``FLEET_DIR/fleet.db``
(the live fleet's own file name, :data:`mixfleet.live.store.DB_NAME`).

The live fleet (``mixfleet fleet``) keeps its jobs, attempts and events in SQLite; its
schema is not fixed yet, so this reads whichever of the tables ``pools``, ``jobs``,
``attempts`` and ``events`` exist, with whatever columns they have, read-only.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from mixfleet.live.store import DB_NAME

__all__ = ["fleet_view", "TABLES", "ROW_LIMIT"]

TABLES = ("pools", "jobs", "attempts", "events")
ROW_LIMIT = 200


def fleet_view(fleet_dir: Path | None) -> dict[str, Any]:
    if fleet_dir is None:
        return {"state": "none", "message": "no live fleet: start the dashboard with "
                "--fleet FLEET_DIR to show one"}
    db = fleet_dir / DB_NAME
    if not db.is_file():
        return {"state": "none", "message": f"no live fleet: {db} does not exist (yet)"}
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=2.0)
    except sqlite3.Error as e:
        return {"state": "error", "message": f"{db}: {e}"}
    try:
        names = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE "
                                           "type='table'")}
        tables = {}
        for t in TABLES:
            if t not in names:
                continue
            count = con.execute(f'SELECT COUNT(*) FROM "{t}"').fetchone()[0]
            cur = con.execute(f'SELECT * FROM "{t}" ORDER BY rowid DESC LIMIT {ROW_LIMIT}')
            cols = [d[0] for d in cur.description]
            tables[t] = {"columns": cols, "rows": [list(r) for r in cur.fetchall()],
                         "count": count}
        return {"state": "ok", "path": str(db), "tables": tables,
                "message": None if tables else f"{db} has none of the tables "
                                               f"{', '.join(TABLES)}"}
    except sqlite3.Error as e:
        return {"state": "error", "message": f"{db}: {e}"}
    finally:
        con.close()
