"""Stops and moves of running jobs in the fleet's SQLite state (docs/fleet-live.md, "Stops
and moves").

A policy's stop or move of a running job is a row of ``preempts`` that goes ``planned`` ->
``stopping`` -> ``done`` (a stop), or ``planned`` -> ``stopping`` -> ``launching`` -> ``done``
(a move), each step one transaction: ``planned`` (decided, with the policy's reason; the
attempt still holds its devices), ``stopping`` (its processes are being stopped: SIGTERM
persists the newest snapshot), ``done`` for a stop (the attempt ended ``preempted`` and the
job queued again with its run directory, in one transaction; no restart counted),
``launching`` for a move (the attempt ended ``moved`` and the new one recorded on the
other pool with a pending handle, in one transaction), then ``done`` once it started. A
scheduler killed between two steps finds the row and carries it on
(:meth:`mixfleet.live.preempt.PreemptScheduling.resume_preempts`).
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3

from mixfleet.live.resizes import StorePart, select_rows, slots_of

__all__ = ["PreemptRow", "PreemptStore", "PREEMPT_SCHEMA", "OPEN"]

PREEMPT_SCHEMA = """
CREATE TABLE IF NOT EXISTS preempts (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  t REAL NOT NULL,
  job_id TEXT NOT NULL,
  old_aid INTEGER NOT NULL,
  new_aid INTEGER,
  action TEXT NOT NULL,
  src TEXT NOT NULL,
  pool TEXT,
  slots TEXT NOT NULL DEFAULT '[]',
  reason TEXT NOT NULL,
  state TEXT NOT NULL
);
"""

#: The states of a row not yet finished (a restarted scheduler carries them on).
OPEN = ("planned", "stopping", "launching")


@dataclasses.dataclass(frozen=True, kw_only=True)
class PreemptRow:
    id: int
    t: float
    job_id: str
    old_aid: int
    new_aid: int | None
    action: str
    """``stop`` (the job waits in the queue) or ``move`` (relaunched on ``pool``)."""
    src: str
    """The pool it ran on."""
    pool: str | None
    """Where a move goes (None for a stop)."""
    slots: list[tuple[str, int]]
    """The devices of a move's new attempt, once chosen (at ``launching``)."""
    reason: str
    state: str

    @staticmethod
    def of(r: sqlite3.Row) -> PreemptRow:
        d = dict(r)
        d["slots"] = slots_of(d["slots"])
        return PreemptRow(**d)


class PreemptStore(StorePart):
    """The stop-and-move methods of :class:`mixfleet.live.store.Store`."""

    def _preempt(self, db: sqlite3.Connection, pid: int) -> PreemptRow:
        return PreemptRow.of(db.execute("SELECT * FROM preempts WHERE id = ?",
                                        (pid,)).fetchone())

    def plan_preempt(self, jid: str, aid: int, *, action: str, src: str, pool: str | None,
                     reason: str) -> int:
        """Record the policy's stop (``pool`` None) or move of attempt ``aid``."""
        with self.tx() as db:
            cur = db.execute("INSERT INTO preempts (t, job_id, old_aid, action, src, pool, "
                             "reason, state) VALUES (?, ?, ?, ?, ?, ?, ?, 'planned')",
                             (self.clock(), jid, aid, action, src, pool, reason))
            pid = int(cur.lastrowid or 0)
            self._event(db, "preempt_planned", jid, aid, {"preempt": pid, "action": action,
                                                          "from": src, "to": pool,
                                                          "reason": reason})
        return pid

    def mark_stopping(self, pid: int) -> None:
        with self.tx() as db:
            db.execute("UPDATE preempts SET state = 'stopping' WHERE id = ? AND state = "
                       "'planned'", (pid,))

    def requeue_preempted(self, pid: int, note: str = "") -> bool:
        """A stop's end, one transaction: the attempt ``preempted``, its job ``queued``
        again (same run directory; not a restart), the row ``done``. False (the row
        ``abandoned``) when the attempt had already ended another way. ``note``: a move
        that found no room turns into a stop, its reason extended by it."""
        now = self.clock()
        with self.tx() as db:
            if note:
                db.execute("UPDATE preempts SET action = 'stop', reason = reason || ? "
                           "WHERE id = ?", (note, pid))
            r = self._preempt(db, pid)
            a = db.execute("SELECT state FROM attempts WHERE id = ?", (r.old_aid,)).fetchone()
            if a is None or a[0] != "running":
                return self._close(db, r, "abandoned")
            why = r.reason
            db.execute("UPDATE attempts SET state = 'preempted', ended = ?, reason = ? "
                       "WHERE id = ?", (now, why, r.old_aid))
            db.execute("UPDATE jobs SET state = 'queued', reason = ? WHERE id = ? AND "
                       "state = 'running'", (why, r.job_id))
            return self._close(db, r, "done")

    def switch_moved(self, pid: int, slots: list[tuple[str, int]]) -> int:
        """A move's switch, one transaction: the attempt ``moved``, the new one recorded on
        ``slots`` of the row's pool (its handle pending), the row ``launching``; the job
        stays running. Returns the new attempt's id (0: the attempt had already ended
        another way, the row ``abandoned``)."""
        now = self.clock()
        with self.tx() as db:
            r = self._preempt(db, pid)
            if r.state == "launching":
                return int(r.new_aid or 0)
            a = db.execute("SELECT state FROM attempts WHERE id = ?", (r.old_aid,)).fetchone()
            if a is None or a[0] != "running":
                self._close(db, r, "abandoned")
                return 0
            db.execute("UPDATE attempts SET state = 'moved', ended = ?, reason = ? "
                       "WHERE id = ?", (now, r.reason, r.old_aid))
            cur = db.execute("INSERT INTO attempts (job_id, pool, slots, handle, state, "
                             "started) VALUES (?, ?, ?, ?, 'running', ?)",
                             (r.job_id, r.pool, json.dumps(slots),
                              json.dumps({"pending": True, "preempt": pid}), now))
            aid = int(cur.lastrowid or 0)
            db.execute("UPDATE preempts SET new_aid = ?, slots = ?, state = 'launching' "
                       "WHERE id = ?", (aid, json.dumps(slots), pid))
            self._event(db, "placed", r.job_id, aid, {"pool": r.pool, "slots": slots,
                                                      "preempt": pid})
        return aid

    def finish_preempt(self, pid: int, state: str = "done") -> None:
        with self.tx() as db:
            self._close(db, self._preempt(db, pid), state)

    def _close(self, db: sqlite3.Connection, r: PreemptRow, state: str) -> bool:
        db.execute("UPDATE preempts SET state = ? WHERE id = ?", (state, r.id))
        kind = ("preempt_abandoned" if state != "done" else
                "preempted" if r.action == "stop" else "moved")
        self._event(db, kind, r.job_id, r.new_aid or r.old_aid,
                    {"preempt": r.id, "action": r.action, "from": r.src, "to": r.pool,
                     "reason": r.reason})
        return state == "done"

    def preempts(self, jid: str | None = None, states: tuple[str, ...] | None = None
                 ) -> list[PreemptRow]:
        return [PreemptRow.of(r) for r in select_rows(self.db, "preempts", jid, states)]
