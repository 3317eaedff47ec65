"""The objects a checkpoint saves: the ``state_dict()`` / ``load_state_dict()`` protocol
(STYLE.md 10), and adapters giving it to what has none of its own."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import torch

__all__ = ["Stateful", "Adapter", "SchedulerState"]


class Stateful(Protocol):
    def state_dict(self) -> Any: ...
    def load_state_dict(self, state: Any) -> None: ...


class Adapter:
    """A ``state_dict()`` / ``load_state_dict()`` pair from two functions."""

    def __init__(self, get: Callable[[], Any], put: Callable[[Any], None]) -> None:
        self.state_dict, self.load_state_dict = get, put


class SchedulerState:
    """An LR scheduler's state without its lambdas (JSON-able)."""

    def __init__(self, sched: torch.optim.lr_scheduler.LRScheduler) -> None:
        self.sched = sched

    def state_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.sched.state_dict().items() if k != "lr_lambdas"}

    def load_state_dict(self, d: dict[str, Any]) -> None:
        self.sched.load_state_dict({**self.sched.state_dict(), **d})
