"""The scheduler's decisions with an in-memory backend: placement through the policy,
re-queue on failure, max_restarts, restart of the scheduler, block list, cancel."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from mixfleet.fleet.policies import make_policy
from mixfleet.live.backend import Bundle, NodeInfo, Status, virtual_nodes
from mixfleet.live.scheduler import Scheduler, run_dir
from mixfleet.live.spec import FleetSpec, PoolSpec, load_job
from mixfleet.live.store import Store

from .conftest import fleet3, write_job


class FakeBackend:
    """Attempts as dict entries; the test ends them."""

    def __init__(self, fleet: FleetSpec) -> None:
        self.fleet = fleet
        self.status: dict[int, Status] = {}
        self.started: list[tuple[int, str, list[Bundle]]] = []
        self.stopped: list[int] = []
        self.dead_nodes: set[str] = set()

    def inventory(self) -> list[NodeInfo]:
        return [NodeInfo(node=n.node, pool=n.pool, devices=n.devices,
                         alive=n.node not in self.dead_nodes)
                for n in virtual_nodes(self.fleet)]

    def start(self, aid: int, pool: PoolSpec, bundles: list[Bundle], log: Path,
              marker: str) -> dict[str, Any]:
        self.started.append((aid, pool.id, bundles))
        self.status[aid] = Status(state="running")
        return {"aid": aid, "marker": marker}

    def poll(self, handle: dict[str, Any]) -> Status:
        return self.status[handle["aid"]]

    def stop(self, handle: dict[str, Any]) -> None:
        if "aid" in handle:
            self.stopped.append(handle["aid"])


def _setup(fleet_dir: Path, tmp_path: Path, n: int, **job: Any
           ) -> tuple[Store, FakeBackend, Scheduler, list[str]]:
    fleet = fleet3()
    store = Store(fleet_dir)
    spec = load_job(write_job(tmp_path / "j.toml", **job), fleet)
    ids = [store.submit(spec) for _ in range(n)]
    fake = FakeBackend(fleet)
    sched = Scheduler(fleet, store, fake, make_policy("goodput"), fleet_dir=fleet_dir,
                      mark="t")
    return store, fake, sched, ids


def _finish(fleet_dir: Path, fake: FakeBackend, store: Store, jid: str) -> None:
    a = store.attempts(jid, ("running",))[0]
    rd = run_dir(fleet_dir, jid)
    rd.mkdir(parents=True, exist_ok=True)
    (rd / "summary.json").write_text("{}")
    fake.status[a.id] = Status(state="exit", rc=0)


def test_places_through_the_policy_and_never_beyond_capacity(fleet_dir: Path,
                                                              tmp_path: Path) -> None:
    """8 one-device jobs on 6 devices: 6 start, each on a distinct device with the
    visible-devices variable naming it, 2 wait; they start as others finish."""
    store, fake, sched, ids = _setup(fleet_dir, tmp_path, 8)
    sched.tick()
    running = store.attempts(states=("running",))
    assert len(running) == 6 and sched.decisions == 1
    assert len({(a.pool, *a.slots[0]) for a in running}) == 6
    for _, _, bundles in fake.started:
        b = bundles[0]
        assert b.env["MIXFLEET_EMU_VISIBLE_DEVICES"] == str(b.devices[0])
        assert b.argv[b.argv.index("--device") + 1].startswith("emu:")
    assert [j.state for j in store.jobs()].count("queued") == 2
    _finish(fleet_dir, fake, store, running[0].job_id)
    sched.tick()
    assert store.job(running[0].job_id).state == "done"  # type: ignore[union-attr]
    assert len(store.attempts(states=("running",))) == 6


def test_a_lost_attempt_is_requeued_then_fails_after_max_restarts(fleet_dir: Path,
                                                                  tmp_path: Path) -> None:
    """A lost worker re-queues the job (its processes stopped); once failures exceed
    max_restarts the job fails with the reason."""
    store, fake, sched, (jid,) = _setup(fleet_dir, tmp_path, 1,
                                        extra="max_restarts = 1")
    sched.tick()
    a1 = store.attempts(jid)[0]
    fake.status[a1.id] = Status(state="lost", reason="worker killed")
    sched.tick()
    assert a1.id in fake.stopped
    atts = store.attempts(jid)
    assert [a.state for a in atts] == ["lost", "running"]
    fake.status[atts[1].id] = Status(state="exit", rc=1)
    sched.tick()
    job = store.job(jid)
    assert job is not None and job.state == "failed" and job.restarts == 2
    assert "max_restarts = 1" in job.reason and "exited with code 1" in job.reason


def test_dead_node_loses_its_attempts(fleet_dir: Path, tmp_path: Path) -> None:
    """An attempt on a node that left the cluster is lost and placed elsewhere."""
    store, fake, sched, (jid,) = _setup(fleet_dir, tmp_path, 1)
    sched.tick()
    first = store.attempts(jid)[0]
    fake.dead_nodes.add(first.slots[0][0])
    sched.tick()
    atts = store.attempts(jid)
    assert atts[0].state == "lost" and "left the cluster" in atts[0].reason
    assert atts[1].state == "running" and atts[1].slots[0][0] != first.slots[0][0]


def test_a_restarted_scheduler_duplicates_no_attempt(fleet_dir: Path,
                                                     tmp_path: Path) -> None:
    """A second scheduler on the same SQLite (the first killed) keeps the running
    attempts, starts none twice, and finishes every job exactly once."""
    store, fake, sched, ids = _setup(fleet_dir, tmp_path, 8)
    sched.tick()
    del sched
    sched2 = Scheduler(fleet3(), Store(fleet_dir), fake, make_policy("goodput"),
                       fleet_dir=fleet_dir, mark="t")
    sched2.tick()
    assert len(fake.started) == 6
    for _ in range(8):
        for a in store.attempts(states=("running",)):
            _finish(fleet_dir, fake, store, a.job_id)
        sched2.tick()
    assert all(j.state == "done" for j in store.jobs())
    assert len(fake.started) == 8 == len(store.attempts())


def test_half_started_attempt_is_stopped_and_requeued(fleet_dir: Path,
                                                      tmp_path: Path) -> None:
    """An attempt recorded but never started (scheduler killed in between) is stopped by
    its marker and the job placed again."""
    store, fake, sched, (jid,) = _setup(fleet_dir, tmp_path, 1)
    store.start_attempt(jid, "h20", [("h20/0", 0)], {"pending": True, "marker": "t:1"})
    sched.tick()
    atts = store.attempts(jid)
    assert atts[0].state == "lost" and "while placing" in atts[0].reason
    assert atts[1].state == "running"


def test_drained_chip_goes_on_the_block_list_and_placements_avoid_it(
        fleet_dir: Path, tmp_path: Path) -> None:
    """A rank drained by the thermal guard puts its device on the fleet block list; the
    pool's capacity drops and the next job there runs on the other device."""
    store, fake, sched, (jid,) = _setup(fleet_dir, tmp_path, 1, devices=2,
                                        extra='pool = "p800"')
    sched.tick()
    a = store.attempts(jid)[0]
    rd = run_dir(fleet_dir, jid)
    rd.mkdir(parents=True, exist_ok=True)
    (rd / "blocklist.json").write_text(json.dumps([{"rank": 1, "step": 7,
                                                    "t": a.started + 1, "pending": True}]))
    sched.tick()
    assert store.blocked() == {("p800", a.slots[1][0], a.slots[1][1])}
    _finish(fleet_dir, fake, store, jid)
    sched.tick()
    spec = load_job(write_job(tmp_path / "k.toml", extra='pool = "p800"'), fleet3())
    nxt = store.submit(spec)
    sched.tick()
    (b,) = store.attempts(nxt)
    assert b.slots == [a.slots[0]]
    two = store.submit(load_job(write_job(tmp_path / "m.toml", devices=2,
                                          extra='pool = "p800"'), fleet3()))
    sched.tick()
    assert store.job(two).state == "queued"  # type: ignore[union-attr]


def test_cancel_stops_a_running_job(fleet_dir: Path, tmp_path: Path) -> None:
    """Cancelling a running job stops its attempt; a queued one is cancelled at once."""
    store, fake, sched, ids = _setup(fleet_dir, tmp_path, 7)
    sched.tick()
    run = store.attempts(states=("running",))[0]
    assert store.request_cancel(run.job_id) and store.request_cancel(ids[-1])
    sched.tick()
    assert run.id in fake.stopped
    assert store.job(run.job_id).state == "cancelled"  # type: ignore[union-attr]
    assert store.job(ids[-1]).state == "cancelled"  # type: ignore[union-attr]
    assert not store.request_cancel(ids[-1])


@pytest.mark.parametrize("policy", ["fifo", "goodput", "nvidia-sparing", "srtf", "gavel"])
def test_every_planner_policy_drives_the_live_scheduler(fleet_dir: Path, tmp_path: Path,
                                                        policy: str) -> None:
    """Each policy of mixfleet.fleet.policies places jobs through the same allocate()
    interface, within capacity."""
    store, fake, _, _ = _setup(fleet_dir, tmp_path, 4, devices=2)
    sched = Scheduler(fleet3(), store, fake, make_policy(policy), fleet_dir=fleet_dir,
                      mark="t")
    sched.tick()
    running = store.attempts(states=("running",))
    assert 1 <= len(running) <= 3
    assert len({(a.pool, *s) for a in running for s in a.slots}) == 2 * len(running)


def test_a_job_no_node_can_hold_spreads_one_bundle_per_node() -> None:
    """A placement over two nodes gives one `mixfleet train` per node, each with its own
    devices visible, meeting at one c10d rendezvous as node ranks 0 and 1."""
    from mixfleet.live.scheduler import build_bundles

    fleet = fleet3()
    pool = fleet.pool("p800")
    from mixfleet.live.spec import JobSpec

    job = JobSpec(name="x", config_toml="", workload="digits-cnn", steps=1, global_batch=1,
                  devices=3)
    bundles = build_bundles(job, pool, [("a", 0), ("a", 1), ("b", 1)], Path("c.toml"),
                            Path("run"), 7)
    assert [(b.node, b.devices) for b in bundles] == [("a", (0, 1)), ("b", (1,))]
    for rank, b in enumerate(bundles):
        argv = list(b.argv)
        assert argv[argv.index("--nproc") + 1] == str(len(b.devices))
        assert argv[argv.index("--node-rank") + 1] == str(rank)
        assert argv[argv.index("--nnodes") + 1] == "2"
        assert argv[argv.index("--rdzv-endpoint") + 1] == "{rdzv_endpoint}"
        assert b.env["MIXFLEET_EMU_VISIBLE_DEVICES"] == ",".join(map(str, b.devices))
        assert b.env["MIXFLEET_DEVICE_SLOTS"] == ",".join(f"p800/{b.node}:{d}"
                                                           for d in b.devices)


def test_an_emulated_pool_runs_one_cpu_thread_per_rank() -> None:
    """An emulated pool's devices share the host's cores with every other job: its attempt
    runs one intra-op thread per rank (MIXFLEET_CPU_THREADS=1); a real pool's sets none."""
    from mixfleet.live.scheduler import build_bundles
    from mixfleet.live.spec import JobSpec, load_fleet_spec

    from .conftest import FLEET_TOML

    job = JobSpec(name="x", config_toml="", workload="digits-cnn", steps=1, global_batch=1,
                  devices=1)
    for emulated, want in ((True, "1"), (False, None)):
        pool = load_fleet_spec(FLEET_TOML, emulated=emulated).pool("h20")
        (b,) = build_bundles(job, pool, [("a", 0)], Path("c.toml"), Path("run"), 7)
        assert b.env.get("MIXFLEET_CPU_THREADS") == want


def test_report_counts_pools_and_the_nvidia_hours_replaced(fleet_dir: Path,
                                                           tmp_path: Path) -> None:
    """The report counts jobs and failures per pool and prices the samples trained on a
    non-Nvidia pool at the Nvidia pool's measured per-device rate."""
    from mixfleet.live.report import fleet_report

    store, fake, sched, ids = _setup(fleet_dir, tmp_path, 2, extra="max_restarts = 3")
    spec_p = load_job(write_job(tmp_path / "p.toml", extra='pool = "p800"'), fleet3())
    spec_h = load_job(write_job(tmp_path / "h.toml", extra='pool = "h20"'), fleet3())
    jh, jp = store.submit(spec_h), store.submit(spec_p)
    for jid in ids:
        store.request_cancel(jid)
    sched.tick()
    ah, ap = store.attempts(jh)[0], store.attempts(jp)[0]
    for jid, a, sps in ((jh, ah, 640.0), (jp, ap, 320.0)):
        rd = run_dir(fleet_dir, jid)
        rd.mkdir(parents=True, exist_ok=True)
        with open(rd / "metrics.jsonl", "w") as f:
            for step in range(1, 21):
                f.write(json.dumps({"step": step, "samples_per_s": sps,
                                    "t": a.started + step * 1e-6}) + "\n")
        _finish(fleet_dir, fake, store, jid)
    fake.status[ap.id] = Status(state="lost", reason="x")  # p800's attempt: lost once
    sched.tick()
    rep = fleet_report(fleet3(), store, fleet_dir)
    pools = {p["pool"]: p for p in rep["pools"]}
    assert pools["h20"]["jobs_run"] == 1 and pools["p800"]["jobs_run"] == 1
    assert pools["p800"]["failures"] == 1 and pools["910b"]["jobs_run"] == 0
    # 20 steps x 64 samples on p800, priced at the h20's 640 samples/s per device
    assert rep["nvidia_device_hours_replaced"] == pytest.approx(20 * 64 / 640 / 3600)
    assert rep["nvidia_speed_origin"] == ["emulated"] and rep["emulated"]
