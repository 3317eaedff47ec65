"""What the live fleet is made of: its pools (from a fleet TOML) and the jobs users submit.

Job file (``mixfleet submit JOB.toml``)::

    [job]
    name = "digits-a"            # optional label
    config = "digits-cnn.toml"   # a train config, relative to this file; or give the
                                 # config's own tables ([workload], [train], ...) here
    set = ["train.steps=300"]    # optional overrides, validated like `mixfleet train --set`
    devices = 2                  # devices the job runs on (ranks)
    min_devices = 1              # optional, elastic: the scheduler may shrink it this far
    max_devices = 2              # optional, elastic: ... and grow it this far
    kinds = ["nvidia-h20"]       # optional: catalog chip kinds it may run on (two or
                                 # more: it may run mixed over them, docs/fleet-elastic.md)
    pool = "p800"                # optional: only this pool
    chips = ["kunlun-p800"]      # optional: only pools of these chips
    priority = 0                 # higher goes first
    max_restarts = 3             # re-placements after failures before the job fails
    mem_gib = 0                  # optional: memory one device needs (0: any)
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from mixfleet.config import Section, apply_overrides, dumps_toml, field, load_toml, parse_as
from mixfleet.errors import ConfigError
from mixfleet.fleet.elastic import RESTART_S
from mixfleet.fleet.model import Fleet, load_fleet

__all__ = ["PoolSpec", "FleetSpec", "JobSpec", "JobTable", "fleet_spec", "parse_job", "load_job",
           "VISIBLE_DEVICES", "visible_devices_var"]

#: The variable each vendor's runtime reads to restrict a process to some devices.
#: Kunlun and T-Head PPU present themselves as ``cuda`` to PyTorch but their runtimes
#: read their own variable; the job sets it itself (Ray manages none of them).
VISIBLE_DEVICES = {
    "nvidia": "CUDA_VISIBLE_DEVICES",
    "huawei": "ASCEND_RT_VISIBLE_DEVICES",
    "baidu": "XPU_VISIBLE_DEVICES",
    "thead": "CUDA_VISIBLE_DEVICES",
    "cambricon": "MLU_VISIBLE_DEVICES",
    "amd": "HIP_VISIBLE_DEVICES",
    "intel": "HABANA_VISIBLE_MODULES",
}
EMULATED_VISIBLE = "MIXFLEET_EMU_VISIBLE_DEVICES"


def visible_devices_var(vendor: str, emulated: bool) -> str:
    """The variable that restricts a job to its devices (an emulated pool's own one)."""
    if emulated:
        return EMULATED_VISIBLE
    return VISIBLE_DEVICES.get(vendor.lower(), "CUDA_VISIBLE_DEVICES")


@dataclasses.dataclass(frozen=True, kw_only=True)
class PoolSpec:
    """One pool of the live fleet: one chip kind on ``nodes`` x ``per_node`` devices."""

    id: str
    chip: str
    vendor: str
    is_nvidia: bool
    nodes: int
    per_node: int
    mem_gib: float | None
    emulated: bool

    @property
    def capacity(self) -> int:
        return self.nodes * self.per_node

    @property
    def resource(self) -> str:
        """The Ray custom resource of the pool's chips (``chip:<id>``, ``chip:emu:<id>``)."""
        return f"chip:emu:{self.chip}" if self.emulated else f"chip:{self.chip}"

    @property
    def device(self) -> str:
        """``mixfleet train --device`` for this pool."""
        return f"emu:{self.chip}" if self.emulated else "auto"

    @property
    def label(self) -> str:
        return f"{self.id} ({self.chip}{', emulated' if self.emulated else ''})"


@dataclasses.dataclass(frozen=True, kw_only=True)
class FleetSpec:
    name: str
    pools: tuple[PoolSpec, ...]

    def pool(self, pid: str) -> PoolSpec:
        for p in self.pools:
            if p.id == pid:
                return p
        raise ConfigError(f"unknown pool {pid!r}; this fleet has "
                          f"{', '.join(p.id for p in self.pools)}")

    def to_json(self) -> str:
        return json.dumps({"name": self.name,
                           "pools": [dataclasses.asdict(p) for p in self.pools]})

    @staticmethod
    def from_json(text: str) -> FleetSpec:
        d = json.loads(text)
        return FleetSpec(name=d["name"], pools=tuple(PoolSpec(**p) for p in d["pools"]))


def fleet_spec(fleet: Fleet, emulated: bool) -> FleetSpec:
    """The live view of a planner fleet; one pool per chip kind (a Ray resource per chip)."""
    seen: dict[str, str] = {}
    for p in fleet.pools:
        if p.chip.id in seen:
            raise ConfigError(f"pools {seen[p.chip.id]!r} and {p.id!r} are both {p.chip.id}; "
                              f"a live fleet has one pool per chip kind (its Ray resource "
                              f"chip:{p.chip.id}); merge them into one [[pool]]")
        seen[p.chip.id] = p.id
    return FleetSpec(name=fleet.name, pools=tuple(
        PoolSpec(id=p.id, chip=p.chip.id, vendor=p.chip.vendor, is_nvidia=p.is_nvidia,
                 nodes=p.nodes, per_node=p.per_node, mem_gib=p.mem_gib, emulated=emulated)
        for p in fleet.pools))


def load_fleet_spec(path: str | Path, emulated: bool) -> FleetSpec:
    return fleet_spec(load_fleet(path), emulated)


@dataclasses.dataclass(frozen=True, kw_only=True)
class JobSpec:
    """A submitted job: a resolved train config and where it may run."""

    name: str
    config_toml: str
    """The train config (file or inline tables, ``set`` applied), as TOML."""
    workload: str
    steps: int
    global_batch: int
    devices: int
    pool: str | None = None
    chips: tuple[str, ...] = ()
    priority: int = 0
    max_restarts: int = 3
    mem_gib: float = 0.0
    min_devices: int = 0
    """Fewest devices it may be shrunk to (0: ``devices``, not elastic)."""
    max_devices: int = 0
    """Most devices it may be grown to (0: ``devices``)."""
    kinds: tuple[str, ...] = ()
    """Catalog chip kinds it may run on (empty: any)."""
    restart_s: float = RESTART_S
    """Seconds one relaunch costs it (assumed), weighed by the resize decisions."""

    @property
    def elastic(self) -> bool:
        """Whether it declared a size range: the scheduler then owns its size
        (docs/fleet-elastic.md); else a drain is left to the run's own launcher."""
        return bool(self.min_devices or self.max_devices)

    @property
    def lo(self) -> int:
        return self.min_devices or self.devices

    @property
    def hi(self) -> int:
        return self.max_devices or self.devices

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @staticmethod
    def from_json(text: str) -> JobSpec:
        d = json.loads(text)
        d["chips"] = tuple(d.get("chips", ()))
        d["kinds"] = tuple(d.get("kinds", ()))
        return JobSpec(**d)

    def fits(self, pool: PoolSpec) -> bool:
        """Whether ``pool`` satisfies the job's pool/chip/memory constraints."""
        if self.pool is not None and pool.id != self.pool:
            return False
        if self.chips and pool.chip not in self.chips:
            return False
        if self.kinds and pool.chip not in self.kinds:
            return False
        return not (self.mem_gib and pool.mem_gib is not None and self.mem_gib > pool.mem_gib)


@dataclasses.dataclass(kw_only=True, frozen=True)
class JobTable(Section, section="job"):
    """The ``[job]`` table of a job file, read by the typed loader of run configs (a field
    added here is a key job files accept, with its bounds checked the same way)."""

    devices: int = field(0, help="devices the job runs on (ranks); 0: max_devices of its "
                         "elastic range (required without a range)", ge=0, example=2)
    min_devices: int = field(0, help="elastic: the fewest devices the job may shrink to "
                             "(0: no range)", ge=0, example=1)
    max_devices: int = field(0, help="elastic: the most devices the job may grow to "
                             "(0: no range)", ge=0, example=2)
    kinds: list[str] = field([], help="chip kinds the job may run on (catalog ids); two "
                             "or more: it may run mixed over them",
                             example=["nvidia-h20", "kunlun-p800"])
    name: str = field("", help="a label (default: the job file's stem)")
    config: str = field("", help="a train config, relative to the job file; empty: the "
                        "config's own tables ([workload], [train], ...) are in the job file")
    set: list[str] = field([], help="overrides, validated like `mixfleet train --set`",
                           example=["train.steps=300"])
    pool: str | None = field(None, help="only this pool")
    chips: list[str] = field([], help="only pools of these chips", example=["kunlun-p800"])
    priority: int = field(0, help="higher goes first")
    max_restarts: int = field(3, help="re-placements after failures before the job fails",
                              ge=0)
    mem_gib: float = field(0.0, help="memory one device needs (0: any)", ge=0)
    restart_s: float = field(RESTART_S, help="elastic: seconds one relaunch of the job costs "
                             "(stop, start, resume from its snapshot; assumed), weighed "
                             "against what a resize gains", ge=0, le=86400)


def _train_config(job: JobTable, inline: dict[str, Any], where: str,
                  base_dir: Path | None) -> tuple[dict[str, Any], Path | None]:
    """The job's train config as a dict (the file it names, or its inline tables), and
    the folder it is relative to."""
    if not job.config:
        if not inline:
            raise ConfigError(f"{where}: no train config; add [job] config = \"<file>.toml\" "
                              f"or the config's tables ([workload], [train]) to the job file")
        return inline, base_dir
    if inline:
        raise ConfigError(f"{where}: [job] config = {job.config!r} and inline tables "
                          f"({', '.join(sorted(inline))}) both given; keep one")
    cpath = Path(job.config)
    if not cpath.is_absolute() and base_dir is not None:
        cpath = base_dir / cpath
    if not cpath.is_file():
        raise ConfigError(f"{where}: job.config = {job.config!r} is no such file; give a "
                          f"train config path relative to the job file")
    return load_toml(cpath), cpath.absolute().parent


def parse_job(data: dict[str, Any], where: str, fleet: FleetSpec,
              base_dir: Path | None = None, *, one_machine: bool = False) -> JobSpec:
    """A validated JobSpec; every problem raises ConfigError naming the field and the fix.
    ``[job]`` is read by the typed loader into :class:`JobTable`; the checks here need the
    train config or the fleet. ``one_machine``: the fleet's nodes are all on this machine
    (the embedded and local fleets), the only fleet a job is mixed over kinds on, so a job
    of several kinds may ask for more devices than one pool has only there."""
    from mixfleet.train.launch import resolve_config
    from mixfleet.workloads import check_workload_name

    raw_job = data.get("job")
    if not isinstance(raw_job, dict):
        raise ConfigError(f"{where}: no [job] table; add [job] with devices = N and "
                          f"config = \"<train config>.toml\" (or the config's tables inline)")
    if isinstance(raw_job.get("chips"), str):  # chips = "kunlun-p800" means one chip
        raw_job = {**raw_job, "chips": [raw_job["chips"]]}
    job = parse_as(JobTable, raw_job, where, prefix="job")
    cfg_data, cfg_dir = _train_config(job, {k: v for k, v in data.items() if k != "job"},
                                      where, base_dir)
    raw = apply_overrides(cfg_data, job.set)
    cfg = resolve_config(None, [], data=json.loads(json.dumps(raw)), config_dir=cfg_dir)
    if cfg.workload.path:  # the job's mixfleet train finds a user workload where this did
        raw = {**raw, "workload": {**raw["workload"], "path": cfg.workload.path}}
    check_workload_name(cfg.workload.name)
    if cfg.ranks:
        raise ConfigError(f"{where}: the train config lists [[ranks]]; the fleet places a job "
                          f"on one pool's chips, so drop [[ranks]] and set [job] devices")
    devices, lo, hi = _sizes(job, raw_job, where)
    if job.pool is not None and job.pool not in {p.id for p in fleet.pools}:
        raise ConfigError(f"{where}: job.pool = {job.pool!r} is not a pool of fleet "
                          f"{fleet.name!r}; use one of {', '.join(p.id for p in fleet.pools)} "
                          f"or drop it")
    have = {p.chip for p in fleet.pools}
    missing = [c for c in job.chips if c not in have]
    if missing:
        raise ConfigError(f"{where}: job.chips = {job.chips!r} names {', '.join(missing)}, "
                          f"which no pool of fleet {fleet.name!r} has; use some of "
                          f"{', '.join(sorted(have))}")
    kinds = _kinds(job, raw_job, where, fleet)
    spec = JobSpec(name=job.name or Path(where).stem, config_toml=dumps_toml(raw),
                   workload=cfg.workload.name, steps=cfg.train.steps,
                   global_batch=cfg.train.global_batch, devices=devices, pool=job.pool,
                   chips=tuple(job.chips), priority=job.priority,
                   max_restarts=job.max_restarts, mem_gib=job.mem_gib, min_devices=lo,
                   max_devices=hi, kinds=kinds, restart_s=job.restart_s)
    fit = [p for p in fleet.pools if spec.fits(p)]
    if not fit:
        raise ConfigError(f"{where}: no pool of fleet {fleet.name!r} meets the job's pool, "
                          f"chips and mem_gib constraints; relax them")
    # a job that names several kinds may run mixed over their pools (docs/fleet-elastic.md)
    mixed = len(kinds) >= 2 and one_machine
    most = sum(p.capacity for p in fit) if mixed else max(p.capacity for p in fit)
    which = "the pools of its kinds hold together" if mixed else "the largest pool it may use has"
    hint = ("" if mixed or len(kinds) < 2 else " (jobs are mixed over kinds only on a fleet "
            "whose nodes are all on one machine, the embedded and local fleets; on this one "
            "a job runs on one kind)")
    for key, n in (("max_devices", hi), ("devices", devices)):
        if n > most:
            raise ConfigError(f"{where}: [job] field {key!r} is {n}, more than {which} "
                              f"({most}: {', '.join(f'{p.id}={p.capacity}' for p in fit)})"
                              f"{hint}; lower {key} to {most} or less")
    return spec


def _sizes(job: JobTable, raw: dict[str, Any], where: str) -> tuple[int, int, int]:
    """``devices`` and the elastic range (0, 0 when none is declared); ``devices`` defaults
    to ``max_devices`` when a range is given."""
    lo, hi = job.min_devices, job.max_devices
    for key in ("devices", "min_devices", "max_devices"):
        if key in raw and getattr(job, key) < 1:
            raise ConfigError(f"{where}: job.{key} must be >= 1 (got {getattr(job, key)}); "
                              f"set [job] {key} = 1 or more, or leave it out")
    devices = job.devices or hi or lo
    if devices < 1:
        raise ConfigError(f"{where}: job.devices must be >= 1 (got {job.devices}); set [job] "
                          f"devices = 2, or min_devices and max_devices")
    if not (lo or hi):
        return devices, 0, 0
    lo, hi = lo or min(devices, hi), hi or max(devices, lo)
    if lo > hi:
        raise ConfigError(f"{where}: [job] field 'min_devices' is {lo}, more than "
                          f"max_devices = {hi}; set min_devices <= max_devices")
    if not lo <= devices <= hi:
        raise ConfigError(f"{where}: [job] field 'devices' is {devices}, outside "
                          f"min_devices..max_devices = {lo}..{hi}; set devices in that range "
                          f"(or drop it: it defaults to max_devices)")
    return devices, lo, hi


def _kinds(job: JobTable, raw: dict[str, Any], where: str, fleet: FleetSpec
           ) -> tuple[str, ...]:
    """``kinds``: catalog chip ids, each one a pool of the fleet has."""
    from mixfleet.catalog.base import load_catalog

    kinds = job.kinds
    if not kinds and "kinds" in raw:
        raise ConfigError(f"{where}: [job] field 'kinds' is {kinds!r}; use a non-empty list "
                          f"of chip ids, e.g. [\"nvidia-h20\", \"kunlun-p800\"]")
    cat = load_catalog()
    unknown = [k for k in kinds if k not in cat]
    if unknown:
        raise ConfigError(f"{where}: [job] field 'kinds' names {', '.join(unknown)}, not a "
                          f"chip of the catalog; use catalog ids (`mixfleet catalog`), e.g. "
                          f"{', '.join(sorted({p.chip for p in fleet.pools}))}")
    have = {p.chip for p in fleet.pools}
    lacking = [k for k in kinds if k not in have]
    if lacking:
        raise ConfigError(f"{where}: [job] field 'kinds' names {', '.join(lacking)}, which "
                          f"no pool of fleet {fleet.name!r} has; use some of "
                          f"{', '.join(sorted(have))}")
    barred = [k for k in kinds if (job.chips and k not in job.chips) or (
        job.pool is not None and all(p.chip != k for p in fleet.pools if p.id == job.pool))]
    if barred:
        raise ConfigError(f"{where}: [job] field 'kinds' names {', '.join(barred)}, which "
                          f"the job's own pool/chips exclude; drop pool and chips (kinds "
                          f"alone says where it may run) or those kinds")
    return tuple(kinds)


def load_job(path: str | Path, fleet: FleetSpec, *, one_machine: bool = False) -> JobSpec:
    """Read and validate a job file (``one_machine``: see :func:`parse_job`)."""
    return parse_job(load_toml(path), str(path), fleet, Path(path).parent,
                     one_machine=one_machine)
