"""The run's timeline.png shows what a person training a model looks at first: the loss
against steps (log axis when it spans decades), the eval metric, and says "no telemetry"
where there is none."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from mixfleet.report.timeline import _plot_loss, plot_timeline  # noqa: E402


def _steps(losses: list[float]) -> list[dict[str, float]]:
    return [{"step": i + 1, "loss": v, "step_s": 0.01, "t": 1000.0 + i * 0.01}
            for i, v in enumerate(losses)]


def test_loss_goes_on_a_log_axis_only_when_it_spans_a_decade() -> None:
    """100 -> 0.5 is drawn on a log axis; 2.0 -> 1.5 on a linear one; the eval metric too."""
    fig, (a, b) = plt.subplots(2, 1)
    wide = _steps([100.0 / (1 + i) for i in range(200)])
    _plot_loss(a, wide, [*wide, {"step": 200, "val_loss": 0.7}])
    narrow = _steps([2.0 - i / 400 for i in range(200)])
    _plot_loss(b, narrow, narrow)
    assert a.get_yscale() == "log" and b.get_yscale() == "linear"
    assert len(a.get_lines()) == 1 and len(fig.axes) == 3  # a second axis for val_loss
    plt.close(fig)


def test_timeline_png_of_a_run_without_telemetry(tmp_path: Path) -> None:
    """A run directory with steps and no telemetry gives a PNG (the panels say so)."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n"
                                               for r in _steps([3.0, 2.0, 1.0])))
    (run / "events.jsonl").write_text(json.dumps({"event": "run_start", "t": 999.0}) + "\n")
    out = plot_timeline(run, tmp_path / "timeline.png")
    assert out.stat().st_size > 10_000
