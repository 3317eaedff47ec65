"""Mixed-kind jobs: whether a waiting job that allows several chip kinds should start now
on devices of two or more kinds, or wait for devices of one kind (docs/fleet-elastic.md).

One pure decision, :func:`mix_decision`, that the live scheduler and the simulator's replay
both call with what each knows. A job of ``size`` devices that no single pool can take now:

- **wait**: for each pool ``q`` it may use, ``expected_wait(q) + remaining / rate({q:
  size})`` (the wait from the devices free now and the other running jobs' ETAs,
  :func:`~mixfleet.fleet.elastic.expected_wait`); the earliest of them.
- **mix**: every split of ``size`` over the pools it may use, each part at most the pool's
  free devices now and at least two kinds, ends at ``remaining / rate(split)``; the
  earliest of them.

The mix is chosen when it ends more than ``min_gain_s`` sooner than the best wait; when
``rate`` is 0 on every split the answer is a wait with an empty split that says so (a
job never waits without a reason). ``rate``
is the caller's prediction of the job's throughput on a split ``{pool: devices}``: the
per-job cost model (:mod:`mixfleet.fleet.costmodel`: shares, fsdp, pipeline, the bridge
between kinds) in the live fleet, the same function or :func:`shares_rate` (the measured
shares model) in the simulator. A job is never mixed over kinds it does not allow: only the
pools in ``options`` are looked at.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Mapping, Sequence

from mixfleet.fleet.elastic import expected_wait

__all__ = ["MixJob", "MixDecision", "Split", "RateFn", "mix_decision", "splits", "shares_rate",
           "split_text"]

Split = tuple[tuple[int, int], ...]
"""Devices per pool, ``((pool, devices), ...)`` in pool order, every count >= 1."""
RateFn = Callable[[Split], float]
"""Predicted work per second of the job on a split (0: it does not run there)."""

MAX_SPLITS = 512
"""Most splits one decision prices (a guard for large jobs on many pools)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class MixJob:
    """What the decision sees of a waiting job."""

    id: str
    size: int
    """Devices it runs on (its ranks)."""
    remaining: float
    """Work left, in the unit ``rate`` is per second of."""
    options: tuple[int, ...]
    """Pools it may use (those of the kinds it allows)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class MixDecision:
    """``mix`` (start now on ``split``) or ``wait`` (for one kind)."""

    job: str
    action: str
    split: Split
    """The mixed split priced best (chosen or not; empty when every split priced 0)."""
    mixed_rate: float
    """Predicted throughput of ``split``."""
    wait_pool: int | None
    """The pool the best wait is for (None: no pool ever frees ``size`` devices)."""
    wait_s: float
    """Seconds until ``wait_pool`` has ``size`` devices free (inf: never)."""
    wait_rate: float
    """Predicted throughput on ``size`` devices of ``wait_pool`` alone."""
    gain_s: float
    """Seconds sooner the mix ends than the best wait (negative: later; inf: waiting
    never ends)."""
    reason: str

    def key(self) -> tuple[str, str, Split]:
        """What two runs of the same trace must agree on."""
        return (self.job, self.action, self.split if self.action == "mix" else ())

    def detail(self) -> dict[str, object]:
        """The decision as an event's JSON fields."""
        return {"action": self.action, "split": [list(x) for x in self.split],
                "mixed_rate": _r(self.mixed_rate), "wait_pool": self.wait_pool,
                "wait_s": _r(self.wait_s), "wait_rate": _r(self.wait_rate),
                "gain_s": _r(self.gain_s), "reason": self.reason}


def splits(size: int, free: Mapping[int, int], options: Sequence[int]) -> list[Split]:
    """Every split of ``size`` devices over ``options`` using at most each pool's ``free``
    devices and at least two pools (at most :data:`MAX_SPLITS`, in a fixed order: the
    counts in lexicographic order, pool by pool). Compositions are built pool by pool and
    a branch is cut as soon as the pools after it cannot hold what is left, so the work is
    bounded by the splits returned, not by the fleet's size."""
    pools = [q for q in sorted(set(options)) if free.get(q, 0) > 0]
    caps = [min(free[q], size) for q in pools]
    room = [sum(caps[i:]) for i in range(len(caps) + 1)]  # devices pools i.. can hold
    out: list[Split] = []
    counts: list[int] = []

    def walk(i: int, left: int) -> None:
        if len(out) >= MAX_SPLITS:
            return
        if i == len(pools):
            if left == 0 and sum(c > 0 for c in counts) >= 2:
                out.append(tuple((q, c) for q, c in zip(pools, counts, strict=True)
                                 if c > 0))
            return
        for c in range(max(0, left - room[i + 1]), min(caps[i], left) + 1):
            counts.append(c)
            walk(i + 1, left - c)
            counts.pop()

    if room[0] >= size:
        walk(0, size)
    return out


def mix_decision(job: MixJob, now: float, free: Mapping[int, int],
                 ends: Iterable[tuple[int, float, int]], rate: RateFn, *,
                 min_gain_s: float = 0.0, names: Sequence[str] | None = None
                 ) -> MixDecision | None:
    """Mix or wait for ``job`` (see the module doc); None when a pool it may use has
    ``size`` devices free now (no need to mix) or no split of free devices exists; a
    ``wait`` with an empty split when no split is predicted to run (``rate`` 0 on all).
    ``ends``: the (pool, ETA, devices) of the running jobs; ``names``: pool ids for the
    reason (default: ``pool N``)."""
    if any(free.get(q, 0) >= job.size for q in job.options):
        return None
    cands = splits(job.size, free, job.options)
    if not cands:
        return None
    ends = list(ends)
    best_wait: tuple[float, int, float, float] | None = None  # (end, pool, wait, rate)
    for q in sorted(set(job.options)):
        w = expected_wait(now, job.size, free.get(q, 0), [(t, n) for p, t, n in ends
                                                          if p == q])
        r = 0.0 if math.isinf(w) else rate(((q, job.size),))  # never priced in vain
        end = w + _time(job.remaining, r)
        if not math.isinf(end) and (best_wait is None or (end, q) < best_wait[:2]):
            best_wait = (end, q, w, r)
    priced = [(_time(job.remaining, r), s, r) for s in cands if (r := rate(s)) > 0]
    if best_wait is None:
        wend, wpool, wait_s, wrate = math.inf, None, math.inf, 0.0
        alone = (f"no pool it may use ever has {job.size} device(s) free (or a plan that "
                 f"fits them)")
    else:
        wend, wpool, wait_s, wrate = best_wait
        wname = f"pool {wpool}" if names is None else names[wpool]
        alone = (f"waiting {_s(wait_s)} for {job.size} device(s) of {wname} "
                 f"({wrate:.3g}/s) ends it in {_s(wend)}")
    if not priced:  # a wait, with its reason: the job is never left waiting unexplained
        return MixDecision(job=job.id, action="wait", split=(), mixed_rate=0.0,
                           wait_pool=wpool, wait_s=wait_s, wait_rate=wrate,
                           gain_s=-math.inf,
                           reason=f"{alone}; no split of the free devices over its "
                           f"kinds is predicted to run (rate 0 on all {len(cands)})")
    mix_end, split, mrate = min(priced, key=lambda x: (x[0], x[1]))
    what = split_text(split, names)
    gain = math.inf if math.isinf(wend) else wend - mix_end
    mixed = f"mixed {what} ({mrate:.3g}/s) ends it in {_s(mix_end)}"
    if gain > min_gain_s:
        return MixDecision(job=job.id, action="mix", split=split, mixed_rate=mrate,
                           wait_pool=wpool, wait_s=wait_s, wait_rate=wrate, gain_s=gain,
                           reason=f"{mixed}" + ("" if math.isinf(gain) else
                                                f", {_s(gain)} sooner") + f"; {alone}")
    return MixDecision(job=job.id, action="wait", split=split, mixed_rate=mrate,
                       wait_pool=wpool, wait_s=wait_s, wait_rate=wrate, gain_s=gain,
                       reason=f"{alone}; {mixed}, not sooner")


def shares_rate(per_device: Sequence[float], efficiency: float = 1.0) -> RateFn:
    """The measured shares model: a split runs at the sum of its devices' throughputs
    (balanced shares), times ``efficiency`` when it spans kinds (an assumed factor for the
    bridge between them; 1.0: free)."""

    def rate(split: Split) -> float:
        total = sum(per_device[q] * n for q, n in split)
        return total * (efficiency if len(split) > 1 else 1.0)

    return rate


def split_text(split: Split, names: Sequence[str] | None = None) -> str:
    """``2 x pool 0 + 1 x pool 1`` (pool ids when ``names`` are given)."""
    return " + ".join(f"{n} x {names[q] if names else f'pool {q}'}" for q, n in split)


def _time(work: float, rate: float) -> float:
    return work / rate if rate > 0 else math.inf


def _s(x: float) -> str:
    return "forever" if math.isinf(x) else f"{x:.0f} s"


def _r(x: float) -> float | None:
    return None if math.isinf(x) else round(x, 3)
