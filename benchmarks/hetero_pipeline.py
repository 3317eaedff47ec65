"""Heterogeneous pipeline [emulated]: one job on H20 + P800 + 910B (2 of each, one node),
a pipeline stage per kind, against fsdp across the kinds and the sum of what the six chips
deliver in their kinds' best homogeneous plans.

Fixed so that no one tunes it (issue "Heterogeneous pipeline stages"): ``--as-model
llama3-8b`` at sequence length 4096, global batch 64 sequences, micro-batch 1 sequence,
AdamW, the default links (bridge 32 GB/s, assumed). Every rank is an emulated chip
(``emu:<id>``): a small llama (16 blocks, each standing for 2 of the 32 layers) does the
real math on this CPU, and each rank is paced by the named model's figures (catalog BF16
peak x the profile's MFU; docs/emulation.md, docs/pipeline.md "Emulated stages"), every
emulated second lasting ``time scale`` wall seconds.

- **the sum**: for each kind, the cost model's best homogeneous plan (the fewest chips of
  that kind on which dp or fsdp fits llama3-8b, the faster mode there), run on the same
  emulator (as many emulated chips as the plan needs), gives its per-chip throughput; the
  sum over the six chips. The cost model's own figure is printed beside it
  (``--predicted-sum`` uses it alone, labelled predicted): the numerator and the
  denominator then come from the same emulator.
- **the fastest kind alone** (predicted): the best per-chip kind's plan on as many of its
  chips as the job has (2), when that fits.
- **fsdp across all six ranks** (measured, emulated): ``[parallel] mode = "fsdp"``, equal
  or speed shares, whichever the cost model predicts faster (fsdp runs as many
  micro-batches on every rank, a stand-in computing one sample, so speed shares can lose),
  the priced all-gathers and reduce-scatters over the bridge.
- **pipeline** (measured, emulated): ``mode = "pipeline"``, one stage per kind, fsdp inside
  a stage, 1F1B with 32 micro-batches per lane (2 lanes), the split the plan picks.

Throughput: samples per emulated second, from the mean wall time of whole steps after a
warm-up (``metrics.jsonl``) / the time scale. Targets: pipeline >= 0.85 of the sum, and
>= 1.5x fsdp across kinds.

    .venv/bin/python benchmarks/hetero_pipeline.py --as-model llama3-8b [--steps 6]

Last line: pipeline / the sum.

``--throttle``: the pipeline alone, re-splits on (``[parallel] resplit_every``); from step
``--throttle-at`` the first stage's first chip runs at half clock to the end. Printed:
throughput after the re-split / before the throttle, against the ideal for the chips as
they are then (the plan's predicted step before, and that of the best split with that
chip at half speed); last line their ratio (target >= 0.9).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_common import mean_step_s, train_cli  # noqa: E402

KINDS = ["nvidia-h20", "kunlun-p800", "ascend-910b"]
B, SEQ = 64, 4096
SMALL = ("workload.options={preset='debug', dim=64, layers=16, heads=2, kv_heads=1, "
         "ffn_dim=128, seq_len=16, tie_embeddings=false, eval_samples=2}")
COMMON = ["workload.name='llama'", SMALL, f"train.global_batch={B}", "train.optimizer='adamw'",
          "train.lr=0.002", "train.schedule='constant'", "train.warmup_steps=0",
          "checkpoint.interval=100000", "train.log_every=100000", "telemetry.hz=0",
          "health.straggler_action='report'", "launch.max_restarts=0",
          "health.hang_floor_s=600",
          "shares.max_micro_batch=1", "shares.max_accum=64",
          f"emulate.as_model_seq_len={SEQ}"]


#: fsdp across the kinds: the shares modes it may run with (the faster by the cost model)
FSDP_SHARES = (("shares.mode='equal'",), ("shares.mode='speed'",))


def ranks(kinds: list[str], per: int) -> list[str]:
    devs = [f"emu:{k}" for k in kinds for _ in range(per)]
    return ["ranks=[" + ", ".join(f'{{device = "{d}"}}' for d in devs) + "]",
            f"launch.nproc={len(devs)}"]


def config(overrides: list[str]) -> object:
    from mixfleet.train.launch import resolve_config

    return resolve_config(ROOT / "examples" / "llama-debug.toml", [*COMMON, *overrides])


def predicted(model: str, kinds: list[str], per: int, mode: str,
              extra: tuple[str, ...] = ()) -> tuple[float | None, str]:
    """The cost model's step (chip seconds) of ``mode`` on ``per`` chips of each kind."""
    from mixfleet.fleet.costmodel import predict
    from mixfleet.train.autoplan import job_of

    cfg = config([f'emulate.as_model="{model}"', *ranks(kinds, per), f"parallel.mode='{mode}'",
                  *extra])
    job, rs = job_of(cfg)  # type: ignore[arg-type]
    p = predict(job, rs, modes=(mode,), prices=cfg.emulate.link_prices())[0]  # type: ignore[attr-defined]
    return (p.step_s if p.fits else None), p.refusal


def per_chip(model: str) -> dict[str, tuple[float, int, str]]:
    """Each kind's best homogeneous plan: (samples per chip-second, chips, mode)."""
    out = {}
    for k in KINDS:
        for n in range(1, 17):
            fits = [(s, md) for md in ("dp", "fsdp") if (s := predicted(model, [k], n, md)[0])]
            if fits:
                s, md = min(fits)
                out[k] = (B / s / n, n, md)
                break
    return out


def pipeline_plan(model: str) -> tuple[dict, float]:
    """The pipeline's stages event fields and its predicted step (chip seconds)."""
    plan: Any = _plan(model)
    assert plan is not None and plan.split is not None
    return plan.fields(), plan.split.step_s


def measured(root: Path, name: str, overrides: list[str], steps: int, warm: int,
             scale: float) -> float:
    """Samples per emulated second of a run."""
    d = train_cli(ROOT / "examples" / "llama-debug.toml", root / name,
                  [*COMMON, *overrides, f"train.steps={steps}", f"emulate.time_scale={scale!r}"])
    return B / (mean_step_s(d, warm) / scale)


def events(run_dir: Path, kind: str) -> list[dict]:
    return [e for e in map(json.loads, (run_dir / "events.jsonl").read_text().splitlines())
            if e.get("event") == kind]


def step_times(run_dir: Path) -> dict[int, float]:
    """Wall time of each step of the final history (from consecutive step records of
    the same attempt)."""
    recs = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    t = [(int(r["step"]), float(r["t"])) for r in recs if "loss" in r]
    return {s: b - a for (p, a), (s, b) in zip(t, t[1:], strict=False) if s == p + 1}


def throttle(args: argparse.Namespace) -> float:
    """The re-split after a throttle against the ideal for the chips left (see the doc)."""
    from mixfleet.train.parallel.resplit import resplit

    m, at = args.as_model, args.throttle_at
    fields, pstep = pipeline_plan(m)
    scale = min(1.0, args.target_step_s / pstep)
    plan = _plan(m)
    assert plan.split is not None
    half = [t * (2.0 if s == 0 else 1.0) for s, t in enumerate(plan.split.stage_s)]
    got = resplit(plan, half)
    assert got is not None
    ideal = pstep / got[1]
    print(f"[emulated as {m}, time scale {scale:.3g}] throttle: stage 0's first chip "
          f"({fields['stages'][0]['chip']}) at half clock from step {at}; best split then "
          f"{list(got[0])} (predicted step {got[1]:.1f} chip-s against {pstep:.1f})",
          flush=True)
    with tempfile.TemporaryDirectory(prefix="hetero-pipeline-throttle-") as tmp:
        d = train_cli(ROOT / "examples" / "llama-debug.toml", Path(tmp) / "run", [
            *COMMON, f'emulate.as_model="{m}"', *ranks(KINDS, 2), "parallel.mode='pipeline'",
            "parallel.stage_mode='fsdp'", f"parallel.resplit_every={args.resplit_every}",
            f"emulate.time_scale={scale!r}", f"train.steps={args.steps}",
            f"faults.inject=['throttle@rank=0,step={at},steps=100000,clock=50']"])
        changed = events(d, "stages_changed")
        times = step_times(d)
        before = statistics.fmean(times[k] for k in range(args.warmup + 1, at) if k in times)
        if not changed:
            print("no re-split happened", flush=True)
            return 0.0
        at_step = int(changed[0]["step"])
        after = [times[k] for k in sorted(times) if k > at_step + args.warmup]
        ratio = before / statistics.fmean(after)
        print(f"[emulated as {m}] stages_changed at step {at_step}: "
              f"{changed[0]['old_blocks']} -> {[x['blocks'] for x in changed[0]['new']]} "
              f"(predicted gain {changed[0]['predicted_gain']}); throughput after the "
              f"re-split / before the throttle = {ratio:.3f}, ideal for the chips left "
              f"{ideal:.3f}", flush=True)
    return ratio / ideal


def _plan(model: str) -> object:
    from mixfleet.train.parallel.pipeplan import job_pipeline
    from mixfleet.workloads import load_workload

    cfg = config([f'emulate.as_model="{model}"', *ranks(KINDS, 2), "parallel.mode='pipeline'",
                  "parallel.stage_mode='fsdp'"])
    wl = load_workload(cfg.workload.name, cfg.workload.options)  # type: ignore[attr-defined]
    return job_pipeline(cfg, [k for k in KINDS for _ in range(2)], wl)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--as-model", default="llama3-8b")
    ap.add_argument("--steps", type=int, default=6, help="steps of each measured run")
    ap.add_argument("--warmup", type=int, default=2, help="steps left out of the mean")
    ap.add_argument("--target-step-s", type=float, default=8.0,
                    help="wall seconds the pipeline's predicted step is paced to")
    ap.add_argument("--predicted-sum", action="store_true", help="normalize by the cost "
                    "model's sum only (skip the homogeneous emulated runs)")
    ap.add_argument("--throttle", action="store_true", help="the re-split after a throttle")
    ap.add_argument("--throttle-at", type=int, default=6, help="the step the throttle starts")
    ap.add_argument("--resplit-every", type=int, default=3)
    args = ap.parse_args()
    if args.throttle:
        if args.steps < args.throttle_at + 2 * args.resplit_every + args.warmup + 2:
            args.steps = args.throttle_at + 2 * args.resplit_every + args.warmup + 4
        r = throttle(args)
        print(f"hetero pipeline throttle [emulated as {args.as_model}]: (after / before) / "
              f"ideal = {r:.3f} (target >= 0.9)")
        return 0
    m = args.as_model
    homo = per_chip(m)
    for k, (tput, n, md) in homo.items():
        print(f"[predicted] {k}: best homogeneous plan {md} on {n} chip(s): {tput:.4f} "
              f"samples/s per chip", flush=True)
    total = sum(2 * homo[k][0] for k in KINDS if k in homo)
    print(f"[predicted] the sum over the six chips (2 of each kind): {total:.4f} samples/s")
    fastest = max(homo, key=lambda k: homo[k][0])
    alone = [(s, md) for md in ("dp", "fsdp") if (s := predicted(m, [fastest], 2, md)[0])]
    if alone:
        s, md = min(alone)
        print(f"[predicted] fastest kind alone: {fastest} x2 ({md}): {B / s:.4f} samples/s "
              f"= {B / s / total:.3f} of the sum")
    else:
        print(f"[predicted] fastest kind alone: {fastest} x2: llama3-8b fits in no plan on "
              f"2 chips (= 0.000 of the sum)")
    fields, pstep = pipeline_plan(m)
    scale = min(1.0, args.target_step_s / pstep)
    print(f"[emulated as {m}, seq {SEQ}, time scale {scale:.3g}] pipeline plan: "
          + json.dumps({k: fields[k] for k in ("stages", "microbatches", "lanes", "bubble")})
          + f"; predicted step {pstep:.1f} chip-s = {B / pstep:.4f} samples/s", flush=True)
    with tempfile.TemporaryDirectory(prefix="hetero-pipeline-") as tmp:
        root = Path(tmp)
        if not args.predicted_sum:  # the kinds' homogeneous plans, run on the same emulator
            meas = {}
            for k, (tput, n, md) in homo.items():  # each at the time scale of its own step
                ks = min(1.0, args.target_step_s / (B / tput / n))
                meas[k] = measured(root, f"homo-{k}", [f'emulate.as_model="{m}"',
                                                       *ranks([k], n), f"parallel.mode='{md}'"],
                                   args.steps, args.warmup, ks) / n
                print(f"[emulated as {m}] {k}: {md} on {n} chip(s): {meas[k]:.4f} samples/s "
                      f"per chip (predicted {homo[k][0]:.4f})", flush=True)
            total = sum(2 * meas[k] for k in KINDS if k in meas)
            print(f"[emulated as {m}] the sum over the six chips, measured on the emulator: "
                  f"{total:.4f} samples/s (the ratios below use it)", flush=True)
        base = [f'emulate.as_model="{m}"', *ranks(KINDS, 2)]
        # fsdp's best shares (every rank runs as many micro-batches, a stand-in costing a
        # sample: speed shares can lose); run and predicted with the same ones
        fsh = min(FSDP_SHARES, key=lambda x: predicted(m, KINDS, 2, "fsdp", x)[0] or 1e30)
        fsdp = measured(root, "fsdp", [*base, "parallel.mode='fsdp'", *fsh],
                        args.steps, args.warmup, scale)
        ps, pr = predicted(m, KINDS, 2, "fsdp", fsh)
        print(f"[emulated as {m}] fsdp across all six ranks ({fsh[0]}): {fsdp:.4f} "
              f"samples/s = "
              f"{fsdp / total:.3f} of the sum (predicted "
              + (f"{B / ps:.4f} samples/s)" if ps else f"refused: {pr})"), flush=True)
        pipe = measured(root, "pipeline", [*base, "parallel.mode='pipeline'",
                                           "parallel.stage_mode='fsdp'"],
                        args.steps, args.warmup, scale)
        print(f"[emulated as {m}] pipeline: {pipe:.4f} samples/s = {pipe / total:.3f} of the "
              f"sum (predicted {B / pstep:.4f}; measured / predicted "
              f"{pipe / (B / pstep):.3f})", flush=True)
        print(f"[emulated as {m}] pipeline / fsdp across kinds = {pipe / fsdp:.2f} "
              f"(target >= 1.5)")
        given = "parallel.stages=[" + ", ".join(
            f"{{chip='{x['chip']}', ranks={x['ranks']}, blocks={x['blocks']}}}"
            for x in fields["stages"]) + "]"
        cm, why = predicted(m, KINDS, 2, "pipeline", ("parallel.stage_mode='fsdp'", given))
        print(f"[emulated as {m}] the cost model (plan-job) for this pipeline: "
              + (f"{B / cm:.4f} samples/s; predicted / measured = {B / cm / pipe:.3f} "
                 f"(target 0.90-1.10)" if cm else f"refused: {why}"), flush=True)
        pick = max((("fsdp", ps), ("pipeline", cm)), key=lambda x: B / x[1] if x[1] else 0)
        best = max(("fsdp", fsdp), ("pipeline", pipe), key=lambda x: x[1])
        print(f"[emulated as {m}] plan-job's pick of the two: {pick[0]}; the best measured: "
              f"{best[0]}; pick's measured / best measured = "
              f"{(fsdp if pick[0] == 'fsdp' else pipe) / best[1]:.3f} (target >= 0.95)")
    print(f"hetero pipeline [emulated as {m}]: pipeline = {pipe / total:.3f} of the sum "
          f"(target >= 0.85)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
