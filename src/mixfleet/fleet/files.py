"""The tables of a fleet file and of a jobs file (docs/fleet.md), as typed configs.

:func:`mixfleet.fleet.model.parse_fleet` and :func:`~mixfleet.fleet.model.parse_jobs`
read a file into these with :func:`mixfleet.config.parse_as`, the loader of run configs:
unknown keys, wrong types and values out of the bounds declared here are refused with the
same message (the file, the field, the value and the fix); the checks that need the
catalog or relate several entries stay in the parsers.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from mixfleet.config import Section, field
from mixfleet.fleet.workloads import WORKLOAD_CLASSES

__all__ = ["AssumptionTable", "PoolTable", "FleetFile", "JobTable", "JobsFile"]


@dataclasses.dataclass(kw_only=True, frozen=True)
class AssumptionTable(Section, section="pool.assumption"):
    """``[pool.assumption]``: throughput figures for a chip the catalog lacks them of."""

    source: str = field(help="where the assumption comes from (mandatory)",
                        example="press report (2025) comparing it to the H20")
    relative_speed: float | None = field(None, help="x relative_to's throughput on every "
                                         "workload class (a ratio)", gt=0, le=100,
                                         example=0.8)
    relative_to: str | None = field(None, help="a catalog chip (default: the reference chip)")
    bf16_tflops: float | None = field(None, help="the catalog's unknown dense BF16 peak, "
                                      "TFLOP/s", gt=0)
    hbm_tbps: float | None = field(None, help="the catalog's unknown HBM bandwidth, TB/s",
                                   gt=0)


@dataclasses.dataclass(kw_only=True, frozen=True)
class PoolTable(Section, section="pool"):
    """One ``[[pool]]``: ``nodes`` x ``per_node`` devices of one catalog chip."""

    chip: str = field(help="a catalog chip id", example="ascend-910b")
    nodes: int = field(help="nodes of the pool", ge=1, example=8)
    per_node: int = field(help="devices per node", ge=1, example=8)
    id: str = field("", help="the pool's id (default: the chip id)")
    reliability: dict[str, Any] = field({}, help="overrides of the default reliability "
                                        "profile (mtbf_h, restart_s, ...)")
    assumption: AssumptionTable | None = field(None, help="throughput assumption for a chip "
                                               "the catalog lacks figures of")


@dataclasses.dataclass(kw_only=True, frozen=True)
class FleetFile(Section):
    """A fleet file: its pools and the chip trace work is measured on."""

    name: str = field("", help="the fleet's name (default: the file's stem)")
    reference_chip: str = field("nvidia-h800", help="the chip trace jobs' work is measured on")
    pool: list[PoolTable] = field([], help="one [[pool]] per chip type")


@dataclasses.dataclass(kw_only=True, frozen=True)
class JobTable(Section, section="job"):
    """One ``[[job]]`` of a jobs file; give exactly one of samples, ref_seconds, ref_hours."""

    workload: str = field(help="a workload class", choices=tuple(WORKLOAD_CLASSES))
    devices: int = field(help="devices the job runs on", ge=1, example=8)
    id: str = field("", help="the job's id (default: job-<its number>)")
    samples: float | None = field(None, help="samples to train (needs the reference chip's "
                                  "throughput)", gt=0)
    ref_seconds: float | None = field(None, help="run time on `devices` reference chips, s",
                                      gt=0)
    ref_hours: float | None = field(None, help="run time on `devices` reference chips, h",
                                    gt=0, example=12.0)
    mem_gib: float | None = field(None, help="memory per device (default: the class's)", gt=0)
    arrival_s: float = field(0.0, help="arrival time, seconds from the start", ge=0)
    priority: int = field(0, help="higher goes first")
    limit_hours: float | None = field(None, help="the declared runtime limit on the "
                                      "reference chip, hours", gt=0)
    startup_s: float = field(0.0, help="seconds each attempt takes before it computes "
                             "(start-up), paid at every start and restart", ge=0)


@dataclasses.dataclass(kw_only=True, frozen=True)
class JobsFile(Section):
    """A jobs file: ``[[job]]`` tables."""

    job: list[JobTable] = field([], help="one [[job]] per job")
