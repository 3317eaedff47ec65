"""What a person watching a run reads: the snapshot pacing's interval once it settles, not
a line per change (every change stays an event in events.jsonl)."""

from __future__ import annotations

import io

from mixfleet.report.progress import TrainProgress
from mixfleet.runs import Event


def _rec(step: int) -> dict[str, float]:
    return {"step": step, "loss": 1.0, "samples_per_s": 100.0}


def test_pacing_prints_one_line_once_the_interval_settles() -> None:
    """Six changes, then four intervals (and 100 steps) without one: exactly one line, the
    settled interval."""
    out = io.StringIO()
    p = TrainProgress(1000, mode="plain", stream=out, log_every=10_000)
    p.start(0)
    step = 0
    for interval in (2, 4, 8, 16, 24, 32):
        step += interval
        p.event({"event": Event.SNAPSHOT_INTERVAL, "interval": interval, "step": step,
                 "reason": "a snapshot costs 1.2% of the steps it covers"})
        p.step(_rec(step + 1))
    lines = [ln for ln in out.getvalue().splitlines() if "snapshots every" in ln]
    assert lines == []
    p.step(_rec(step + 2 * 32))
    assert "snapshots every" not in out.getvalue()  # not settled yet
    p.step(_rec(step + 4 * 32))
    lines = [ln for ln in out.getvalue().splitlines() if "snapshots every" in ln]
    assert len(lines) == 1 and "every 32 steps" in lines[0] and "paced from step 2" in lines[0]
    p.close()
    assert sum("snapshots every" in ln for ln in out.getvalue().splitlines()) == 1


def test_a_change_near_the_end_is_shown_at_close() -> None:
    """A run that ends before the interval settles still says what it was."""
    out = io.StringIO()
    p = TrainProgress(100, mode="plain", stream=out, log_every=10_000)
    p.start(0)
    p.event({"event": Event.SNAPSHOT_INTERVAL, "interval": 8, "step": 90, "reason": "r"})
    p.step(_rec(95))
    assert "snapshots every" not in out.getvalue()
    p.close()
    assert "in-memory snapshots every 8 steps from step 90: r" in out.getvalue()
