"""Predicted against measured step time of a run whose mode the cost model picked
(``[parallel] mode = "auto"``: the ``plan`` event, see docs/costmodel.md)."""

from __future__ import annotations

import statistics
from typing import Any

from mixfleet.runs import Event

__all__ = ["predicted_vs_measured", "pipeline_stages"]


def predicted_vs_measured(events: list[dict[str, Any]], steps: list[dict[str, Any]]
                          ) -> dict[str, Any] | None:
    """The last ``plan`` event's predicted wall step time (chip seconds x the time scale
    under as_model: the plan's, else the one the emulator chose, from its ``emulated_as``
    event) against the median measured one (whole steps of ``metrics.jsonl``, the first
    left out: it calibrates and warms up); None without a plan event."""
    plans = [e for e in events if e.get("event") == Event.PLAN]
    if not plans:
        return None
    p = plans[-1]
    times = [float(r["step_s"]) for r in steps if isinstance(r.get("step_s"), (int, float))]
    times = times[1:] if len(times) > 1 else times
    measured = statistics.median(times) if times else None
    predicted = p.get("predicted_wall_step_s")
    scaled = [e for e in events if e.get("event") == Event.EMULATED_AS]
    if predicted is None and scaled and isinstance(scaled[-1].get("time_scale"), (int, float)):
        # the time scale the emulator chose at run time (as_model without time_scale)
        predicted = float(p["predicted_step_s"]) * float(scaled[-1]["time_scale"])
    ratio = (predicted / measured if isinstance(predicted, (int, float)) and measured
             else None)
    return {"mode": p.get("mode"), "label": p.get("label", ""),
            "predicted_step_s": predicted, "measured_step_s": measured,
            "predicted_over_measured": ratio, "time_scale": p.get("time_scale")}


def pipeline_stages(events: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The stages of a pipeline run as its last attempt ran them (the last ``stages``
    event: each stage's chip, ranks, blocks and predicted time and memory; micro-batches,
    lanes, schedule, bubble), with what was measured under that split (the last
    ``stage_times`` event after it): each stage's ``measured_s`` per micro-batch and
    ``measured_bubble``, over ``measured_steps`` steps up to ``measured_step``, and
    ``measured_label`` ("" or "emulated ..."); None for other modes.

    Emulated chips under ``as_model`` run the named model's times x the time scale: their
    measured seconds are divided by it (the ``emulated_as`` event's), so that they read in
    the chip seconds that the prediction is in."""
    last = max((i for i, e in enumerate(events) if e.get("event") == Event.STAGES),
               default=None)
    if last is None:
        return None
    out = {k: v for k, v in events[last].items() if k not in ("t", "event")}
    times = [e for e in events[last:] if e.get("event") == Event.STAGE_TIMES]
    measured = times[-1].get("measured_s") if times else None
    if not isinstance(measured, list) or len(measured) != len(out.get("stages", [])):
        return out
    m = times[-1]
    label, scale = "", 1.0
    if m.get("emulated"):
        label = "emulated"
        scaled = [e for e in events if e.get("event") == Event.EMULATED_AS]
        ts = scaled[-1].get("time_scale") if scaled else None
        if isinstance(ts, (int, float)) and ts > 0 and ts != 1:
            scale, label = float(ts), f"emulated, chip seconds = wall / time scale {ts:g}"
    out["stages"] = [{**s, "measured_s": float(f"{float(v) / scale:.4g}")}
                     for s, v in zip(out["stages"], measured, strict=True)]
    return {**out, "measured_bubble": m.get("bubble"), "measured_steps": m.get("steps"),
            "measured_step": m.get("step"), "measured_label": label}
