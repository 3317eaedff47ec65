"""What a step costs on an emulated chip, and what a transfer costs on the link it crosses.

Pure functions and small records, no clocks and no torch: the emulator paces by them
(:mod:`mixfleet.emulate.device`, the emulated collectives) and the cost model predicts by
them (:mod:`mixfleet.fleet.costmodel`), so the two cannot drift apart. The figures and where
they come from are in ``docs/architecture.md`` ("Priced emulation").

**Step cost.** A rank's step is the sum over its micro-batches of
``microbatch_fixed_s + work(b) / efficiency(b)``, plus ``step_fixed_s`` once (optimizer,
launch overheads), where ``work(b)`` is the micro-batch's time at full efficiency and
``efficiency(b) = min(1, (b / saturate) ** efficiency_exponent)``: a small micro-batch uses a
chip poorly. ``b`` and ``saturate`` are in the run's work unit (samples, or tokens under
``as_model``).

**Links.** Bandwidths are in GB/s (1 GB = 1e9 bytes, the catalog's ``link_gbps`` unit).
Three classes:

- ``intra``: ranks of one chip kind on one node, the catalog's ``link_gbps`` (the vendor's
  aggregate figure); a chip without one gets ``intra_default_gbps`` (assumed, labelled);
- ``bridge``: ranks of different kinds on one node, through host memory and PCIe
  (``bridge_gbps``, default 32 GB/s assumed: about one PCIe Gen4 x16 direction);
- ``nic``: ranks on different nodes (``nic_gbps``, default 25 GB/s assumed: one 200 Gb/s port).

A collective over several ranks runs at the slowest link among them. Ring algorithms:
all-reduce moves ``2 (n-1)/n`` of the bytes in ``2 (n-1)`` steps, all-gather and
reduce-scatter ``(n-1)/n`` in ``n-1`` steps (``nbytes`` is the whole, gathered tensor), a
send or broadcast the bytes in one step; each step pays the link's latency.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Literal

from mixfleet.catalog.base import Chip, load_catalog
from mixfleet.config import Section, field

__all__ = ["EmulateConfig", "StepCost", "Link", "LinkPrices", "Op", "OPS", "LINK_CLASSES",
           "transfer_s", "bytes_moved"]

Op = Literal["all_reduce", "all_gather", "reduce_scatter", "send", "broadcast"]
OPS: tuple[str, ...] = ("all_reduce", "all_gather", "reduce_scatter", "send", "broadcast")
LINK_CLASSES = ("intra", "bridge", "nic")


@dataclasses.dataclass(kw_only=True, frozen=True)
class StepCost(Section, section="step_cost"):
    """The shape of a chip's step time: fixed costs and an efficiency curve."""

    step_fixed_s: float = field(0.0, help="seconds each step pays once (optimizer, launches)",
                                ge=0)
    microbatch_fixed_s: float = field(0.0, help="seconds each micro-batch pays (launches)", ge=0)
    saturate: float = field(1.0, help="micro-batch size (work units) from which the chip "
                            "runs at full efficiency", gt=0)
    efficiency_exponent: float = field(0.0, help="efficiency below saturate is "
                                       "(b / saturate) ** this; 0 = always 1 (linear cost)",
                                       ge=0)
    origin: str = field("assumed", help="where the figures come from (assumed, measured)")

    def efficiency(self, b: float) -> float:
        """How well a micro-batch of ``b`` work units uses the chip, in (0, 1]."""
        if b <= 0:
            raise ValueError(f"micro-batch size must be > 0 (got {b!r})")
        if self.efficiency_exponent == 0 or b >= self.saturate:
            return 1.0
        return float((b / self.saturate) ** self.efficiency_exponent)

    def microbatch_s(self, b: float, unit_s: float) -> float:
        """One micro-batch of ``b`` units at ``unit_s`` seconds per unit at full efficiency."""
        return self.microbatch_fixed_s + b * unit_s / self.efficiency(b)

    def step_s(self, micro_batches: Sequence[float], unit_s: float) -> float:
        """A rank's step: its micro-batches (sizes in work units), then the fixed cost."""
        return self.step_fixed_s + sum(self.microbatch_s(b, unit_s) for b in micro_batches
                                       if b > 0)

    def scaled(self, factor: float) -> StepCost:
        """The same shape with every time multiplied by ``factor`` (a time scale)."""
        return dataclasses.replace(self, step_fixed_s=self.step_fixed_s * factor,
                                   microbatch_fixed_s=self.microbatch_fixed_s * factor)


@dataclasses.dataclass(frozen=True)
class Link:
    """One link class between two ranks: bandwidth (GB/s), latency (s) and their origin."""

    cls: str
    gbps: float
    latency_s: float
    origin: str  # "catalog", "config" or "assumed"

    def describe(self) -> str:
        return f"{self.cls} {self.gbps:g} GB/s ({self.origin})"


@dataclasses.dataclass(kw_only=True, frozen=True)
class LinkPrices(Section, section="emulate"):
    """Bandwidths and latencies of the three link classes (``[emulate]`` fills the first)."""

    bridge_gbps: float = field(32.0, help="between chip kinds on one node: host memory and "
                               "PCIe (assumed: one PCIe Gen4 x16 direction)", gt=0)
    nic_gbps: float = field(25.0, help="between nodes (assumed: one 200 Gb/s port)", gt=0)
    intra_default_gbps: float = field(32.0, help="inside a kind whose catalog record has no "
                                      "link_gbps (assumed: PCIe)", gt=0)
    intra_latency_s: float = field(5e-6, help="latency per algorithm step inside a kind "
                                   "(assumed)", ge=0)
    bridge_latency_s: float = field(15e-6, help="latency per step across the host bridge "
                                    "(assumed)", ge=0)
    nic_latency_s: float = field(25e-6, help="latency per step between nodes (assumed)", ge=0)
    bridge_origin: str = field("assumed", help="'config' when the user set bridge_gbps")
    nic_origin: str = field("assumed", help="'config' when the user set nic_gbps")

    def link(self, kind_a: str, kind_b: str, *, same_node: bool = True,
             catalog: dict[str, Chip] | None = None) -> Link:
        """The link between a rank of ``kind_a`` and one of ``kind_b`` (catalog chip ids)."""
        if not same_node:
            return Link("nic", self.nic_gbps, self.nic_latency_s, self.nic_origin)
        if kind_a != kind_b:
            return Link("bridge", self.bridge_gbps, self.bridge_latency_s, self.bridge_origin)
        cat = load_catalog() if catalog is None else catalog
        chip = cat.get(kind_a)
        gbps = chip.link_gbps.value if chip is not None else None
        if gbps is None or gbps <= 0:
            return Link("intra", self.intra_default_gbps, self.intra_latency_s, "assumed")
        return Link("intra", float(gbps), self.intra_latency_s, "catalog")

    def group_link(self, kinds: Sequence[str], nodes: Sequence[int] | None = None, *,
                   catalog: dict[str, Chip] | None = None) -> Link:
        """The slowest link among a group's ranks (``kinds[i]``, ``nodes[i]`` of rank i)."""
        if not kinds:
            raise ValueError("a group needs at least one rank")
        nodes = list(nodes) if nodes is not None else [0] * len(kinds)
        cat = load_catalog() if catalog is None else catalog
        links = [self.link(kinds[i], kinds[j], same_node=nodes[i] == nodes[j], catalog=cat)
                 for i in range(len(kinds)) for j in range(i + 1, len(kinds))]
        if not links:  # one rank: nothing crosses a link, but keep the kind's own figures
            return self.link(kinds[0], kinds[0], catalog=cat)
        return min(links, key=lambda lk: (lk.gbps, -lk.latency_s))


def bytes_moved(op: str, nbytes: float, n: int) -> tuple[float, int]:
    """(bytes each rank sends, algorithm steps) of ``op`` over ``n`` ranks (ring)."""
    if op not in OPS:
        raise ValueError(f"unknown op {op!r}; one of {', '.join(OPS)}")
    if nbytes < 0 or n < 1:
        raise ValueError(f"nbytes must be >= 0 and n >= 1 (got {nbytes}, {n})")
    if op in ("send", "broadcast"):
        return float(nbytes), 1
    if n == 1:
        return 0.0, 0
    if op == "all_reduce":
        return 2.0 * (n - 1) / n * nbytes, 2 * (n - 1)
    return (n - 1) / n * nbytes, n - 1


def transfer_s(op: str, nbytes: float, n: int, link: Link) -> float:
    """Seconds ``op`` of ``nbytes`` over ``n`` ranks takes on ``link``: steps x latency +
    bytes moved / bandwidth (counted from the last rank's arrival)."""
    moved, steps = bytes_moved(op, nbytes, n)
    return steps * link.latency_s + moved / (link.gbps * 1e9)


@dataclasses.dataclass(kw_only=True, frozen=True)
class EmulateConfig(Section, section="emulate"):
    """The ``[emulate]`` table of a run config: the pacing of emulated chips and the
    prices of the links between them."""

    sample_s: float | None = field(None, help="emulated chips: step time per sample at "
                                   "relative speed 1.0 (s), the same on every rank so the "
                                   "relative speeds are exact; none: calibrated per rank",
                                   gt=0, example=0.001)

    bridge_gbps: float = field(32.0, help="GB/s between chip kinds on one node (host memory, "
                               "PCIe); default assumed: one PCIe Gen4 x16 direction", gt=0)
    nic_gbps: float = field(25.0, help="GB/s between nodes; default assumed: one 200 Gb/s port",
                            gt=0)
    as_model: str | None = field(None, help="pace every emulated rank as if it trained this "
                                 "model (a llama preset or hf: config) while the configured "
                                 "small model does the real math")
    as_model_seq_len: int = field(0, help="tokens per sequence of the as_model model (0: "
                                  "its own, e.g. 8192 for llama3-8b)", ge=0, example=4096)
    time_scale: float | None = field(None, help="emulated wall seconds per second of the "
                                     "emulated chip under as_model, in (0, 1]; none = chosen "
                                     "so a step takes well under a second",
                                     gt=0, le=1, example=0.001)
    headroom: float | None = field(None, help="emulated chips: step budget = calibrated step "
                                   "time x headroom / relative speed, >= 1 (1: no spare time, "
                                   "a slower computation shows in the step time); none = 1.5 "
                                   "x max(1, local ranks / CPU cores)", ge=1, example=1.5)

    def link_prices(self) -> LinkPrices:
        """The link classes' prices, the two set here labelled config when not default."""
        d = EmulateConfig()
        return LinkPrices(bridge_gbps=self.bridge_gbps, nic_gbps=self.nic_gbps,
                          bridge_origin="config" if self.bridge_gbps != d.bridge_gbps
                          else "assumed",
                          nic_origin="config" if self.nic_gbps != d.nic_gbps else "assumed")
