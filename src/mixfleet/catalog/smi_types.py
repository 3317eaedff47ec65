"""The record every vendor-tool parser returns, and its error."""

from __future__ import annotations

import dataclasses
import re

__all__ = ["SmiDevice", "SmiParseError", "smi_number"]


class SmiParseError(ValueError):
    """A tool's output is not in the format its parser knows."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class SmiDevice:
    """One device as a vendor tool reports it (units: MiB, degC, W, MHz, percent)."""

    index: int
    name: str
    memory_total_mib: float | None = None
    memory_used_mib: float | None = None
    driver: str | None = None
    temp_c: float | None = None
    power_w: float | None = None
    clock_mhz: float | None = None
    util_pct: float | None = None
    bus_id: str | None = None
    uuid: str | None = None
    health: str | None = None
    throttle: tuple[str, ...] = ()


_NA = {"", "n/a", "[n/a]", "[not supported]", "not supported", "-", "na"}
_NUM = re.compile(r"-?\d+(?:\.\d+)?")


def smi_number(text: str | None, what: str) -> float | None:
    if text is None or text.strip().lower() in _NA:
        return None
    m = _NUM.search(text)
    if not m:
        raise SmiParseError(f"expected a number for {what}, got {text!r}")
    return float(m.group())


