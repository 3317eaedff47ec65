"""What a scheduler can know of a job's length: runtime estimates.

No real scheduler knows how long a job will run. Policies that need a job's remaining work
(``srtf``, ``goodput``) see an *estimate* made by one of these estimators, never the
trace's truth (the simulator still runs each job for its true length):

- ``declared``: the runtime limit the job file or trace states (``Job.declared_work``),
  as a batch scheduler gets it from its users (who over-estimate; see
  :func:`declared_limits`). A trace without limits is an error under ``declared``.
- ``history``: learned online from jobs that already finished: the median length per
  device of finished jobs of the same group (user / virtual cluster, where the trace has
  one) and device count, else the same device count, else all finished jobs, else a prior
  of one hour. A job that outlives its estimate gets the median of the finished jobs that
  ran longer than it has (else twice what it has done), as predictors conditioned on
  elapsed time do (e.g. Tiresias's and 3Sigma's use of the length distribution).
- ``oracle``: the true length. An upper bound on what estimates can give, labeled so in
  every output; no real scheduler has it.

Estimates are of total work in reference device-seconds (like ``Job.work``).
"""

from __future__ import annotations

import bisect
from typing import Protocol

import numpy as np

from mixfleet.errors import ConfigError
from mixfleet.fleet.model import Job

__all__ = ["Estimator", "OracleEstimator", "DeclaredEstimator", "HistoryEstimator",
           "ESTIMATORS", "make_estimator", "declared_limits", "relative_errors",
           "DECLARED_F"]

ESTIMATORS = ("history", "declared", "oracle")

#: Over-estimation factor of user-declared limits: Mu'alem & Feitelson's "f-model"
#: (IEEE TPDS 12(6), 2001, "Utilization, predictability, workloads, and user runtime
#: estimates in scheduling the IBM SP2 with backfilling"): the limit is drawn uniformly
#: in [r, f r] for a job of true length r. f = 5 is our choice within the range they study.
DECLARED_F = 5.0


class Estimator(Protocol):
    """Estimates a job's total work (reference device-seconds)."""

    name: str

    def estimate(self, job: Job) -> float:
        """Total work of ``job`` as known when it arrives."""
        ...

    def extend(self, job: Job, done: float) -> float:
        """A new total once the job has done ``done`` >= its estimate without finishing."""
        ...

    def observe(self, job: Job) -> None:
        """``job`` finished (its true work is now known to the scheduler)."""
        ...


class OracleEstimator:
    """The true work: an upper bound, not something a scheduler has."""

    name = "oracle"

    def estimate(self, job: Job) -> float:
        return job.work

    def extend(self, job: Job, done: float) -> float:
        return max(job.work, done * 1.000001)

    def observe(self, job: Job) -> None:
        pass


class DeclaredEstimator:
    """The job's declared runtime limit (doubling what it has done once it outlives it)."""

    name = "declared"

    def estimate(self, job: Job) -> float:
        if job.declared_work is None:
            raise ConfigError(f"--estimates declared: job {job.id!r} states no runtime "
                              f"limit; give limits (a trace's limit_s column, a jobs file's "
                              f"limit_hours) or use --estimates history")
        return job.declared_work

    def extend(self, job: Job, done: float) -> float:
        return 2.0 * done

    def observe(self, job: Job) -> None:
        pass


class HistoryEstimator:
    """Medians of finished jobs' length per device, by (group, devices), devices, all."""

    name = "history"

    def __init__(self, prior_s: float = 3600.0, min_samples: int = 3):
        if not prior_s > 0 or min_samples < 1:
            raise ConfigError(f"history estimator: prior_s must be > 0 and min_samples >= 1 "
                              f"(got {prior_s}, {min_samples})")
        self.prior_s = prior_s
        self.min_samples = min_samples
        self._by: dict[tuple[str, int] | int | None, list[float]] = {}

    def _lists(self, job: Job) -> list[list[float]]:
        keys: list[tuple[str, int] | int | None] = [job.devices, None]
        if job.group:
            keys.insert(0, (job.group, job.devices))
        return [v for k in keys if (v := self._by.get(k)) is not None]

    def estimate(self, job: Job) -> float:
        for vals in self._lists(job):
            if len(vals) >= self.min_samples:
                return vals[len(vals) // 2] * job.devices
        return self.prior_s * job.devices

    def extend(self, job: Job, done: float) -> float:
        x = done / job.devices
        for vals in self._lists(job):
            i = bisect.bisect_right(vals, x)
            if len(vals) - i >= self.min_samples:
                return vals[(i + len(vals)) // 2] * job.devices
        return 2.0 * done

    def observe(self, job: Job) -> None:
        x = job.work / job.devices
        keys: list[tuple[str, int] | int | None] = [job.devices, None]
        if job.group:
            keys.append((job.group, job.devices))
        for k in keys:
            bisect.insort(self._by.setdefault(k, []), x)


def make_estimator(name: str) -> Estimator:
    """An estimator by name (``history``, ``declared``, ``oracle``)."""
    if name == "history":
        return HistoryEstimator()
    if name == "declared":
        return DeclaredEstimator()
    if name == "oracle":
        return OracleEstimator()
    raise ConfigError(f"--estimates {name!r} is not an estimator; use one of "
                      f"{', '.join(ESTIMATORS)}")


def declared_limits(work: np.ndarray, rng: np.random.Generator,
                    f: float = DECLARED_F) -> np.ndarray:
    """User-declared limits for jobs of true ``work``: uniform in [w, f w] (the f-model of
    Mu'alem & Feitelson 2001; :data:`DECLARED_F`)."""
    return work * rng.uniform(1.0, f, size=len(work))


def relative_errors(pairs: list[tuple[float, float]]) -> dict[str, float | None]:
    """Median and p90 of |estimate - truth| / truth over (estimate, truth) pairs."""
    if not pairs:
        return {"p50": None, "p90": None}
    e = np.array([abs(a - b) / b for a, b in pairs], dtype=float)
    return {"p50": float(np.percentile(e, 50)), "p90": float(np.percentile(e, 90))}
