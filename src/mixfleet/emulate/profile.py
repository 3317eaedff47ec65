"""Per-chip emulation parameters (thermal model, failure hazard, step-cost shape) from a
profile TOML."""

from __future__ import annotations

import dataclasses
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

from mixfleet.catalog.base import Chip, load_catalog
from mixfleet.config import Section, field, from_dict
from mixfleet.emulate.pricing import StepCost
from mixfleet.errors import ConfigError

__all__ = ["EmuProfile", "load_profiles", "get_profile"]


@dataclasses.dataclass(kw_only=True, frozen=True)
class EmuProfile(Section, section="profile"):
    """How one emulated chip heats, throttles and fails (virtual seconds throughout)."""

    chip: str = field(help="catalog chip id")
    ambient_c: float = field(30.0, help="temperature at idle (degC)")
    load_temp_c: float = field(78.0, help="steady temperature at full load, full clock")
    tau_s: float = field(60.0, help="thermal time constant (s)", gt=0)
    throttle_c: float = field(85.0, help="temperature at which the clock drops")
    recover_c: float = field(80.0, help="temperature below which the clock recovers")
    throttle_clock: float = field(0.7, help="clock (speed) factor while throttled", gt=0, le=1)
    limit_c: float = field(95.0, help="temperature limit; crash hazard is highest here")
    crash_band_c: float = field(8.0, help="crash hazard rises over this band below limit_c",
                                gt=0)
    crash_rate_per_s: float = field(0.002, help="crash hazard per second at limit_c", ge=0)
    mtbf_h: float | None = field(2000.0, help="mean time between failures (hours); none = off",
                                 gt=0)
    noise_c: float = field(0.3, help="temperature noise per step (std, degC)", ge=0)
    base_clock_mhz: float = field(1500.0, help="clock reported when not throttled (MHz)", gt=0)
    relative_tflops: float | None = field(None, help="throughput figure used for the "
                                          "relative speed only when the catalog peak is unknown",
                                          gt=0, example=1.0)
    step_fixed_ms: float = field(0.0, help="fixed cost of every step (optimizer, launches), ms",
                                 ge=0)
    microbatch_fixed_ms: float = field(0.0, help="fixed cost of every micro-batch, ms", ge=0)
    saturate_samples: float = field(1.0, help="micro-batch size (samples) from which the "
                                    "chip runs at full efficiency", gt=0)
    saturate_tokens: float = field(1.0, help="the same in tokens (as_model runs)", gt=0)
    efficiency_exponent: float = field(0.0, help="efficiency below saturation is "
                                       "(b / saturate) ** this; 0 = linear step cost", ge=0)
    mfu: float = field(0.4, help="model FLOPs utilization assumed for as_model pacing and "
                       "the cost model's catalog roofline", gt=0, le=1)
    cost_source: str = field("assumed", help="where the step-cost figures come from")

    def __post_init__(self) -> None:
        where = f"emulation profile [chips.{self.chip}]"
        if not self.load_temp_c > self.ambient_c:
            raise ConfigError(f"{where} load_temp_c = {self.load_temp_c!r} must be above "
                              f"ambient_c ({self.ambient_c}); raise load_temp_c")
        if not self.recover_c <= self.throttle_c < self.limit_c:
            raise ConfigError(f"{where} throttle_c = {self.throttle_c!r} must satisfy recover_c "
                              f"({self.recover_c}) <= throttle_c < limit_c ({self.limit_c}); "
                              f"set throttle_c between them")

    def linear(self) -> EmuProfile:
        """This profile with a linear step cost: no fixed costs, no efficiency curve (the
        budget of the emulator before step costs had a shape; tests that rely on it)."""
        return dataclasses.replace(self, step_fixed_ms=0.0, microbatch_fixed_ms=0.0,
                                   efficiency_exponent=0.0)

    def step_cost(self, unit: str = "samples") -> StepCost:
        """The step-cost shape in seconds, micro-batches counted in ``unit`` (samples or
        tokens)."""
        if unit not in ("samples", "tokens"):
            raise ValueError(f"unit must be 'samples' or 'tokens' (got {unit!r})")
        sat = self.saturate_samples if unit == "samples" else self.saturate_tokens
        return StepCost(step_fixed_s=self.step_fixed_ms / 1e3,
                        microbatch_fixed_s=self.microbatch_fixed_ms / 1e3, saturate=sat,
                        efficiency_exponent=self.efficiency_exponent, origin=self.cost_source)


def _read(path: str | Path | None) -> tuple[dict[str, Any], str]:
    if path is None:
        text = resources.files("mixfleet.emulate").joinpath("profiles.toml").read_text()
        where = "mixfleet/emulate/profiles.toml"
    else:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"emulation profile file {str(p)!r} does not exist; pass a TOML "
                              f"file with [default] and [chips.<id>] tables")
        text, where = p.read_text(), str(p)
    try:
        return tomllib.loads(text), where
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{where}: not valid TOML ({e}); fix the syntax") from None


def load_profiles(path: str | Path | None = None,
                  catalog: dict[str, Chip] | None = None) -> dict[str, EmuProfile]:
    """A profile for every catalog chip: ``[default]`` overridden by ``[chips.<id>]``."""
    data, where = _read(path)
    cat = load_catalog() if catalog is None else catalog
    unknown_top = set(data) - {"default", "chips"}
    if unknown_top:
        raise ConfigError(f"{where}: unknown table(s) {sorted(unknown_top)}; use [default] "
                          f"and [chips.<chip-id>]")
    default = data.get("default", {})
    chips = data.get("chips", {})
    if not isinstance(default, dict) or not isinstance(chips, dict):
        raise ConfigError(f"{where}: [default] and [chips] must be tables")
    for cid in chips:
        if cid not in cat:
            raise ConfigError(f"{where}: [chips.{cid}] names no catalog chip; use one of "
                              f"{', '.join(sorted(cat))}")
    out = {}
    for cid in cat:
        over = chips.get(cid, {})
        if not isinstance(over, dict):
            raise ConfigError(f"{where}: [chips.{cid}] must be a table")
        if "chip" in default or "chip" in over:
            raise ConfigError(f"{where}: 'chip' is set from the table name; remove the key")
        try:
            out[cid] = from_dict(EmuProfile, {**default, **over, "chip": cid},
                                 prefix=f"chips.{cid}")
        except ConfigError as e:
            raise ConfigError(f"{where}: {e}") from None
    return out


def get_profile(chip_id: str, profiles: dict[str, EmuProfile] | None = None) -> EmuProfile:
    """The profile of one chip; an unknown id raises ConfigError."""
    profs = load_profiles() if profiles is None else profiles
    if chip_id not in profs:
        raise ConfigError(f"no emulation profile for chip {chip_id!r}; known chips: "
                          f"{', '.join(sorted(profs))}")
    return profs[chip_id]
