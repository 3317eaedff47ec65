"""The policy's stops and moves of running jobs in the live scheduler (in-memory backend):
a STOP requeues the job with its progress, a move relaunches it on the other pool, a
scheduler killed between the phases finishes the action from SQLite, and the simulator and
the live scheduler decide the same stops on the same trace."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from mixfleet.cli import main
from mixfleet.fleet.model import Job, load_fleet
from mixfleet.fleet.policies import make_policy
from mixfleet.fleet.policies.base import STOP, Allocation, Policy, Snapshot
from mixfleet.live.scheduler import Scheduler, run_dir
from mixfleet.live.spec import load_job
from mixfleet.live.store import Store
from mixfleet.sim.engine import SimConfig, simulate

from .conftest import FLEET_TOML, fleet3, write_job
from .test_elastic import Crash, CrashingBackend
from .test_scheduler import FakeBackend, _finish

LONG, SHORT = 2000, 20  # steps (digits: global batch 64, a nominal 1 sample/s per device)


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class Recorder:
    """A policy that logs each decision it makes: sorted (job, start|stop|move, pool)."""

    def __init__(self, inner: Policy) -> None:
        self.inner, self.log = inner, []  # type: ignore[var-annotated]

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def allocate(self, snap: Snapshot) -> Allocation:
        alloc = self.inner.allocate(snap)
        where = {j.id: j.pool for j in snap.jobs}
        ids = [p.id for p in snap.pools]
        d = sorted((jid, "start" if where[jid] is None else "stop" if p == STOP else "move",
                    None if p == STOP else ids[p])
                   for jid, p in alloc.items() if where[jid] != p)
        if d:
            self.log.append(d)
        return alloc


def _fleet(fleet_dir: Path, tmp_path: Path, backend: FakeBackend | None = None,
           movable: bool = False) -> tuple[Store, FakeBackend, Scheduler, Clock, str, str]:
    """A long 2-device job started on h20 (``movable``: it may also run on p800), then a
    short 2-device job that may only run on h20 submitted 10 s later."""
    fleet, clock = fleet3(), Clock()
    store = Store(fleet_dir, clock=clock)
    where = 'kinds = ["nvidia-h20", "kunlun-p800"]' if movable else 'pool = "h20"'
    a = load_job(write_job(tmp_path / "a.toml", steps=LONG, devices=2, extra=where), fleet)
    b = load_job(write_job(tmp_path / "b.toml", steps=SHORT, devices=2, extra='pool = "h20"'),
                 fleet)
    fake = backend or FakeBackend(fleet)
    sched = Scheduler(fleet, store, fake, Recorder(make_policy("goodput")),
                      fleet_dir=fleet_dir, mark="t", clock=clock)
    ja = store.submit(a)
    sched.tick()
    assert store.attempts(ja)[0].pool == "h20"
    _progress(fleet_dir, ja, 100)
    clock.t += 10.0
    jb = store.submit(b)
    return store, fake, sched, clock, ja, jb


def _progress(fleet_dir: Path, jid: str, step: int) -> None:
    """The job's run logged ``step`` steps at 2 samples/s (1 per device: the nominal rate),
    what the scheduler reads its progress and speed from."""
    rd = run_dir(fleet_dir, jid)
    rd.mkdir(parents=True, exist_ok=True)
    with (rd / "metrics.jsonl").open("a") as f:
        f.write(json.dumps({"step": step, "t": 1000.0, "samples_per_s": 2.0}) + "\n")


def _arg(bundles: Any, flag: str) -> str:
    argv = bundles[0].argv
    return str(argv[argv.index(flag) + 1])


def test_a_stop_from_the_policy_requeues_the_job_with_its_progress(
        fleet_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """goodput stops a long job on h20 for a much shorter one that may only run there: the
    long job's attempt is stopped and ends `preempted`, the job waits in the queue (no
    restart counted) with its progress (step 100 of its run directory) as its remaining
    work and the reason in `status`, the short one starts on its devices; when that ends
    the long job resumes from the same run directory."""
    store, fake, sched, clock, ja, jb = _fleet(fleet_dir, tmp_path)
    sched.tick()
    a1 = store.attempts(ja)[0]
    assert a1.state == "preempted" and a1.id in fake.stopped
    assert a1.reason.startswith("goodput: stopped for")
    job = store.job(ja)
    assert job is not None and job.state == "queued" and job.restarts == 0
    (b1,) = store.attempts(jb, ("running",))
    assert b1.pool == "h20" and sorted(b1.slots) == sorted(a1.slots)
    (r,) = store.preempts(ja)
    assert (r.action, r.src, r.pool, r.state) == ("stop", "h20", None, "done")
    assert jb in r.reason and "est." in r.reason
    ev = [e for e in store.events(ja) if e["kind"] == "preempted"]
    assert len(ev) == 1 and ev[0]["detail"]["reason"] == r.reason
    assert main(["status", ja, "--dir", str(fleet_dir), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["state"] == "queued" and doc["preempts"][0]["reason"] == r.reason
    snap, _ = sched.snapshot(fake.inventory())
    (va,) = [v for v in snap.jobs if v.id == ja]
    assert va.pool is None and va.remaining == pytest.approx((LONG - 100) * 64)
    sched.tick()
    assert len(store.attempts(ja)) == 1  # waits: the short one is not stopped back
    _finish(fleet_dir, fake, store, jb)
    clock.t += 700.0
    sched.tick()
    (a2,) = store.attempts(ja, ("running",))
    assert a2.pool == "h20" and store.job(ja).restarts == 0  # type: ignore[union-attr]
    launched = [b for aid, _, b in fake.started if aid == a2.id][0]
    assert _arg(launched, "--run-dir") == str(run_dir(fleet_dir, ja))
    assert sched.policy.log == [  # type: ignore[attr-defined]
        [(ja, "start", "h20")], [(ja, "stop", None), (jb, "start", "h20")],
        [(ja, "start", "h20")]]


def test_a_move_from_the_policy_relaunches_the_job_on_the_other_pool(
        fleet_dir: Path, tmp_path: Path) -> None:
    """The long job may also run on p800: goodput moves it there (its attempt stopped and
    ended `moved`, a new one on p800's 2 devices from the same run directory, the job never
    queued) and starts the short one on h20."""
    store, fake, sched, _, ja, jb = _fleet(fleet_dir, tmp_path, movable=True)
    sched.tick()
    old, new = store.attempts(ja)
    assert old.state == "moved" and old.id in fake.stopped
    assert (new.state, new.pool, len(new.slots)) == ("running", "p800", 2)
    assert new.handle.get("pending") is None
    launched = [b for aid, _, b in fake.started if aid == new.id][0]
    assert _arg(launched, "--run-dir") == str(run_dir(fleet_dir, ja))
    assert _arg(launched, "--device").startswith("emu:kunlun-p800")
    job = store.job(ja)
    assert job is not None and job.state == "running" and job.restarts == 0
    (r,) = store.preempts(ja)
    assert (r.action, r.src, r.pool, r.state) == ("move", "h20", "p800", "done")
    assert "h20 -> p800" in r.reason and jb in r.reason
    assert store.attempts(jb, ("running",))[0].pool == "h20"


def test_a_policy_that_never_moves_jobs_keeps_them_running(fleet_dir: Path,
                                                          tmp_path: Path) -> None:
    """fifo neither stops nor moves: the short job waits, the long one runs on."""
    fleet = fleet3()
    store = Store(fleet_dir)
    a = load_job(write_job(tmp_path / "a.toml", steps=LONG, devices=2, extra='pool = "h20"'),
                 fleet)
    ja = store.submit(a)
    fake = FakeBackend(fleet)
    sched = Scheduler(fleet, store, fake, make_policy("fifo"), fleet_dir=fleet_dir,
                      mark="t")
    sched.tick()
    jb = store.submit(load_job(write_job(tmp_path / "b.toml", steps=SHORT, devices=2,
                                         extra='pool = "h20"'), fleet))
    sched.tick()
    assert [a.state for a in store.attempts(ja)] == ["running"] and not fake.stopped
    assert store.job(jb).state == "queued" and store.preempts() == []  # type: ignore[union-attr]


@pytest.mark.parametrize("movable,where", [
    (False, "plan"), (False, "stop"), (False, "requeue"),
    (True, "plan"), (True, "stop"), (True, "start"), (True, "finish")])
def test_a_scheduler_killed_mid_stop_or_move_finishes_it_from_sqlite(
        fleet_dir: Path, tmp_path: Path, movable: bool, where: str) -> None:
    """The scheduler killed after deciding a stop or a move (planned), while stopping the
    attempt, before requeuing the stopped job, while starting the moved one, or before
    recording the end: a new scheduler on the same SQLite finishes it once: a stopped job
    queued (the short one then runs), a moved one running on p800, no restart counted."""
    fleet = fleet3()
    fake = CrashingBackend(fleet)
    store, _, sched, clock, ja, jb = _fleet(fleet_dir, tmp_path, fake, movable)
    fake.calls = {"start": 0, "stop": 0}
    if where in ("stop", "start"):
        fake.where, fake.n = where, 1

    def boom(*a: Any, **k: Any) -> Any:
        raise Crash(where)
    method = {"plan": "mark_stopping", "requeue": "requeue_preempted",
              "finish": "finish_preempt"}.get(where)
    if method:
        setattr(store, method, boom)
    with pytest.raises(Crash):
        sched.tick()
    assert [r.state for r in store.preempts(ja)] == [
        {"plan": "planned", "start": "launching", "finish": "launching"}.get(where,
                                                                            "stopping")]
    fake.where = ""
    sched2 = Scheduler(fleet, Store(fleet_dir, clock=clock), fake, make_policy("goodput"),
                       fleet_dir=fleet_dir, mark="t", clock=clock)
    sched2.tick()
    sched2.tick()
    assert [r.state for r in store.preempts(ja)] == ["done"]
    atts = store.attempts(ja)
    job = store.job(ja)
    assert job is not None and job.restarts == 0
    if movable:
        assert [a.state for a in atts] == ["moved", "running"] and job.state == "running"
        assert atts[1].pool == "p800" and atts[1].handle.get("pending") is None
    else:
        assert [a.state for a in atts] == ["preempted"] and job.state == "queued"
    assert atts[0].id in fake.stopped
    assert store.attempts(jb, ("running",))[0].pool == "h20"


def test_sim_and_live_make_the_same_stops_on_the_same_trace(fleet_dir: Path,
                                                            tmp_path: Path) -> None:
    """The trace: a long 2-device job on h20, a short 2-device one only h20 fits 10 s
    later. The simulator (declared lengths, no failures) and the live scheduler
    (in-memory backend, emulated pools), each under goodput, decide the same: start the
    long one, stop it and start the short one, start the long one again when that ends."""
    store, fake, sched, clock, ja, jb = _fleet(fleet_dir, tmp_path)
    sched.tick()
    sched.tick()
    _finish(fleet_dir, fake, store, jb)
    clock.t += 700.0
    sched.tick()
    live = sched.policy.log  # type: ignore[attr-defined]
    fleet = load_fleet(FLEET_TOML)
    work = {ja: LONG * 64.0, jb: SHORT * 64.0}
    jobs = [Job(id=jid, workload=jid, arrival_s=t, devices=2, work=work[jid], mem_gib=1.0,
                declared_work=work[jid]) for jid, t in ((ja, 0.0), (jb, 10.0))]
    rec = Recorder(make_policy("goodput"))
    speeds = {ja: (1.0, None, None), jb: (1.0, None, None)}
    simulate(fleet, jobs, rec, speeds,  # type: ignore[arg-type]
             SimConfig(failures=False, throttles=False, estimates="declared"))
    assert rec.log == live == [[(ja, "start", "h20")],
                               [(ja, "stop", None), (jb, "start", "h20")],
                               [(ja, "start", "h20")]]
    assert [(r.job_id, r.action, r.state) for r in store.preempts()] == [(ja, "stop", "done")]


@pytest.mark.slow
@pytest.mark.parametrize("movable", [False, True])
def test_a_stopped_or_moved_job_resumes_bit_identical_to_an_uninterrupted_run(
        fleet_dir: Path, tmp_path: Path, movable: bool) -> None:
    """For real (local processes, emulated chips): a long 1-device job on h20 (its other
    device under maintenance) is stopped by goodput (``movable``: moved to p800) for a
    short one once it has logged steps; the short one runs, the long one resumes from its
    run directory (resumed from a step > 0) and ends with weights bit-identical to an
    uninterrupted `mixfleet train` of its config; no restart counted."""
    import time

    from mixfleet.live.backend import LocalBackend
    from mixfleet.live.estimate import last_step
    from mixfleet.live.scheduler import job_dir

    from .raytools import same, solo_weights, weights

    fleet = fleet3()
    store = Store(fleet_dir)
    store.block("h20", "h20/0", 1, None, "maintenance")
    where = 'kinds = ["nvidia-h20", "kunlun-p800"]' if movable else 'pool = "h20"'
    long_ = write_job(tmp_path / "long.toml", steps=400, extra=where)
    ja = store.submit(load_job(long_, fleet))
    (tmp_path / "work").mkdir()
    sched = Scheduler(fleet, store, LocalBackend(fleet, tmp_path / "work"),
                      make_policy("goodput"), fleet_dir=fleet_dir, mark=f"pre-{time.time()}")
    jb = ""
    end = time.monotonic() + 300
    try:
        while time.monotonic() < end:
            sched.tick()
            if not jb and last_step(run_dir(fleet_dir, ja)) >= 10:
                jb = store.submit(load_job(write_job(tmp_path / "short.toml", steps=5,
                                                     extra='pool = "h20"'), fleet))
            states = [store.job(j).state for j in (ja, jb) if j]  # type: ignore[union-attr]
            if len(states) == 2 and all(s in ("done", "failed") for s in states):
                break
            time.sleep(0.2)
    finally:
        for a in store.attempts(states=("running",)):
            sched.backend.stop(a.handle)
    log = "".join(p.read_text() for p in job_dir(fleet_dir, ja).glob("attempt-*.log"))
    ja_row, jb_row = store.job(ja), store.job(jb)
    assert ja_row is not None and jb_row is not None
    assert (ja_row.state, jb_row.state, ja_row.restarts) == ("done", "done", 0), log
    act, ended = ("move", "moved") if movable else ("stop", "preempted")
    assert [a.state for a in store.attempts(ja)] == [ended, "done"]
    assert [(r.action, r.state) for r in store.preempts(ja)] == [(act, "done")]
    assert store.attempts(ja)[1].pool == ("p800" if movable else "h20")
    starts = [e for e in json.loads("[" + ",".join(
        (run_dir(fleet_dir, ja) / "events.jsonl").read_text().split("\n")[:-1]) + "]")
        if e.get("event") == "run_start"]
    assert len(starts) == 2 and (starts[1].get("resumed_from") or 0) > 0, starts
    ref = solo_weights(job_dir(fleet_dir, ja) / "config.toml", tmp_path / "solo")
    assert same(weights(run_dir(fleet_dir, ja)), ref)
