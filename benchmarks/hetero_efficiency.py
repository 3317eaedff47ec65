"""Heterogeneous efficiency [emulated]: one job on three emulated chips against what each kind
delivers on its own.

Every figure here is **emulated**: ``emu:nvidia-h20``, ``emu:kunlun-p800`` and
``emu:ascend-910b`` run the real computation on this machine's CPU and are paced by their
profiles (``mixfleet/emulate/profiles.toml``: relative speed from the catalog, fixed costs
per step and per micro-batch, all assumed) and by the priced links (intra from the catalog,
bridge ``[emulate] bridge_gbps`` = 32 GB/s and NIC 25 GB/s by default, assumed). The
script prints the profile and links it used. Throughput comes from the mean wall time of
whole steps (the time between consecutive step records of ``metrics.jsonl`` after a
warm-up: it includes the collectives, the optimizer and all post-step work).

Two questions:

1. ``--sample-ms 1,0.5,0.25`` (digits-cnn, global batch 128, dp or fsdp): the pace is
   ``sample_s`` per sample at relative speed 1.0; the sweep goes down to where that budget
   comes close to the real compute. For each value: each chip alone, then the three with
   shares measured and rebalanced; the ratio mixed / sum of solo throughputs, and beside it
   the exposed overhead in ms per step (mixed step time minus the cost model's prediction
   of the paced step: what the loop, gloo and the CPU add). ``--throttle`` adds a throttle
   episode (the H20 at 50% clock) with rebalance on and off.
2. ``--as-model llama3-8b``: each rank paced as if it trained Llama-3-8B (the small debug
   model does the math). Each kind's best homogeneous plan (the fewest chips of that kind on
   which a mode fits, the faster mode there) gives its per-chip throughput; each mode that
   fits on H20 + P800 + 910B is reported as a fraction of the sum of the three per-chip
   throughputs, beside the cost model's predicted fraction. A mode that fits no chip says
   so (dp of llama3-8b fits none of them). There is no target: this reports what the links
   cost.

    .venv/bin/python benchmarks/hetero_efficiency.py [--sample-ms 1,0.5,0.25] [--parallel dp]
    .venv/bin/python benchmarks/hetero_efficiency.py --as-model llama3-8b [--batch 24]
Last line: the ratio (the mixed run's throughput / the sum over the chips).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_common import mean_step_s, train_cli  # noqa: E402

CHIPS = ["emu:nvidia-h20", "emu:kunlun-p800", "emu:ascend-910b"]
COMMON = ["checkpoint.interval=100000", "train.log_every=100000", "telemetry.hz=0",
          'health.straggler_action="report"', "launch.max_restarts=0",
          "train.warmup_steps=0"]


def ranks(devs: list[str]) -> list[str]:
    return ["ranks=[" + ", ".join(f'{{device = "{d}"}}' for d in devs) + "]",
            f"launch.nproc={len(devs)}"]


def train(example: str, run_dir: Path, overrides: list[str]) -> Path:
    return train_cli(ROOT / "examples" / example, run_dir, [*COMMON, *overrides])


def last_shares(run_dir: Path) -> list[int] | None:
    ev = [json.loads(x) for x in (run_dir / "events.jsonl").read_text().splitlines()]
    ch = [e["new"] for e in ev if e.get("event") == "shares_changed"]
    return ch[-1] if ch else None


def predicted_step_s(example: str, overrides: list[str], mode: str,
                     shares: list[int] | None = None) -> tuple[float | None, str]:
    """The cost model's step (chip seconds) of a run, with its final shares if known."""
    from mixfleet.fleet.costmodel import predict
    from mixfleet.train.autoplan import job_of
    from mixfleet.train.launch import resolve_config

    cfg = resolve_config(ROOT / "examples" / example, [*COMMON, *overrides])
    job, rs = job_of(cfg)
    if shares is not None:
        job = dataclasses.replace(job, shares=tuple(shares))
    p = predict(job, rs, modes=(mode,), prices=cfg.emulate.link_prices())[0]
    return (p.step_s if p.fits else None), p.refusal


def header() -> None:
    from mixfleet.emulate.pricing import LinkPrices
    from mixfleet.emulate.profile import get_profile

    lp = LinkPrices()
    print(f"[emulated] links: bridge {lp.bridge_gbps:g} GB/s ({lp.bridge_origin}), nic "
          f"{lp.nic_gbps:g} GB/s ({lp.nic_origin}), intra: catalog link_gbps")
    for c in CHIPS:
        p = get_profile(c[4:])
        print(f"[emulated] profile {c}: step_fixed {p.step_fixed_ms} ms, micro-batch fixed "
              f"{p.microbatch_fixed_ms} ms, saturate {p.saturate_samples:g} samples / "
              f"{p.saturate_tokens:g} tokens, "
              f"exponent {p.efficiency_exponent:g}, mfu {p.mfu:g} ({p.cost_source})",
              flush=True)


def sweep(args: argparse.Namespace, root: Path) -> float:
    b, warm = 128, 10
    mode = args.parallel
    last = 0.0
    for ms in [float(x) for x in args.sample_ms.split(",")]:
        base = [f"emulate.sample_s={ms / 1000}", f"train.global_batch={b}",
                f"parallel.mode=\"{mode}\""]
        solo = 0.0
        for c in CHIPS:
            d = train("digits-cnn.toml", root / f"solo-{ms}-{c[4:]}",
                      [*base, *ranks([c]), "train.steps=25"])
            solo += b / mean_step_s(d, 5)
        mixed = [*base, *ranks(CHIPS), f"train.steps={args.steps}",
                 'shares.mode="measured"', "shares.rebalance_every=10"]
        d = train("digits-cnn.toml", root / f"mixed-{ms}", mixed)
        step = mean_step_s(d, warm)
        pred, _ = predicted_step_s("digits-cnn.toml", mixed, mode, last_shares(d))
        over = (step - pred) * 1e3 if pred is not None else float("nan")
        last = b / step / solo
        print(f"[emulated] {mode} sample {ms:g} ms: mixed {b / step:.0f} samples/s, sum of "
              f"solo {solo:.0f}; mixed / sum = {last:.3f}; exposed overhead "
              f"{over:.1f} ms per step (measured {step * 1e3:.1f} ms, paced budget "
              f"{(pred or 0) * 1e3:.1f} ms)", flush=True)
        if args.throttle and ms == float(args.sample_ms.split(",")[0]):
            throttle(base, root / str(ms))
    return last


def throttle(base: list[str], root: Path) -> None:
    """The H20 at 50% clock in steps 20-60 of 70; shares by speed, then rebalanced every 5
    steps against the same shares throughout (throughput over steps 15-70)."""
    ov = [*base, *ranks(CHIPS), "train.steps=70", 'shares.mode="speed"',
          "faults.inject=['throttle@rank=0,step=20,steps=40,clock=50']"]
    out = {}
    for name, extra in (("on", ["shares.rebalance_every=5"]), ("off", [])):
        d = train("digits-cnn.toml", root / f"throttle-{name}", [*ov, *extra])
        out[name] = 1.0 / mean_step_s(d, 15)
    print(f"[emulated] throttle episode (H20 at 50% clock, steps 20-60): rebalance on/off "
          f"= {out['on'] / out['off']:.3f}", flush=True)


def as_model(args: argparse.Namespace, root: Path) -> float:
    b, warm, m = args.batch, 3, args.as_model
    base = [f'emulate.as_model="{m}"', f"workload.options.seq_len={args.seq_len}",
            "parallel.activation_checkpointing=true",
            "workload.options.eval_samples=2", f"train.global_batch={b}",
            f"shares.max_micro_batch={args.micro}", "shares.max_accum=64"]
    ex = "llama-debug.toml"
    preds = [predicted_step_s(ex, [*base, *ranks(CHIPS)], md)[0] for md in ("dp", "fsdp")]
    slow = max((p for p in preds if p is not None), default=1.0)
    scale = min(1.0, args.target_step_s / slow)
    base.append(f"emulate.time_scale={scale!r}")
    print(f"[emulated as {m}, time scale {scale:.3g}] {b} sequences of its own length, "
          f"activation checkpointing (the small model: {args.seq_len} tokens)", flush=True)
    per_chip, pred_chip = {}, {}
    for c in CHIPS:
        best = None
        for k in range(1, 9):
            fits = [(p, md) for md in ("dp", "fsdp")
                    if (p := predicted_step_s(ex, [*base, *ranks([c] * k),
                                                   f'parallel.mode="{md}"'], md)[0])]
            if fits:
                best = (k, *min(fits))
                break
        if best is None:
            print(f"{c}: no homogeneous plan of up to 8 chips fits {m}", flush=True)
            continue
        k, p, md = best
        d = train(ex, root / f"homo-{c[4:]}", [*base, *ranks([c] * k), f'parallel.mode="{md}"',
                                                f"train.steps={warm + 5}"])
        per_chip[c] = b / (mean_step_s(d, warm) / scale) / k
        pred_chip[c] = b / p / k
        print(f"[emulated as {m}] {c}: best homogeneous plan {md} on {k} chip(s): "
              f"{per_chip[c]:.3f} samples/s per chip (predicted {pred_chip[c]:.3f})",
              flush=True)
    total, ptotal = sum(per_chip.values()), sum(pred_chip.values())
    frac = float("nan")
    for md in ("dp", "fsdp"):
        ov = [*base, *ranks(CHIPS), f'parallel.mode="{md}"', 'shares.mode="speed"',
              f"train.steps={warm + 5}"]
        p, refusal = predicted_step_s(ex, ov, md)
        if p is None:
            print(f"[emulated as {m}] {md} on H20 + P800 + 910B: {refusal}", flush=True)
            continue
        d = train(ex, root / f"mixed-{md}", ov)
        step = mean_step_s(d, warm) / scale
        f = b / step / total if total else float("nan")
        frac = f if frac != frac or f > frac else frac
        print(f"[emulated as {m}] {md} on H20 + P800 + 910B: {b / step:.3f} samples/s = "
              f"{f:.3f} of the sum of per-chip homogeneous throughputs (predicted "
              f"{b / p / ptotal:.3f}); exposed overhead {(step - p) * scale * 1e3:.1f} ms "
              f"per wall step", flush=True)
    return frac


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sample-ms", default="1,0.5,0.25",
                    help="comma-separated ms per sample at speed 1.0, swept in order")
    ap.add_argument("--steps", type=int, default=50, help="steps of the mixed runs")
    ap.add_argument("--parallel", choices=("dp", "fsdp"), default="dp")
    ap.add_argument("--throttle", action="store_true", help="also a throttle episode with "
                    "rebalance on and off (at the first --sample-ms)")
    ap.add_argument("--as-model", help="a llama preset: the second question")
    ap.add_argument("--seq-len", type=int, default=64,
                    help="tokens per sequence of the small model that does the math")
    ap.add_argument("--batch", type=int, default=24, help="global batch (sequences)")
    ap.add_argument("--micro", type=int, default=1, help="sequences a rank holds at once")
    ap.add_argument("--target-step-s", type=float, default=2.0,
                    help="wall seconds the mixed step is paced to (sets the time scale)")
    args = ap.parse_args()
    header()
    with tempfile.TemporaryDirectory(prefix="hetero-") as tmp:
        if args.as_model:
            r = as_model(args, Path(tmp))
            print(f"hetero efficiency [emulated as {args.as_model}] (best mode that fits / "
                  f"sum of per-chip homogeneous throughputs; no target): {r:.3f}")
        else:
            r = sweep(args, Path(tmp))
            print(f"hetero efficiency [emulated] (mixed / sum of solo throughputs at the "
                  f"smallest sample time): {r:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
