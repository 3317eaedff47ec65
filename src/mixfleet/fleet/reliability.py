"""Reliability profiles per chip: failures, throttle episodes, restart and checkpoint cost.

Defaults (overridable per pool in the fleet file, ``[pool.reliability]``):

=================  ==========================  =========================================
figure             Nvidia (H100 class)         other vendors
=================  ==========================  =========================================
mtbf_h             50,677 h per device         9,131 h per device
throttle_per_h     1/24 per device-hour        1/24 per device-hour
throttle_s         14,400 s                    3,600 s
throttle_slowdown  0.02                        0.30
restart_s          300 s                       300 s
checkpoint_s       30 s                        30 s
=================  ==========================  =========================================

Sources: Nvidia MTBF from Llama 3 (Dubey et al. 2024, sec. 3.3.4): 419 unexpected
interruptions in 54 days on 16,384 H100s = 16,384 x 54 x 24 / 419 device-hours. Nvidia
throttling: the same report's 1-2 % diurnal throughput swing from temperature. Other
vendors' MTBF: Ant Group's ~8 % of cards failing per month (730.5 h / 0.08) -- a figure
repeated in engineers' reports with no publication or date we could find, so it is labeled
unpublished and treated as an assumption (``simulate --sensitivity`` varies it). Their
throttle figures, and every restart and checkpoint cost, are assumptions (engineers report
overheating on the newer chips; restart = torchrun restart + checkpoint load).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from mixfleet.config import Section, field
from mixfleet.errors import ConfigError

__all__ = ["ReliabilityProfile", "default_profile", "young_daly_interval", "availability",
           "DEFAULT_SOURCES"]

_NVIDIA_MTBF_H = 16384 * 54 * 24 / 419
_OTHER_MTBF_H = 730.5 / 0.08


@dataclasses.dataclass(frozen=True, kw_only=True)
class ReliabilityProfile(Section, section="pool.reliability"):
    """How often a device of a chip fails or throttles, and what recovery costs (a fleet
    file's ``[pool.reliability]`` overrides some of these figures)."""

    mtbf_h: float = field(help="mean time between failures of one device, hours (any "
                          "interruption of its job)", gt=0, example=9131.0)
    throttle_per_h: float = field(help="throttle episodes per device-hour", ge=0,
                                  example=0.04)
    throttle_s: float = field(help="length of one throttle episode, seconds", ge=0,
                              example=3600.0)
    throttle_slowdown: float = field(help="fraction of throughput lost while any device of "
                                     "a job throttles", ge=0, lt=1, example=0.3)
    restart_s: float = field(help="seconds from a failure until the job computes again "
                             "(restart + checkpoint load)", ge=0, example=300.0)
    checkpoint_s: float = field(help="seconds one persistent checkpoint stalls the job "
                                "(Young/Daly's C)", gt=0, example=30.0)
    sources: dict[str, str] = field({}, help="where each figure comes from")

    def with_overrides(self, data: dict[str, Any], where: str) -> ReliabilityProfile:
        """This profile with the figures of ``data`` replaced (source: ``where``)."""
        fields = {f.name for f in dataclasses.fields(self)} - {"sources"}
        changes: dict[str, float] = {}
        for k, v in data.items():
            if k not in fields:
                raise ConfigError(f"{where}: unknown reliability key {k!r}; known: "
                                  f"{', '.join(sorted(fields))}")
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ConfigError(f"{where}: reliability.{k} must be a number (got {v!r})")
            changes[k] = float(v)
        srcs = dict(self.sources)
        srcs.update({k: f"override in {where}" for k in changes})
        try:
            return dataclasses.replace(self, sources=srcs, **changes)
        except ConfigError as e:
            raise ConfigError(f"{where}: {e}") from None

    def job_mtbf_s(self, devices: int) -> float:
        """Mean time between failures of a job on ``devices`` devices, seconds."""
        return self.mtbf_h * 3600.0 / max(devices, 1)

    def throttle_factor(self, devices: int) -> float:
        """Expected share of throughput kept under throttling, for a job on ``devices``."""
        busy = 1.0 - math.exp(-devices * self.throttle_per_h * self.throttle_s / 3600.0)
        return 1.0 - busy * self.throttle_slowdown


def young_daly_interval(checkpoint_s: float, mtbf_s: float) -> float:
    """Young/Daly checkpoint interval sqrt(2 C M), seconds of computation."""
    return math.sqrt(2.0 * checkpoint_s * mtbf_s)


def availability(profile: ReliabilityProfile, devices: int) -> float:
    """Expected share of wall time doing kept work at the Young/Daly interval:
    1 - C/tau - (tau/2 + R)/M (first order; floored at 0)."""
    m = profile.job_mtbf_s(devices)
    tau = young_daly_interval(profile.checkpoint_s, m)
    return max(0.0, 1.0 - profile.checkpoint_s / tau - (tau / 2 + profile.restart_s) / m)


DEFAULT_SOURCES = {
    "nvidia": {
        "mtbf_h": "Llama 3 (Dubey et al. 2024, sec. 3.3.4): 419 interruptions in 54 days on "
                  "16,384 H100",
        "throttle_per_h": "assumed: one episode per device-day (Llama 3: 1-2% diurnal swing)",
        "throttle_s": "assumed: 4 h afternoon heat",
        "throttle_slowdown": "Llama 3: throughput varies 1-2% with temperature",
        "restart_s": "assumed: torchrun restart + checkpoint load",
        "checkpoint_s": "assumed: persistent asynchronous checkpoint stall",
    },
    "other": {
        "mtbf_h": "REPORTED, unpublished: Ant Group engineers, ~8% of cards fail per month "
                  "(730.5 h / 0.08); no publication or date found, treat as assumed",
        "throttle_per_h": "assumed: one episode per device-day (overheating reports)",
        "throttle_s": "assumed: 1 h",
        "throttle_slowdown": "assumed: clocks drop ~30% past the thermal threshold",
        "restart_s": "assumed: torchrun restart + checkpoint load",
        "checkpoint_s": "assumed: persistent asynchronous checkpoint stall",
    },
}


def defaults_note() -> str:
    """One line on what the non-Nvidia defaults rest on (printed beside simulation results)."""
    other = default_profile(False)
    assumed = [k for k, v in DEFAULT_SOURCES["other"].items() if v.startswith("assumed")]
    return (f"the non-Nvidia defaults rest on thin sources (MTBF {other.mtbf_h:,.0f} h: one "
            f"unpublished report, Ant Group ~8%/month; throttle slowdown "
            f"{other.throttle_slowdown:.2f} and {', '.join(assumed)}: ASSUMED)")


def default_profile(is_nvidia: bool) -> ReliabilityProfile:
    """The documented default profile for an Nvidia or a non-Nvidia chip."""
    if is_nvidia:
        return ReliabilityProfile(mtbf_h=_NVIDIA_MTBF_H, throttle_per_h=1 / 24,
                                  throttle_s=14400, throttle_slowdown=0.02, restart_s=300,
                                  checkpoint_s=30, sources=dict(DEFAULT_SOURCES["nvidia"]))
    return ReliabilityProfile(mtbf_h=_OTHER_MTBF_H, throttle_per_h=1 / 24, throttle_s=3600,
                              throttle_slowdown=0.30, restart_s=300, checkpoint_s=30,
                              sources=dict(DEFAULT_SOURCES["other"]))
