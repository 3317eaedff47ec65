"""What the fleet knows versus what the simulator draws (docs/fleet.md, "What the fleet
knows").

A policy decides on what a real fleet could know: the throughput table (measured >
emulated > assumed > estimated figures, as :mod:`mixfleet.fleet.speeds` resolves them) and
each pool's reliability *estimated* from its documented or stated profile (the prior) and
the failures and throttle episodes seen so far in the run. The simulator draws failures,
throttles and job progress from a :class:`Truth` that may differ from both (by default it
is the table and the profiles: a fleet whose figures are right).

:class:`FleetKnowledge` is the view handed to policies (:meth:`FleetKnowledge.pools` and
:attr:`FleetKnowledge.speed` go into every :class:`Snapshot`); the simulator feeds it what a
fleet's telemetry would report (a failure on pool p, a throttle episode on pool p, the
device-seconds each pool has been busy) and nothing else.

The estimate of a rate is the posterior mean of a gamma prior worth ``prior_events``
events at the profile's rate, updated by the events counted over the busy device-hours
(a conjugate Poisson update): ``rate = (k0 + n) / (k0 / rate0 + exposure)``.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Sequence

from mixfleet.errors import ConfigError
from mixfleet.fleet.policies.base import PoolView
from mixfleet.fleet.reliability import ReliabilityProfile

__all__ = ["Truth", "FleetKnowledge", "misspecified_truth", "estimate_rate"]

Speeds = dict[str, tuple[float | None, ...]]


@dataclasses.dataclass(frozen=True, kw_only=True)
class Truth:
    """What the simulator draws from: per workload and pool the true relative speed, and per
    pool the true reliability profile. Policies never see it."""

    speed: Speeds
    reliability: tuple[ReliabilityProfile, ...]
    note: str = ""
    """How it differs from what the fleet knows (for reports)."""

    @staticmethod
    def or_table(truth: Truth | None, speed: Speeds, pools: Sequence[PoolView]) -> Truth:
        """``truth`` checked against the table, or (None) the table and the pools' profiles
        themselves: a fleet whose figures are right."""
        if truth is None:
            return Truth(speed=speed, reliability=tuple(p.reliability for p in pools))
        truth.check(speed, len(pools))
        return truth

    def check(self, known: Speeds, npools: int) -> None:
        """Raise ConfigError unless it covers every pool and every figure the table has."""
        if len(self.reliability) != npools:
            raise ConfigError(f"truth: {len(self.reliability)} reliability profiles for "
                              f"{npools} pools; give one per pool")
        for w, row in known.items():
            true = self.speed.get(w)
            if true is None or len(true) != npools or any(
                    k is not None and k > 0 and not (t is not None and t > 0)
                    for k, t in zip(row, true, strict=True)):
                raise ConfigError(f"truth: workload {w!r} lacks a positive true speed on a "
                                  f"pool the throughput table has a figure for; give one")


def misspecified_truth(pools: Sequence[PoolView], speed: Speeds, seed: int,
                       speed_error: float = 0.3, failure_factor: float = 3.0) -> Truth:
    """A truth off from the table: each (workload, pool) speed times a factor uniform in
    [1 - speed_error, 1 + speed_error] (seeded), every pool's failure rate times
    ``failure_factor`` (its MTBF divided by it)."""
    if not 0 <= speed_error < 1 or not failure_factor > 0:
        raise ConfigError(f"misspecified truth: speed_error must be in [0, 1) and "
                          f"failure_factor > 0 (got {speed_error}, {failure_factor})")
    rng = random.Random(seed)
    true: Speeds = {}
    for w in sorted(speed):
        true[w] = tuple(None if s is None else s * rng.uniform(1 - speed_error, 1 + speed_error)
                        for s in speed[w])
    rel = tuple(dataclasses.replace(p.reliability, mtbf_h=p.reliability.mtbf_h / failure_factor)
                for p in pools)
    return Truth(speed=true, reliability=rel,
                 note=f"speeds x U[{1 - speed_error:g}, {1 + speed_error:g}], failure rates "
                      f"x{failure_factor:g}")


def estimate_rate(prior_rate: float, events: int, exposure: float,
                  prior_events: float) -> float:
    """Posterior mean of a Poisson rate (per unit of exposure) under a gamma prior worth
    ``prior_events`` events at ``prior_rate``."""
    if prior_rate <= 0:
        return events / exposure if exposure > 0 and events else 0.0
    return (prior_events + events) / (prior_events / prior_rate + exposure)


def _round3(x: float) -> float:
    """Three significant digits (estimates that barely move keep their memoized rates)."""
    if x <= 0 or not math.isfinite(x):
        return x
    return round(x, 2 - int(math.floor(math.log10(x))))


class FleetKnowledge:
    """The policies' view: the throughput table and reliability estimated from telemetry.

    ``pools``: the pools with their prior profiles (documented defaults or the fleet file's).
    ``refresh_s``: estimates are recomputed at most this often (simulated seconds) and only
    after something new was seen; between refreshes the same :class:`PoolView` tuple is
    handed out, so policies may memoize on it."""

    def __init__(self, pools: tuple[PoolView, ...], speed: Speeds, prior_events: float = 1.0,
                 refresh_s: float = 3600.0):
        if not prior_events > 0 or not refresh_s >= 0:
            raise ConfigError(f"fleet knowledge: prior_events must be > 0 and refresh_s >= 0 "
                              f"(got {prior_events}, {refresh_s})")
        self.speed = speed
        """workload -> per pool, the throughput table's relative speed."""
        self.priors = tuple(p.reliability for p in pools)
        self.prior_events = prior_events
        self.refresh_s = refresh_s
        self.failures = [0] * len(pools)
        self.throttles = [0] * len(pools)
        self._pools = pools
        self._seen = 0
        self._seen_at_refresh = 0
        self._refreshed_at = -math.inf

    def observe_failure(self, pool: int) -> None:
        """A job on ``pool`` was interrupted (what the fleet's failure handling sees)."""
        self.failures[pool] += 1
        self._seen += 1

    def observe_throttle(self, pool: int) -> None:
        """A throttle episode began on ``pool`` (what thermal telemetry reports)."""
        self.throttles[pool] += 1
        self._seen += 1

    def estimated(self, pool: int, exposure_s: float) -> ReliabilityProfile:
        """Pool ``pool``'s profile with MTBF and throttle rate estimated from what was seen
        over ``exposure_s`` busy device-seconds."""
        prior = self.priors[pool]
        hours = exposure_s / 3600.0
        fail = estimate_rate(1.0 / prior.mtbf_h, self.failures[pool], hours, self.prior_events)
        thr = estimate_rate(prior.throttle_per_h, self.throttles[pool], hours,
                            self.prior_events)
        return dataclasses.replace(prior, mtbf_h=_round3(1.0 / fail),
                                   throttle_per_h=_round3(thr))

    def pools(self, t: float, exposure_s: Sequence[float]) -> tuple[PoolView, ...]:
        """The pool views for a decision at ``t`` (``exposure_s``: busy device-seconds per
        pool so far)."""
        if self._seen != self._seen_at_refresh and t - self._refreshed_at >= self.refresh_s:
            self._refreshed_at = t
            self._seen_at_refresh = self._seen
            new = tuple(dataclasses.replace(p, reliability=self.estimated(p.index, e))
                        for p, e in zip(self._pools, exposure_s, strict=True))
            if any(a.reliability != b.reliability for a, b in zip(new, self._pools,
                                                                  strict=True)):
                self._pools = new
        return self._pools
