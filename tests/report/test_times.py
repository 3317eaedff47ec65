"""A run's start and its restarts' downtime, on hand-written logs: one rule, the same in
``mixfleet report`` and the dashboard, and each second of wall time counted once."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mixfleet.dashboard.runstore import RunStore
from mixfleet.report.timeline import run_report
from mixfleet.runs import Event


def _write(root: Path, events: list[dict[str, Any]], steps: list[tuple[int, float]]) -> Path:
    """A run directory with ``events`` and one 1-second step record per (step, end time)."""
    root.mkdir()
    (root / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    (root / "metrics.jsonl").write_text("".join(
        json.dumps({"step": s, "loss": 1.0, "step_s": 1.0, "samples_per_s": 8.0, "t": t})
        + "\n" for s, t in steps))
    return root


def _both(root: Path) -> dict[str, Any]:
    ref = run_report(root)
    store = RunStore(root)
    store.refresh(None, None)
    assert store.report() == ref  # the dashboard's numbers are the report's
    return ref


def test_downtime_runs_from_the_step_before_a_fault_to_the_start_of_the_next_step(
        tmp_path: Path) -> None:
    """Launch at 100; steps 1-5 end at 102-106; a kill; step 5 is redone from 111 (its record
    ends at 112) to step 8; then two restarts in a row before step 9 starts at 122. The
    downtime is (111 - 106) + (122 - 115) = 12 s: the restarts' start-up counts, the first
    step after a restart does not (it is productive), and two restarts in one gap count
    once; start-up, productive, redone and downtime add up to the wall time."""
    ev = [{"t": 100.0, "event": Event.LAUNCH},
          {"t": 100.5, "event": Event.WORKER_START, "rank": 0, "attempt": 0},
          {"t": 100.9, "event": Event.RUN_START, "attempt": 0, "steps_lost": 0},
          {"t": 106.2, "event": Event.FAULT_INJECTED, "kind": "kill", "rank": 1, "step": 5},
          {"t": 108.0, "event": Event.WORKER_START, "rank": 0, "attempt": 1},
          {"t": 110.0, "event": Event.RUN_START, "attempt": 1, "steps_lost": 1},
          {"t": 117.0, "event": Event.WORKER_START, "rank": 0, "attempt": 2},
          {"t": 118.0, "event": Event.RUN_START, "attempt": 2, "steps_lost": 0},
          {"t": 120.0, "event": Event.WORKER_START, "rank": 0, "attempt": 3},
          {"t": 121.0, "event": Event.RUN_START, "attempt": 3, "steps_lost": 0}]
    steps = [(s, 101.0 + s) for s in range(1, 6)] + [(s, 107.0 + s) for s in range(5, 9)]
    rep = _both(_write(tmp_path / "run", ev, steps + [(9, 123.0)]))
    lost = rep["failure_time_s"]
    assert lost["restart_downtime"] == 12.0 and lost["redone_steps"] == 1.0
    assert rep["wall_s"] == 23.0 and rep["productive_s"] == 9.0 and rep["restarts"] == 3
    startup = 101.0 - 100.0  # launch to the start of step 1
    assert startup + rep["productive_s"] + lost["redone_steps"] + lost["restart_downtime"] \
        == rep["wall_s"]


def test_a_restart_during_start_up_loses_the_time_since_the_launch(tmp_path: Path) -> None:
    """Attempt 0 dies in start-up (no run_start, no step): the time from the launch (200)
    to the start of the first step (205) is downtime; without a launch event the run
    starts where its first step started."""
    ev = [{"t": 200.0, "event": Event.LAUNCH},
          {"t": 200.5, "event": Event.WORKER_START, "rank": 0, "attempt": 0},
          {"t": 203.0, "event": Event.WORKER_START, "rank": 0, "attempt": 1},
          {"t": 204.0, "event": Event.RUN_START, "attempt": 1, "steps_lost": 0}]
    rep = _both(_write(tmp_path / "a", ev, [(1, 206.0), (2, 207.0)]))
    assert rep["failure_time_s"]["restart_downtime"] == 5.0 and rep["wall_s"] == 7.0
    rep = _both(_write(tmp_path / "b", ev[1:], [(1, 206.0), (2, 207.0)]))
    assert rep["wall_s"] == 2.0 and rep["ettr"] == 1.0
