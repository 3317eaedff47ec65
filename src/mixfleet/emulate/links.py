"""Emulated links: every transfer between emulated ranks takes the priced time of its link.

The real gloo transfer still runs (the math is real); :class:`LinkPacer` then sleeps until
``t_last + transfer_s(op, bytes, n, link) x scale``, where ``t_last`` is the arrival of the
last rank at the transfer, so that skew between ranks is not paid twice. The arrival times
are exchanged in one tiny all-reduce (MAX, float64) on the pacer's own gloo group; on one
machine ``time.monotonic`` (CLOCK_MONOTONIC) is shared by every process, across machines
the wall clock is used (as good as their clock sync). The link is the slowest among the
group's ranks (:meth:`~mixfleet.emulate.pricing.LinkPrices.group_link`). Where it is used
and what overlap it removes: ``docs/emulation.md``.

``total_s`` accumulates the time this rank spent in priced transfers (from its arrival to
the end of the pacing, waits for late ranks included): the emulated device reads it, so
that priced transfers are never counted as compute.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from mixfleet.emulate.pricing import Link, LinkPrices, transfer_s

__all__ = ["LinkPacer", "max_arrival"]


def max_arrival(group: Any) -> Callable[[float], float]:
    """The exchange of arrival times over ``group`` (a gloo group): one all-reduce MAX."""
    import torch
    import torch.distributed as dist

    def exchange(t: float) -> float:
        buf = torch.tensor([t], dtype=torch.float64)
        dist.all_reduce(buf, op=dist.ReduceOp.MAX, group=group)
        return float(buf.item())

    return exchange


class LinkPacer:
    """Paces this rank's transfers over a group of ``n`` ranks on ``link``.

    ``scale``: emulated wall seconds per second of the emulated link (``time_scale`` under
    ``as_model``, else 1). Bytes are the tensor's own (``numel x element size``) unless
    ``numel_scale`` and ``element_bytes`` (per op) say what the emulated model moves
    instead (``as_model``: the preset's parameter count and dtypes).
    """

    def __init__(self, link: Link, n: int, *, exchange: Callable[[float], float] | None = None,
                 scale: float = 1.0, numel_scale: float = 1.0,
                 element_bytes: Mapping[str, float] | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if n < 1 or scale <= 0 or numel_scale <= 0:
            raise ValueError(f"LinkPacer needs n >= 1, scale > 0 and numel_scale > 0 (got "
                             f"{n}, {scale}, {numel_scale})")
        self.link, self.n, self.scale = link, n, scale
        self.numel_scale = numel_scale
        self.element_bytes = dict(element_bytes or {})
        self._exchange = exchange if exchange is not None else (lambda t: t)
        self._clock, self._sleep = clock, sleep
        self.total_s = 0.0  # time in priced transfers (arrival to end), this rank
        self.priced_s = 0.0  # the priced part alone
        self.transfers = 0

    @classmethod
    def for_group(cls, kinds: Sequence[str], nodes: Sequence[int] | None, prices: LinkPrices,
                  *, group: Any = None, **kw: Any) -> LinkPacer:
        """A pacer over every rank of ``kinds`` (catalog chip ids, one per rank) and
        ``nodes`` (None: all on one node), exchanging arrivals over ``group``."""
        one_node = nodes is None or len(set(nodes)) <= 1
        kw.setdefault("clock", time.monotonic if one_node else time.time)
        if "exchange" not in kw:
            kw["exchange"] = max_arrival(group) if len(kinds) > 1 else None
        return cls(prices.group_link(kinds, nodes), len(kinds), **kw)

    def model_bytes(self, numel_scale: float, element_bytes: Mapping[str, float]) -> None:
        """Price another model's bytes: each transfer's elements x ``numel_scale``, at
        ``element_bytes[op]`` bytes each (``as_model``)."""
        if numel_scale <= 0:
            raise ValueError(f"numel_scale must be > 0 (got {numel_scale})")
        self.numel_scale, self.element_bytes = numel_scale, dict(element_bytes)

    def nbytes(self, op: str, numel: int, element_size: int) -> float:
        """The bytes the emulated transfer of ``numel`` elements moves."""
        return numel * self.numel_scale * self.element_bytes.get(op, element_size)

    def price(self, op: str, nbytes: float) -> float:
        """Emulated wall seconds of ``op`` on ``nbytes`` (counted from the last arrival)."""
        return transfer_s(op, nbytes, self.n, self.link) * self.scale

    def arrive(self) -> float:
        """This rank's arrival time at a transfer (pass it to :meth:`settle`)."""
        return self._clock()

    def settle(self, op: str, nbytes: float, arrived: float) -> float:
        """After the real transfer: wait until the last rank's arrival + the priced time.
        Returns the priced seconds. A collective call: every rank of the group, in order."""
        last = self._exchange(arrived)
        priced = self.price(op, nbytes)
        end = last + priced
        while (left := end - self._clock()) > 1e-6:
            self._sleep(left)
        self.total_s += self._clock() - arrived
        self.priced_s += priced
        self.transfers += 1
        return priced

    @contextlib.contextmanager
    def paced(self, op: str, nbytes: float) -> Iterator[None]:
        """``with pacer.paced("all_reduce", nbytes): <the real transfer>``."""
        t = self.arrive()
        yield
        self.settle(op, nbytes, t)

    def describe(self) -> str:
        return f"{self.link.describe()}, {self.n} ranks" + (
            f", time scale {self.scale:g}" if self.scale != 1.0 else "")
