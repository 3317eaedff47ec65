"""Fleet, Pool and Job (docs/architecture.md, "Contracts between the parts"), and their TOML files.

Fleet file::

    name = "mixed"
    reference_chip = "nvidia-h800"   # work of trace jobs is measured on this chip
    [[pool]]
    chip = "ascend-910b"             # a catalog id
    nodes = 64
    per_node = 8
    id = "910b"                      # optional, default: the chip id
    [pool.reliability]               # optional overrides of the default profile
    mtbf_h = 5000
    [pool.assumption]                # optional, for chips the catalog lacks figures of
    relative_speed = 0.8             # x relative_to's throughput on every class
    relative_to = "nvidia-h20"       # a catalog chip (default: the reference chip)
    source = "press report ..."      # mandatory: where the assumption comes from
    # or: bf16_tflops = ..., hbm_tbps = ...  (fill the catalog's unknown figures)

Jobs file::

    [[job]]
    id = "llama-ft"
    workload = "llm-7b"              # a workload class
    devices = 8
    ref_hours = 12.0                 # or samples = ..., or ref_seconds = ...
    mem_gib = 60                     # optional, default: the class's
    arrival_s = 0                    # optional
    priority = 0                     # optional
    limit_hours = 24                 # optional: the declared runtime limit (reference chip)
    startup_s = 0                    # optional: seconds each attempt takes to start up
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from mixfleet.catalog.base import Chip, load_catalog
from mixfleet.config import load_toml, parse_as
from mixfleet.errors import ConfigError
from mixfleet.fleet.files import AssumptionTable, FleetFile, JobsFile
from mixfleet.fleet.reliability import ReliabilityProfile, default_profile
from mixfleet.fleet.throughput import Assumption
from mixfleet.fleet.workloads import WORKLOAD_CLASSES

__all__ = ["Pool", "Fleet", "Job", "load_fleet", "parse_fleet", "load_jobs", "parse_jobs"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class Pool:
    """Devices of one catalog chip: ``nodes`` x ``per_node``."""

    id: str
    chip: Chip
    nodes: int
    per_node: int
    reliability: ReliabilityProfile
    assumption: Assumption | None = None
    """A user-stated throughput assumption for the pool's chip (``[pool.assumption]``)."""

    @property
    def capacity(self) -> int:
        return self.nodes * self.per_node

    @property
    def mem_gib(self) -> float | None:
        return self.chip.hbm_gib.value

    @property
    def is_nvidia(self) -> bool:
        return self.chip.is_nvidia


@dataclasses.dataclass(frozen=True, kw_only=True)
class Fleet:
    """Pools of chips, and the chip trace work is measured on."""

    name: str
    pools: tuple[Pool, ...]
    reference_chip: Chip

    @property
    def capacity(self) -> int:
        return sum(p.capacity for p in self.pools)

    def assumptions(self) -> dict[str, Assumption]:
        """Chip id -> the throughput assumption its pools state (for
        :meth:`ThroughputTable.build`)."""
        return {p.chip.id: p.assumption for p in self.pools if p.assumption is not None}

    def peak_pflops(self) -> float | None:
        """Pooled dense BF16 peak in PFLOP/s, None if any pool's peak is unknown."""
        total = 0.0
        for p in self.pools:
            f = p.chip.peak_flops()
            if f is None:
                return None
            total += f * p.capacity
        return total / 1e15


@dataclasses.dataclass(frozen=True, kw_only=True)
class Job:
    """One training job. ``work`` is in reference device-seconds: the seconds it takes on
    ``devices`` devices of the reference chip, times ``devices``."""

    id: str
    workload: str
    arrival_s: float
    devices: int
    work: float
    mem_gib: float
    priority: int = 0
    declared_work: float | None = None
    """A runtime limit the job file or trace states, as reference device-seconds (what a
    user declares to a batch scheduler; real users over-estimate). None: not stated."""
    group: str = ""
    """User or virtual cluster, where the trace has one (the history estimator groups by
    it)."""
    startup_s: float = 0.0
    """Seconds from an attempt's start until it computes (importing, building the model,
    the first steps): paid at the first start and again at every restart, before the
    restart's own ``restart_s`` or ``migration_s`` (docs/fleet.md, "Simulation model")."""

    def __post_init__(self) -> None:
        if not 0 <= self.startup_s < float("inf"):
            raise ConfigError(f"job {self.id!r}: startup_s must be a number >= 0 (got "
                              f"{self.startup_s}); set startup_s = 0 or the measured seconds "
                              f"from an attempt's start to its first step")
        if self.declared_work is not None and not self.declared_work > 0:
            raise ConfigError(f"job {self.id!r}: declared runtime limit must be > 0 (got "
                              f"{self.declared_work})")
        if self.devices < 1:
            raise ConfigError(f"job {self.id!r}: devices must be >= 1 (got {self.devices})")
        if not self.work > 0:
            raise ConfigError(f"job {self.id!r}: work must be > 0 (got {self.work})")
        if self.arrival_s < 0:
            raise ConfigError(f"job {self.id!r}: arrival_s must be >= 0 (got {self.arrival_s})")


def _catalog_chip(cid: str | None, where: str, cat: dict[str, Chip]) -> Chip:
    if cid not in cat:
        raise ConfigError(f"{where} = {cid!r} is not a catalog chip; use one of "
                          f"{', '.join(sorted(cat))}")
    return cat[cid]


def parse_fleet(data: dict[str, Any], path: str, catalog: dict[str, Chip] | None = None
                ) -> Fleet:
    """A Fleet from parsed TOML, read by the typed loader into :class:`FleetFile`; bad
    entries raise ConfigError naming the file, the pool's field, the value and the fix."""
    cat = load_catalog() if catalog is None else catalog
    spec = parse_as(FleetFile, data, path)
    if not spec.pool:
        raise ConfigError(f"{path}: no [[pool]] tables; add one per chip type with chip, "
                          f"nodes, per_node")
    ref = _catalog_chip(spec.reference_chip, f"{path}: reference_chip", cat)
    pools: list[Pool] = []
    for i, row in enumerate(spec.pool):
        where = f"{path}: pool[{i}]"
        chip = _catalog_chip(row.chip, f"{where}.chip", cat)
        pid = row.id or chip.id
        if pid in {p.id for p in pools}:
            raise ConfigError(f"{where}.id = {pid!r} is used twice; give each pool its own id")
        rel = default_profile(chip.is_nvidia).with_overrides(row.reliability, where)
        assumption = None
        if row.assumption is not None:
            assumption = _assumption(row.assumption, f"{path}: pool {pid!r}", chip, cat,
                                     ref.id)
            for q in pools:
                if q.chip.id == chip.id and (q.assumption is None
                                             or not q.assumption.same_as(assumption)):
                    raise ConfigError(
                        f"{path}: pool {pid!r} field 'assumption': pool {q.id!r} is also "
                        f"{chip.id} but states {'no' if q.assumption is None else 'another'} "
                        f"assumption; throughput is per chip, so give both pools the same "
                        f"[pool.assumption]")
        elif any(q.chip.id == chip.id and q.assumption is not None for q in pools):
            raise ConfigError(f"{path}: pool {pid!r} is {chip.id} like a pool with a "
                              f"[pool.assumption] but states none; throughput is per chip, so "
                              f"give both pools the same [pool.assumption]")
        pools.append(Pool(id=pid, chip=chip, nodes=row.nodes, per_node=row.per_node,
                          reliability=rel, assumption=assumption))
    return Fleet(name=spec.name or Path(path).stem, pools=tuple(pools), reference_chip=ref)


def _assumption(raw: AssumptionTable, where: str, chip: Chip, cat: dict[str, Chip],
                ref_id: str) -> Assumption:
    """The checks of a pool's ``[pool.assumption]`` that relate its fields or need the
    catalog (ConfigError naming file, pool, field, value and the fix); the loader checked
    each field alone."""
    if not raw.source.strip():
        raise ConfigError(f"{where} field 'assumption.source' is {raw.source!r}; an "
                          f"assumption needs its source, e.g. source = \"press report (2025) "
                          f"comparing it to the H20\"")
    speed, tflops, tbps = raw.relative_speed, raw.bf16_tflops, raw.hbm_tbps
    rel_to = raw.relative_to
    if rel_to is not None and speed is None:
        raise ConfigError(f"{where} field 'assumption.relative_to' is {rel_to!r} without "
                          f"relative_speed; add relative_speed = <ratio> or drop relative_to")
    if speed is None and tflops is None and tbps is None:
        raise ConfigError(f"{where} [pool.assumption]: states nothing; give relative_speed "
                          f"(with relative_to) or the unknown bf16_tflops / hbm_tbps")
    if speed is not None and (tflops is not None or tbps is not None):
        raise ConfigError(f"{where} [pool.assumption]: give either relative_speed or "
                          f"bf16_tflops / hbm_tbps, not both")
    if speed is not None:
        rel_to = ref_id if rel_to is None else rel_to
        _catalog_chip(rel_to, f"{where} assumption.relative_to", cat)
        if rel_to == chip.id:
            raise ConfigError(f"{where} field 'assumption.relative_to' is the pool's own chip "
                              f"{rel_to!r}; name another chip, e.g. nvidia-h20")
    for key, val, fig in (("bf16_tflops", tflops, chip.bf16_tflops),
                          ("hbm_tbps", tbps, chip.hbm_tbps)):
        if val is not None and fig.value is not None:
            raise ConfigError(f"{where} field 'assumption.{key}' is {val:g}, but the catalog "
                              f"knows {key} of {chip.id} ({fig.value:g}, {fig.confidence}: "
                              f"{fig.source}); assume only unknown figures: drop it, or use "
                              f"relative_speed")
        if speed is None and val is None and fig.value is None:
            raise ConfigError(f"{where} [pool.assumption]: the catalog's {key} of {chip.id} is "
                              f"unknown too; add assumption.{key} = <value> (or use "
                              f"relative_speed)")
    return Assumption(source=raw.source.strip(), relative_speed=speed,
                      relative_to=rel_to if speed is not None else None, bf16_tflops=tflops,
                      hbm_tbps=tbps, where=f"{where} [pool.assumption]")


def _malformed(path: str | Path, what: str, e: Exception) -> ConfigError:
    return ConfigError(f"{what} {str(path)!r} is malformed ({type(e).__name__}: "
                       f"{str(e)[:100]}); compare it with the example in docs/fleet.md")


def load_fleet(path: str | Path, catalog: dict[str, Chip] | None = None) -> Fleet:
    """Read a fleet TOML file (any malformed content raises ConfigError)."""
    data = load_toml(path, "fleet file")
    try:
        return parse_fleet(data, str(path), catalog)
    except (TypeError, ValueError, OverflowError, AttributeError, KeyError) as e:
        raise _malformed(path, "fleet file", e) from None


def parse_jobs(data: dict[str, Any], path: str,
               ref_samples_per_s: dict[str, float] | None = None) -> list[Job]:
    """Jobs from parsed TOML (``[[job]]`` tables, read by the typed loader into
    :class:`JobsFile`). ``samples`` become reference device-seconds through
    ``ref_samples_per_s`` (workload -> samples/s of one reference device)."""
    rows = parse_as(JobsFile, data, path).job
    if not rows:
        raise ConfigError(f"{path}: no [[job]] tables; add one per job with id, workload, "
                          f"devices and ref_hours")
    jobs: list[Job] = []
    for i, row in enumerate(rows):
        where = f"{path}: job[{i}]"
        amounts = [(k, v) for k, v in (("samples", row.samples), ("ref_seconds",
                   row.ref_seconds), ("ref_hours", row.ref_hours)) if v is not None]
        if len(amounts) != 1:
            raise ConfigError(f"{where}: give exactly one of samples, ref_seconds, ref_hours "
                              f"(got {[k for k, _ in amounts] or 'none'}); e.g. ref_hours = 12")
        (kind, amount), = amounts
        if kind == "samples":
            tp = (ref_samples_per_s or {}).get(row.workload)
            if not tp:
                raise ConfigError(f"{where}.samples: the reference chip has no throughput for "
                                  f"{row.workload!r}; give ref_hours instead")
            work = amount / tp
        else:
            work = amount * row.devices * (3600.0 if kind == "ref_hours" else 1.0)
        jid = row.id or f"job-{i + 1}"
        if jid in {j.id for j in jobs}:
            raise ConfigError(f"{where}.id = {jid!r} is used twice; give each job its own id")
        mem = WORKLOAD_CLASSES[row.workload].mem_gib if row.mem_gib is None else row.mem_gib
        jobs.append(Job(id=jid, workload=row.workload, arrival_s=row.arrival_s,
                        devices=row.devices, work=work, mem_gib=float(mem),
                        priority=row.priority, declared_work=None if row.limit_hours is None
                        else row.limit_hours * 3600.0 * row.devices,
                        startup_s=row.startup_s))
    return jobs


def load_jobs(path: str | Path, ref_samples_per_s: dict[str, float] | None = None
              ) -> list[Job]:
    """Read a jobs TOML file (any malformed content raises ConfigError)."""
    data = load_toml(path, "jobs file")
    try:
        return parse_jobs(data, str(path), ref_samples_per_s)
    except (TypeError, ValueError, OverflowError, AttributeError, KeyError) as e:
        raise _malformed(path, "jobs file", e) from None
