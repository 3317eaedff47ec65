"""``python -m mixfleet.live.daemon FLEET_DIR``: the scheduler process that ``mixfleet fleet
up`` starts. It ticks until SIGTERM; SIGKILL at any moment loses nothing (SQLite is the
truth), and a new daemon picks up where it stopped."""

from __future__ import annotations

import os
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from mixfleet.fleet.policies import make_policy
from mixfleet.live.control import load_state, make_backend
from mixfleet.live.scheduler import Scheduler
from mixfleet.live.store import Store

TICK_S = 0.5


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
    while not stop:
        try:
            sched.tick()
        except Exception:  # noqa: BLE001 - log and keep scheduling
            traceback.print_exc()
            sys.stdout.flush()
        time.sleep(TICK_S)
    store.event("scheduler_stop", pid=os.getpid())
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
