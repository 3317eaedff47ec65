"""The scheduler daemon's loop (`serve`): a pass runs when another process changes the
store or an attempt ends, not at the next tick, and an idle loop does not spin."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from mixfleet.fleet.policies import make_policy
from mixfleet.live.backend import Bundle, LocalBackend, Status
from mixfleet.live.daemon import serve
from mixfleet.live.scheduler import Scheduler, run_dir
from mixfleet.live.spec import JobSpec, load_job
from mixfleet.live.store import Store

from .conftest import fleet3, write_job
from .test_scheduler import FakeBackend

LONG_TICK_S = 30.0  # a pass that waited for the tick would come this late


class WakingFake(FakeBackend):
    """The in-memory backend, with an end the test announces (as a process's exit)."""

    def __init__(self, *a: Any) -> None:
        super().__init__(*a)
        self.ended = threading.Event()
        self.waits = 0

    def wait(self, handles: list[dict[str, Any]], timeout: float) -> bool:
        self.waits += 1
        if self.ended.wait(timeout):
            self.ended.clear()
            return True
        return False


def _setup(fleet_dir: Path, tmp_path: Path) -> tuple[Store, WakingFake, Scheduler, JobSpec]:
    fleet = fleet3()
    store = Store(fleet_dir)
    fake = WakingFake(fleet)
    sched = Scheduler(fleet, store, fake, make_policy("goodput"), fleet_dir=fleet_dir,
                      mark="t")
    return store, fake, sched, load_job(write_job(tmp_path / "j.toml"), fleet)


def _later(delay_s: float, fn: Any) -> threading.Thread:
    th = threading.Thread(target=lambda: (time.sleep(delay_s), fn()), daemon=True)
    th.start()
    return th


def test_a_submit_from_another_process_is_placed_without_waiting_for_the_tick(
        fleet_dir: Path, tmp_path: Path) -> None:
    """A job submitted through another connection while the loop waits (its tick 30 s)
    is placed within a fraction of a second: the store's change wakes the loop."""
    store, fake, sched, spec = _setup(fleet_dir, tmp_path)
    _later(0.3, lambda: Store(fleet_dir).submit(spec))  # its own connection, as `submit`
    deadline = time.monotonic() + 20
    serve(sched, store, fake, lambda: bool(fake.started) or time.monotonic() > deadline,
          tick_s=LONG_TICK_S)
    (job,) = store.jobs()
    (a,) = store.attempts(job.id)
    assert a.started - job.submitted < 2.0, a.started - job.submitted
    assert sched.decisions == 1


def test_an_attempts_end_is_seen_without_waiting_for_the_tick(fleet_dir: Path,
                                                              tmp_path: Path) -> None:
    """An attempt that ends while the loop waits (its tick 30 s) finishes its job within a
    fraction of a second: the backend's wait wakes the loop."""
    store, fake, sched, spec = _setup(fleet_dir, tmp_path)
    jid = store.submit(spec)
    sched.tick()
    (a,) = store.attempts(jid)
    ended_at: list[float] = []

    def end() -> None:
        rd = run_dir(fleet_dir, jid)
        rd.mkdir(parents=True, exist_ok=True)
        (rd / "summary.json").write_text("{}")
        fake.status[a.id] = Status(state="exit", rc=0)
        ended_at.append(time.time())
        fake.ended.set()

    _later(0.3, end)
    deadline = time.monotonic() + 20
    serve(sched, store, fake, lambda: store.job(jid).state == "done"  # type: ignore[union-attr]
          or time.monotonic() > deadline, tick_s=LONG_TICK_S)
    (a,) = store.attempts(jid)
    assert a.state == "done" and a.ended is not None
    assert a.ended - ended_at[0] < 2.0, a.ended - ended_at[0]


def test_an_idle_loop_makes_one_pass_per_tick_and_no_new_decision(fleet_dir: Path,
                                                                   tmp_path: Path) -> None:
    """With a job running and nothing changing, the loop's own writes do not wake it: one
    pass per tick, no new question to the policy, and little CPU spent."""
    store, fake, sched, spec = _setup(fleet_dir, tmp_path)
    store.submit(spec)
    passes: list[int] = []  # the decisions made before each pass
    tick = sched.tick

    def counted() -> None:
        passes.append(sched.decisions)
        tick()

    sched.tick = counted  # type: ignore[method-assign]
    cpu0, t0 = time.process_time(), time.monotonic()
    serve(sched, store, fake, lambda: time.monotonic() - t0 > 1.5, tick_s=0.3)
    cpu = time.process_time() - cpu0
    # goodput (it moves jobs) is asked at the submit and once the job runs; then never
    assert len(fake.started) == 1 and passes[2:] == [2] * (len(passes) - 2)
    assert sched.decisions == 2
    assert 2 <= len(passes) <= 1.5 / 0.3 + 2, passes
    assert fake.waits >= 5  # the probe runs between passes (every 20 ms)
    assert cpu < 0.5, cpu  # ~0.03 s here: 1.5 s of mostly blocked waiting


def test_local_backend_wait_wakes_at_the_exit_and_once(tmp_path: Path) -> None:
    """The local backend's wait returns when the attempt's process exits (pidfd), long
    before its timeout, and the same end does not wake a second wait."""
    fleet = fleet3()
    be = LocalBackend(fleet, tmp_path / "attempts")
    (tmp_path / "attempts").mkdir()
    b = Bundle(node="h20/0", devices=(0,), argv=("-c", "import time; time.sleep(0.3)"),
               env={})
    h = be.start(1, fleet.pools[0], [b], tmp_path / "a.log", f"wait-test-{time.time()}")
    t0 = time.monotonic()
    assert be.wait([h], 60.0)
    assert time.monotonic() - t0 < 20
    st = be.poll(h)
    assert st.state == "exit" and st.rc == 0
    t1 = time.monotonic()
    assert not be.wait([h], 0.2)
    assert time.monotonic() - t1 >= 0.19
    assert not be.wait([{**h, "pending": True}], 0.05)
    be.stop(h)
