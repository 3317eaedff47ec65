"""Resizes of elastic jobs in the fleet's SQLite state (docs/fleet-elastic.md).

A resize is a row of ``resizes`` that moves ``planned`` -> ``launching`` -> ``done``, each
step one transaction: ``planned`` (decided; the old attempt still holds its devices),
``launching`` (the old attempt ended ``resized`` and the new one recorded with a pending
handle, together), ``done`` (the new attempt started). A scheduler killed between any two
steps finds the row and carries it on (:meth:`Scheduler.resume_resizes`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import sqlite3
from collections.abc import Callable
from typing import Any

__all__ = ["ResizeRow", "ResizeStore", "RESIZE_SCHEMA", "StorePart", "slots_of"]


def slots_of(raw: str) -> list[tuple[str, int]]:
    """A row's ``slots`` column (JSON ``[[node, device], ...]``) as (node, device) pairs."""
    return [(n, int(i)) for n, i in json.loads(raw)]

RESIZE_SCHEMA = """
CREATE TABLE IF NOT EXISTS resizes (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  t REAL NOT NULL,
  job_id TEXT NOT NULL,
  old_aid INTEGER NOT NULL,
  new_aid INTEGER,
  pool TEXT NOT NULL,
  slots TEXT NOT NULL,
  action TEXT NOT NULL,
  old INTEGER NOT NULL,
  new INTEGER NOT NULL,
  reason TEXT NOT NULL,
  gain_s REAL NOT NULL,
  state TEXT NOT NULL
);
"""


@dataclasses.dataclass(frozen=True, kw_only=True)
class ResizeRow:
    id: int
    t: float
    job_id: str
    old_aid: int
    new_aid: int | None
    pool: str
    slots: list[tuple[str, int]]
    """The devices of the attempt after the resize, in rank order."""
    action: str
    old: int
    new: int
    reason: str
    gain_s: float
    state: str

    @staticmethod
    def of(r: sqlite3.Row) -> ResizeRow:
        d = dict(r)
        d["slots"] = slots_of(d["slots"])
        return ResizeRow(**d)



def select_rows(db: sqlite3.Connection, table: str, jid: str | None,
                states: tuple[str, ...] | None) -> list[sqlite3.Row]:
    """The rows of ``table`` (``attempts`` or ``resizes``) of job ``jid`` (all: None) in
    ``states`` (all: None), oldest first."""
    q, args = f"SELECT * FROM {table} WHERE 1", []
    if jid is not None:
        q += " AND job_id = ?"
        args.append(jid)
    if states is not None:
        q += f" AND state IN ({','.join('?' * len(states))})"
        args += list(states)
    return list(db.execute(q + " ORDER BY id", args).fetchall())


class StorePart:
    """What a part of :class:`mixfleet.live.store.Store` (resizes, preempts) uses of it."""

    db: sqlite3.Connection
    clock: Callable[[], float]

    def tx(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        raise NotImplementedError

    def _event(self, db: sqlite3.Connection, kind: str, jid: str | None, aid: int | None,
               detail: dict[str, Any]) -> None:
        raise NotImplementedError


class ResizeStore(StorePart):
    """The resize methods of :class:`mixfleet.live.store.Store`."""

    # -- resizes (docs/fleet-elastic.md) ----------------------------------------------
    def plan_resize(self, jid: str, aid: int, pool: str, slots: list[tuple[str, int]], *,
                    action: str, old: int, new: int, reason: str, gain_s: float,
                    done: bool = False, drains: int | None = None) -> int:
        """Record a resize of attempt ``aid`` onto ``slots``: ``planned``, or ``done`` at
        once for a shrink the run's own launcher carries out inside the attempt;
        ``drains``: the attempt's drains seen, set in the same transaction."""
        with self.tx() as db:
            if drains is not None:
                db.execute("UPDATE attempts SET drains_seen = ? WHERE id = ?", (drains, aid))
            cur = db.execute("INSERT INTO resizes (t, job_id, old_aid, new_aid, pool, slots, "
                             "action, old, new, reason, gain_s, state) VALUES "
                             "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                             (self.clock(), jid, aid, aid if done else None, pool,
                              json.dumps(slots), action, old, new, reason, gain_s,
                              "done" if done else "planned"))
            rid = int(cur.lastrowid or 0)
            self._event(db, "resized" if done else "resize_planned", jid, aid,
                        {"resize": rid, "action": action, "from": old, "to": new,
                         "reason": reason, "gain_s": _g(gain_s)})
        return rid

    def switch_attempt(self, rid: int) -> int:
        """End the resize's old attempt (``resized``) and record the new one (its handle
        pending) in one transaction; the job stays running. Returns the new attempt's id."""
        now = self.clock()
        with self.tx() as db:
            r = ResizeRow.of(db.execute("SELECT * FROM resizes WHERE id = ?",
                                        (rid,)).fetchone())
            if r.state != "planned":
                return int(r.new_aid or 0)
            db.execute("UPDATE attempts SET state = 'resized', ended = ?, reason = ? "
                       "WHERE id = ? AND state = 'running'",
                       (now, f"resized: {r.reason}", r.old_aid))
            cur = db.execute("INSERT INTO attempts (job_id, pool, slots, handle, state, "
                             "started) VALUES (?, ?, ?, ?, 'running', ?)",
                             (r.job_id, r.pool, json.dumps(r.slots),
                              json.dumps({"pending": True, "resize": rid}), now))
            aid = int(cur.lastrowid or 0)
            db.execute("UPDATE resizes SET new_aid = ?, state = 'launching' WHERE id = ?",
                       (aid, rid))
            self._event(db, "placed", r.job_id, aid, {"pool": r.pool, "slots": r.slots,
                                                      "resize": rid})
        return aid

    def finish_resize(self, rid: int, state: str = "done") -> None:
        with self.tx() as db:
            r = ResizeRow.of(db.execute("SELECT * FROM resizes WHERE id = ?",
                                        (rid,)).fetchone())
            db.execute("UPDATE resizes SET state = ? WHERE id = ?", (state, rid))
            self._event(db, "resized" if state == "done" else "resize_abandoned", r.job_id,
                        r.new_aid, {"resize": rid, "action": r.action, "from": r.old,
                                    "to": r.new, "reason": r.reason,
                                    "gain_s": _g(r.gain_s)})

    def resizes(self, jid: str | None = None, states: tuple[str, ...] | None = None
                ) -> list[ResizeRow]:
        return [ResizeRow.of(r) for r in select_rows(self.db, "resizes", jid, states)]



def _g(x: float) -> float | None:
    """A gain for JSON: None when waiting would never end."""
    return None if math.isinf(x) else round(x, 1)
