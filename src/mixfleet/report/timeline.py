"""The run report: ETTR, restarts, steps lost and time in each failure state, from a run
directory's ``metrics.jsonl`` and ``events.jsonl``; and a timeline plot."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from mixfleet.report.predicted import pipeline_stages, predicted_vs_measured
from mixfleet.report.times import CAUSES, StepLedger, run_start_time, time_by_cause
from mixfleet.runs import Event, RunDir, read_jsonl

__all__ = ["run_report", "plot_timeline", "count_attempts", "report_fields"]


def _steps(run: RunDir) -> list[dict[str, Any]]:
    return [r for r in read_jsonl(run.metrics_path) if "loss" in r]


def count_attempts(events: list[dict[str, Any]]) -> int:
    """Attempts of a run: each torchrun restart (``attempt`` of ``worker_start``) of each
    launch or relaunch counts once, whether or not it got as far as resuming (launch
    events of several nodes before their workers start are one launch); runs without
    worker records count their ``run_start`` events."""
    gen, seen, started = 0, set(), False
    for e in events:
        kind = e.get("event")
        if kind == Event.RELAUNCH or (kind == Event.LAUNCH and started):
            gen, started = gen + 1, False
        elif kind == Event.WORKER_START:
            started = True
            seen.add((gen, str(e.get("attempt", 0))))
    return len(seen) or sum(e.get("event") == Event.RUN_START for e in events)


def run_report(run_dir: str | Path, *, end_t: float | None = None) -> dict[str, Any]:
    """ETTR = productive step time / wall time, where productive step time counts each
    step of the final history once (steps redone after a crash or rollback are lost work),
    less the warm-up and cooling inside steps (:func:`mixfleet.report.times.time_by_cause`).
    """
    run = RunDir(run_dir)
    events = run.read_events()
    steps = [r for r in _steps(run) if type(r.get("step")) is int]
    ledger = StepLedger()
    for r in steps:
        ledger.add(r["step"], _f(r.get("t")), _f(r.get("step_s")))
    cols = [np.array([_f(r.get(k)) for r in steps], dtype=float)
            for k in ("step", "t", "step_s")]
    rep = report_fields(events, ledger, *cols, end_t=end_t)
    plan = predicted_vs_measured(events, steps)
    stages = pipeline_stages(events)
    return {**rep, **({"plan": plan} if plan is not None else {}),
            **({"stages": stages} if stages is not None else {})}


def _f(v: Any) -> float:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else math.nan


def report_fields(events: list[dict[str, Any]], ledger: StepLedger, steps: np.ndarray,
                  t: np.ndarray, step_s: np.ndarray, *, end_t: float | None = None
                  ) -> dict[str, Any]:
    """The run report from the events and the step records (``ledger`` fed with them, and
    their ``steps``, ``t`` and ``step_s`` columns in the order written), up to ``end_t``
    (else the end of the last step); shared with the dashboard, which keeps these
    incrementally. ``failure_time_s`` holds the time lost by cause, which adds up to
    ``wall_s - productive_s`` (within rounding)."""
    def of(kind: str) -> list[dict[str, Any]]:
        return [e for e in events if e.get("event") == kind]

    t0 = run_start_time(events, ledger.first)
    t1 = end_t if end_t is not None else (float(t[-1]) if t.size else t0)
    wall = max(1e-9, t1 - t0)
    productive, causes = time_by_cause(events, steps, t, step_s, ledger, start=t0,
                                       end=t0 + wall)
    starts_ev = of(Event.RUN_START)
    return {
        "ettr": round(min(1.0, productive / wall), 4),
        "wall_s": round(wall, 3),
        "productive_s": round(productive, 3),
        "restarts": max(0, count_attempts(events) - 1),
        "steps_lost": sum(int(e.get("steps_lost", 0)) for e in starts_ev),
        "failure_time_s": {k: round(causes[k], 3) for k in CAUSES},
        "skipped_steps": sorted({e["step"] for e in of(Event.STEP_SKIPPED)}),
        "drained_ranks": [e["rank"] for e in of(Event.DRAIN)],
        "faults_injected": len(of(Event.FAULT_INJECTED)),
        "checkpoints_committed": len(of(Event.CHECKPOINT_COMMITTED)),
        "checkpoint_failures": len(of(Event.CHECKPOINT_FAILED)),
        # "emulated as llama3-8b (time scale ...)" when [emulate] as_model paced the run
        "emulated_as": (of(Event.EMULATED_AS)[-1].get("label") if of(Event.EMULATED_AS)
                        else None),
    }


_MARKS = {Event.FAULT_INJECTED: ("tab:red", "fault"),
          Event.HANG_DETECTED: ("tab:purple", "hang"),
          Event.RUN_START: ("tab:green", "(re)start"),
          Event.THERMAL_WARNING: ("tab:orange", "heat"),
          Event.THERMAL_CRITICAL: ("darkred", "critical heat"), Event.DRAIN: ("black", "drain"),
          Event.STEP_SKIPPED: ("tab:brown", "skipped step"),
          Event.STRAGGLER: ("tab:gray", "straggler"),
          Event.CHECKPOINT_FAILED: ("magenta", "checkpoint failed")}


def plot_timeline(run_dir: str | Path, out: str | Path) -> Path:
    """A PNG: steps/s over time, temperature per device (or "no telemetry"), events marked,
    and the loss (with the eval metric) against steps, on a log axis when it spans a
    decade or more."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run = RunDir(run_dir)
    recs = list(read_jsonl(run.metrics_path))
    steps = [r for r in recs if "loss" in r]
    events = run.read_events()
    t0 = min([e["t"] for e in events] + [r["t"] for r in steps] or [0.0])
    fig, (ax1, ax2, ax3) = plt.subplots(3, 1, figsize=(11, 9.5),
                                        gridspec_kw={"height_ratios": [1, 1, 1.2]})
    ax2.sharex(ax1)
    if steps:
        ax1.plot([r["t"] - t0 for r in steps],
                 [1.0 / r["step_s"] if r["step_s"] > 0 else 0 for r in steps],
                 ".", ms=1.5, color="tab:blue")
    ax1.set_ylabel("steps/s")
    emulated = any(r.get("emulated") for r in recs)
    ax1.set_title(f"{run.root.name}: training timeline" + (" (emulated chips)" if emulated
                                                           else ""))
    temps: dict[str, list[tuple[float, float]]] = {}
    for r in recs:
        if r.get("kind") == "telemetry" and r.get("temp_c") is not None:
            temps.setdefault(r["device"], []).append((r["t"] - t0, r["temp_c"]))
    for dev, pts in temps.items():
        ax2.plot([p[0] for p in pts], [p[1] for p in pts], ".", ms=2, label=dev)
    ax2.set_ylabel("temperature (°C)")
    ax2.set_xlabel("seconds since launch")
    seen = set()
    for e in events:
        mark = _MARKS.get(e["event"])
        if mark:
            for ax in (ax1, ax2):
                ax.axvline(e["t"] - t0, color=mark[0], lw=0.8, alpha=0.7,
                           label=mark[1] if ax is ax1 and mark[1] not in seen else None)
            seen.add(mark[1])
    ax1.legend(loc="upper right", fontsize=7)
    if temps:
        ax2.legend(loc="upper right", fontsize=7)
    else:
        ax2.text(0.5, 0.5, "no telemetry", transform=ax2.transAxes, ha="center",
                 va="center", color="gray")
    _plot_loss(ax3, steps, recs)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


EVAL_METRICS = ("val_loss", "val_perplexity", "val_bits_per_char", "test_accuracy")


def _plot_loss(ax: Any, steps: list[dict[str, Any]], recs: list[dict[str, Any]]) -> None:
    """The training loss per step and, on a second axis, the eval metric where recorded."""
    pts = [(r["step"], r["loss"]) for r in steps
           if isinstance(r.get("loss"), (int, float)) and math.isfinite(r["loss"])]
    if not pts:
        ax.text(0.5, 0.5, "no finite loss recorded", transform=ax.transAxes, ha="center",
                va="center", color="gray")
        return
    ax.plot([p[0] for p in pts], [p[1] for p in pts], lw=0.8, color="tab:blue",
            label="training loss")
    lo, hi = min(p[1] for p in pts), max(p[1] for p in pts)
    if lo > 0 and hi / lo >= 10:
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    for name in EVAL_METRICS:
        ev = [(r["step"], r[name]) for r in recs if isinstance(r.get(name), (int, float))
              and "step" in r]
        if ev:
            ax_e = ax.twinx()
            ax_e.plot([p[0] for p in ev], [p[1] for p in ev], "o-", ms=3, lw=0.8,
                      color="tab:orange", label=name)
            ax_e.set_ylabel(name)
            ax_e.legend(loc="upper center", fontsize=7)
            break
    ax.legend(loc="upper right", fontsize=7)
