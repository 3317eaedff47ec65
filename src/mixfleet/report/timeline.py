"""The run report: ETTR, restarts, steps lost and time in each failure state, from a run
directory's ``metrics.jsonl`` and ``events.jsonl``; and a timeline plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mixfleet.report.predicted import predicted_vs_measured
from mixfleet.runs import RunDir, read_jsonl

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
        if kind == "relaunch" or (kind == "launch" and started):
            gen, started = gen + 1, False
        elif kind == "worker_start":
            started = True
            seen.add((gen, str(e.get("attempt", 0))))
    return len(seen) or sum(e.get("event") == "run_start" for e in events)


def run_report(run_dir: str | Path, *, end_t: float | None = None) -> dict[str, Any]:
    """ETTR = productive step time / wall time, where productive step time counts each
    step of the final history once (steps redone after a crash or rollback are lost work).
    """
    run = RunDir(run_dir)
    events = run.read_events()
    steps = _steps(run)
    launches = [e["t"] for e in events if e["event"] == "launch"]
    t0 = launches[0] if launches else (steps[0]["t"] - steps[0]["step_s"] if steps else 0.0)
    t1 = end_t if end_t is not None else (steps[-1]["t"] if steps else t0)
    wall = max(1e-9, t1 - t0)
    final: dict[int, float] = {}
    redone = 0.0
    for r in steps:
        if r["step"] in final:
            redone += final[r["step"]]
        final[r["step"]] = r["step_s"]
    productive = sum(final.values())
    # Downtime of each restart: from the last step before it to the first step after it.
    starts = [e["t"] for e in events if e["event"] == "run_start"][1:]
    downtime = 0.0
    for ts in starts:
        before = [r["t"] for r in steps if r["t"] <= ts]
        after = [r["t"] for r in steps if r["t"] > ts]
        if before and after:
            downtime += after[0] - before[-1]
    rep = report_fields(events, productive=productive, wall=wall, downtime=downtime,
                        redone=redone)
    plan = predicted_vs_measured(events, steps)
    return {**rep, "plan": plan} if plan is not None else rep


def report_fields(events: list[dict[str, Any]], *, productive: float, wall: float,
                  downtime: float, redone: float) -> dict[str, Any]:
    """The run report from the events and the step-time figures (shared with the
    dashboard, which computes those figures incrementally)."""
    def of(kind: str) -> list[dict[str, Any]]:
        return [e for e in events if e.get("event") == kind]

    starts_ev = of("run_start")
    return {
        "ettr": round(min(1.0, productive / wall), 4),
        "wall_s": round(wall, 3),
        "productive_s": round(productive, 3),
        "restarts": max(0, count_attempts(events) - 1),
        "steps_lost": sum(int(e.get("steps_lost", 0)) for e in starts_ev),
        "failure_time_s": {
            "restart_downtime": round(downtime, 3),
            "hang_detection": round(sum(e.get("waited_s", 0.0) for e in of("hang_detected")
                                        if e.get("rank") == 0), 3),
            "cooling": round(sum(e.get("paused_s", 0.0) for e in of("thermal_resumed")), 3),
            "redone_steps": round(redone, 3),
        },
        "skipped_steps": sorted({e["step"] for e in of("step_skipped")}),
        "drained_ranks": [e["rank"] for e in of("drain")],
        "faults_injected": len(of("fault_injected")),
        "checkpoints_committed": len(of("checkpoint_committed")),
        "checkpoint_failures": len(of("checkpoint_failed")),
        # "emulated as llama3-8b (time scale ...)" when [emulate] as_model paced the run
        "emulated_as": of("emulated_as")[-1].get("label") if of("emulated_as") else None,
    }


_MARKS = {"fault_injected": ("tab:red", "fault"), "hang_detected": ("tab:purple", "hang"),
          "run_start": ("tab:green", "(re)start"), "thermal_warning": ("tab:orange", "heat"),
          "thermal_critical": ("darkred", "critical heat"), "drain": ("black", "drain"),
          "step_skipped": ("tab:brown", "skipped step"), "straggler": ("tab:gray", "straggler"),
          "checkpoint_failed": ("magenta", "checkpoint failed")}


def plot_timeline(run_dir: str | Path, out: str | Path) -> Path:
    """A PNG: steps/s over time, temperature per device, events marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run = RunDir(run_dir)
    recs = list(read_jsonl(run.metrics_path))
    steps = [r for r in recs if "loss" in r]
    events = run.read_events()
    t0 = min([e["t"] for e in events] + [r["t"] for r in steps] or [0.0])
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(11, 6.5), sharex=True)
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
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
