"""plan-job and [parallel] mode = "auto": deterministic plans, bad input, the plan event."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mixfleet.cli import main
from mixfleet.config import load_toml
from mixfleet.train.autoplan import plan_run, resolve_auto
from mixfleet.train.launch import prepare_run, resolve_config

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "plan-mixed.toml"


def test_plan_job_prints_the_same_plan_every_time(capsys: pytest.CaptureFixture[str]) -> None:
    """The same config gives the same lines, labelled emulated, with the pick and why the
    other mode loses."""
    assert main(["plan-job", str(EXAMPLE)]) == 0
    first = capsys.readouterr().out
    assert main(["plan-job", str(EXAMPLE)]) == 0
    assert capsys.readouterr().out == first
    assert "emulated as llama3-8b" in first
    assert "pick: fsdp" in first and "dp loses: dp does not fit: ascend-910b" in first
    assert main(["plan-job", str(EXAMPLE), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["pick"] == "fsdp" and doc["emulated"] is True
    assert {p["mode"] for p in doc["plans"]} == {"dp", "fsdp", "pipeline"}


@pytest.mark.parametrize(("argv", "named", "fix"), [
    (["--as-model", "llama9-x"], "as_model = 'llama9-x'", "llama3-8b"),
    (["--set", "emulate.bridge_gbps=0"], "emulate.bridge_gbps", "bridge_gbps = 32"),
    (["--set", "emulate.nic_gbps=-5"], "emulate.nic_gbps", "nic_gbps = 25"),
    (["--set", "emulate.time_scale=2.0"], "emulate.time_scale", "time_scale = 0.001"),
    (["--ranks", "emu:nvidia-h20,emu:warp-9"], "'emu:warp-9'", "emu:<chip-id>"),
    (["--ranks", "emu:nvidia-h20@x"], "node 'x'", "DEVICE@NODE"),
])
def test_bad_input_exits_2_naming_the_field_and_the_fix(
        argv: list[str], named: str, fix: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Unknown preset or chip, zero or negative bandwidth, time scale out of range: exit 2,
    one message with the field, the value and the fix."""
    assert main(["plan-job", str(EXAMPLE), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and named in err and fix in err


def test_auto_resolves_at_launch_and_records_the_plan(tmp_path: Path) -> None:
    """mode = "auto" becomes the plan's pick in config.toml, and the run's plan event holds
    the predicted figures (wall seconds = chip seconds x time scale)."""
    cfg = resolve_config(EXAMPLE, [])
    resolved, plan = resolve_auto(cfg)
    assert plan is not None and plan.pick is not None
    assert resolved.parallel.mode == plan.pick.mode == "fsdp"
    run = prepare_run(cfg, tmp_path / "run")
    assert load_toml(run.config)["parallel"]["mode"] == "fsdp"
    ev = [e for e in run.read_events() if e["event"] == "plan"]
    assert len(ev) == 1 and ev[0]["mode"] == "fsdp"
    assert ev[0]["predicted_wall_step_s"] == pytest.approx(plan.pick.step_s * 0.001)
    assert ev[0]["predicted_step_s"] == pytest.approx(plan_run(cfg).pick.step_s)  # type: ignore[union-attr]


def test_auto_without_a_plan_that_fits_exits_2_and_writes_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """mode = "auto" on one 910B (llama3-8b fits it under no mode): exit 2 with each mode's
    refusal and the fix; the run directory is not created."""
    run = tmp_path / "run"
    assert main(["train", str(EXAMPLE), "--ranks", "emu:ascend-910b", "--set",
                 "shares.max_accum=32", "--run-dir", str(run)]) == 2
    err = capsys.readouterr().err
    assert "found no plan that fits" in err and "HBM 64 GiB" in err and "add ranks" in err
    assert not run.exists()


def test_report_sets_predicted_against_measured(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """`mixfleet report` prints the plan's predicted step time beside the median measured
    one (the first step left out) and their ratio."""
    run = tmp_path / "run"
    run.mkdir()
    events = [{"t": 0.0, "event": "launch"}, {"t": 0.05, "event": "run_start"},
              {"t": 0.1, "event": "plan", "mode": "fsdp", "label": "emulated",
               "predicted_wall_step_s": 0.5, "time_scale": None}]
    steps = [{"t": 1.0 + i, "step": i + 1, "loss": 1.0, "step_s": s}
             for i, s in enumerate([3.0, 0.4, 0.5, 0.6])]
    (run / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in steps))
    assert main(["report", str(run), "--out", str(tmp_path / "t.png")]) == 0
    out = capsys.readouterr().out
    assert "predicted 0.5000s, measured 0.5000s, predicted/measured = 1.00" in out


@pytest.mark.slow
def test_auto_run_trains_with_the_pick_and_reports_both(tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]
                                                        ) -> None:
    """A tiny emulated 3-kind run with mode = "auto" trains under fsdp (dp of llama3-8b fits
    none of the chips) and its report shows predicted and measured step time."""
    cfg = tmp_path / "tiny.toml"
    text = EXAMPLE.read_text().replace("seq_len = 64", "seq_len = 16")
    text = text.replace("steps = 20", "steps = 3").replace("global_batch = 24",
                                                           "global_batch = 6")
    cfg.write_text(text + "\n[launch]\nmax_restarts = 0\n")
    assert main(["train", str(cfg), "--run-dir", str(tmp_path / "run")]) == 0
    assert "parallel mode auto -> fsdp" in capsys.readouterr().out
    assert main(["report", str(tmp_path / "run"), "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["plan"]["mode"] == "fsdp" and rep["plan"]["measured_step_s"] > 0


def test_predicted_step_takes_the_emulators_time_scale_when_chosen_at_run_time() -> None:
    """Under as_model without a configured time scale the prediction is converted with the
    scale the emulator chose (its emulated_as event)."""
    from mixfleet.report.predicted import predicted_vs_measured

    events = [{"event": "plan", "mode": "fsdp", "predicted_step_s": 50.0,
               "predicted_wall_step_s": None},
              {"event": "emulated_as", "time_scale": 0.01}]
    steps = [{"step_s": 0.9}, {"step_s": 0.5}, {"step_s": 0.5}]
    got = predicted_vs_measured(events, steps)
    assert got is not None and got["predicted_step_s"] == pytest.approx(0.5)
    assert got["predicted_over_measured"] == pytest.approx(1.0)
    assert predicted_vs_measured(events[1:], steps) is None


@pytest.mark.parametrize("ranks", [1, 2])
def test_fsdp_prediction_takes_the_shares_and_pace_the_emulated_run_takes(ranks: int) -> None:
    """Under [shares] mode = "speed" the cost model predicts the shares the run starts with
    (the trainer's own), not the ones it would balance, and each rank's predicted compute +
    fixed costs is its emulated chip's budget under as_model for the micro-batches the
    trainer runs (fsdp: as many on every rank, stand-ins priced as one sample); with
    rebalancing it predicts the balanced shares."""
    import torch

    from mixfleet.emulate import load_profiles, parse_emu_device
    from mixfleet.emulate.asmodel import plan_as_model
    from mixfleet.fleet.costmodel import predict
    from mixfleet.train.autoplan import job_of
    from mixfleet.train.mixed.fleetstep import MixedFleetStep
    from mixfleet.train.mixed.rebalance import initial_plan, rank_devices

    kinds = ["nvidia-h20", "kunlun-p800", "ascend-910b"]
    devs = [f"emu:{k}" for k in kinds for _ in range(ranks)]
    over = ["parallel.mode='fsdp'", "train.global_batch=64", "shares.max_accum=64",
            "ranks=[" + ", ".join(f'{{device = "{d}"}}' for d in devs) + "]"]
    cfg = resolve_config(EXAMPLE, over)
    job, rs = job_of(cfg)
    shares, micros, _ = initial_plan(cfg, rank_devices(cfg, len(devs)), cfg.workload.name)
    assert job.shares == tuple(shares)
    plan = predict(job, rs, modes=("fsdp",), prices=cfg.emulate.link_prices())[0]
    profiles = load_profiles()
    emu = plan_as_model("llama3-8b", [parse_emu_device(d) for d in devs], profiles,
                        shares=shares, micros=micros, mode="fsdp", optimizer="adamw",
                        check_memory=False)
    fleet_step = MixedFleetStep(None, world=len(devs), micro=1, micros=micros)  # type: ignore[arg-type]
    for r, rp in enumerate(plan.ranks):
        split = fleet_step.split(torch.arange(shares[r]), shares, uniform=True)
        tokens = [float((len(c) or 1) * emu.shape.seq_len) for c in split]
        want = profiles[rp.chip].step_cost("tokens").step_s(tokens, emu.token_s[rp.chip])
        assert rp.busy_s == pytest.approx(want, rel=1e-9)
    assert len({len(r.micro_batches) for r in plan.ranks}) == 1
    balanced = job_of(resolve_config(EXAMPLE, [*over, "shares.rebalance_every=5"]))[0]
    assert balanced.shares is None
    bal = predict(balanced, rs, modes=("fsdp",), prices=cfg.emulate.link_prices())[0]
    assert tuple(r.share for r in bal.ranks) != tuple(shares)  # the two differ here
