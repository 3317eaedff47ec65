"""The bench chart: samples/s per workload and chip, emulated bars hatched and labeled."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from mixfleet.bench.table import ThroughputRow

__all__ = ["write_chart"]


def write_chart(rows: Sequence[ThroughputRow], path: str | Path) -> Path:
    """A grouped bar chart (PNG, matplotlib Agg backend): best samples/s per chip."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    workloads = sorted({r.workload for r in rows})
    series = sorted({(r.chip, r.emulated) for r in rows})
    best: dict[tuple[str, str, bool], float] = {}
    for r in rows:
        k = (r.workload, r.chip, r.emulated)
        best[k] = max(best.get(k, 0.0), r.samples_per_s)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.8 * len(workloads) * max(1, len(series)) / 2),
                                    4.5), dpi=100)
    width = 0.8 / max(1, len(series))
    for j, (chip, emu) in enumerate(series):
        xs = [i + (j - (len(series) - 1) / 2) * width for i in range(len(workloads))]
        ys = [best.get((w, chip, emu), 0.0) for w in workloads]
        ax.bar(xs, ys, width, label=f"{chip} (emulated)" if emu else chip,
               hatch="//" if emu else None, edgecolor="black", linewidth=0.5)
    ax.set_xticks(range(len(workloads)), workloads)
    ax.set_ylabel("samples/s")
    title = "mixfleet bench"
    if any(r.emulated for r in rows):
        title += " - hatched bars are EMULATED (CPU scaled to the chip), not measurements"
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(p)
    plt.close(fig)
    return p
