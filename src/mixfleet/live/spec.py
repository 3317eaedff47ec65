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
    kinds = ["nvidia-h20"]       # optional: catalog chip kinds it may run on
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

from mixfleet.config import apply_overrides, dumps_toml, load_toml
from mixfleet.errors import ConfigError
from mixfleet.fleet.model import Fleet, load_fleet

__all__ = ["PoolSpec", "FleetSpec", "JobSpec", "fleet_spec", "parse_job", "load_job",
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


_JOB_KEYS = ("name", "config", "set", "devices", "min_devices", "max_devices", "kinds", "pool",
             "chips", "priority", "max_restarts", "mem_gib")


def _int(job: dict[str, Any], key: str, where: str, default: int | None, low: int) -> int:
    v = job.get(key, default)
    if v is None:
        raise ConfigError(f"{where}: [job] field {key!r} is missing; add {key} = <integer>")
    if isinstance(v, bool) or not isinstance(v, int) or v < low:
        raise ConfigError(f"{where}: [job] field {key!r} is {v!r}; use an integer >= {low}")
    return v


def parse_job(data: dict[str, Any], where: str, fleet: FleetSpec,
              base_dir: Path | None = None) -> JobSpec:
    """A validated JobSpec; every problem raises ConfigError naming the field and the fix."""
    from mixfleet.train.launch import resolve_config
    from mixfleet.workloads import check_workload_name

    job = data.get("job")
    if not isinstance(job, dict):
        raise ConfigError(f"{where}: no [job] table; add [job] with devices = N and "
                          f"config = \"<train config>.toml\" (or the config's tables inline)")
    bad = set(job) - set(_JOB_KEYS)
    if bad:
        raise ConfigError(f"{where}: unknown [job] field(s) {', '.join(sorted(bad))}; known: "
                          f"{', '.join(_JOB_KEYS)}")
    inline = {k: v for k, v in data.items() if k != "job"}
    if "config" in job:
        if inline:
            raise ConfigError(f"{where}: [job] config = {job['config']!r} and inline tables "
                              f"({', '.join(sorted(inline))}) both given; keep one")
        if not isinstance(job["config"], str):
            raise ConfigError(f"{where}: [job] field 'config' is {job['config']!r}; use the "
                              f"path of a train config TOML")
        cpath = Path(job["config"])
        if not cpath.is_absolute() and base_dir is not None:
            cpath = base_dir / cpath
        if not cpath.is_file():
            raise ConfigError(f"{where}: [job] field 'config' is {job['config']!r}, no such "
                              f"file; give a train config path relative to the job file")
        cfg_data = load_toml(cpath)
    elif inline:
        cfg_data = inline
    else:
        raise ConfigError(f"{where}: no train config; add [job] config = \"<file>.toml\" or "
                          f"the config's tables ([workload], [train]) to the job file")
    overrides = job.get("set", [])
    if not isinstance(overrides, list) or not all(isinstance(s, str) for s in overrides):
        raise ConfigError(f"{where}: [job] field 'set' is {overrides!r}; use a list of "
                          f"strings like [\"train.steps=300\"]")
    raw = apply_overrides(cfg_data, overrides)
    cfg_dir = cpath.absolute().parent if "config" in job else base_dir
    cfg = resolve_config(None, [], data=json.loads(json.dumps(raw)), config_dir=cfg_dir)
    if cfg.workload.path:  # the job's mixfleet train finds a user workload where this did
        raw = {**raw, "workload": {**raw["workload"], "path": cfg.workload.path}}
    check_workload_name(cfg.workload.name)
    if cfg.ranks:
        raise ConfigError(f"{where}: the train config lists [[ranks]]; the fleet places a job "
                          f"on one pool's chips, so drop [[ranks]] and set [job] devices")
    devices, lo, hi = _sizes(job, where)
    prio = job.get("priority", 0)
    if isinstance(prio, bool) or not isinstance(prio, int):
        raise ConfigError(f"{where}: [job] field 'priority' is {prio!r}; use an integer")
    max_restarts = _int(job, "max_restarts", where, 3, 0)
    mem = job.get("mem_gib", 0)
    if isinstance(mem, bool) or not isinstance(mem, (int, float)) or mem < 0:
        raise ConfigError(f"{where}: [job] field 'mem_gib' is {mem!r}; use a number >= 0")
    pool = job.get("pool")
    if pool is not None:
        if pool not in {p.id for p in fleet.pools}:
            raise ConfigError(f"{where}: [job] field 'pool' is {pool!r}, not a pool of fleet "
                              f"{fleet.name!r}; use one of "
                              f"{', '.join(p.id for p in fleet.pools)} or drop it")
    chips = job.get("chips", [])
    if isinstance(chips, str):
        chips = [chips]
    if not isinstance(chips, list) or not all(isinstance(c, str) for c in chips):
        raise ConfigError(f"{where}: [job] field 'chips' is {chips!r}; use a list of chip "
                          f"ids, e.g. [\"kunlun-p800\"]")
    have = {p.chip for p in fleet.pools}
    missing = [c for c in chips if c not in have]
    if missing:
        raise ConfigError(f"{where}: [job] field 'chips' names {', '.join(missing)}, which no "
                          f"pool of fleet {fleet.name!r} has; use some of "
                          f"{', '.join(sorted(have))}")
    kinds = _kinds(job, where, fleet)
    name = job.get("name", Path(where).stem)
    spec = JobSpec(name=str(name), config_toml=dumps_toml(raw), workload=cfg.workload.name,
                   steps=cfg.train.steps, global_batch=cfg.train.global_batch,
                   devices=devices, pool=pool, chips=tuple(chips), priority=prio,
                   max_restarts=max_restarts, mem_gib=float(mem), min_devices=lo,
                   max_devices=hi, kinds=kinds)
    fit = [p for p in fleet.pools if spec.fits(p)]
    if not fit:
        raise ConfigError(f"{where}: no pool of fleet {fleet.name!r} meets the job's pool, "
                          f"chips and mem_gib constraints; relax them")
    most = max(p.capacity for p in fit)
    for key, n in (("max_devices", hi), ("devices", devices)):
        if n > most:
            raise ConfigError(f"{where}: [job] field {key!r} is {n}, more than the "
                              f"largest pool it may use has ({most}: "
                              f"{', '.join(f'{p.id}={p.capacity}' for p in fit)}); lower {key}")
    return spec


def _sizes(job: dict[str, Any], where: str) -> tuple[int, int, int]:
    """``devices`` and the elastic range (0, 0 when none is declared); ``devices`` defaults
    to ``max_devices`` when a range is given."""
    lo = _int(job, "min_devices", where, 0, 1) if "min_devices" in job else 0
    hi = _int(job, "max_devices", where, 0, 1) if "max_devices" in job else 0
    if not (lo or hi) or "devices" in job:
        devices = _int(job, "devices", where, None, 1)
    else:
        devices = hi or lo
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


def _kinds(job: dict[str, Any], where: str, fleet: FleetSpec) -> tuple[str, ...]:
    """``kinds``: catalog chip ids, each one a pool of the fleet has."""
    from mixfleet.catalog.base import load_catalog

    kinds = job.get("kinds", [])
    if not isinstance(kinds, list) or not kinds and "kinds" in job or \
            not all(isinstance(k, str) for k in kinds):
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
    return tuple(kinds)


def load_job(path: str | Path, fleet: FleetSpec) -> JobSpec:
    """Read and validate a job file."""
    return parse_job(load_toml(path), str(path), fleet, Path(path).parent)
