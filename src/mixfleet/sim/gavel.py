"""Gavel's own inputs (Narayanan et al., OSDI 2020; github.com/stanford-futuredata/gavel),
so mixfleet's policies can be compared with Gavel's on identical jobs.

- **Trace** (``--trace gavel:FILE``): one job per line, 10 tab-separated fields, as Gavel's
  ``scheduler/utils.py`` ``parse_trace`` reads them: job type, command, working directory,
  num-steps argument, needs-data-dir, total steps, scale factor (devices), priority weight,
  SLO, arrival time (seconds).
- **Throughputs** (``--throughput gavel:FILE``): Gavel's ``simulation_throughputs.json``,
  ``{accelerator: {"('<job type>', <scale factor>)": {"null": steps/s, ...}}}`` (the
  ``null`` entry is the job alone; the co-location entries are ignored).

Accelerators map to catalog chips by :data:`GAVEL_CHIPS` (``v100`` -> ``nvidia-v100``,
``p100`` -> ``nvidia-p100``, ``k80`` -> ``nvidia-k80``). Each (job type, scale factor) is a
workload class of its own, named ``"<job type> x<scale factor>"``: Gavel measured each
scale factor, so throughput depends on the device count exactly as Gavel's table says. A
job's work is its total steps over the reference chip's steps/s at its scale factor, times
its devices (reference device-seconds); a pool takes a class only where the file has a
throughput for its accelerator.

:func:`gavel_style_jobs` generates jobs the way Gavel's job generator does (for tests and
``benchmarks/policy_load.py``; our code, not Gavel's).
"""

from __future__ import annotations

import ast
import json
import math
from pathlib import Path

import numpy as np

from mixfleet.errors import ConfigError
from mixfleet.fleet.model import Fleet, Job

__all__ = ["GAVEL_CHIPS", "read_gavel_throughputs", "gavel_speeds", "read_gavel_trace",
           "gavel_class", "gavel_style_jobs", "GAVEL_MEM_GIB"]

#: Gavel's accelerator names -> catalog chip ids.
GAVEL_CHIPS = {"v100": "nvidia-v100", "p100": "nvidia-p100", "k80": "nvidia-k80"}
#: Memory per device of a Gavel job: its throughput file lists a job on an accelerator only
#: where it fits, so memory is not a further constraint.
GAVEL_MEM_GIB = 1.0

Throughputs = dict[str, dict[tuple[str, int], float]]


def gavel_class(job_type: str, scale_factor: int) -> str:
    """The workload class of a Gavel job type at a scale factor."""
    return f"{job_type} x{scale_factor}"


def read_gavel_throughputs(path: str | Path) -> Throughputs:
    """accelerator -> (job type, scale factor) -> steps/s of the job alone."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"--throughput gavel:{p}: no such file; pass Gavel's "
                          f"simulation_throughputs.json")
    try:
        doc = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(f"{p}: not valid JSON ({e})") from None
    if not isinstance(doc, dict) or not doc:
        raise ConfigError(f"{p}: expected {{accelerator: {{\"('<type>', <scale>)\": "
                          f"{{\"null\": steps/s}}}}}}")
    out: Throughputs = {}
    for acc, table in doc.items():
        if acc not in GAVEL_CHIPS:
            raise ConfigError(f"{p}: accelerator {acc!r} is not one of "
                              f"{', '.join(GAVEL_CHIPS)}")
        if not isinstance(table, dict):
            raise ConfigError(f"{p}: accelerator {acc!r}: expected an object of job types")
        rows: dict[tuple[str, int], float] = {}
        for key, val in table.items():
            try:
                jt, sf = ast.literal_eval(key)
                tput = float(val["null"] if isinstance(val, dict) else val)
            except (ValueError, SyntaxError, TypeError, KeyError):
                raise ConfigError(f"{p}: {acc} entry {key!r}: expected key "
                                  f"\"('<job type>', <scale factor>)\" with {{\"null\": "
                                  f"steps/s}}") from None
            if not isinstance(jt, str) or not isinstance(sf, int) or sf < 1:
                raise ConfigError(f"{p}: {acc} entry {key!r}: job type must be a string "
                                  f"and scale factor an integer >= 1")
            if math.isfinite(tput) and tput > 0:
                rows[(jt, sf)] = tput
        out[acc] = rows
    return out


def _accelerator(chip: str) -> str | None:
    return next((a for a, c in GAVEL_CHIPS.items() if c == chip), None)


def gavel_speeds(tputs: Throughputs, fleet: Fleet) -> dict[str, tuple[float | None, ...]]:
    """Class -> per pool, steps/s there over steps/s on the fleet's reference chip (None
    where the file has no figure)."""
    ref = _accelerator(fleet.reference_chip.id)
    if ref is None or ref not in tputs:
        raise ConfigError(f"fleet {fleet.name!r}: reference_chip {fleet.reference_chip.id!r} "
                          f"has no column in the Gavel throughput file (has: "
                          f"{', '.join(tputs)}); set reference_chip to one of "
                          f"{', '.join(GAVEL_CHIPS[a] for a in tputs)}")
    out: dict[str, tuple[float | None, ...]] = {}
    for key, base in tputs[ref].items():
        row: list[float | None] = []
        for pool in fleet.pools:
            acc = _accelerator(pool.chip.id)
            t = tputs.get(acc, {}).get(key) if acc is not None else None
            row.append(None if t is None else t / base)
        out[gavel_class(*key)] = tuple(row)
    return out


def read_gavel_trace(path: str | Path, tputs: Throughputs, reference_chip: str,
                     limit: int | None = None) -> list[Job]:
    """Jobs of a Gavel trace, with work from the reference chip's throughputs."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"--trace gavel:{p}: no such file; pass a Gavel trace")
    ref = _accelerator(reference_chip)
    base = tputs.get(ref or "", {})
    jobs: list[Job] = []
    for k, line in enumerate(p.read_text().splitlines()):
        if limit is not None and len(jobs) >= limit:
            break
        if not line.strip():
            continue
        where = f"{p}: line {k + 1}"
        f = line.split("\t")
        if len(f) != 10:
            raise ConfigError(f"{where}: {len(f)} tab-separated fields; a Gavel trace line "
                              f"has 10 (job type, command, working directory, num steps arg, "
                              f"needs data dir, total steps, scale factor, priority weight, "
                              f"SLO, arrival time)")
        jt = f[0]
        try:
            steps, sf, arrival = float(f[5]), int(f[6]), float(f[9])
        except ValueError:
            raise ConfigError(f"{where}: total steps {f[5]!r}, scale factor {f[6]!r} and "
                              f"arrival time {f[9]!r} must be numbers") from None
        if not steps > 0 or sf < 1 or not arrival >= 0:
            raise ConfigError(f"{where}: total steps ({steps:g}) must be > 0, scale factor "
                              f"({sf}) >= 1 and arrival time ({arrival:g}) >= 0")
        tput = base.get((jt, sf))
        if tput is None:
            raise ConfigError(f"{where}: job type {jt!r} at scale factor {sf} has no "
                              f"throughput on {ref or reference_chip} in the Gavel throughput "
                              f"file; add it, or use a reference chip that has it")
        jobs.append(Job(id=f"gavel-{len(jobs)}", workload=gavel_class(jt, sf),
                        arrival_s=arrival, devices=sf, work=steps / tput * sf,
                        mem_gib=GAVEL_MEM_GIB))
    if not jobs:
        raise ConfigError(f"{p}: no job lines")
    return jobs


def gavel_style_jobs(n: int, jobs_per_h: float, seed: int,
                     speeds: dict[str, tuple[float, ...]]) -> list[Job]:
    """``n`` jobs as Gavel's generator draws them: Poisson arrivals at ``jobs_per_h``;
    scale factor 1 (70 %), 2 (10 %), 4 (15 %) or 8 (5 %); duration on the reference chip
    10^x minutes with x ~ U[1.5, 3] (80 %) or U[3, 4] (20 %); job type uniform over
    ``speeds`` (type -> per-pool relative speed; linear in devices). Classes are the type
    names."""
    if n < 1 or not jobs_per_h > 0:
        raise ConfigError(f"gavel_style_jobs: n ({n}) must be >= 1 and jobs_per_h "
                          f"({jobs_per_h}) > 0")
    rng = np.random.default_rng(seed)
    types = sorted(speeds)
    gaps = rng.exponential(3600.0 / jobs_per_h, n)
    gaps[0] = 0.0
    arrivals = np.cumsum(gaps)
    out = []
    for i in range(n):
        r = rng.uniform()
        sf = 1 if r < 0.7 else 2 if r < 0.8 else 4 if r < 0.95 else 8
        x = rng.uniform(1.5, 3) if rng.uniform() < 0.8 else rng.uniform(3, 4)
        minutes = 10 ** x
        jt = types[int(rng.integers(len(types)))]
        out.append(Job(id=f"g{i}", workload=jt, arrival_s=float(arrivals[i]), devices=sf,
                       work=minutes * 60.0 * sf, mem_gib=GAVEL_MEM_GIB))
    return out
