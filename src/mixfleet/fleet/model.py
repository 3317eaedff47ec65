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
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

from mixfleet.catalog.base import Chip, load_catalog
from mixfleet.config import load_toml
from mixfleet.errors import ConfigError
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

    def __post_init__(self) -> None:
        if self.declared_work is not None and not self.declared_work > 0:
            raise ConfigError(f"job {self.id!r}: declared runtime limit must be > 0 (got "
                              f"{self.declared_work})")
        if self.devices < 1:
            raise ConfigError(f"job {self.id!r}: devices must be >= 1 (got {self.devices})")
        if not self.work > 0:
            raise ConfigError(f"job {self.id!r}: work must be > 0 (got {self.work})")
        if self.arrival_s < 0:
            raise ConfigError(f"job {self.id!r}: arrival_s must be >= 0 (got {self.arrival_s})")


def _int(d: dict[str, Any], key: str, where: str, default: int | None = None) -> int:
    v = d.get(key, default)
    if v is None:
        raise ConfigError(f"{where}: field {key!r} is missing; add {key} = <integer>")
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ConfigError(f"{where}: field {key!r} is {v!r}; use an integer >= 1")
    return v


def parse_fleet(data: dict[str, Any], path: str, catalog: dict[str, Chip] | None = None
                ) -> Fleet:
    """A Fleet from parsed TOML; bad entries raise ConfigError naming file, pool, field."""
    cat = load_catalog() if catalog is None else catalog
    unknown = set(data) - {"name", "reference_chip", "pool"}
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {', '.join(sorted(unknown))}; known: "
                          f"name, reference_chip, [[pool]]")
    rows = data.get("pool")
    if not isinstance(rows, list) or not rows:
        raise ConfigError(f"{path}: no [[pool]] tables; add one per chip type with chip, "
                          f"nodes, per_node")
    ref_id = data.get("reference_chip", "nvidia-h800")
    if ref_id not in cat:
        raise ConfigError(f"{path}: field 'reference_chip' is {ref_id!r}, not a catalog chip; "
                          f"known: {', '.join(sorted(cat))}")
    pools: list[Pool] = []
    for i, row in enumerate(rows):
        where = f"{path}: pool #{i + 1}"
        if not isinstance(row, dict):
            raise ConfigError(f"{where} is not a table")
        bad = set(row) - {"id", "chip", "nodes", "per_node", "reliability", "assumption"}
        if bad:
            raise ConfigError(f"{where}: unknown field(s) {', '.join(sorted(bad))}; known: "
                              f"id, chip, nodes, per_node, reliability, assumption")
        chip_id = row.get("chip")
        if chip_id not in cat:
            raise ConfigError(f"{where} field 'chip': unknown chip {chip_id!r}; use a catalog "
                              f"id ({', '.join(sorted(cat))})")
        chip = cat[chip_id]
        pid = row.get("id", chip_id)
        if not isinstance(pid, str) or not pid or pid in {p.id for p in pools}:
            raise ConfigError(f"{where} field 'id': {pid!r} is empty or used twice; give each "
                              f"pool its own id")
        rel = default_profile(chip.is_nvidia)
        over = row.get("reliability", {})
        if not isinstance(over, dict):
            raise ConfigError(f"{where} field 'reliability' must be a table")
        rel = rel.with_overrides(over, f"{where} [pool.reliability]")
        assumption = None
        if "assumption" in row:
            assumption = _assumption(row["assumption"], f"{path}: pool {pid!r}", chip, cat,
                                     ref_id)
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
        pools.append(Pool(id=pid, chip=chip, nodes=_int(row, "nodes", where),
                          per_node=_int(row, "per_node", where), reliability=rel,
                          assumption=assumption))
    name = data.get("name", Path(path).stem)
    return Fleet(name=str(name), pools=tuple(pools), reference_chip=cat[ref_id])


_ASSUMPTION_FIELDS = ("relative_speed", "relative_to", "bf16_tflops", "hbm_tbps", "source")


def _assumption(raw: object, where: str, chip: Chip, cat: dict[str, Chip], ref_id: str
                ) -> Assumption:
    """A pool's ``[pool.assumption]`` table, validated (ConfigError naming file, pool,
    field, value and the fix)."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} field 'assumption' is {raw!r}; use a table "
                          f"[pool.assumption] with relative_speed, relative_to and source")
    bad = set(raw) - set(_ASSUMPTION_FIELDS)
    if bad:
        raise ConfigError(f"{where} [pool.assumption]: unknown field(s) "
                          f"{', '.join(sorted(bad))}; known: {', '.join(_ASSUMPTION_FIELDS)}")
    src = raw.get("source")
    if not isinstance(src, str) or not src.strip():
        raise ConfigError(f"{where} field 'assumption.source' is {src!r}; an assumption "
                          f"needs its source, e.g. source = \"press report (2025) comparing "
                          f"it to the H20\"")

    def number(key: str) -> float | None:
        v = raw.get(key)
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) \
                or v <= 0:
            raise ConfigError(f"{where} field 'assumption.{key}' is {v!r}; use a positive "
                              f"number")
        return float(v)

    speed, tflops, tbps = number("relative_speed"), number("bf16_tflops"), number("hbm_tbps")
    if speed is not None and speed > 100:
        raise ConfigError(f"{where} field 'assumption.relative_speed' is {speed:g}; it is "
                          f"a ratio to relative_to's throughput (e.g. 0.8), at most 100")
    rel_to = raw.get("relative_to")
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
        if rel_to not in cat:
            raise ConfigError(f"{where} field 'assumption.relative_to' is {rel_to!r}, not a "
                              f"catalog chip; use one of {', '.join(sorted(cat))}")
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
    return Assumption(source=src.strip(), relative_speed=speed,
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
    """Jobs from parsed TOML (``[[job]]`` tables). ``samples`` become reference
    device-seconds through ``ref_samples_per_s`` (workload -> samples/s of one reference
    device)."""
    rows = data.get("job")
    if not isinstance(rows, list) or not rows:
        raise ConfigError(f"{path}: no [[job]] tables; add one per job with id, workload, "
                          f"devices and ref_hours")
    jobs: list[Job] = []
    known = {"id", "workload", "devices", "samples", "ref_seconds", "ref_hours", "mem_gib",
             "arrival_s", "priority", "limit_hours"}
    for i, row in enumerate(rows):
        where = f"{path}: job #{i + 1}"
        if not isinstance(row, dict):
            raise ConfigError(f"{where} is not a table; write it as [[job]] with key = value "
                              f"lines")
        bad = set(row) - known
        if bad:
            raise ConfigError(f"{where}: unknown field(s) {', '.join(sorted(bad))}; known: "
                              f"{', '.join(sorted(known))}")
        wl = row.get("workload")
        if wl not in WORKLOAD_CLASSES:
            raise ConfigError(f"{where} field 'workload': {wl!r} is not a workload class; use "
                              f"one of {', '.join(WORKLOAD_CLASSES)}")
        devices = _int(row, "devices", where)
        amounts = [k for k in ("samples", "ref_seconds", "ref_hours") if k in row]
        if len(amounts) != 1:
            raise ConfigError(f"{where}: give exactly one of samples, ref_seconds, ref_hours "
                              f"(got {amounts or 'none'}); e.g. ref_hours = 12")
        amount = row[amounts[0]]
        if isinstance(amount, bool) or not isinstance(amount, (int, float)) or amount <= 0:
            raise ConfigError(f"{where} field {amounts[0]!r}: {amount!r} must be a positive "
                              f"number")
        if amounts[0] == "samples":
            tp = (ref_samples_per_s or {}).get(wl)
            if not tp:
                raise ConfigError(f"{where} field 'samples': the reference chip has no "
                                  f"throughput for {wl!r}; give ref_hours instead")
            work = float(amount) / tp
        else:
            work = float(amount) * devices * (3600.0 if amounts[0] == "ref_hours" else 1.0)
        mem = row.get("mem_gib", WORKLOAD_CLASSES[wl].mem_gib)
        if isinstance(mem, bool) or not isinstance(mem, (int, float)) or mem <= 0:
            raise ConfigError(f"{where} field 'mem_gib': {mem!r} must be a positive number")
        jid = str(row.get("id", f"job-{i + 1}"))
        if jid in {j.id for j in jobs}:
            raise ConfigError(f"{where} field 'id': {jid!r} is used twice; give each job "
                              f"its own id")
        arrival = row.get("arrival_s", 0.0)
        if isinstance(arrival, bool) or not isinstance(arrival, (int, float)) or arrival < 0:
            raise ConfigError(f"{where} field 'arrival_s': {arrival!r} must be >= 0")
        prio = row.get("priority", 0)
        if isinstance(prio, bool) or not isinstance(prio, int):
            raise ConfigError(f"{where} field 'priority': {prio!r} must be an integer")
        limit = row.get("limit_hours")
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, (int, float))
                                  or not limit > 0):
            raise ConfigError(f"{where} field 'limit_hours': {limit!r} must be a positive "
                              f"number (the runtime limit on the reference chip)")
        jobs.append(Job(id=jid, workload=wl, arrival_s=float(arrival), devices=devices,
                        work=work, mem_gib=float(mem), priority=prio,
                        declared_work=None if limit is None else
                        float(limit) * 3600.0 * devices))
    return jobs


def load_jobs(path: str | Path, ref_samples_per_s: dict[str, float] | None = None
              ) -> list[Job]:
    """Read a jobs TOML file (any malformed content raises ConfigError)."""
    data = load_toml(path, "jobs file")
    try:
        return parse_jobs(data, str(path), ref_samples_per_s)
    except (TypeError, ValueError, OverflowError, AttributeError, KeyError) as e:
        raise _malformed(path, "jobs file", e) from None
