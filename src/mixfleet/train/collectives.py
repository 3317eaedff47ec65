"""Gradient all-reduce across ranks on different kinds of device.

Ranks are grouped by *device kind* (``cuda``, ``npu``, ``xpu``, ``mlu``, ``cpu``; an emulated
chip ``emu:<id>`` has the kind of the chip it stands for, from the catalog's
``torch_device``, so a Kunlun P800 is ``cuda`` and an Ascend 910B ``npu``). With one kind
the reduce is exactly one ``dist.all_reduce`` over the job's group, as for a homogeneous
job. With several it is hierarchical:

1. reduce within each kind on its native backend (nccl for cuda, hccl for npu, ...; gloo
   for emulated chips, which compute on the CPU),
2. the lowest rank of each kind (its *leader*) copies the sum to host memory and the
   leaders all-reduce it on a host (gloo) group,
3. each leader broadcasts the total back within its kind.

The job's default group is then a host (gloo) group, since no device backend spans
two kinds; :func:`default_backend` picks it. A control group (gloo) carries the rebalance
decisions. Every group is created by every rank in the same order (``dist.new_group``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist

from mixfleet.train.device import BACKENDS, backend_for

__all__ = ["device_kind", "default_backend", "FleetCollectives"]


def device_kind(spec: str) -> str:
    """The device kind of a device string: ``cuda:1`` -> cuda, ``emu:ascend-910b`` -> npu."""
    if spec.startswith("emu:"):
        from mixfleet.catalog.base import get_chip
        from mixfleet.emulate import parse_emu_device

        return str(get_chip(parse_emu_device(spec)).torch_device)
    return spec.split(":", 1)[0]


def _native_backend(kind: str, specs: Sequence[str]) -> str:
    if any(s.startswith("emu:") for s in specs):
        return "gloo"  # emulated chips compute on the CPU
    return BACKENDS.get(kind, "gloo")


def default_backend(rank_devices: Sequence[str], device: torch.device,
                    override: str = "auto") -> str:
    """Backend of the job's default group: the device's own with one kind, else gloo."""
    if len({device_kind(d) for d in rank_devices}) > 1:
        return "gloo" if override == "auto" else override
    return backend_for(device, override)


class FleetCollectives:
    """The all-reduce of the flat gradient buffer, hierarchical across device kinds.

    ``wait_s`` accumulates the time spent in collectives (read and reset by the
    rebalancer, which subtracts it from the step time to get the compute time).
    """

    def __init__(self, rank_devices: Sequence[str], rank: int, *, group: Any = None) -> None:
        self.rank_devices = list(rank_devices)
        self.rank = rank
        self.world = len(self.rank_devices)
        self.group = group
        kinds = [device_kind(d) for d in self.rank_devices]
        order = list(dict.fromkeys(kinds))  # kinds in order of their first rank
        self.kinds = kinds
        self.members = {k: [r for r, kk in enumerate(kinds) if kk == k] for k in order}
        self.kind = kinds[rank] if self.world else "cpu"
        self.leader = self.members[self.kind][0] if self.world else 0
        self.hierarchical = len(order) > 1
        self.kind_group: Any = None
        self.leader_group: Any = None
        self.control: Any = None
        self.wait_s = 0.0

    @classmethod
    def create(cls, rank_devices: Sequence[str], rank: int, *, group: Any = None
               ) -> FleetCollectives:
        """Create the groups (a collective call: every rank, same order)."""
        self = cls(rank_devices, rank, group=group)
        if self.world > 1 and dist.is_initialized():
            self.control = dist.new_group(backend="gloo")
            if self.hierarchical:
                for k, ranks in self.members.items():
                    if len(ranks) > 1:
                        g = dist.new_group(ranks, backend=_native_backend(
                            k, [self.rank_devices[r] for r in ranks]))
                        if k == self.kind:
                            self.kind_group = g
                self.leader_group = dist.new_group([m[0] for m in self.members.values()],
                                                   backend="gloo")
        return self

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
