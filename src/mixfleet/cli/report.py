"""``mixfleet report RUN_DIR``: ETTR, restarts, steps lost, failure time, and a timeline."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from mixfleet.errors import ConfigError

__all__ = ["add_parser"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="summarize a training run and draw its timeline",
                       description=__doc__)
    p.add_argument("run_dir", help="a run directory written by `mixfleet train`")
    p.add_argument("--out", help="PNG path (default: RUN_DIR/timeline.png)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=cmd_report)


def cmd_report(args: argparse.Namespace) -> int:
    from mixfleet.report.timeline import plot_timeline, run_report

    root = Path(args.run_dir)
    if not (root / "events.jsonl").is_file():
        raise ConfigError(f"run_dir {str(root)!r} holds no events.jsonl; pass a directory "
                          f"written by `mixfleet train --run-dir`")
    rep = run_report(root)
    png = plot_timeline(root, args.out or root / "timeline.png")
    if args.json:
        print(json.dumps({**rep, "timeline_png": str(png)}))
        return 0
    ft = rep["failure_time_s"]
    print(f"run {root}" + (f" ({rep['emulated_as']})" if rep.get("emulated_as") else ""))
    print(f"  ETTR {rep['ettr']:.3f}  (productive {rep['productive_s']:.1f}s of "
          f"{rep['wall_s']:.1f}s wall)")
    print(f"  restarts {rep['restarts']}, steps lost {rep['steps_lost']}, faults injected "
          f"{rep['faults_injected']}, skipped steps {rep['skipped_steps'] or 'none'}, "
          f"drained ranks {rep['drained_ranks'] or 'none'}")
    print("  time lost by cause: " + ", ".join(f"{k} {v:.1f}s" for k, v in ft.items()))
    plan = rep.get("plan")
    if plan is not None:
        pred, meas, r = (plan["predicted_step_s"], plan["measured_step_s"],
                         plan["predicted_over_measured"])
        label = f" [{plan['label']}]" if plan["label"] else ""
        print(f"  step time ({plan['mode']}, picked by the cost model){label}: predicted "
              + (f"{pred:.4f}s" if pred is not None else "unknown (time scale chosen at run time)")
              + ", measured " + (f"{meas:.4f}s" if meas is not None else "none")
              + (f", predicted/measured = {r:.2f}" if r is not None else ""))
    st = rep.get("stages")
    if st is not None:
        _print_stages(st)
    print(f"  timeline: {png}")
    return 0


def _print_stages(st: dict[str, Any]) -> None:
    """A pipeline's stages: predicted and measured time per micro-batch, and the bubble."""
    label = f" [{st['measured_label']}]" if st.get("measured_label") else ""
    mb = st.get("measured_bubble")
    bubble = f"bubble {st['bubble']:.1%} predicted" + (
        f", {mb:.1%} measured{label}" if isinstance(mb, (int, float)) else "")
    print(f"  pipeline: {st['schedule']}, {st['microbatches']} micro-batches x "
          f"{st['lanes']} lane(s), {bubble}, blocks {st['basis']}")
    if st.get("times"):
        print(f"    per-block times from {st['times']}")
    if "measured_steps" in st:
        print(f"    measured: median of {st['measured_steps']} step(s) up to step "
              f"{st['measured_step']}{label}")
    for i, s in enumerate(st["stages"]):
        pred = (f"{s['predicted_s']:.3g} s" if "predicted_s" in s else
                f"{s['predicted_relative_time']:.3g} (relative: no catalog peak)"
                if "predicted_relative_time" in s else "")
        parts = ([f"predicted {pred}"] if pred else []) + (
            [f"measured {s['measured_s']:.3g} s"] if "measured_s" in s else [])
        mem = f"; predicted memory {s['predicted_gib']} GiB" if "predicted_gib" in s else ""
        print(f"    stage {i}: {s['chip']} x{s['ranks']}, {s['blocks']} blocks"
              + (f"; per micro-batch: {', '.join(parts)}" if parts else "") + mem)
