"""Mixed-kind jobs in the live scheduler (in-memory backend, emulated pools): a job that
allows two kinds and that no single pool can hold is started over both, as one valid run
config with [[ranks]] of both kinds; drains keep working; the simulator's replay makes the
same decision on the same trace (docs/fleet-elastic.md)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from mixfleet.cli import build_parser, main
from mixfleet.cli.train import _hetero_flags
from mixfleet.fleet.policies import make_policy
from mixfleet.live.backend import Bundle
from mixfleet.live.mixkind import cost_rate
from mixfleet.live.report import fleet_report
from mixfleet.live.scheduler import Scheduler, run_dir
from mixfleet.live.spec import FleetSpec, JobSpec, load_job
from mixfleet.live.store import Store
from mixfleet.sim.elastic import TraceJob, replay
from mixfleet.train.config import RunConfig
from mixfleet.train.launch import job_placements, resolve_config
from mixfleet.train.mixed.blocklist import add_drained
from mixfleet.train.mixed.collectives import check_groups

from .conftest import fleet3, write_job
from .test_scheduler import FakeBackend

KINDS = 'kinds = ["nvidia-h20", "kunlun-p800"]'


def _bundle_config(b: Bundle) -> RunConfig:
    """The run config a bundle's `mixfleet train` resolves (as `cmd_train` does)."""
    args = build_parser().parse_args(list(b.argv[2:]))
    return resolve_config(args.config, [*args.set, f"launch.nproc={args.nproc}",
                                        *_hetero_flags(args)])


def _fleet(fleet_dir: Path, tmp_path: Path, devices: int, blocked: bool,
           fleet: FleetSpec | None = None) -> tuple[Store, FakeBackend, Scheduler, str, JobSpec]:
    """A ``devices``-device job allowing h20 and p800 (2 devices each); with ``blocked``
    one device of each pool is on the block list, so neither can hold 2."""
    fleet = fleet or fleet3()
    store = Store(fleet_dir)
    if blocked:
        store.block("h20", "h20/0", 0, None, "maintenance")
        store.block("p800", "p800/0", 0, None, "maintenance")
    spec = load_job(write_job(tmp_path / "m.toml", steps=20, devices=devices, extra=KINDS),
                    fleet, one_machine=True)
    jid = store.submit(spec)
    fake = FakeBackend(fleet)
    sched = Scheduler(fleet, store, fake, make_policy("goodput"), fleet_dir=fleet_dir,
                      mark="t")
    return store, fake, sched, jid, spec


def test_a_job_no_single_kind_can_hold_runs_mixed_as_one_valid_run_config(
        fleet_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """One free device in each of h20 and p800 and a 2-device job allowing both: it starts
    at once on one of each (a `mixed` event with its reason and predicted throughput vs
    waiting forever), as one `mixfleet train --ranks` whose config resolves to [[ranks]] of
    both kinds that may form one group; the devices are held (and reported busy) in their
    own pools and `status` shows both kinds."""
    store, fake, sched, jid, _ = _fleet(fleet_dir, tmp_path, 2, blocked=True)
    sched.tick()
    (a,) = store.attempts(jid, ("running",))
    assert sorted(a.slots) == [("h20/0", 1), ("p800/0", 1)]
    assert sorted(a.handle["pools"]) == ["h20", "p800"]
    (ev,) = [e for e in store.events(jid) if e["kind"] == "mixed"]
    d = ev["detail"]
    assert d["action"] == "mix" and d["mixed_rate"] > 0 and d["wait_s"] is None
    assert sorted(d["kinds"]) == ["kunlun-p800", "nvidia-h20"]
    assert "no pool it may use ever has 2 device(s) free" in d["reason"]
    (_, _, (b,)) = fake.started[-1]
    assert b.resources == {"chip:emu:nvidia-h20": 1.0, "chip:emu:kunlun-p800": 1.0}
    cfg = _bundle_config(b)
    assert sorted(r.device for r in cfg.ranks) == ["emu:kunlun-p800", "emu:nvidia-h20"]
    check_groups(job_placements(cfg), cfg.launch.backend)  # one job across both kinds
    # each rank stands for its own physical device (its emulated heat is that device's)
    slots = [f"{p}/{n}:{d}" for (n, d), p in zip(a.slots, a.handle["pools"], strict=True)]
    assert b.env["MIXFLEET_DEVICE_SLOTS"] == ",".join(slots)
    places = job_placements(cfg, dict(b.env))
    assert [p.device_slot for p in places] == slots
    assert [fleet3().pool(s.split("/")[0]).chip for s in slots] == [p.chip for p in places]
    free = sched._free_slots(fake.inventory())
    assert free["h20"] == {"h20/0": []} and free["p800"] == {"p800/0": []}
    assert main(["status", jid, "--dir", str(fleet_dir), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["kinds"] == ["kunlun-p800", "nvidia-h20"]
    assert main(["status", "--dir", str(fleet_dir), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["attempts"][0]["pool"] in (
        "h20+p800", "p800+h20")
    rep = fleet_report(fleet3(), store, fleet_dir)
    assert {p["pool"]: p["busy"] for p in rep["pools"]} == {"h20": 1, "p800": 1, "910b": 0}
    assert sorted(rep["jobs"][0]["pools"]) == ["h20", "p800"]


def test_a_drain_under_a_mixed_job_blocks_its_own_pools_device_and_keeps_it_running(
        fleet_dir: Path, tmp_path: Path) -> None:
    """A drained rank of a mixed attempt goes on the block list under the pool of that
    rank's device; the job goes on in the same attempt (its launcher relaunches on the
    rank left), never resized by the scheduler."""
    store, _, sched, jid, _ = _fleet(fleet_dir, tmp_path, 2, blocked=True)
    sched.tick()
    (a,) = store.attempts(jid, ("running",))
    rank = a.handle["pools"].index("p800")
    rd = run_dir(fleet_dir, jid)
    rd.mkdir(parents=True, exist_ok=True)
    add_drained(rd, rank=rank, step=3)
    sched.tick()
    assert ("p800", "p800/0", 1) in store.blocked()
    assert [x.id for x in store.attempts(jid, ("running",))] == [a.id]
    assert store.resizes(jid) == []


def test_a_job_allowing_one_kind_only_is_never_mixed(fleet_dir: Path,
                                                     tmp_path: Path) -> None:
    """The same blocked fleet, a 2-device job allowing h20 alone: it waits (no mix)."""
    fleet = fleet3()
    store = Store(fleet_dir)
    store.block("h20", "h20/0", 0, None, "maintenance")
    spec = load_job(write_job(tmp_path / "o.toml", devices=2, extra='kinds = ["nvidia-h20"]'),
                    fleet)
    jid = store.submit(spec)
    sched = Scheduler(fleet, store, FakeBackend(fleet), make_policy("goodput"),
                      fleet_dir=fleet_dir, mark="t")
    sched.tick()
    assert store.attempts(jid) == []
    assert not [e for e in store.events(jid) if e["kind"].startswith("mix")]


def test_sim_and_live_make_the_same_mix_decision_on_the_same_trace(
        fleet_dir: Path, tmp_path: Path) -> None:
    """A 3-device job allowing h20 and p800 (2 devices each, none blocked): no pool holds
    3, so both the simulator's replay and the live scheduler start it mixed, on the same
    split, priced by the same cost model."""
    store, _, sched, jid, spec = _fleet(fleet_dir, tmp_path, 3, blocked=False)
    sched.tick()
    (ev,) = [e for e in store.events(jid) if e["kind"] == "mixed"]
    live = (jid, "mix", tuple(tuple(x) for x in ev["detail"]["split"]))
    work = 20 * 64.0
    job = TraceJob(id=jid, size=3, lo=3, hi=3, work=work, per_device=(1.0,) * 3,
                   options=(0, 1), elastic=False, rate=cost_rate(spec, fleet3()))
    sim = replay([2, 2, 2], [job], [])
    assert [d.key() for _, d in sim.mixes] == [live]
    assert sum(n for _, n in live[2]) == 3 and {q for q, _ in live[2]} == {0, 1}



def test_sim_and_live_both_wait_when_one_kind_frees_soon(fleet_dir: Path,
                                                          tmp_path: Path) -> None:
    """A short job holds one h20 device, a p800 device is blocked, and a long 2-device job
    allows h20 and p800: 2 h20 devices soon beat 1 + 1 now, so both the replay and the live
    scheduler decline to mix it (its first decision recorded, the same in both)."""
    fleet = fleet3()
    store = Store(fleet_dir)
    store.block("p800", "p800/0", 0, None, "maintenance")
    short = load_job(write_job(tmp_path / "r.toml", steps=20, devices=1, extra='pool = "h20"'),
                     fleet)
    long = load_job(write_job(tmp_path / "m.toml", steps=2000, devices=2, extra=KINDS), fleet)
    jr, jm = store.submit(short), store.submit(long)
    sched = Scheduler(fleet, store, FakeBackend(fleet), make_policy("goodput"),
                      fleet_dir=fleet_dir, mark="t")
    sched.tick()
    assert store.attempts(jm) == [] and len(store.attempts(jr)) == 1
    live = [(e["job_id"], e["detail"]["action"]) for e in store.events(jm)
            if e["kind"].startswith("mix")]
    jobs = [TraceJob(id=jr, size=1, lo=1, hi=1, work=20 * 64.0, per_device=(1.0,) * 3,
                     options=(0,), elastic=False, rate=cost_rate(short, fleet)),
            TraceJob(id=jm, size=2, lo=2, hi=2, work=2000 * 64.0, per_device=(1.0,) * 3,
                     options=(0, 1), elastic=False, rate=cost_rate(long, fleet))]
    sim = replay([2, 2, 2], jobs, [], blocked=[0, 1, 0])
    assert [(d.job, d.action) for _, d in sim.mixes] == live == [(jm, "wait")]
    assert sim.mixes[0][1].wait_pool == 0 and sim.mixes[0][1].gain_s < 0


@pytest.mark.slow
def test_a_mixed_job_trains_to_the_end_on_both_kinds(fleet_dir: Path, tmp_path: Path) -> None:
    """For real (local processes, emulated chips): the blocked fleet's 2-device job allowing
    h20 and p800 starts mixed, trains its steps with one rank on each kind (the run's
    resolved config lists both) and finishes; the job is done with no restart."""
    from mixfleet.live.backend import LocalBackend

    fleet = fleet3()
    store = Store(fleet_dir)
    store.block("h20", "h20/0", 0, None, "maintenance")
    store.block("p800", "p800/0", 0, None, "maintenance")
    jid = store.submit(load_job(write_job(tmp_path / "m.toml", steps=10, devices=2,
                                          extra=KINDS), fleet))
    (tmp_path / "work").mkdir()
    sched = Scheduler(fleet, store, LocalBackend(fleet, tmp_path / "work"),
                      make_policy("goodput"), fleet_dir=fleet_dir, mark=f"mix-{time.time()}")
    end = time.monotonic() + 240
    try:
        while time.monotonic() < end:
            sched.tick()
            job = store.job(jid)
            assert job is not None
            if job.state in ("done", "failed"):
                break
            time.sleep(0.5)
    finally:
        for a in store.attempts(jid, ("running",)):
            sched.backend.stop(a.handle)
    log = "".join(p.read_text() for p in (fleet_dir / "jobs" / jid).glob("attempt-*.log"))
    assert job.state == "done" and job.restarts == 0, log
    rd = run_dir(fleet_dir, jid)
    cfg = resolve_config(rd / "config.toml", [])
    assert sorted(r.device for r in cfg.ranks) == ["emu:kunlun-p800", "emu:nvidia-h20"]
    assert (rd / "summary.json").exists()
