"""The interface of health checks, and the step outcome they observe (a leaf: the step
manager and the checks both import it, neither imports the other).

A step's :class:`StepOutcome` is what the step manager (:mod:`mixfleet.train.step`) returns
and every :class:`HealthCheck` (:mod:`mixfleet.train.health.checks`) looks at; a check
answers with typed actions (:mod:`mixfleet.train.health.actions`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from mixfleet.train.health.actions import Action
from mixfleet.train.health.signals import ControlSignals

__all__ = ["StepOutcome", "HealthCheck", "NONE"]

NONE: tuple[Action, ...] = ()


@dataclasses.dataclass(slots=True)
class StepOutcome:
    """What one global step did (the same on every rank except ``compute_s``)."""

    step: int  # the step number (1-based: steps completed after it)
    reduced: bool  # the signals came from a reduction (False: a skipped batch)
    committed: bool  # the update was applied
    loss: float  # global mean loss (NaN when the batch was skipped)
    reason: str | None  # why it was not committed
    compute_s: float  # this rank's forward + backward time
    signals: ControlSignals
    step_s: float = 0.0  # wall time of the whole step (set by the trainer)


class HealthCheck:
    """Base: no signals, no actions."""

    def register(self, signals: ControlSignals) -> None:
        """Register the control signals this check uses (before the first step)."""

    def publish(self, signals: ControlSignals) -> None:
        """Set this rank's signal values for the coming reduction."""

    def observe(self, out: StepOutcome) -> Sequence[Action]:
        """Look at a finished step; what should be done about it."""
        return NONE
