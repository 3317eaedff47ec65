"""Mixed-kind jobs in the live scheduler, the review's fixes (issue 27): real pools get
run configs that resolve, no job waits unexplained or beyond what its fleet can mix,
a mixed attempt counts on each pool it holds, the block list is read once per attempt
(docs/fleet-elastic.md)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mixfleet.cli import main
from mixfleet.errors import ConfigError, MixfleetError
from mixfleet.live.control import STATE_FILE
from mixfleet.live.scheduler import run_dir
from mixfleet.live.spec import load_fleet_spec, load_job
from mixfleet.live.store import Store
from mixfleet.train.mixed.blocklist import add_drained

from .conftest import FLEET_TOML, fleet3, write_job
from .test_mixkind import KINDS, _bundle_config, _fleet


def test_a_mixed_job_on_real_pools_gets_a_run_config_that_resolves(
        fleet_dir: Path, tmp_path: Path) -> None:
    """On real (not emulated) h20 and p800 pools with one device of each blocked, the
    2-device job starts mixed as one `mixfleet train` whose config resolves (no launch)
    to one rank per kind, each the chip's torch device with its catalog chip named, on
    each pool's own chip resource."""
    real = load_fleet_spec(FLEET_TOML, emulated=False)
    store, fake, sched, jid, _ = _fleet(fleet_dir, tmp_path, 2, blocked=True, fleet=real)
    sched.tick()
    assert len(store.attempts(jid, ("running",))) == 1
    (_, _, (b,)) = fake.started[-1]
    assert b.resources == {"chip:nvidia-h20": 1.0, "chip:kunlun-p800": 1.0}
    assert "MIXFLEET_EMULATED" not in b.env and b.env["XPU_VISIBLE_DEVICES"] == "1"
    cfg = _bundle_config(b)
    assert sorted((r.device, r.chip) for r in cfg.ranks) == [
        ("cuda", "kunlun-p800"), ("cuda", "nvidia-h20")]


def test_a_job_larger_than_any_pool_is_refused_at_submit_unless_one_machine(
        fleet_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A 3-device job of two kinds (pools of 2): accepted on a one-machine fleet (it can
    run mixed); on a joined cluster, where mixing never happens, `submit` exits 2 naming
    the field, the value and the fix, and stores nothing."""
    job = write_job(tmp_path / "m.toml", devices=3, extra=KINDS)
    assert load_job(job, fleet3(), one_machine=True).devices == 3
    with pytest.raises(ConfigError, match="'devices' is 3.*one machine.*lower devices to 2"):
        load_job(job, fleet3())
    state = json.loads((fleet_dir / STATE_FILE).read_text())
    (fleet_dir / STATE_FILE).write_text(json.dumps({**state, "backend": "ray",
                                                    "embedded": False}))
    assert main(["submit", str(job), "--dir", str(fleet_dir)]) == 2
    assert "'devices' is 3" in capsys.readouterr().err
    assert Store(fleet_dir).jobs() == []


def test_a_job_the_cost_model_refuses_everywhere_is_declined_with_the_error(
        fleet_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The blocked fleet's 2-device job, every split refused by the cost model: it waits
    with a `mix_declined` event carrying the model's error (not silently); a bug in the
    model (RuntimeError) is not swallowed."""
    import mixfleet.train.autoplan as autoplan

    def refuse(*a: object, **k: object) -> object:
        raise MixfleetError("needs 99 GiB per rank")

    monkeypatch.setattr(autoplan, "plan_run", refuse)
    store, _, sched, jid, _ = _fleet(fleet_dir, tmp_path, 2, blocked=True)
    sched.tick()
    assert store.attempts(jid) == []
    (ev,) = [e for e in store.events(jid) if e["kind"] == "mix_declined"]
    assert ev["detail"]["split"] == [] and "needs 99 GiB per rank" in ev["detail"]["error"]

    def bug(*a: object, **k: object) -> object:
        raise RuntimeError("a bug")

    monkeypatch.setattr(autoplan, "plan_run", bug)
    (tmp_path / "f2").mkdir()
    _, _, sched2, _, _ = _fleet(tmp_path / "f2", tmp_path, 2, blocked=True)
    with pytest.raises(RuntimeError, match="a bug"):
        sched2.tick()


def test_a_mixed_attempt_counts_on_each_pool_it_holds(fleet_dir: Path,
                                                      tmp_path: Path) -> None:
    """A 3-device job mixed over h20 and p800: the policy's snapshot lists it running in
    each of those pools with the devices it holds there (each pool's running devices +
    free = its capacity), and the ends other jobs' decisions see are per pool too."""
    store, fake, sched, jid, _ = _fleet(fleet_dir, tmp_path, 3, blocked=False)
    sched.tick()
    (a,) = store.attempts(jid, ("running",))
    held = {i: a.handle["pools"].count(p.id) for i, p in enumerate(sched.fleet.pools)}
    snap, _ = sched.snapshot(fake.inventory())
    for p in snap.pools:
        assert sum(x.devices for x in snap.running[p.index]) == held[p.index]
        assert held[p.index] + snap.free[p.index] == p.capacity
    assert [v.id for v in snap.jobs if v.pool is not None] == [jid]
    ends = sched._ends("other")
    assert sorted((q, n) for q, _, n in ends) == sorted((q, n) for q, n in held.items() if n)
    assert len({t for _, t, _ in ends}) == 1


def test_free_slots_read_a_mixed_attempts_block_list_once(
        fleet_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A drained mixed attempt whose block list changes between two reads (unreadable,
    then read): the free devices come from one read (no mismatch between its slots and
    their pools)."""
    import mixfleet.live.elastic as elastic

    store, fake, sched, jid, _ = _fleet(fleet_dir, tmp_path, 2, blocked=True)
    sched.tick()
    (a,) = store.attempts(jid, ("running",))
    rd = run_dir(fleet_dir, jid)
    rd.mkdir(parents=True, exist_ok=True)
    add_drained(rd, rank=a.handle["pools"].index("p800"), step=3)
    sched.tick()
    real, calls = elastic.read_entries, []

    def flaky(root: Path) -> list[dict[str, object]]:
        calls.append(root)
        if len(calls) % 2:
            raise OSError("being rewritten")
        return real(root)

    monkeypatch.setattr(elastic, "read_entries", flaky)
    free = sched._free_slots(fake.inventory())
    assert free["h20"] == {"h20/0": []} and len(calls) == 1
