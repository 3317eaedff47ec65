"""``python -m mixfleet.live.daemon FLEET_DIR``: the scheduler process that ``mixfleet fleet
up`` starts. It runs decision passes until SIGTERM; SIGKILL at any moment loses nothing
(SQLite is the truth), and a new daemon picks up where it stopped.

Between two passes it waits for a change, not for a timer (:func:`serve`): another
process's commit to the store (a submit, a cancel, an unblock: SQLite's ``data_version``,
read every ``PROBE_S``) or the end of a running attempt (:meth:`Backend.wait`: pidfds of
local processes, ``ray.wait`` on the Ray actors' ``wait_exit`` calls) starts the next pass
at once; ``TICK_S`` bounds the wait for what nothing announces (node health, a drain in a
run's block list). docs/fleet-live.md, "Benchmarks", says what that is worth per job.
"""

from __future__ import annotations

import os
import signal
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mixfleet.fleet.policies import make_policy
from mixfleet.live.backend import Backend
from mixfleet.live.control import load_state, make_backend
from mixfleet.live.scheduler import Scheduler
from mixfleet.live.store import Store

__all__ = ["serve", "TICK_S", "PROBE_S"]

TICK_S = 0.5
"""The longest wait between two passes (for changes nothing announces)."""
PROBE_S = 0.02
"""How often the store is asked whether another process changed it."""


def serve(sched: Scheduler, store: Store, backend: Backend, stopped: Callable[[], bool], *,
          tick_s: float = TICK_S, probe_s: float = PROBE_S,
          clock: Callable[[], float] = time.monotonic) -> None:
    """Run :meth:`Scheduler.tick` now, then again after each change or ``tick_s``, until
    ``stopped()``. A pass that raises is logged; the next one goes on."""
    while not stopped():
        handles: list[dict[str, Any]] = []
        try:
            store.changed()  # commits of other processes from here on wake the next wait
            sched.tick()
            handles = [a.handle for a in store.attempts(states=("running",))]
        except Exception:  # noqa: BLE001 - log and keep scheduling
            traceback.print_exc()
            sys.stdout.flush()
        end = clock() + tick_s
        while not stopped() and (left := end - clock()) > 0:
            if store.changed() or backend.wait(handles, min(probe_s, left)):
                break


def main(argv: list[str]) -> int:
    d = Path(argv[0])
    state = load_state(d)
    stop = False

    def on_term(signum: int, frame: Any) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    store = Store(d)
    backend = make_backend(d, state)
    sched = Scheduler(state.fleet, store, backend, make_policy(state["policy"]),
                      fleet_dir=d, mark=state["mark"])
    (d / "scheduler.pid").write_text(f"{os.getpid()}\n")
    store.event("scheduler_start", pid=os.getpid(), policy=state["policy"])
    (d / "scheduler.ready").write_text("")
    print(f"scheduler {os.getpid()} up: policy {state['policy']}, backend "
          f"{state['backend']}", flush=True)
    serve(sched, store, backend, lambda: stop)
    store.event("scheduler_stop", pid=os.getpid())
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
