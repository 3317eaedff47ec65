"""PNG plots of simulation results (matplotlib, Agg backend)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mixfleet.sim.metrics import SimResult

__all__ = ["plot_jct_cdf", "plot_utilization", "binned_utilization"]


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_jct_cdf(results: list[SimResult], path: str | Path) -> Path:
    """CDF of job completion time, one line per policy (log time axis)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in results:
        jct = np.sort([(j.end_s - j.arrival_s) / 3600 for j in r.jobs])
        if jct.size:
            ax.plot(np.maximum(jct, 1e-3), np.arange(1, jct.size + 1) / jct.size,
                    label=r.policy)
    ax.set_xscale("log")
    ax.set_xlabel("job completion time (hours)")
    ax.set_ylabel("fraction of jobs")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def binned_utilization(timeline: list[tuple[float, int]], capacity: int, t0: float,
                       t1: float, bins: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """Time-weighted utilization of a pool in ``bins`` equal bins of [t0, t1]."""
    edges = np.linspace(t0, t1, bins + 1)
    if t1 <= t0 or capacity <= 0:
        return edges[:-1], np.zeros(bins)
    ts = np.array([t for t, _ in timeline] + [t1])
    busy = np.array([b for _, b in timeline], dtype=float)
    # integral of busy(t) up to each edge
    seg = np.diff(ts) * busy
    cum = np.concatenate([[0.0], np.cumsum(seg)])
    idx = np.clip(np.searchsorted(ts, edges, side="right") - 1, 0, len(busy) - 1)
    at = cum[idx] + (edges - ts[idx]) * busy[idx]
    return edges[:-1], np.diff(at) / (np.diff(edges) * capacity)


def plot_utilization(result: SimResult, path: str | Path) -> Path:
    """Utilization over time of each pool, for one policy."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    t0 = min((j.arrival_s for j in result.jobs), default=0.0)
    t1 = max((j.end_s for j in result.jobs), default=t0 + 1)
    for pid, cap, tl in zip(result.pool_ids, result.capacity, result.timelines, strict=True):
        x, u = binned_utilization(tl, cap, t0, t1)
        ax.plot((x - t0) / 86400, u, label=f"{pid} ({cap})")
    ax.set_xlabel("simulated days")
    ax.set_ylabel("busy share of devices")
    ax.set_ylim(0, 1.05)
    ax.set_title(f"utilization per pool: {result.policy}")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
