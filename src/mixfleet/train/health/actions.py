"""Typed actions that health checks return, and the one place they are applied.

A check (:mod:`mixfleet.train.health.checks`) observes a step's outcome and says what it wants
done; :func:`apply_actions` does it through the trainer's public methods, in a fixed order
(checkpoint, drain, shed, shares, sparser snapshots, rollback, pause), so every rank that
holds the same reduced signals takes the same decisions at the same step. A drain ends the
loop: it is an outcome (:class:`Drain` returned by ``apply_actions``), not an exception.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from mixfleet.train.health.detectors import ThermalGuard

__all__ = ["Action", "Checkpoint", "Drain", "Shed", "SetShares", "SparserSnapshots",
           "Rollback", "Pause", "Restage", "apply_actions", "ActionTarget"]


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    """Checkpoint to disk now (unless this step's regular checkpoint is due anyway)."""

    reason: str


@dataclasses.dataclass(frozen=True)
class Drain:
    """Checkpoint, put ``rank``'s device on the block list and stop every rank."""

    rank: int
    reason: str


@dataclasses.dataclass(frozen=True)
class Shed:
    """Move half of ``rank``'s share to the other ranks."""

    rank: int


@dataclasses.dataclass(frozen=True)
class SetShares:
    """Adopt new shares (the same list on every rank)."""

    shares: tuple[int, ...]
    reason: str
    details: dict[str, Any] = dataclasses.field(default_factory=dict, compare=False)


@dataclasses.dataclass(frozen=True)
class SparserSnapshots:
    """Take in-memory snapshots every ``interval`` steps from now on."""

    interval: int
    reason: str = dataclasses.field(default="", compare=False)


@dataclasses.dataclass(frozen=True)
class Rollback:
    """Go back to the newest checkpoint before ``bad_steps`` and skip their batches."""

    bad_steps: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class Pause:
    """Pause this rank until ``guard`` says its chip has cooled (rank-local)."""

    guard: ThermalGuard = dataclasses.field(compare=False)


@dataclasses.dataclass(frozen=True)
class Restage:
    """A pipeline's new split (blocks per stage): checkpoint and stop every rank; the
    launcher relaunches with it (docs/pipeline.md, "Re-splits")."""

    blocks: tuple[int, ...]
    reason: str
    details: dict[str, Any] = dataclasses.field(default_factory=dict, compare=False)


Action = Checkpoint | Drain | Shed | SetShares | SparserSnapshots | Rollback | Pause | Restage
_ORDER = {Checkpoint: 0, Drain: 1, Restage: 2, Shed: 3, SetShares: 4, SparserSnapshots: 5,
          Rollback: 6, Pause: 7}


class ActionTarget(Protocol):
    """What the trainer offers the actions (its public methods)."""

    def checkpoint_now(self) -> None: ...
    def drain(self, rank: int, reason: str) -> None: ...
    def shed(self, rank: int) -> None: ...
    def set_shares(self, shares: Sequence[int], reason: str, **details: Any) -> None: ...
    def set_snapshot_interval(self, interval: int, reason: str) -> None: ...
    def rollback(self, bad_steps: Sequence[int]) -> None: ...
    def pause_until_cool(self, guard: ThermalGuard) -> None: ...

    def restage(self, blocks: Sequence[int], reason: str, **details: Any) -> None: ...


def apply_actions(target: ActionTarget, actions: Sequence[Action]) -> Drain | Restage | None:
    """Apply ``actions`` in the fixed order; a :class:`Drain` or :class:`Restage` stops
    here and is returned."""
    for a in sorted(actions, key=lambda a: _ORDER[type(a)]):
        if isinstance(a, Checkpoint):
            target.checkpoint_now()
        elif isinstance(a, Drain):
            target.drain(a.rank, a.reason)
            return a
        elif isinstance(a, Restage):
            target.restage(a.blocks, a.reason, **a.details)
            return a
        elif isinstance(a, Shed):
            target.shed(a.rank)
        elif isinstance(a, SetShares):
            target.set_shares(a.shares, a.reason, **a.details)
        elif isinstance(a, SparserSnapshots):
            target.set_snapshot_interval(a.interval, a.reason)
        elif isinstance(a, Rollback):
            target.rollback(a.bad_steps)
        elif isinstance(a, Pause):
            target.pause_until_cool(a.guard)
    return None
