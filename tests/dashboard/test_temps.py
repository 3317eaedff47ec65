"""The temperature lines of the run page: one per rank and device, with the reading behind
each thermal event on them, and broken where the run restarted."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from mixfleet.dashboard.runstore import RunStore
from mixfleet.dashboard.temps import break_at
from tests.dashboard.conftest import make_synthetic_run, step_record, write_jsonl


def _events(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "events.jsonl").read_text().splitlines()]


def _data(run: Path) -> dict:
    s = RunStore(run)
    s.refresh(None, None)
    return s.data(points=1000)


def test_two_ranks_on_one_chip_kind_are_two_lines(trained_run: Path) -> None:
    """The run on two emulated H20s draws two temperature lines, one per rank, each fed by
    its rank's own telemetry records."""
    temps = _data(trained_run)["temperature"]
    assert sorted(temps) == ["rank 0 · emu:nvidia-h20", "rank 1 · emu:nvidia-h20"]
    assert [temps[k]["rank"] for k in sorted(temps)] == [0, 1]
    assert all(t["records"] > 0 and t["emulated"] for t in temps.values())


def test_the_reading_behind_a_thermal_warning_is_on_its_ranks_line(trained_run: Path) -> None:
    """Each thermal_warning's temp_c, at its time, is a point of that rank's line (and of no
    other rank's), so the chart shows the reading that triggered the warning."""
    d = _data(trained_run)
    warnings = [e for e in _events(trained_run) if e["event"] == "thermal_warning"]
    assert warnings
    for e in warnings:
        x = round(e["t"] - d["t0"], 6)
        for key, line in d["temperature"].items():
            pts = {(round(a, 6), b) for a, b in zip(line["x"], line["y"], strict=True)
                   if b is not None}
            assert ((x, e["temp_c"]) in pts) == (line["rank"] == e["rank"]), key


def test_lines_are_broken_at_the_restart(trained_run: Path) -> None:
    """Every line with points on both sides of the restart has a null point between them
    (no straight line across the gap): temperatures, loss and samples/s."""
    d = _data(trained_run)
    restart = min(e["t"] for e in _events(trained_run)
                  if e["event"] == "worker_start" and e["attempt"] > 0) - d["t0"]
    lines = list(d["temperature"].values()) + list(d["series"].values())
    assert len(lines) == 4
    for line in lines:
        xs, ys = line["x"], line["y"]
        before = max(i for i, x in enumerate(xs) if x < restart and ys[i] is not None)
        after = min(i for i, x in enumerate(xs) if x > restart and ys[i] is not None)
        assert any(ys[i] is None for i in range(before + 1, after)), (before, after)


def test_break_at_cuts_once_per_gap_and_at_long_pauses() -> None:
    """Two restart times in one gap make one null; a gap far longer than the usual spacing
    makes one too; breaks outside the points or on no gap add nothing."""
    x = np.arange(20, dtype=float)
    x[10:] += 100.0  # a pause between 9 and 110
    y = np.ones_like(x)
    bx, by = break_at(x, y, [3.2, 3.7, -5.0, 500.0])
    nulls = [float(v) for v, w in zip(bx, by, strict=True) if math.isnan(w)]
    assert nulls == [3.2, 59.5] and bx.size == x.size + 2
    bx, by = break_at(x, y, [], gap_factor=None)
    assert bx.size == x.size


def test_a_thermal_event_without_telemetry_gets_its_own_ranks_line(tmp_path: Path) -> None:
    """With no telemetry record of a rank (telemetry off), its thermal warning is still
    drawn, on a line named for the rank and its device."""
    run = make_synthetic_run(tmp_path / "r", n_steps=4)
    (run / "metrics.jsonl").write_text("")
    write_jsonl(run / "metrics.jsonl", [step_record(s, 1001.0 + 0.01 * s) for s in (1, 2)])
    write_jsonl(run / "events.jsonl", [{"t": 1001.02, "event": "thermal_warning", "rank": 1,
                                        "step": 2, "temp_c": 91.5, "warn_c": 83.0}], mode="a")
    temps = _data(run)["temperature"]
    assert list(temps) == ["rank 1 · emu:kunlun-p800"]
    assert temps["rank 1 · emu:kunlun-p800"]["y"] == [91.5]
