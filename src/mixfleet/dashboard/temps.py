"""Temperature lines of the run page: one per rank and device, with the readings of the
thermal events on them, broken where the run restarted (``docs/dashboard.md``).

A telemetry record of an emulated chip carries the ``rank`` whose chip it read (two ranks
on one chip kind are two devices); a real device is told apart by its ``device_id`` (NVML
UUID, PCI bus id), and the ranks that use it by their ``worker_start`` events. Records of
old runs with neither are keyed by device name, as before. A thermal event (warning,
critical, resumed) is a reading of its rank's device: it is added to that rank's line, so
the reading that triggered an action is on the chart even when the sampler missed it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from mixfleet.dashboard.series import Column, envelope, to_json_floats
from mixfleet.report.times import restart_times
from mixfleet.runs import Event

__all__ = ["TempLines", "series_key", "break_at", "THERMAL_READINGS"]

THERMAL_READINGS = (Event.THERMAL_WARNING, Event.THERMAL_CRITICAL, Event.THERMAL_RESUMED)
"""Events whose ``temp_c`` is a reading of their rank's device."""


def _num(v: Any) -> float:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else math.nan


def series_key(rec: dict[str, Any]) -> str:
    """The line a telemetry record belongs to: ``rank R · DEVICE`` for a rank's own chip,
    ``DEVICE · DEVICE_ID`` for a real device, else the device name."""
    dev = str(rec.get("device"))
    if type(rec.get("rank")) is int:
        return f"rank {rec['rank']} · {dev}"
    if isinstance(rec.get("device_id"), str) and rec["device_id"]:
        return f"{dev} · {rec['device_id']}"
    return dev


def break_at(x: np.ndarray, y: np.ndarray, breaks: Sequence[float], *,
             gap_factor: float | None = 10.0) -> tuple[np.ndarray, np.ndarray]:
    """``(x, y)`` (sorted by x) with one null point (y = NaN) in each gap between two points
    that holds one of ``breaks``, and, with ``gap_factor``, in every gap longer than
    ``gap_factor`` times the 90th percentile of the spacing (from 8 points on): a line is
    never drawn across a restart or a pause in the readings."""
    if x.size < 2:
        return x, y
    cuts: dict[int, float] = {}  # index of the point after the gap -> where it is cut
    for b in sorted(breaks):
        i = int(np.searchsorted(x, b, "right"))
        if 0 < i < x.size and x[i - 1] < b < x[i]:
            cuts.setdefault(i, float(b))
    if gap_factor is not None and x.size >= 8:
        d = np.diff(x)
        p90 = float(np.nanpercentile(d, 90)) if np.isfinite(d).any() else 0.0
        if p90 > 0:
            for j in np.flatnonzero(d > gap_factor * p90).tolist():
                cuts.setdefault(j + 1, float((x[j] + x[j + 1]) / 2))
    if not cuts:
        return x, y
    idx = sorted(cuts)
    return (np.insert(x, idx, [cuts[i] for i in idx]), np.insert(y, idx, math.nan))


def restart_breaks(events: list[dict[str, Any]], t0: float, step_t: np.ndarray
                   ) -> list[float]:
    """Seconds since ``t0`` at which the run restarted, where every line is broken: the
    first restart event between two step records (ending at ``step_t``; the new attempt's
    telemetry may start before its later restart events, such as its ``run_start``)."""
    first: dict[int, float] = {}
    for r in restart_times(events):
        i = int(np.searchsorted(step_t, r)) if step_t.size else 0
        first[i] = min(first.get(i, r), r)
    return sorted(r - t0 for r in first.values())


class TempLines:
    """Temperature columns per line, fed telemetry records as they are read."""

    def __init__(self) -> None:
        self.cols: dict[str, tuple[Column, Column]] = {}
        self.meta: dict[str, dict[str, Any]] = {}

    def add(self, recs: list[dict[str, Any]]) -> None:
        """Telemetry records, in the order written."""
        pts: dict[str, tuple[list[float], list[float]]] = {}
        for r in recs:
            key = series_key(r)
            if key not in self.meta:
                self.meta[key] = _meta(r)
            p = pts.setdefault(key, ([], []))
            p[0].append(_num(r.get("t")))
            p[1].append(_num(r.get("temp_c")))
        for key, (tt, tc) in pts.items():
            cols = self.cols.setdefault(key, (Column(), Column()))
            cols[0].extend(tt)
            cols[1].extend(tc)

    def event_line(self, e: dict[str, Any], starts: list[dict[str, Any]]) -> str | None:
        """The line of the rank of thermal event ``e``: that rank's own (emulated) chip, or
        the real device it used then (by ``device_id``; both from its newest ``worker_start``
        before ``e``), else a line of its own for the rank."""
        rank = e.get("rank")
        if type(rank) is not int:
            return None
        mine = [s for s in starts if s.get("rank") == rank and _num(s.get("t")) <= e["t"]]
        dev = mine[-1] if mine else {}
        ranked = [k for k, m in self.meta.items() if m["rank"] == rank]
        for key in ranked:
            if self.meta[key]["device"] == dev.get("device"):
                return key
        did = dev.get("device_id")
        for key, m in self.meta.items():
            if did and m["device_id"] == did:
                return key
        if ranked:
            return ranked[-1]
        key = series_key({"rank": rank, "device": dev.get("device", "?")})
        self.meta[key] = {"rank": rank, "device": dev.get("device"), "device_id": did,
                          "chip": dev.get("chip"), "emulated": False}
        return key

    def view(self, events: list[dict[str, Any]], t0: float, breaks: list[float], points: int,
             preview: list[dict[str, Any]], complete: bool) -> dict[str, Any]:
        """Each line downsampled to ``points`` (plus the sampled ``preview`` records of the
        unread rest), with the thermal events' readings, in seconds since ``t0``, broken at
        ``breaks`` (and, once every record is read, at long gaps)."""
        extra: dict[str, list[tuple[float, float]]] = {}
        for r in preview:
            if r.get("kind") == "telemetry" and type(r.get("t")) in (int, float):
                extra.setdefault(series_key(r), []).append((r["t"] - t0, _num(r.get("temp_c"))))
        starts = [e for e in events if e.get("event") == Event.WORKER_START]
        marked: dict[str, int] = {}
        for e in events:
            if e.get("event") in THERMAL_READINGS and math.isfinite(_num(e.get("temp_c"))):
                key = self.event_line(e, starts)
                if key is not None:
                    extra.setdefault(key, []).append((e["t"] - t0, float(e["temp_c"])))
                    marked[key] = marked.get(key, 0) + 1
        out = {}
        for key in sorted(set(self.cols) | set(extra), key=_order(self.meta)):
            tc, vc = self.cols.get(key, (Column(), Column()))
            xs, ys = envelope(tc.view() - t0, vc.view(), points)
            if key in extra:
                xs = np.concatenate([xs, [p[0] for p in extra[key]]])
                ys = np.concatenate([ys, [p[1] for p in extra[key]]])
                o = np.argsort(xs, kind="stable")
                xs, ys = xs[o], ys[o]
            xs, ys = break_at(xs, ys, breaks, gap_factor=10.0 if complete else None)
            m = self.meta.get(key, {})
            out[key] = {"x": to_json_floats(xs, 10), "y": to_json_floats(ys),
                        "records": len(tc), "event_readings": marked.get(key, 0),
                        "rank": m.get("rank"), "device": m.get("device"),
                        "device_id": m.get("device_id"), "chip": m.get("chip"),
                        "emulated": bool(m.get("emulated"))}
        return out


def _order(meta: dict[str, dict[str, Any]]) -> Any:
    def key(k: str) -> tuple[int, str]:
        r = meta.get(k, {}).get("rank")
        return (r if type(r) is int else 1 << 30, k)
    return key


def _meta(r: dict[str, Any]) -> dict[str, Any]:
    return {"rank": r.get("rank") if type(r.get("rank")) is int else None,
            "device": r.get("device"), "device_id": r.get("device_id"),
            "chip": r.get("chip"), "emulated": bool(r.get("emulated"))}
