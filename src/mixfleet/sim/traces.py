"""Trace readers (formats in docs/fleet.md, "Workload classes and the trace mapping") and a
seeded synthetic generator.

Each reader returns :class:`Job` records; a job's work is its observed run time x its
devices, in reference device-seconds (the trace's GPUs stand in for the fleet's reference
chip), and its workload class comes from :func:`assign_classes` with the given seed.
A malformed row raises ConfigError naming the file, the row (1 = header), the field, the
value and the fix.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import numpy as np

from mixfleet.config import read_text
from mixfleet.errors import ConfigError
from mixfleet.fleet.estimates import declared_limits
from mixfleet.fleet.model import Job
from mixfleet.fleet.workloads import WORKLOAD_CLASSES, assign_classes

__all__ = ["read_trace", "read_philly", "read_openb", "synthetic_jobs", "TraceInfo",
           "PHILLY_SIZES"]

PHILLY_COLUMNS = ("timestamp", "duration", "num_gpus", "gpu_time", "cluster")
OPENB_COLUMNS = ("name", "cpu_milli", "memory_mib", "num_gpu", "gpu_milli", "gpu_spec", "qos",
                 "pod_phase", "creation_time", "deletion_time", "scheduled_time")
#: Device counts of the Philly Sep-Oct 2017 jobs and how many jobs had each.
PHILLY_SIZES = {1: 50188, 2: 904, 4: 945, 8: 713, 12: 7, 16: 65, 24: 4, 32: 23}


@dataclasses.dataclass(frozen=True, kw_only=True)
class TraceInfo:
    """What a reader kept and skipped."""

    path: str
    format: str
    rows: int
    skipped: int
    """Rows that are not GPU jobs (e.g. openb pods with no GPU)."""


def _num(row: dict[str, str], key: str, where: str, fix: str, *, integer: bool = False,
         minimum: float = 0.0) -> float:
    raw = (row.get(key) or "").strip()
    try:
        v = float(int(raw)) if integer else float(raw)
    except (ValueError, OverflowError):  # not a number, or thousands of digits
        v = math.nan
    if math.isnan(v) or math.isinf(v) or v < minimum or (integer and v > 2**31):
        raise ConfigError(f"{where} field {key!r}: {raw!r} is not "
                          f"{'an integer' if integer else 'a number'} >= {minimum:g}; {fix}")
    return v


#: At most this many synthetic jobs (``synthetic:N``).
MAX_SYNTHETIC = 10_000_000


def _rows(p: Path) -> Iterator[dict[str, str]]:
    """The CSV rows of a trace file, read safely (UTF-8 text, no NUL bytes; a malformed CSV
    raises ConfigError naming the file and the line)."""
    reader = csv.DictReader(io.StringIO(read_text(p, "trace"), newline=""))
    try:
        yield from reader
    except csv.Error as e:
        raise ConfigError(f"{p}: line {reader.line_num} is not CSV ({e}); fix or remove "
                          f"it") from None


def _jobs(ids: list[str], arrivals: list[float], devices: list[int], work: list[float],
          seed: int, *, classes: list[str | None] | None = None,
          limits: list[float | None] | None = None,
          groups: list[str] | None = None) -> list[Job]:
    """Jobs; a class given per job (``classes``) overrides the seeded mapping."""
    drawn = assign_classes(devices, seed)
    cls = [c or d for c, d in zip(classes, drawn, strict=True)] if classes else drawn
    lim = limits or [None] * len(ids)
    grp = groups or [""] * len(ids)
    return [Job(id=i, workload=w, arrival_s=a, devices=n, work=x,
                mem_gib=WORKLOAD_CLASSES[w].mem_gib, declared_work=d, group=g)
            for i, a, n, x, w, d, g in zip(ids, arrivals, devices, work, cls, lim, grp,
                                           strict=True)]


def _class(row: dict[str, str], where: str) -> str | None:
    """The optional per-job ``workload`` column (a planner class; empty: drawn)."""
    w = (row.get("workload") or "").strip()
    if not w:
        return None
    if w not in WORKLOAD_CLASSES:
        raise ConfigError(f"{where} field 'workload': {w!r} is not a workload class; use one "
                          f"of {', '.join(WORKLOAD_CLASSES)} or leave it empty")
    return w


def _limit(row: dict[str, str], where: str, devices: int) -> float | None:
    """The optional ``limit_s`` column: a declared runtime limit, seconds."""
    raw = (row.get("limit_s") or "").strip()
    if not raw:
        return None
    return _num(row, "limit_s", where, "give the declared runtime limit in seconds",
                minimum=1e-9) * devices


def read_philly(path: str | Path, seed: int = 0, limit: int | None = None
                ) -> tuple[list[Job], TraceInfo]:
    """Jobs of the Philly-derived CSV (timestamp, duration, num_gpus, gpu_time, cluster)."""
    p = Path(path)
    ids: list[str] = []
    arr: list[float] = []
    dev: list[int] = []
    work: list[float] = []
    t0: datetime | None = None
    classes: list[str | None] = []
    limits: list[float | None] = []
    groups: list[str] = []
    for k, row in enumerate(_rows(p)):
        if limit is not None and k >= limit:
            break
        where = f"{p}: row {k + 2}"
        ts = (row.get("timestamp") or "").strip()
        try:
            t = datetime.strptime(ts, "%Y-%m-%d %H:%M:%S")
        except ValueError:
            raise ConfigError(f"{where} field 'timestamp': {ts!r} is not YYYY-MM-DD "
                              f"HH:MM:SS; fix or remove the row") from None
        t0 = t if t0 is None else t0
        dur = _num(row, "duration", where, "give the run time in seconds", minimum=1e-9)
        n = int(_num(row, "num_gpus", where, "give the GPU count", integer=True,
                     minimum=1))
        ids.append(f"philly-{k}")
        arr.append(max(0.0, (t - t0).total_seconds()))
        dev.append(n)
        work.append(dur * n)
        classes.append(_class(row, where))
        limits.append(_limit(row, where, n))
        groups.append((row.get("cluster") or "").strip())
    if not ids:
        raise ConfigError(f"{p}: no job rows; expected columns {', '.join(PHILLY_COLUMNS)}")
    return (_jobs(ids, arr, dev, work, seed, classes=classes, limits=limits, groups=groups),
            TraceInfo(path=str(p), format="philly", rows=len(ids), skipped=0))


def read_openb(path: str | Path, seed: int = 0, limit: int | None = None
               ) -> tuple[list[Job], TraceInfo]:
    """Jobs of Alibaba's openb pod list. A pod's work is (deletion - scheduled) x num_gpu x
    gpu_milli / 1000; it holds num_gpu whole devices (GPU sharing is not modelled). Pods
    with no GPU, or never scheduled, are skipped and counted."""
    p = Path(path)
    ids: list[str] = []
    arr: list[float] = []
    dev: list[int] = []
    work: list[float] = []
    skipped = 0
    names: set[str] = set()
    for k, row in enumerate(_rows(p)):
        if limit is not None and k >= limit:
            break
        where = f"{p}: row {k + 2}"
        n = int(_num(row, "num_gpu", where, "give the GPU count", integer=True))
        milli = _num(row, "gpu_milli", where, "give the GPU share in 1/1000 (1000 = whole)")
        created = _num(row, "creation_time", where, "give seconds from the trace start")
        if n == 0 or milli == 0 or not (row.get("scheduled_time") or "").strip():
            skipped += 1
            continue
        start = _num(row, "scheduled_time", where, "give seconds from the trace start")
        end = _num(row, "deletion_time", where, "give seconds from the trace start")
        if end <= start:
            raise ConfigError(f"{where} field 'deletion_time': {end:g} is not after "
                              f"scheduled_time {start:g}; fix or remove the row")
        name = str(row.get("name") or f"openb-{k}")
        if name in names:
            raise ConfigError(f"{where} field 'name': {name!r} is used by an earlier "
                              f"row; give each pod its own name")
        names.add(name)
        ids.append(name)
        arr.append(created)
        dev.append(n)
        work.append((end - start) * n * min(milli, 1000.0) / 1000.0)
    if not ids:
        raise ConfigError(f"{p}: no GPU pods; expected columns {', '.join(OPENB_COLUMNS)}")
    t0 = min(arr)
    arr = [a - t0 for a in arr]
    return _jobs(ids, arr, dev, work, seed), TraceInfo(path=str(p), format="openb",
                                                       rows=len(ids), skipped=skipped)


def read_trace(path: str | Path, seed: int = 0, limit: int | None = None
               ) -> tuple[list[Job], TraceInfo]:
    """Read a trace, telling the format by its header; ``synthetic:N`` generates N jobs."""
    text = str(path)
    if text.startswith("synthetic"):
        _, _, count = text.partition(":")
        try:
            n = int(count or 1000) if len(count) < 12 else -1
        except ValueError:
            n = -1
        if not 1 <= n <= MAX_SYNTHETIC:
            raise ConfigError(f"--trace {text[:40]!r}: write synthetic:N with 1 <= N <= "
                              f"{MAX_SYNTHETIC} jobs, e.g. synthetic:2000")
        jobs = synthetic_jobs(n, seed=seed)
        return jobs, TraceInfo(path=text, format="synthetic", rows=n, skipped=0)
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"trace {text!r} does not exist; pass a Philly CSV, an openb pod "
                          f"list, or synthetic:N")
    try:
        header = next(csv.reader(io.StringIO(read_text(p, "trace"), newline="")), [])
    except csv.Error as e:
        raise ConfigError(f"{p}: row 1 (header) is not CSV ({e}); pass a trace CSV") from None
    cols = [c.strip() for c in header]
    if all(c in cols for c in ("timestamp", "duration", "num_gpus")):
        return read_philly(p, seed, limit)
    if all(c in cols for c in ("num_gpu", "gpu_milli", "creation_time", "deletion_time")):
        return read_openb(p, seed, limit)
    raise ConfigError(f"{p}: row 1 (header) {','.join(cols)!r} is neither a Philly trace "
                      f"({','.join(PHILLY_COLUMNS)}) nor an openb pod list "
                      f"({','.join(OPENB_COLUMNS)})")


def synthetic_jobs(n: int, *, seed: int = 0, mean_interarrival_s: float = 93.0,
                   median_s: float = 1486.0, sigma: float = 1.53,
                   max_s: float = 30 * 86400.0) -> list[Job]:
    """``n`` Philly-like jobs: Poisson arrivals (mean gap 93 s, as Philly Sep-Oct 2017),
    device counts drawn from Philly's, durations log-normal with Philly's median (1,486 s)
    and 90th percentile (~10,500 s), capped at ``max_s``. Each carries a declared runtime
    limit drawn by :func:`mixfleet.fleet.estimates.declared_limits` (users over-estimate)."""
    if n < 1:
        raise ConfigError(f"synthetic trace needs at least 1 job (got {n}); e.g. synthetic:2000")
    rng = np.random.default_rng(seed)
    gaps = rng.exponential(mean_interarrival_s, n)
    gaps[0] = 0.0
    arrivals = np.cumsum(gaps)
    sizes = np.array(sorted(PHILLY_SIZES))
    probs = np.array([PHILLY_SIZES[s] for s in sizes], dtype=float)
    devices = rng.choice(sizes, size=n, p=probs / probs.sum())
    dur = np.minimum(np.exp(rng.normal(math.log(median_s), sigma, n)), max_s)
    limits = declared_limits(dur * devices, rng)
    return _jobs([f"syn-{i}" for i in range(n)], arrivals.tolist(),
                 [int(d) for d in devices], (dur * devices).tolist(), seed + 1,
                 limits=limits.tolist())
