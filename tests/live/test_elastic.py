"""Elastic jobs in the live scheduler (in-memory backend): shrink on a drain instead of
requeuing, grow back when a device frees, a scheduler killed mid-resize finishing it from
SQLite, the same decisions as the simulator on the same trace."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from mixfleet.cli import main
from mixfleet.fleet.policies import make_policy
from mixfleet.live.backend import Bundle
from mixfleet.live.scheduler import Scheduler, run_dir
from mixfleet.live.spec import FleetSpec, PoolSpec, load_job
from mixfleet.live.store import Store
from mixfleet.sim.elastic import TraceEvent, TraceJob, replay
from mixfleet.train.mixed.blocklist import add_drained

from .conftest import fleet3, write_job
from .test_scheduler import FakeBackend, _finish


class Crash(BaseException):
    """The scheduler killed at this point."""


class CrashingBackend(FakeBackend):
    """Raises :class:`Crash` on the ``n``-th call of ``where`` (``start`` or ``stop``)."""

    def __init__(self, fleet: FleetSpec, where: str = "", n: int = 0) -> None:
        super().__init__(fleet)
        self.where, self.n, self.calls = where, n, {"start": 0, "stop": 0}

    def _tick(self, what: str) -> None:
        self.calls[what] += 1
        if what == self.where and self.calls[what] == self.n:
            raise Crash(what)

    def start(self, aid: int, pool: PoolSpec, bundles: list[Bundle], log: Path,
              marker: str) -> dict[str, Any]:
        self._tick("start")
        return super().start(aid, pool, bundles, log, marker)

    def stop(self, handle: dict[str, Any]) -> None:
        self._tick("stop")
        super().stop(handle)


STEPS = 20  # digits: global batch 64, so 1280 samples of work at a nominal 1 sample/s


def _fleet(fleet_dir: Path, tmp_path: Path, backend: FakeBackend | None = None
           ) -> tuple[Store, FakeBackend, Scheduler, str, str]:
    """An elastic 2-device job on h20 (1-2 devices) and a rigid 2-device one on p800."""
    fleet = fleet3()
    store = Store(fleet_dir)
    a = load_job(write_job(tmp_path / "a.toml", steps=STEPS, devices=2,
                           extra='pool = "h20"\nmin_devices = 1\nmax_devices = 2'), fleet)
    b = load_job(write_job(tmp_path / "b.toml", steps=2 * STEPS, devices=2,
                           extra='pool = "p800"'), fleet)
    ja, jb = store.submit(a), store.submit(b)
    fake = backend or FakeBackend(fleet)
    sched = Scheduler(fleet, store, fake, make_policy("goodput"), fleet_dir=fleet_dir,
                      mark="t")
    return store, fake, sched, ja, jb


def _drain_rank1(fleet_dir: Path, store: Store, jid: str) -> tuple[str, int]:
    rd = run_dir(fleet_dir, jid)
    rd.mkdir(parents=True, exist_ok=True)
    add_drained(rd, rank=1, step=5)
    return store.attempts(jid)[0].slots[1]


def _slots_env(fake: FakeBackend) -> list[str]:
    """The device slots the last started attempt's bundles name, in rank order."""
    return [s for b in fake.started[-1][2] for s in b.env["MIXFLEET_DEVICE_SLOTS"].split(",")]


def _size(store: Store, jid: str) -> int:
    (a,) = store.attempts(jid, ("running",))
    return len(a.slots) - a.drains_seen


def test_a_drain_shrinks_an_elastic_job_and_a_freed_device_grows_it_back(
        fleet_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A drained chip under a running 2-device elastic job: it goes on with 1 device in
    the same attempt (never back to the queue, no restart counted); when the device frees
    (taken off the block list) it is relaunched on 2, and `status` shows each size."""
    store, fake, sched, ja, _ = _fleet(fleet_dir, tmp_path)
    sched.tick()
    node, dev = _drain_rank1(fleet_dir, store, ja)
    sched.tick()
    job = store.job(ja)
    assert job is not None and job.state == "running" and job.restarts == 0
    assert len(store.attempts(ja)) == 1 and _size(store, ja) == 1
    (r,) = store.resizes(ja)
    assert (r.action, r.old, r.new, r.state) == ("shrink", 2, 1, "done")
    assert main(["status", ja, "--dir", str(fleet_dir), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert (doc["size"], doc["min_devices"], doc["max_devices"]) == (1, 1, 2)
    assert doc["resizes"][0]["action"] == "shrink" and doc["resizes"][0]["gain_s"] is None
    sched.tick()
    assert len(store.attempts(ja)) == 1  # nothing free yet: no grow
    assert store.unblock("h20", node, dev, "cooled down")
    sched.tick()
    old, new = store.attempts(ja)
    assert old.state == "resized" and old.id in fake.stopped
    assert new.state == "running" and sorted(new.slots) == sorted(old.slots)
    assert [r.action for r in store.resizes(ja)] == ["shrink", "grow"]
    assert store.resizes(ja)[-1].state == "done" and store.resizes(ja)[-1].gain_s > 0
    assert fake.started[-1][2][0].argv[fake.started[-1][2][0].argv.index("--nproc") + 1] \
        == "2"
    assert _slots_env(fake) == [f"h20/{n}:{d}" for n, d in new.slots]  # the relaunch's own
    assert store.job(ja).restarts == 0  # type: ignore[union-attr]
    assert main(["status", ja, "--dir", str(fleet_dir), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["size"] == 2


def test_fleet_unblock_puts_a_blocked_device_back_and_refuses_others(
        fleet_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`fleet unblock POOL:NODE:INDEX` takes a listed device off the block list; a device
    not on it exits 2 naming the ones that are, nothing changed."""
    store = Store(fleet_dir)
    store.block("h20", "h20/0", 1, None, "drained")
    assert main(["fleet", "unblock", "h20:h20/0:0", "--dir", str(fleet_dir)]) == 2
    err = capsys.readouterr().err
    assert "h20:h20/0:0" in err and "h20:h20/0:1" in err and err.count("\n") == 1
    assert store.blocked() == {("h20", "h20/0", 1)}
    assert main(["fleet", "unblock", "h20:h20/0:1", "--dir", str(fleet_dir)]) == 0
    assert store.blocked() == set()


def test_a_drain_requeues_a_job_whose_min_devices_it_breaks(fleet_dir: Path,
                                                            tmp_path: Path) -> None:
    """min_devices = max_devices = 2 (rigid, declared): a drain requeues it."""
    fleet = fleet3()
    store = Store(fleet_dir)
    spec = load_job(write_job(tmp_path / "r.toml", steps=STEPS, devices=2,
                              extra='pool = "h20"\nmin_devices = 2'), fleet)
    jid = store.submit(spec)
    fake = FakeBackend(fleet)
    sched = Scheduler(fleet, store, fake, make_policy("goodput"), fleet_dir=fleet_dir,
                      mark="t")
    sched.tick()
    _drain_rank1(fleet_dir, store, jid)
    sched.tick()
    (a,) = store.attempts(jid)
    assert a.state == "lost" and "min_devices" in a.reason and a.id in fake.stopped
    assert store.job(jid).state == "queued"  # type: ignore[union-attr]
    assert [r.action for r in store.resizes(jid)] == ["requeue"]


@pytest.mark.parametrize("where,n", [("stop", 1), ("start", 3), ("finish", 0)])
def test_a_scheduler_killed_mid_resize_finishes_it_from_sqlite(
        fleet_dir: Path, tmp_path: Path, where: str, n: int) -> None:
    """The scheduler killed while growing a job (stopping the old attempt, starting the
    new one, or before recording the end): a new scheduler on the same SQLite finishes the
    resize; the job runs once, on 2 devices, never requeued."""
    fleet = fleet3()
    fake = CrashingBackend(fleet, where, n)
    store, _, sched, ja, _ = _fleet(fleet_dir, tmp_path, fake)
    sched.tick()  # starts 1 and 2
    node, dev = _drain_rank1(fleet_dir, store, ja)
    sched.tick()
    store.unblock("h20", node, dev, "cooled down")
    if where == "finish":
        def boom(rid: int, state: str = "done") -> None:
            raise Crash("finish")
        store.finish_resize = boom  # type: ignore[method-assign]
    with pytest.raises(Crash):
        sched.tick()
    assert store.resizes(ja)[-1].state in ("planned", "launching")
    fake.where = ""
    sched2 = Scheduler(fleet, Store(fleet_dir), fake, make_policy("goodput"),
                       fleet_dir=fleet_dir, mark="t")
    sched2.tick()
    sched2.tick()
    assert [r.state for r in store.resizes(ja)] == ["done", "done"]
    atts = store.attempts(ja)
    assert [a.state for a in atts] == ["resized", "running"]
    assert len(atts[1].slots) == 2 and atts[1].handle.get("pending") is None
    job = store.job(ja)
    assert job is not None and job.state == "running" and job.restarts == 0


def test_a_scheduler_killed_while_requeuing_after_a_drain_finishes_the_requeue(
        fleet_dir: Path, tmp_path: Path) -> None:
    """Killed while stopping the attempt of a drained rigid job: the new scheduler stops
    it, requeues the job once (one requeue decision, drains counted once)."""
    fleet = fleet3()
    store = Store(fleet_dir)
    spec = load_job(write_job(tmp_path / "r.toml", steps=STEPS, devices=2,
                              extra='pool = "h20"\nmin_devices = 2'), fleet)
    jid = store.submit(spec)
    fake = CrashingBackend(fleet, "stop", 1)
    sched = Scheduler(fleet, store, fake, make_policy("goodput"), fleet_dir=fleet_dir,
                      mark="t")
    sched.tick()
    _drain_rank1(fleet_dir, store, jid)
    with pytest.raises(Crash):
        sched.tick()
    assert [r.state for r in store.resizes(jid)] == ["planned"]
    fake.where = ""
    Scheduler(fleet, Store(fleet_dir), fake, make_policy("goodput"), fleet_dir=fleet_dir,
              mark="t").tick()
    (a,) = store.attempts(jid)
    assert a.state == "lost" and a.drains_seen == 1 and "requeued" in a.reason
    assert [(r.action, r.state) for r in store.resizes(jid)] == [("requeue", "done")]
    j = store.job(jid)
    assert j is not None and j.state == "queued" and j.restarts == 1


def test_a_shrunk_job_grows_back_by_moving_when_another_pool_frees(
        fleet_dir: Path, tmp_path: Path) -> None:
    """An elastic job (h20 or p800) shrunk by a drain on h20, whose drained device stays
    blocked: when the p800 job ends and nothing waits, it is relaunched on p800's 2
    devices (grow 1 -> 2, a move), without a requeue."""
    fleet = fleet3()
    store = Store(fleet_dir)
    b = load_job(write_job(tmp_path / "b.toml", steps=2 * STEPS, devices=2,
                           extra='pool = "p800"'), fleet)
    a = load_job(write_job(tmp_path / "a.toml", steps=STEPS, devices=2,
                           extra='kinds = ["nvidia-h20", "kunlun-p800"]\nmin_devices = 1'),
                 fleet)
    jb, ja = store.submit(b), store.submit(a)
    fake = FakeBackend(fleet)
    sched = Scheduler(fleet, store, fake, make_policy("goodput"), fleet_dir=fleet_dir,
                      mark="t")
    sched.tick()
    assert store.attempts(ja)[0].pool == "h20"
    _drain_rank1(fleet_dir, store, ja)
    sched.tick()
    assert [r.action for r in store.resizes(ja)] == ["shrink"]
    _finish(fleet_dir, fake, store, jb)
    sched.tick()
    old, new = store.attempts(ja)
    assert old.state == "resized" and (new.state, new.pool, len(new.slots)) == (
        "running", "p800", 2)
    assert _slots_env(fake) == [f"p800/{n}:{d}" for n, d in new.slots]
    grow_ = store.resizes(ja)[-1]
    assert (grow_.action, grow_.old, grow_.new, grow_.state) == ("grow", 1, 2, "done")
    assert "move" in grow_.reason and store.job(ja).restarts == 0  # type: ignore[union-attr]


def test_a_lost_node_shrinks_an_elastic_job_onto_the_devices_left(
        fleet_dir: Path, tmp_path: Path) -> None:
    """A 2-device elastic job over two nodes, one node lost: a new attempt on the node
    left (1 device), no requeue."""
    fleet = FleetSpec(name="two", pools=(PoolSpec(id="p", chip="kunlun-p800",
                                                  vendor="baidu", is_nvidia=False, nodes=2,
                                                  per_node=1, mem_gib=None, emulated=True),))
    store = Store(fleet_dir)
    spec = load_job(write_job(tmp_path / "n.toml", steps=STEPS, devices=2,
                              extra="min_devices = 1"), fleet)
    jid = store.submit(spec)
    fake = FakeBackend(fleet)
    sched = Scheduler(fleet, store, fake, make_policy("fifo"), fleet_dir=fleet_dir,
                      mark="t")
    sched.tick()
    (a,) = store.attempts(jid)
    fake.dead_nodes.add(a.slots[1][0])
    sched.tick()
    old, new = store.attempts(jid)
    assert old.state == "resized" and new.state == "running" and new.slots == [a.slots[0]]
    assert _slots_env(fake) == [f"p/{a.slots[0][0]}:{a.slots[0][1]}"]  # not the lost one
    assert [r.action for r in store.resizes(jid)] == ["shrink"]
    assert store.job(jid).restarts == 0  # type: ignore[union-attr]


def test_sim_and_live_make_the_same_resize_decisions_on_the_same_trace(
        fleet_dir: Path, tmp_path: Path) -> None:
    """The trace: an elastic 2-device job (h20) and a rigid one (p800); a device of the
    first drained, later the device freed. The simulator's replay and the live scheduler
    (in-memory backend, emulated pools) decide the same resizes: shrink 2 -> 1, grow 1 ->
    2."""
    store, fake, sched, ja, jb = _fleet(fleet_dir, tmp_path)
    sched.tick()
    node, dev = _drain_rank1(fleet_dir, store, ja)
    sched.tick()
    store.unblock("h20", node, dev, "cooled down")
    sched.tick()
    live = [(r.job_id, r.action, r.old, r.new) for r in store.resizes()]
    work = STEPS * 64.0
    jobs = [TraceJob(id=ja, size=2, lo=1, hi=2, work=work, per_device=(1.0,) * 3,
                     options=(0,)),
            TraceJob(id=jb, size=2, lo=2, hi=2, work=2 * work, per_device=(1.0,) * 3,
                     options=(1,), elastic=False)]
    sim = replay([2, 2, 2], jobs, [TraceEvent(t=10.0, kind="drain", job=ja),
                                   TraceEvent(t=20.0, kind="free", pool=0)])
    assert [d.key() for _, d in sim.decisions] == live == [
        (ja, "shrink", 2, 1), (ja, "grow", 1, 2)]
    assert fake.status  # the live one ran on the in-memory backend


def test_sim_and_live_start_an_elastic_job_small_and_grow_it_alike(
        fleet_dir: Path, tmp_path: Path) -> None:
    """The trace: one device of pool 910b under maintenance, an elastic 2-device job (1-2)
    that may only use 910b; later the device comes back. The simulator's replay and the
    live scheduler (in-memory backend) both start it on the one device left (an
    ``elastic_start`` event with its reason) and grow it to 2 when the device frees."""
    fleet = fleet3()
    store = Store(fleet_dir)
    store.block("910b", "910b/0", 1, None, "maintenance")
    spec = load_job(write_job(tmp_path / "c.toml", steps=STEPS, devices=2,
                              extra='pool = "910b"\nmin_devices = 1\nmax_devices = 2'), fleet)
    jc = store.submit(spec)
    fake = FakeBackend(fleet)
    sched = Scheduler(fleet, store, fake, make_policy("goodput"), fleet_dir=fleet_dir, mark="t")
    sched.tick()
    assert _size(store, jc) == 1
    (ev,) = [e["detail"] for e in store.events(jc) if e["kind"] == "elastic_start"]
    assert ev["devices"] == 1 and ev["of"] == 2 and "1 of 2 device(s) free now" in ev["reason"]
    live = [(jc, "start", 0, _size(store, jc))]
    store.unblock("910b", "910b/0", 1, "maintenance over")
    sched.tick()
    live += [(r.job_id, r.action, r.old, r.new) for r in store.resizes()]
    assert _size(store, jc) == 2
    sim = replay([2, 2, 2], [TraceJob(id=jc, size=2, lo=1, hi=2, work=STEPS * 64.0,
                                      per_device=(1.0,) * 3, options=(2,))],
                 [TraceEvent(t=10.0, kind="free", pool=2)], blocked=[0, 0, 1])
    assert [d.key() for _, d in sim.decisions] == live == [
        (jc, "start", 0, 1), (jc, "grow", 1, 2)]


def test_a_running_jobs_decisions_use_its_own_measured_steps_before_any_attempt_ended(
        fleet_dir: Path, tmp_path: Path) -> None:
    """Before an attempt of its workload has ended on a pool, a running job is seen at the
    rate its own steps so far measured (per device), not the nominal 1 sample/s; without
    steps logged it stays nominal."""
    store, _, sched, ja, _ = _fleet(fleet_dir, tmp_path)
    sched.tick()
    (a,) = store.attempts(ja, ("running",))
    job = store.job(ja)
    assert job is not None
    nominal = sched._view(job, a.pool, 2, a)
    assert nominal.per_device == pytest.approx(1.0)
    rd = run_dir(fleet_dir, ja)
    rd.mkdir(parents=True, exist_ok=True)
    with (rd / "metrics.jsonl").open("w") as f:
        for i, sps in enumerate((500.0, 640.0, 700.0)):
            f.write(json.dumps({"step": i + 1, "t": a.started + 1 + i,
                                "samples_per_s": sps}) + "\n")
    seen = sched._view(job, a.pool, 2, a)
    assert seen.per_device == pytest.approx(640.0 / 2)  # the median over its 2 devices
    assert seen.time_on(1) == pytest.approx(2 * seen.time_on(2))
