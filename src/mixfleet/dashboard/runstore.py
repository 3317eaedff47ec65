"""One run directory as the dashboard sees it: its metrics and events read incrementally,
kept as columns, and served downsampled.

The run report (ETTR, restarts, steps lost, time in each failure state) is kept up to date
record by record with the rules of ``mixfleet report`` (``report/timeline.py``; the run's
start and downtime from ``report/times.py``), so the page and ``mixfleet report --json`` give
the same numbers. Nothing here writes into the run.
"""

from __future__ import annotations

import json
import math
import threading
import time
import tomllib
from pathlib import Path
from typing import Any

import numpy as np

from mixfleet.dashboard.runinfo import run_devices, run_state, run_thresholds, share_history
from mixfleet.dashboard.series import Column, envelope, to_json_floats
from mixfleet.dashboard.tail import JsonlTail
from mixfleet.dashboard.temps import TempLines, break_at, restart_breaks
from mixfleet.report.predicted import pipeline_stages
from mixfleet.report.timeline import report_fields
from mixfleet.report.times import StepLedger, run_start_time
from mixfleet.runs import Event

__all__ = ["RunStore", "is_run_dir", "MARKED_EVENTS", "READ_BUDGET_BYTES"]

READ_BUDGET_BYTES = 8 << 20
"""Most bytes of metrics.jsonl parsed per request; a bigger backlog is read over several
polls while the page shows a sampled preview of the rest."""

READ_BUDGET_S = 0.3
"""Most seconds of parsing per request (the page polls again at once while behind)."""

FIRST_READ_BYTES = 256 << 10
"""Most bytes parsed for a run's first request (its first chart; the rest is sampled)."""

CHUNK_BYTES = 1 << 20

PREVIEW_BYTES = 4 << 20
"""A backlog larger than this is previewed by sampling lines at evenly spaced offsets."""

MARKED_EVENTS = (Event.FAULT_INJECTED, Event.HANG_DETECTED, Event.RUN_START,
                 Event.THERMAL_WARNING, Event.THERMAL_CRITICAL, Event.THERMAL_RESUMED,
                 Event.DRAIN, Event.ROLLBACK, Event.STEP_SKIPPED, Event.STRAGGLER,
                 Event.SHARES_CHANGED, Event.CHECKPOINT_FAILED, Event.RELAUNCH,
                 Event.LAUNCH_FAILED, Event.PEER_LOST, Event.DEVICE_FAULT, Event.FINISH,
                 Event.STAGES_CHANGED)
"""Events drawn on the time axis (checkpoint commits and worker starts are too many)."""


MAX_MARKERS = 2000
"""Most events marked on the time axis (the newest); the page says how many were left out."""


def is_run_dir(path: Path) -> bool:
    """A run directory holds ``events.jsonl`` or ``metrics.jsonl``."""
    return (path / "events.jsonl").is_file() or (path / "metrics.jsonl").is_file()


def _num(v: Any) -> float:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else math.nan


class RunStore:
    """Columns and report of one run, refreshed from the bytes appended since last time."""

    def __init__(self, root: str | Path, *, clock: Any = time.time) -> None:
        self.root = Path(root)
        self._clock = clock
        self._lock = threading.Lock()
        self._metrics = JsonlTail(self.root / "metrics.jsonl")
        self._events_tail = JsonlTail(self.root / "events.jsonl")
        self.version = 0
        self._clear()
        self._clear_events()

    # -- state -------------------------------------------------------------------------
    def _clear(self) -> None:
        self.t = Column()
        self.step = Column()
        self.loss = Column()
        self.sps = Column()
        self.step_s = Column()
        self.temps = TempLines()
        self.emulated_records = False
        self.other_records = 0
        self.ledger = StepLedger()  # final history, redone time, first step (report's rule)

    def _clear_events(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.malformed_events = 0

    def _add_metrics(self, recs: list[dict[str, Any]]) -> None:
        ts, steps, losses, spss, stss = [], [], [], [], []
        tel: list[dict[str, Any]] = []
        nan = math.nan
        for r in recs:
            if "loss" not in r:
                if r.get("kind") == "telemetry":
                    tel.append(r)
                else:
                    self.other_records += 1
                continue
            st = r.get("step")
            if type(st) is not int:
                self.other_records += 1
                continue
            t, ss = r.get("t"), r.get("step_s")
            t = t if type(t) is float or type(t) is int else nan
            ss = ss if type(ss) is float or type(ss) is int else nan
            if r.get("emulated"):
                self.emulated_records = True
            self.ledger.add(st, t, ss)  # mixfleet report's rule (redone work, ...)
            ts.append(t)
            steps.append(st)
            lo = r["loss"]
            losses.append(lo if type(lo) is float or type(lo) is int else nan)
            sp = r.get("samples_per_s", r.get("tokens_per_s"))
            spss.append(sp if type(sp) is float or type(sp) is int else nan)
            stss.append(ss)
        for col, vals in ((self.t, ts), (self.step, steps), (self.loss, losses),
                          (self.sps, spss), (self.step_s, stss)):
            col.extend(vals)
        self.temps.add(tel)

    def refresh(self, budget: int | None = READ_BUDGET_BYTES,
                max_s: float | None = READ_BUDGET_S) -> bool:
        """Read what was appended since the last call: at most ``budget`` bytes of
        metrics, in pieces, stopping after ``max_s`` seconds; True when anything
        changed."""
        with self._lock:
            if self.version == 0 and budget is not None:
                budget = min(budget, FIRST_READ_BYTES)  # the first answer comes quickly
            ev = self._events_tail.read()
            if ev.reset:
                self._clear_events()
            for e in ev.records:  # an event needs a time and a name to be placed
                t = e.get("t")
                if isinstance(e.get("event"), str) and type(t) in (int, float):
                    self.events.append(e)
                else:
                    self.malformed_events += 1
            changed = bool(ev.records or ev.reset)
            start = time.perf_counter()
            left = budget
            while True:
                piece = CHUNK_BYTES if left is None else min(CHUNK_BYTES, left)
                m = self._metrics.read(piece)
                if m.reset:
                    self._clear()
                self._add_metrics(m.records)
                changed = changed or bool(m.records or m.reset)
                if left is not None:
                    left -= m.bytes_read
                if (m.bytes_read == 0 or self._metrics.caught_up or
                        (left is not None and left <= 0) or
                        (max_s is not None and time.perf_counter() - start > max_s)):
                    break
            if changed:
                self.version += 1
            return changed

    @property
    def complete(self) -> bool:
        """Every byte of metrics.jsonl written so far has been read."""
        return self._metrics.caught_up

    def problems(self) -> list[str]:
        """What is wrong with this run's files, in words (empty when nothing is)."""
        out = []
        if not is_run_dir(self.root):
            out.append(f"{self.root} is not a run directory: it holds neither events.jsonl "
                       f"nor metrics.jsonl (written by `mixfleet train --run-dir`)")
        if self.malformed_events:
            out.append(f"events.jsonl: {self.malformed_events} record(s) without a numeric "
                       f"\"t\" and an \"event\" name skipped")
        for name, tail in (("metrics.jsonl", self._metrics), ("events.jsonl",
                                                              self._events_tail)):
            if tail.corrupt:
                out.append(f"{name}: {tail.corrupt} corrupt line(s) skipped (first: line "
                           f"{tail.first_corrupt_line})")
            if tail.pending_bytes and tail.caught_up and not self.state()["active"]:
                out.append(f"{name}: the last line is truncated ({tail.pending_bytes} bytes "
                           f"without a newline); it is ignored")
        return out

    # -- what the pages show ------------------------------------------------------------
    def t0(self) -> float:
        """The run's start (:func:`mixfleet.report.times.run_start_time`)."""
        return run_start_time(self.events, self.ledger.first)

    def report(self) -> dict[str, Any]:
        """The numbers of ``mixfleet report --json`` (same keys, rules and rounding)."""
        return report_fields(self.events, self.ledger, self.step.view(), self.t.view(),
                             self.step_s.view())

    def config(self) -> dict[str, Any]:
        try:
            with open(self.root / "config.toml", "rb") as f:
                return tomllib.load(f)
        except (OSError, tomllib.TOMLDecodeError):
            return {}

    def summary(self) -> dict[str, Any] | None:
        try:
            doc = json.loads((self.root / "summary.json").read_text())
        except (OSError, ValueError):
            return None
        return doc if isinstance(doc, dict) else None

    def devices(self) -> list[dict[str, Any]]:
        """Ranks and their devices (:func:`mixfleet.dashboard.runinfo.run_devices`)."""
        return run_devices(self.events, self.config())

    def state(self) -> dict[str, Any]:
        """``running``, ``finished``, ``failed`` or ``stopped`` (unfinished and idle)."""
        return run_state(self.events, self.root, self._clock())

    def thresholds(self) -> dict[str, Any]:
        """Warning and critical temperatures of the chart (the config's, the thermal
        events', else the trainer's defaults)."""
        return run_thresholds(self.events, self.config(), self.devices())

    def _preview(self, points: int) -> list[dict[str, Any]]:
        """Records sampled at evenly spaced byte offsets of the unread rest of
        metrics.jsonl (one line after each offset)."""
        start, size = self._metrics.offset, self._metrics.size
        out: list[dict[str, Any]] = []
        if size - start <= 0:
            return out
        n = max(2, points)
        step = (size - start) / n
        try:
            with open(self._metrics.path, "rb") as f:
                for i in range(n):
                    f.seek(int(start + i * step))
                    f.readline()  # skip to the next line start
                    line = f.readline()
                    if line.endswith(b"\n"):
                        try:
                            rec = json.loads(line)
                        except ValueError:
                            continue
                        if isinstance(rec, dict):
                            out.append(rec)
        except OSError:
            return []
        return out

    def data(self, points: int = 1000, *, refresh: bool = True) -> dict[str, Any]:
        """Everything the run page draws: series downsampled to ``points``, events,
        shares over time, the report and what is wrong (after reading what was appended,
        unless ``refresh`` is False)."""
        if refresh:
            self.refresh()
        with self._lock:
            t0 = self.t0()
            x = self.t.view() - t0
            preview = [] if self.complete or (self._metrics.size - self._metrics.offset
                                              < PREVIEW_BYTES) else self._preview(points // 2)
            series: dict[str, Any] = {}
            breaks = restart_breaks(self.events, t0, self.t.view())
            for name, col in (("loss", self.loss), ("samples_per_s", self.sps)):
                xs, ys = envelope(x, col.view(), points)
                pre = [r for r in preview if "loss" in r and type(r.get("t")) in (int, float)]
                px = [r["t"] - t0 for r in pre]
                py = [_num(r.get("loss" if name == "loss" else "samples_per_s"))
                      for r in pre]
                xs, ys = break_at(np.concatenate([xs, px]), np.concatenate([ys, py]), breaks,
                                  gap_factor=None)
                series[name] = {"x": to_json_floats(xs, 10), "y": to_json_floats(ys),
                                "records": int(x.size)}
            temps = self.temps.view(self.events, t0, breaks, points, preview, self.complete)
            marked = [e for e in self.events if e.get("event") in MARKED_EVENTS]
            events = [{**e, "x": round(float(e["t"]) - t0, 3)}
                      for e in marked[-MAX_MARKERS:]]
            shares = share_history(self.events, t0, float(x[-1]) if x.size else 0.0)
            return {
                "version": self.version,
                "complete": self.complete,
                "read_fraction": (round(self._metrics.offset / self._metrics.size, 4)
                                  if self._metrics.size else 1.0),
                "preview_points": len(preview),
                "t0": t0,
                "series": series,
                "temperature": temps,
                "thresholds": self.thresholds(),
                "events": events,
                "events_left_out": max(0, len(marked) - MAX_MARKERS),
                "shares": shares,
                "stages": pipeline_stages(self.events),
                "report": self.report(),
                "devices": self.devices(),
                "emulated": self.emulated_records or any(d["emulated"]
                                                         for d in self.devices()),
                "state": self.state(),
                "problems": self.problems(),
            }

    def row(self) -> dict[str, Any]:
        """One line of the Runs page."""
        self.refresh()
        with self._lock:
            cfg = self.config()
            summ = self.summary()
            rep = self.report() if self.complete else None
            steps = self.step.view()
            fm = (summ or {}).get("final_metric") or {}
            devs = self.devices()
            return {
                "path": str(self.root),
                "name": self.root.name,
                "workload": (cfg.get("workload") or {}).get("name")
                or (summ or {}).get("workload"),
                "devices": devs,
                "emulated": self.emulated_records or any(d["emulated"] for d in devs),
                **self.state(),
                "steps": (int(np.nanmax(steps)) if steps.size and not
                          np.isnan(steps).all() else (summ or {}).get("steps")),
                "target_steps": (cfg.get("train") or {}).get("steps"),
                "ettr": rep["ettr"] if rep else (summ or {}).get("ettr"),
                "restarts": rep["restarts"] if rep else (summ or {}).get("restarts"),
                "steps_lost": rep["steps_lost"] if rep else (summ or {}).get("steps_lost"),
                "final_metric": fm if fm else None,
                "read_fraction": (round(self._metrics.offset / self._metrics.size, 4)
                                  if self._metrics.size else 1.0),
                "problems": self.problems(),
            }
