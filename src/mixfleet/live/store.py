"""The fleet's state in SQLite (WAL mode): jobs, attempts, events, the block list.

SQLite is the truth: the scheduler can be killed at any moment and, restarted, reads what
was placed from here. Every change is one short transaction; ``BEGIN IMMEDIATE`` takes the
write lock up front, so concurrent ``submit`` calls from many processes serialize (each
waits up to ``busy_timeout``) and each gets its own id.

Job states: ``queued`` -> ``running`` -> ``done`` | ``failed`` | ``cancelled`` (a failed
attempt puts a job back to ``queued`` until ``max_restarts``). Attempt states:
``running`` -> ``done`` | ``failed`` | ``lost`` | ``cancelled`` | ``resized`` (ended by a
resize of its job, which goes on in the next attempt at once) | ``preempted`` (stopped by
the policy: the job waits in the queue, not a restart) | ``moved`` (the policy moved it:
the next attempt runs on another pool at once). A resize
(docs/fleet-elastic.md) is a row of ``resizes``: ``planned`` -> ``launching`` -> ``done``,
each step one transaction, so a scheduler killed mid-resize finishes it on restart; a
policy's stop or move of a running job is a row of ``preempts`` (the same way,
:mod:`mixfleet.live.preempts`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mixfleet.errors import ConfigError
from mixfleet.live.preempts import PREEMPT_SCHEMA, PreemptStore
from mixfleet.live.resizes import RESIZE_SCHEMA, ResizeStore, select_rows
from mixfleet.live.spec import JobSpec

__all__ = ["Store", "JobRow", "AttemptRow", "DB_NAME"]

DB_NAME = "fleet.db"
ACTIVE = ("queued", "running")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  id TEXT UNIQUE,
  name TEXT NOT NULL,
  spec TEXT NOT NULL,
  state TEXT NOT NULL,
  priority INTEGER NOT NULL,
  devices INTEGER NOT NULL,
  submitted REAL NOT NULL,
  started REAL,
  finished REAL,
  restarts INTEGER NOT NULL DEFAULT 0,
  cancel INTEGER NOT NULL DEFAULT 0,
  reason TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS attempts (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  job_id TEXT NOT NULL,
  pool TEXT NOT NULL,
  slots TEXT NOT NULL,
  handle TEXT NOT NULL,
  state TEXT NOT NULL,
  started REAL NOT NULL,
  ended REAL,
  rc INTEGER,
  reason TEXT NOT NULL DEFAULT '',
  drains_seen INTEGER NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX IF NOT EXISTS one_running ON attempts(job_id) WHERE state = 'running';
CREATE TABLE IF NOT EXISTS events (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  t REAL NOT NULL,
  job_id TEXT,
  attempt_id INTEGER,
  kind TEXT NOT NULL,
  detail TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS blocklist (
  pool TEXT NOT NULL,
  node TEXT NOT NULL,
  device INTEGER NOT NULL,
  t REAL NOT NULL,
  job_id TEXT,
  reason TEXT NOT NULL,
  PRIMARY KEY (pool, node, device)
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


@dataclasses.dataclass(frozen=True, kw_only=True)
class JobRow:
    id: str
    name: str
    spec: JobSpec
    state: str
    priority: int
    devices: int
    submitted: float
    started: float | None
    finished: float | None
    restarts: int
    cancel: bool
    reason: str


@dataclasses.dataclass(frozen=True, kw_only=True)
class AttemptRow:
    id: int
    job_id: str
    pool: str
    slots: list[tuple[str, int]]
    """(node, device index) of each device, in rank order."""
    handle: dict[str, Any]
    state: str
    started: float
    ended: float | None
    rc: int | None
    reason: str
    drains_seen: int


def _job(r: sqlite3.Row) -> JobRow:
    return JobRow(id=r["id"], name=r["name"], spec=JobSpec.from_json(r["spec"]),
                  state=r["state"], priority=r["priority"], devices=r["devices"],
                  submitted=r["submitted"], started=r["started"], finished=r["finished"],
                  restarts=r["restarts"], cancel=bool(r["cancel"]), reason=r["reason"])


def _attempt(r: sqlite3.Row) -> AttemptRow:
    return AttemptRow(id=r["id"], job_id=r["job_id"], pool=r["pool"],
                      slots=[(n, int(i)) for n, i in json.loads(r["slots"])],
                      handle=json.loads(r["handle"]), state=r["state"], started=r["started"],
                      ended=r["ended"], rc=r["rc"], reason=r["reason"],
                      drains_seen=r["drains_seen"])


def _private_file(path: Path) -> None:
    """Create ``path`` 0600 (SQLite gives its -wal and -shm files the same mode), or make
    an existing one of the user's so; a link in its place is refused."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    except OSError as e:
        raise ConfigError(f"{path} cannot be opened as the fleet's database ({e.strerror}; "
                          f"a link is refused); pass --dir of a fleet of your own") from None
    try:
        st = os.fstat(fd)
        if st.st_uid == os.getuid() and st.st_mode & 0o077:
            os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


class Store(ResizeStore, PreemptStore):
    """One connection to ``DIR/fleet.db``; open one per process or thread."""

    def __init__(self, fleet_dir: str | Path, *, clock: Any = time.time) -> None:
        self.dir = Path(fleet_dir)
        self.path = self.dir / DB_NAME
        self.clock = clock
        _private_file(self.path)
        self.db = sqlite3.connect(self.path, timeout=60.0, isolation_level=None)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA busy_timeout = 60000")
        self.db.execute("PRAGMA journal_mode = WAL")
        self.db.execute("PRAGMA synchronous = NORMAL")
        self.db.executescript(_SCHEMA + RESIZE_SCHEMA + PREEMPT_SCHEMA)
        self._data_version: int | None = None

    def close(self) -> None:
        self.db.close()

    def changed(self) -> bool:
        """Whether another connection (a ``submit``, ``cancel`` or ``unblock`` of another
        process) committed since the last call: SQLite's ``PRAGMA data_version``, a read
        of a few microseconds that this connection's own commits leave unchanged. The
        first call says True."""
        v = int(self.db.execute("PRAGMA data_version").fetchone()[0])
        seen, self._data_version = self._data_version, v
        return v != seen

    @contextlib.contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, holding the write lock from its start."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    # -- meta ---------------------------------------------------------------------------
    def set_meta(self, key: str, value: str) -> None:
        with self.tx() as db:
            db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def meta(self, key: str) -> str | None:
        r = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if r is None else str(r[0])

    # -- jobs ---------------------------------------------------------------------------
    def submit(self, spec: JobSpec) -> str:
        """Enqueue a job; returns its id (``job-NNNN``, unique under concurrency)."""
        now = self.clock()
        with self.tx() as db:
            cur = db.execute("INSERT INTO jobs (name, spec, state, priority, devices, "
                             "submitted) VALUES (?, ?, 'queued', ?, ?, ?)",
                             (spec.name, spec.to_json(), spec.priority, spec.devices, now))
            seq = int(cur.lastrowid or 0)
            jid = f"job-{seq:04d}"
            db.execute("UPDATE jobs SET id = ? WHERE seq = ?", (jid, seq))
            self._event(db, "submitted", jid, None, {"name": spec.name,
                                                     "devices": spec.devices})
        return jid

    def job(self, jid: str) -> JobRow | None:
        r = self.db.execute("SELECT * FROM jobs WHERE id = ?", (jid,)).fetchone()
        return None if r is None else _job(r)

    def jobs(self, states: tuple[str, ...] | None = None) -> list[JobRow]:
        if states is None:
            rows = self.db.execute("SELECT * FROM jobs ORDER BY seq").fetchall()
        else:
            q = ",".join("?" * len(states))
            rows = self.db.execute(f"SELECT * FROM jobs WHERE state IN ({q}) ORDER BY seq",
                                   states).fetchall()
        return [_job(r) for r in rows]

    def request_cancel(self, jid: str) -> bool:
        """Mark a job for cancelling (a queued one is cancelled at once); False when the
        job has already ended."""
        with self.tx() as db:
            r = db.execute("SELECT state FROM jobs WHERE id = ?", (jid,)).fetchone()
            if r is None or r[0] not in ACTIVE:
                return False
            if r[0] == "queued":
                db.execute("UPDATE jobs SET state = 'cancelled', cancel = 1, finished = ?, "
                           "reason = 'cancelled by user' WHERE id = ?", (self.clock(), jid))
                self._event(db, "cancelled", jid, None, {})
            else:
                db.execute("UPDATE jobs SET cancel = 1 WHERE id = ?", (jid,))
        return True

    # -- attempts -----------------------------------------------------------------------
    def start_attempt(self, jid: str, pool: str, slots: list[tuple[str, int]],
                      handle: dict[str, Any]) -> int:
        """Record a placement; the job must be queued (raises otherwise: never two
        attempts of one job running at once)."""
        now = self.clock()
        with self.tx() as db:
            r = db.execute("SELECT state FROM jobs WHERE id = ?", (jid,)).fetchone()
            if r is None or r[0] != "queued":
                raise RuntimeError(f"job {jid} is {r and r[0]}, not queued")
            cur = db.execute("INSERT INTO attempts (job_id, pool, slots, handle, state, "
                             "started) VALUES (?, ?, ?, ?, 'running', ?)",
                             (jid, pool, json.dumps(slots), json.dumps(handle), now))
            aid = int(cur.lastrowid or 0)
            db.execute("UPDATE jobs SET state = 'running', started = COALESCE(started, ?) "
                       "WHERE id = ?", (now, jid))
            self._event(db, "placed", jid, aid, {"pool": pool, "slots": slots})
        return aid

    def set_handle(self, aid: int, handle: dict[str, Any]) -> None:
        with self.tx() as db:
            db.execute("UPDATE attempts SET handle = ? WHERE id = ?", (json.dumps(handle), aid))

    def attempts(self, jid: str | None = None, states: tuple[str, ...] | None = None
                 ) -> list[AttemptRow]:
        return [_attempt(r) for r in select_rows(self.db, "attempts", jid, states)]

    def end_attempt(self, aid: int, *, state: str, rc: int | None, reason: str,
                    job_state: str, max_restarts: int | None = None) -> str:
        """Close an attempt and move its job on: ``done``, ``cancelled``, or after a
        failure ``queued`` again (``failed`` once restarts exceed ``max_restarts``).
        Returns the job's new state."""
        now = self.clock()
        with self.tx() as db:
            a = db.execute("SELECT job_id, state FROM attempts WHERE id = ?", (aid,)).fetchone()
            if a is None or a["state"] != "running":
                r = db.execute("SELECT state FROM jobs WHERE id = ?", (a and a[0],)).fetchone()
                return str(r[0]) if r else "unknown"
            jid = a["job_id"]
            db.execute("UPDATE attempts SET state = ?, ended = ?, rc = ?, reason = ? "
                       "WHERE id = ?", (state, now, rc, reason, aid))
            new = job_state
            if job_state == "queued":
                restarts = db.execute("SELECT restarts FROM jobs WHERE id = ?",
                                      (jid,)).fetchone()[0] + 1
                if max_restarts is not None and restarts > max_restarts:
                    new = "failed"
                    reason = (f"failed {restarts} times (max_restarts = {max_restarts}); "
                              f"last: {reason}")
                db.execute("UPDATE jobs SET restarts = ? WHERE id = ?", (restarts, jid))
            finished = now if new in ("done", "failed", "cancelled") else None
            db.execute("UPDATE jobs SET state = ?, finished = ?, reason = ? WHERE id = ?",
                       (new, finished, reason if new != "done" else "", jid))
            self._event(db, f"attempt_{state}", jid, aid, {"rc": rc, "reason": reason,
                                                           "job_state": new})
        return new

    def count_drains(self, aid: int, n: int) -> None:
        with self.tx() as db:
            db.execute("UPDATE attempts SET drains_seen = ? WHERE id = ?", (n, aid))

    # -- block list, events -------------------------------------------------------------
    def block(self, pool: str, node: str, device: int, jid: str | None, reason: str) -> None:
        with self.tx() as db:
            db.execute("INSERT OR IGNORE INTO blocklist VALUES (?, ?, ?, ?, ?, ?)",
                       (pool, node, device, self.clock(), jid, reason))
            self._event(db, "blocked", jid, None, {"pool": pool, "node": node,
                                                   "device": device, "reason": reason})

    def unblock(self, pool: str, node: str, device: int, reason: str) -> bool:
        """Take a device off the block list (repaired, cooled); False when it was not on."""
        with self.tx() as db:
            n = db.execute("DELETE FROM blocklist WHERE pool = ? AND node = ? AND device = ?",
                           (pool, node, device)).rowcount
            if n:
                self._event(db, "unblocked", None, None, {"pool": pool, "node": node,
                                                          "device": device, "reason": reason})
        return bool(n)

    def blocked(self) -> set[tuple[str, str, int]]:
        return {(r[0], r[1], int(r[2])) for r in
                self.db.execute("SELECT pool, node, device FROM blocklist").fetchall()}

    def blocklist(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self.db.execute("SELECT * FROM blocklist ORDER BY t")]

    def event(self, kind: str, jid: str | None = None, aid: int | None = None,
              **detail: Any) -> None:
        with self.tx() as db:
            self._event(db, kind, jid, aid, detail)

    def _event(self, db: sqlite3.Connection, kind: str, jid: str | None, aid: int | None,
               detail: dict[str, Any]) -> None:
        db.execute("INSERT INTO events (t, job_id, attempt_id, kind, detail) VALUES "
                   "(?, ?, ?, ?, ?)", (self.clock(), jid, aid, kind,
                                       json.dumps(detail, default=str)))

    def events(self, jid: str | None = None) -> list[dict[str, Any]]:
        q = "SELECT * FROM events" + (" WHERE job_id = ?" if jid else "") + " ORDER BY id"
        out = []
        for r in self.db.execute(q, (jid,) if jid else ()).fetchall():
            d = dict(r)
            d["detail"] = json.loads(d["detail"])
            out.append(d)
        return out
