"""Metrics of a simulation run, under stable key names (results.json; docs/fleet.md).

Times are seconds, device-hours are hours x devices, shares are 0..1.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from mixfleet.fleet.model import Fleet, Job
from mixfleet.sim.cluster import JobState, PoolState

__all__ = ["SimResult", "JobRecord", "collect", "METRIC_KEYS"]

METRIC_KEYS = (
    "jobs_total", "jobs_completed", "jobs_unplaceable",
    "jct_avg_s", "jct_p50_s", "jct_p99_s", "makespan_s",
    "queue_delay_avg_s", "queue_delay_p50_s", "queue_delay_p99_s",
    "utilization", "utilization_total", "nvidia_device_hours", "non_nvidia_device_hours",
    "non_nvidia_work_share", "work_ref_device_hours", "goodput_lost_device_hours",
    "checkpoint_device_hours", "migration_device_hours", "startup_device_hours", "failures",
    "throttle_episodes",
    "migrations", "events", "estimates", "estimate_error_p50", "estimate_error_p90",
)


@dataclasses.dataclass(frozen=True, kw_only=True)
class JobRecord:
    """One completed job."""

    id: str
    workload: str
    devices: int
    arrival_s: float
    start_s: float
    end_s: float
    work: float
    work_by_pool: tuple[float, ...]
    """Kept work done on each pool (reference device-seconds); sums to ``work``."""
    pools: tuple[int, ...]
    """Pools it was placed on."""
    failures: int


@dataclasses.dataclass(frozen=True, kw_only=True)
class SimResult:
    """Outcome of one simulation run."""

    policy: str
    metrics: dict[str, Any]
    jobs: list[JobRecord]
    unplaceable: list[tuple[str, str]]
    """(job id, why it fits nowhere)."""
    pool_ids: tuple[str, ...]
    capacity: tuple[int, ...]
    peak_busy: tuple[int, ...]
    timelines: tuple[list[tuple[float, int]], ...]
    """Per pool: (time, busy devices) at each change."""


def _pct(xs: np.ndarray, q: float) -> float:
    return float(np.percentile(xs, q)) if xs.size else 0.0


def collect(policy: str, fleet: Fleet, states: list[JobState], pools: list[PoolState],
            unplaceable: list[tuple[Job, str]], events: int) -> SimResult:
    """Build the result of a finished run."""
    done = [s for s in states if s.end_s is not None]
    jct = np.array([(s.end_s or 0.0) - s.arrival_s for s in done], dtype=float)
    wait = np.array([(s.start_s or 0.0) - s.arrival_s for s in done], dtype=float)
    t0 = min((s.arrival_s for s in states), default=0.0)
    t1 = max((s.end_s for s in done), default=t0)  # type: ignore[type-var]
    span = max(t1 - t0, 0.0)  # type: ignore[operator]
    for p in pools:
        p.change(t1, 0)  # type: ignore[arg-type]
    util = {fp.id: (ps.busy_s / (ps.capacity * span) if span > 0 else 0.0)
            for fp, ps in zip(fleet.pools, pools, strict=True)}
    nv = [fp.is_nvidia for fp in fleet.pools]
    busy_nv = sum(ps.busy_s for ps, n in zip(pools, nv, strict=True) if n)
    busy_other = sum(ps.busy_s for ps, n in zip(pools, nv, strict=True) if not n)
    total_work = sum(s.work for s in done)
    other_work = sum(w for s in done for w, n in zip(s.work_by_pool, nv, strict=True) if not n)
    cap = fleet.capacity
    metrics: dict[str, Any] = {
        "jobs_total": len(states) + len(unplaceable),
        "jobs_completed": len(done),
        "jobs_unplaceable": len(unplaceable),
        "jct_avg_s": float(jct.mean()) if jct.size else 0.0,
        "jct_p50_s": _pct(jct, 50),
        "jct_p99_s": _pct(jct, 99),
        "makespan_s": float(span),
        "queue_delay_avg_s": float(wait.mean()) if wait.size else 0.0,
        "queue_delay_p50_s": _pct(wait, 50),
        "queue_delay_p99_s": _pct(wait, 99),
        "utilization": util,
        "utilization_total": (busy_nv + busy_other) / (cap * span) if span > 0 else 0.0,
        "nvidia_device_hours": busy_nv / 3600,
        "non_nvidia_device_hours": busy_other / 3600,
        "non_nvidia_work_share": other_work / total_work if total_work else 0.0,
        "work_ref_device_hours": total_work / 3600,
        "goodput_lost_device_hours": sum((s.lost_compute_s + s.restart_s) * s.devices
                                         for s in states) / 3600,
        "checkpoint_device_hours": sum(s.ckpt_s * s.devices for s in states) / 3600,
        "migration_device_hours": sum(s.migrate_s * s.devices for s in states) / 3600,
        "startup_device_hours": sum(s.startup_stall_s * s.devices for s in states) / 3600,
        "failures": sum(s.failures for s in states),
        "throttle_episodes": sum(s.throttles for s in states),
        "migrations": sum(s.migrations for s in states),
        "events": events,
    }
    records = [JobRecord(id=s.id, workload=s.workload, devices=s.devices,
                         arrival_s=s.arrival_s, start_s=s.start_s,  # type: ignore[arg-type]
                         end_s=s.end_s, work=s.work,  # type: ignore[arg-type]
                         work_by_pool=tuple(s.work_by_pool),
                         pools=tuple(i for i, r in enumerate(s.run_s) if r > 0 or
                                     s.work_by_pool[i] != 0),
                         failures=s.failures) for s in done]
    return SimResult(policy=policy, metrics=metrics, jobs=records,
                     unplaceable=[(j.id, why) for j, why in unplaceable],
                     pool_ids=tuple(p.id for p in fleet.pools),
                     capacity=tuple(p.capacity for p in fleet.pools),
                     peak_busy=tuple(p.peak for p in pools),
                     timelines=tuple(p.timeline for p in pools))
