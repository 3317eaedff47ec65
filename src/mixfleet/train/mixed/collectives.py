"""Gradient all-reduce across ranks on different kinds of chip.

Ranks are grouped by *chip kind* = vendor + chip (the catalog id: ``nvidia-h20``,
``kunlun-p800``, ``ascend-910b``; ``cpu``; the bare torch type when no tool names the
vendor), never by the torch device type alone: a Kunlun P800 and a T-Head PPU present
themselves as ``cuda``, and no device backend (NCCL, HCCL, ...) spans vendors. The kind of a
rank comes from :func:`mixfleet.train.mixed.placement.place_rank` (detection, or the rank's
``[[ranks]] chip`` override; an emulated chip ``emu:<id>`` is of kind ``<id>``).

With one kind the reduce is exactly one ``dist.all_reduce`` over the job's group, as for a
homogeneous job. With several it is hierarchical:

1. reduce within each kind on its native backend (nccl for Nvidia, hccl for Ascend, ...;
   gloo for emulated chips and on the tests' fake node, which compute on the CPU),
2. the lowest rank of each kind (its *leader*) copies the sum to host memory and the
   leaders all-reduce it on a host (gloo) group, the *host bridge*,
3. each leader broadcasts the total back within its kind.

The job's default group is then a host (gloo) group; :func:`default_backend` picks it and
refuses (ConfigError) a device backend forced onto ranks of two vendors. A control group
(gloo) carries the rebalance decisions. Every group is created by every rank in the same
order (``dist.new_group``). :meth:`FleetCollectives.group_table` describes them all for the
run's manifest.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist

from mixfleet.catalog.detect import Detection
from mixfleet.errors import ConfigError
from mixfleet.train.device import BACKENDS, backend_for
from mixfleet.train.exchange import all_gather_json
from mixfleet.train.mixed.placement import RankDevice, on_fake_node, place_rank, rank_placements
from mixfleet.train.parallel.strategy import sum_small

__all__ = ["device_kind", "default_backend", "check_groups", "rank_chips", "FleetCollectives"]

_HOST_BACKENDS = ("gloo", "mpi")


def device_kind(spec: str, chip: str | None = None, *, local_rank: int = 0,
                detection: Detection | None = None) -> str:
    """The chip kind of a device string: ``emu:ascend-910b`` -> ascend-910b, ``cuda:1`` on
    a Kunlun node -> kunlun-p800, ``cpu`` -> cpu; ``chip`` overrides detection."""
    return place_rank(spec, local_rank, chip=chip, detection=detection).kind


def rank_chips(cfg: Any, world: int) -> list[str | None]:
    """Each rank's ``[[ranks]] chip`` override (None where it has none)."""
    ranks = list(getattr(cfg, "ranks", []) or [])
    if len(ranks) != world:
        return [None] * world
    return [getattr(r, "chip", None) for r in ranks]


def _native_backend(p: RankDevice) -> str:
    if p.emulated or p.torch_type == "cpu":
        return "gloo"  # emulated chips compute on the CPU
    return BACKENDS.get(p.torch_type, "gloo")


def _vendors(ps: Sequence[RankDevice]) -> list[str | None]:
    return list(dict.fromkeys(p.vendor for p in ps))


def check_groups(placements: Sequence[RankDevice], backend: str) -> None:
    """Refuse a device backend for a group of ranks of more than one vendor (or of several
    kinds whose vendor is unknown): ConfigError with the ranks and the fix."""
    if backend in _HOST_BACKENDS or backend == "auto":
        return
    kinds = list(dict.fromkeys(p.kind for p in placements))
    vendors = _vendors(placements)
    if len(kinds) > 1 and (len(vendors) > 1 or None in vendors):
        who = "; ".join(f"{k}: ranks {[r for r, p in enumerate(placements) if p.kind == k]}"
                        for k in kinds)
        raise ConfigError(f"launch.backend = {backend!r} would put ranks of different vendors "
                          f"in one {backend} group ({who}); no device backend spans vendors. "
                          f"Set [launch] backend = \"auto\" (native groups per chip kind, "
                          f"joined by a gloo host bridge) or \"gloo\"")


def default_backend(rank_devices: Sequence[str], device: torch.device,
                    override: str = "auto", *, chips: Sequence[str | None] | None = None,
                    placements: Sequence[RankDevice] | None = None) -> str:
    """Backend of the job's default group: the device's own with one chip kind, else gloo;
    a device backend forced onto two vendors raises ConfigError."""
    ps = list(placements) if placements is not None else rank_placements(rank_devices,
                                                                         chips=chips)
    if len({p.kind for p in ps}) > 1:
        if override == "auto":
            return "gloo"
        check_groups(ps, override)
        return override
    if override == "auto" and on_fake_node():
        return "gloo"  # the fake node computes on the CPU
    return backend_for(device, override)


#: Up to this many ranks, :meth:`FleetCollectives.all_reduce_small` exchanges the values
#: directly (n - 1 messages per rank, all in flight at once).
SMALL_P2P_RANKS = 16


class FleetCollectives:
    """The all-reduce of the flat gradient buffer, hierarchical across chip kinds.

    ``wait_s`` accumulates the time spent in collectives (read and reset by the
    rebalancer, which subtracts it from the step time to get the compute time).
    """

    def __init__(self, rank_devices: Sequence[str], rank: int, *, group: Any = None,
                 chips: Sequence[str | None] | None = None,
                 placements: Sequence[RankDevice] | None = None,
                 backend: str = "auto") -> None:
        self.rank_devices = list(rank_devices)
        self.rank = rank
        self.world = len(self.rank_devices)
        self.group = group
        self.backend_override = backend
        self.kind_group: Any = None
        self.leader_group: Any = None
        self.control: Any = None
        self.wait_s = 0.0
        self._place(list(placements) if placements is not None
                    else rank_placements(self.rank_devices, chips=chips))

    def _place(self, placements: list[RankDevice]) -> None:
        self.placements = placements
        kinds = [p.kind for p in placements]
        order = list(dict.fromkeys(kinds))  # kinds in order of their first rank
        self.kinds = kinds
        self.members = {k: [r for r, kk in enumerate(kinds) if kk == k] for k in order}
        self.kind = kinds[self.rank] if self.world else "cpu"
        self.leader = self.members[self.kind][0] if self.world else 0
        self.hierarchical = len(order) > 1
        if self.hierarchical:
            check_groups(placements, self.backend_override)

    @classmethod
    def create(cls, rank_devices: Sequence[str], rank: int, *, group: Any = None,
               chips: Sequence[str | None] | None = None,
               placements: Sequence[RankDevice] | None = None,
               backend: str = "auto") -> FleetCollectives:
        """Create the groups (a collective call: every rank, same order). Each rank's own
        view of its device is gathered first, so ranks of other nodes are known exactly."""
        self = cls(rank_devices, rank, group=group, chips=chips, placements=placements,
                   backend=backend)
        if self.world > 1 and dist.is_initialized():
            self.control = dist.new_group(backend="gloo")
            views = [RankDevice(**v) for v in all_gather_json(
                dataclasses.asdict(self.placements[rank]), group=self.control)]
            if [v.kind for v in views] != self.kinds:
                self._place(list(views))
            if self.hierarchical:
                for k, ranks in self.members.items():
                    if len(ranks) > 1:
                        g = dist.new_group(ranks, backend=self._kind_backend(ranks))
                        if k == self.kind:
                            self.kind_group = g
                self.leader_group = dist.new_group([m[0] for m in self.members.values()],
                                                   backend="gloo")
        return self

    def _kind_backend(self, ranks: Sequence[int]) -> str:
        """The native backend of a kind's group (gloo on the CPU: emulated, fake node)."""
        native = _native_backend(self.placements[ranks[0]])
        return "gloo" if on_fake_node() else native

    def group_table(self) -> list[dict[str, Any]]:
        """Every process group of the job: name, ranks, backend, chip kinds and vendors
        (``stands_for``: the native backend a gloo stand-in replaces on the fake node)."""
        def row(name: str, ranks: list[int], backend: str, native: str | None = None
                ) -> dict[str, Any]:
            ps = [self.placements[r] for r in ranks]
            out = {"group": name, "ranks": ranks, "backend": backend,
                   "kinds": list(dict.fromkeys(p.kind for p in ps)),
                   "vendors": list(dict.fromkeys(p.vendor for p in ps))}
            if native is not None and native != backend:
                out["stands_for"] = native
            return out

        every = list(range(self.world))
        default = (self.group_backend() if self.group is not None or dist.is_initialized()
                   else ("gloo" if self.hierarchical else None))
        rows = [row("default", every, default or "unknown")]
        if self.world > 1:
            rows.append(row("control", every, "gloo"))
        if self.hierarchical:
            for k, ranks in self.members.items():
                if len(ranks) > 1:
                    rows.append(row(f"kind:{k}", ranks, self._kind_backend(ranks),
                                    _native_backend(self.placements[ranks[0]])))
            rows.append(row("host-bridge", [m[0] for m in self.members.values()], "gloo"))
        return rows

    def group_backend(self) -> str:
        """The backend of the job's default group (as initialized)."""
        try:
            return str(dist.get_backend(self.group))
        except (RuntimeError, ValueError):
            return "unknown"

    def all_reduce_small(self, t: torch.Tensor) -> None:
        """Sum a few values (a control region) over all ranks, in place, timed into
        ``wait_s`` like :meth:`all_reduce`: by :func:`~mixfleet.train.parallel.strategy.sum_small`
        over every rank, not the hierarchy's three collectives (3 ranks on one host, the
        last arrival's wait: 0.6 ms against 1.5 ms for one ring all-reduce); above
        ``SMALL_P2P_RANKS`` ranks by one all-reduce over every rank."""
        if self.world <= 1:
            return
        if self.control is None:
            self.all_reduce(t)
            return
        t0 = time.perf_counter()
        host = t if t.device.type == "cpu" else t.cpu()
        if self.world > SMALL_P2P_RANKS:
            dist.all_reduce(host, group=self.control)
        else:
            sum_small(host, self.control, self.rank, self.world)
        if host is not t:
            t.copy_(host)
        self.wait_s += time.perf_counter() - t0

    def all_reduce(self, flat: torch.Tensor) -> None:
        """Sum ``flat`` over all ranks, in place."""
        if self.world <= 1:
            return
        t0 = time.perf_counter()
        if not self.hierarchical:
            dist.all_reduce(flat, group=self.group)
        else:
            if self.kind_group is not None:
                dist.all_reduce(flat, group=self.kind_group)
            if self.rank == self.leader:
                host = flat if flat.device.type == "cpu" else flat.to("cpu")
                dist.all_reduce(host, group=self.leader_group)
                if host is not flat:
                    flat.copy_(host)
            if self.kind_group is not None:
                dist.broadcast(flat, src=self.leader, group=self.kind_group)
        self.wait_s += time.perf_counter() - t0
