"""A fake clock for emulated devices and pacers: compute advances it by hand, sleep exactly."""

from __future__ import annotations


class FakeClock:
    """Call it for the time; ``sleep`` advances it by exactly what was asked (never back)."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.now += max(0.0, s)
