"""Placement policies (one interface in :mod:`.base`): fifo, gavel, srtf, nvidia-sparing,
goodput."""

from mixfleet.fleet.policies import fifo, gavel, goodput, sparing, srtf  # noqa: F401
from mixfleet.fleet.policies.base import (
    POLICY_NAMES,
    Allocation,
    JobView,
    Policy,
    PoolView,
    Snapshot,
    make_policy,
)

__all__ = ["POLICY_NAMES", "Allocation", "JobView", "Policy", "PoolView", "Snapshot",
           "make_policy"]
