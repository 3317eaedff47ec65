"""Gavel's own inputs (Narayanan et al., OSDI 2020; github.com/stanford-futuredata/gavel),
so mixfleet's policies can be compared with Gavel's on identical jobs.

- **Trace** (``--trace gavel:FILE``): one job per line, 10 tab-separated fields, as Gavel's
  ``scheduler/utils.py`` ``parse_trace`` reads them: job type, command, working directory,
  num-steps argument, needs-data-dir, total steps, scale factor (devices), priority weight,
  SLO, arrival time (seconds).
- **Throughputs** (``--throughput gavel:FILE``): Gavel's ``simulation_throughputs.json``,
  ``{worker type: {"('<job type>', <scale factor>)": {"null": steps/s, ...}}}`` (the
  ``null`` entry is the job alone; the co-location entries are ignored). Worker types are
  ``v100``/``p100``/``k80`` and their ``<type>_unconsolidated`` variants: the same job's
  throughput when its workers are *not* consolidated on one server (placement-sensitive;
  equal to the consolidated figure at scale factor 1). Gavel's simulator reads both but
  schedules only on the plain types of its cluster spec, packing a job's workers onto as
  few servers as it can (``_assign_workers_to_job``), and leaves the variants out of its
  throughput estimator. :func:`read_gavel_throughputs` does the same by default
  (``placement="consolidated"``); ``placement="unconsolidated"`` takes every figure from
  the variants instead (every multi-device job spread across servers: the pessimistic
  bound). :func:`gavel_usage` says which entries a fleet used and why the others were not.

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

__all__ = ["GAVEL_CHIPS", "GAVEL_PLACEMENTS", "read_gavel_file", "read_gavel_throughputs",
           "gavel_usage", "select_placement", "gavel_speeds", "read_gavel_trace",
           "gavel_class", "gavel_style_jobs", "gavel_table_jobs", "GAVEL_MEM_GIB"]

#: Gavel's accelerator names -> catalog chip ids.
GAVEL_CHIPS = {"v100": "nvidia-v100", "p100": "nvidia-p100", "k80": "nvidia-k80"}
#: Suffix of Gavel's placement-sensitive worker types (workers spread across servers).
UNCONSOLIDATED = "_unconsolidated"
#: Which of Gavel's variants supplies the figures (see the module docstring).
GAVEL_PLACEMENTS = ("consolidated", "unconsolidated")
#: Memory per device of a Gavel job: its throughput file lists a job on an accelerator only
#: where it fits, so memory is not a further constraint.
GAVEL_MEM_GIB = 1.0

Throughputs = dict[str, dict[tuple[str, int], float]]


def gavel_class(job_type: str, scale_factor: int) -> str:
    """The workload class of a Gavel job type at a scale factor."""
    return f"{job_type} x{scale_factor}"


def read_gavel_file(path: str | Path) -> Throughputs:
    """Every worker type of Gavel's file (``_unconsolidated`` ones included) -> (job type,
    scale factor) -> steps/s of the job alone."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"--throughput gavel:{p}: no such file; pass Gavel's "
                          f"simulation_throughputs.json")
    try:
        doc = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(f"{p}: not valid JSON ({e})") from None
    if not isinstance(doc, dict) or not doc:
        raise ConfigError(f"{p}: expected {{worker type: {{\"('<type>', <scale>)\": "
                          f"{{\"null\": steps/s}}}}}}")
    out: Throughputs = {}
    for acc, table in doc.items():
        if acc.removesuffix(UNCONSOLIDATED) not in GAVEL_CHIPS:
            raise ConfigError(f"{p}: worker type {acc!r} is not one of "
                              f"{', '.join(GAVEL_CHIPS)} (or one of them + "
                              f"{UNCONSOLIDATED!r}); pass Gavel's own file")
        if not isinstance(table, dict):
            raise ConfigError(f"{p}: worker type {acc!r}: expected an object of job types")
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


def select_placement(every: Throughputs, placement: str = "consolidated") -> Throughputs:
    """Accelerator -> figures of one placement variant of :func:`read_gavel_file`'s
    result (keyed by the plain accelerator name)."""
    if placement not in GAVEL_PLACEMENTS:
        raise ConfigError(f"Gavel placement {placement!r} is not one of "
                          f"{', '.join(GAVEL_PLACEMENTS)}")
    suffix = UNCONSOLIDATED if placement == "unconsolidated" else ""
    return {a: every[a + suffix] for a in GAVEL_CHIPS if a + suffix in every}


def read_gavel_throughputs(path: str | Path, placement: str = "consolidated") -> Throughputs:
    """accelerator -> (job type, scale factor) -> steps/s of the job alone, from the
    ``placement`` variant of Gavel's file (default: consolidated, as Gavel's simulator)."""
    return select_placement(read_gavel_file(path), placement)


def gavel_usage(every: Throughputs, fleet: Fleet, placement: str = "consolidated"
                ) -> dict[str, object]:
    """Which worker types of Gavel's file give the fleet's speeds (``used``) and, for each
    other one, why not (``not_used``: worker type -> reason)."""
    chips = {p.chip.id for p in fleet.pools} | {fleet.reference_chip.id}
    suffix = UNCONSOLIDATED if placement == "unconsolidated" else ""
    other = "consolidated" if suffix else "unconsolidated"
    used: list[str] = []
    not_used: dict[str, str] = {}
    for wt in sorted(every):
        base = wt.removesuffix(UNCONSOLIDATED)
        variant = "unconsolidated" if wt != base else "consolidated"
        if variant != placement:
            where = "spread across servers" if suffix == "" else "on one server"
            not_used[wt] = (f"{variant} variant: a job's workers {where}; "
                            f"--gavel-placement {other} selects it")
        elif GAVEL_CHIPS[base] not in chips:
            not_used[wt] = f"no {GAVEL_CHIPS[base]} pool in fleet {fleet.name!r}"
        else:
            used.append(wt)
    return {"placement": placement, "used": used, "not_used": not_used}


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


def gavel_table_jobs(n: int, jobs_per_h: float, seed: int, tputs: Throughputs,
                     reference: str = "v100") -> list[Job]:
    """``n`` jobs as Gavel's generator draws them from its throughput file: Poisson
    arrivals, job type uniform over the reference accelerator's types, scale factor and
    duration as :func:`gavel_style_jobs` (a type the file lists only at scale factor 1 stays
    at 1, as Gavel's generator keeps A3C and CycleGAN on one worker). Each job is class
    ``"<type> x<scale factor>"`` (:func:`gavel_class`) and *declares its steps*, as a Gavel
    job does: ``declared_work`` is its work (steps / the reference chip's measured steps/s at
    its scale factor x devices), what ``--estimates declared`` hands policies."""
    if n < 1 or not jobs_per_h > 0:
        raise ConfigError(f"gavel_table_jobs: n ({n}) must be >= 1 and jobs_per_h "
                          f"({jobs_per_h}) > 0")
    if reference not in tputs:
        raise ConfigError(f"gavel_table_jobs: no {reference!r} column (has: "
                          f"{', '.join(tputs)})")
    table = tputs[reference]
    types = sorted({jt for jt, _ in table})
    rng = np.random.default_rng(seed)
    gaps = rng.exponential(3600.0 / jobs_per_h, n)
    gaps[0] = 0.0
    arrivals = np.cumsum(gaps)
    out = []
    for i in range(n):
        jt = types[int(rng.integers(len(types)))]
        r = rng.uniform()
        sf = 1 if r < 0.7 else 2 if r < 0.8 else 4 if r < 0.95 else 8
        if (jt, sf) not in table:
            sf = 1
        x = rng.uniform(1.5, 3) if rng.uniform() < 0.8 else rng.uniform(3, 4)
        work = 10 ** x * 60.0 * sf
        out.append(Job(id=f"g{i}", workload=gavel_class(jt, sf), arrival_s=float(arrivals[i]),
                       devices=sf, work=work, mem_gib=GAVEL_MEM_GIB, declared_work=work))
    return out
