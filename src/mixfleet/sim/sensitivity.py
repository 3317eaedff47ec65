"""``simulate --sensitivity``: does the ranking of policies survive other reliability
figures?

The default reliability profiles rest partly on thin sources (the non-Nvidia MTBF on one
unpublished report, the throttle figures on assumptions; docs/fleet.md). This reruns the
comparison with each figure of every pool's profile halved and doubled (the throttle
slowdown capped below 1) and reports, per variant, the policies ranked by average JCT and
whether that ranking differs from the baseline's.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

from mixfleet.fleet.model import Fleet, Job
from mixfleet.fleet.policies.base import Policy
from mixfleet.sim.engine import SimConfig, simulate

__all__ = ["FIGURES", "Variant", "vary_fleet", "sensitivity"]

FIGURES = ("mtbf_h", "throttle_per_h", "throttle_s", "throttle_slowdown", "restart_s",
           "checkpoint_s")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Variant:
    """One rerun: ``figure`` x ``factor`` on every pool (``figure`` None: the baseline)."""

    figure: str | None
    factor: float
    jct_avg_s: dict[str, float]
    ranking: tuple[str, ...]
    """Policies, best (lowest average JCT) first."""
    changed: bool
    """Whether the ranking differs from the baseline's."""


def vary_fleet(fleet: Fleet, figure: str, factor: float) -> Fleet:
    """``fleet`` with ``figure`` of every pool's reliability profile times ``factor``."""
    pools = []
    for p in fleet.pools:
        rel = p.reliability
        v = getattr(rel, figure) * factor
        if figure == "throttle_slowdown":
            v = min(v, 0.99)
        srcs = dict(rel.sources)
        srcs[figure] = f"sensitivity: x{factor:g} of {getattr(rel, figure):g}"
        pools.append(dataclasses.replace(p, reliability=dataclasses.replace(
            rel, sources=srcs, **{figure: v})))
    return dataclasses.replace(fleet, pools=tuple(pools))


def sensitivity(fleet: Fleet, jobs: Sequence[Job], make: Callable[[], list[Policy]],
                speeds: dict[str, tuple[float | None, ...]], config: SimConfig,
                figures: Sequence[str] = FIGURES, factors: Sequence[float] = (0.5, 2.0),
                done: Callable[[str], None] | None = None) -> list[Variant]:
    """The baseline and one variant per figure x factor (fresh policy objects each)."""
    def run(f: Fleet) -> dict[str, float]:
        return {p.name: simulate(f, jobs, p, speeds, config).metrics["jct_avg_s"]
                for p in make()}

    def rank(j: dict[str, float]) -> tuple[str, ...]:
        return tuple(sorted(j, key=lambda n: (j[n], n)))

    base = run(fleet)
    out = [Variant(figure=None, factor=1.0, jct_avg_s=base, ranking=rank(base),
                   changed=False)]
    for fig in figures:
        for k in factors:
            j = run(vary_fleet(fleet, fig, k))
            out.append(Variant(figure=fig, factor=k, jct_avg_s=j, ranking=rank(j),
                               changed=rank(j) != out[0].ranking))
            if done is not None:
                done(f"{fig} x{k:g}")
    return out
