"""Plan accuracy (emulated): the cost model's predicted step time against the measured one.

For dp and fsdp on 1, 2 and 3 kinds of emulated chip (two ``emu:nvidia-h20``, then
``+ emu:kunlun-p800``, then ``+ emu:ascend-910b``) and two ``[emulate] as_model`` sizes
(default llama3-1b and llama3-8b), ``mixfleet plan-job``'s model predicts the step and
``mixfleet train`` runs it; each line prints ``predicted/measured``. A mode that does not
fit the chips' HBM is reported as refused (with the numbers), not run.

The prediction does not read the pacing's own figures: each chip's seconds per token come
from throughput rows taken at another micro-batch size than the runs' (one-rank emulated
runs at ``--row-micro`` sequences, the runs hold ``--micro``), or from ``--table`` (rows of
``mixfleet bench``). Every run is emulated and labelled so: the emulator paces by figures
of the same kind (catalog peak x assumed MFU, assumed fixed costs, assumed links), so this
checks how the planner accounts for the schedule (micro-batches, fixed costs, no overlap,
the real loop and gloo on top), not the figures themselves; the accuracy check on
hardware is a GPU run (docs/costmodel.md).

Measured step time: the mean wall time between consecutive step records after
``--warmup`` steps (whole steps), divided by nothing: predictions are converted to wall
seconds with the run's ``[emulate] time_scale`` (chosen per model so that the slowest
predicted step takes about ``--target-step-s`` of wall time, 3 s by default: with less, the
small model's real CPU compute exceeds the paced budget and the run measures the host).
The ratio summary is last (target: every ratio within 0.90-1.10).

    .venv/bin/python benchmarks/plan_accuracy.py [--as-models llama3-1b,llama3-8b] \
        [--seq-len 128] [--steps 12] [--predict-only]
Tiny check (about a minute here): ``--as-models llama3-1b --kinds 1 --modes dp --steps 4
--warmup 1 --seq-len 16 --batch 4``.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_common import mean_step_s, train_cli  # noqa: E402

CHIPS = ["emu:nvidia-h20", "emu:kunlun-p800", "emu:ascend-910b"]
BASE = ROOT / "examples" / "llama-debug.toml"


def sets(devs: list[str], *, as_model: str, seq: int, batch: int, micro: int, steps: int,
         scale: float | None, mode: str) -> list[str]:
    ranks = "ranks=[" + ", ".join(f'{{device = "{d}"}}' for d in devs) + "]"
    out = [ranks, f"launch.nproc={len(devs)}", f"workload.options.seq_len={seq}",
           "workload.options.eval_samples=2", f"train.steps={steps}",
           f"train.global_batch={batch}", "train.warmup_steps=0", 'shares.mode="equal"',
           f"shares.max_micro_batch={micro}", "shares.max_accum=64",
           f'emulate.as_model="{as_model}"', f'parallel.mode="{mode}"',
           "parallel.activation_checkpointing=true",
           "checkpoint.interval=100000", "train.log_every=100000", "telemetry.hz=0",
           'health.straggler_action="report"', "launch.max_restarts=0"]
    return out + ([f"emulate.time_scale={scale!r}"] if scale is not None else [])


def predict(overrides: list[str], mode: str, rows: list) -> tuple[float | None, str, float]:
    """(predicted chip seconds per step or None, refusal, time scale) of one run."""
    from mixfleet.train.autoplan import plan_run
    from mixfleet.train.launch import resolve_config

    cfg = resolve_config(BASE, overrides)
    p = plan_run(cfg, modes=(mode,), rows=rows).plans[0]
    return (p.step_s if p.fits else None), p.refusal, cfg.emulate.time_scale or 1.0


def train(run_dir: Path, overrides: list[str]) -> Path:
    return train_cli(BASE, run_dir, overrides)


def rows_for(model: str, chip: str, root: Path, args: argparse.Namespace, scale: float
             ) -> list:
    """A throughput row of ``model`` on ``chip``: an emulated run on the fewest ranks of
    that chip that hold the model under fsdp, each holding ``--row-micro`` sequences (not
    the runs' ``--micro``); the model's predicted intra-chip communication of that run is
    taken out, so the row is one rank's compute and fixed costs."""
    from mixfleet.catalog.table import ThroughputRow

    b = args.row_micro
    for k in range(1, 9):
        ov = sets([chip] * k, as_model=model, seq=args.seq_len, batch=b * k, micro=b,
                  steps=args.warmup + 3, scale=scale, mode="fsdp")
        chip_s, _, _ = predict(ov, "fsdp", [])
        if chip_s is not None:
            break
    else:
        raise SystemExit(f"{model} fits no group of up to 8 {chip}; pass --table")
    from mixfleet.train.autoplan import plan_run
    from mixfleet.train.launch import resolve_config

    comm = sum(plan_run(resolve_config(BASE, ov), modes=("fsdp",)).plans[0].comm.values())
    d = train(root / f"row-{model}-{chip[4:]}", ov)
    step = mean_step_s(d, args.warmup) / scale - comm  # chip seconds of compute + fixed
    print(f"row {model} on {chip} [emulated]: {k} rank(s) x micro-batch {b}: "
          f"{step:.4f} chip s per step without its predicted communication", flush=True)
    return [ThroughputRow(workload=model, chip=chip[4:], batch=b, samples_per_s=b / step,
                          step_p50_s=step, step_p90_s=None, mfu=None, peak_mem_bytes=None,
                          host="emulated", torch_version="", date="", emulated=True,
                          origin="emulated", note=f"{k}-rank fsdp run, micro-batch {b}")]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--as-models", default="llama3-1b,llama3-8b")
    ap.add_argument("--kinds", default="1,2,3", help="how many chip kinds (1, 2, 3)")
    ap.add_argument("--modes", default="dp,fsdp")
    ap.add_argument("--seq-len", type=int, default=64, help="tokens per sequence of the small "
                    "model that does the math (the paced model has its own)")
    ap.add_argument("--batch", type=int, default=12, help="global batch (sequences)")
    ap.add_argument("--micro", type=int, default=1, help="sequences a rank holds at once")
    ap.add_argument("--row-micro", type=int, default=2, help="micro-batch of the row runs")
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--target-step-s", type=float, default=3.0,
                    help="wall seconds of the slowest predicted step (default 3: the paced "
                         "budget must stay well above the small model's real CPU compute, "
                         "else the run measures the host, not the pacing; at 0.5 every "
                         "fsdp ratio fell to 0.5-0.8)")
    ap.add_argument("--table", help="rows from `mixfleet bench` instead of row runs")
    ap.add_argument("--predict-only", action="store_true")
    args = ap.parse_args()
    models = [m for m in args.as_models.split(",") if m]
    kinds = [int(k) for k in args.kinds.split(",")]
    modes = [m for m in args.modes.split(",") if m]
    print(f"plan accuracy [emulated]: as_model {', '.join(models)} (each at its own sequence "
          f"length), {args.batch} sequences, micro-batch {args.micro}, activation "
          f"checkpointing; links: default (bridge 32 GB/s "
          f"assumed, intra from the catalog); profiles: mixfleet/emulate/profiles.toml",
          flush=True)
    ratios = []
    with tempfile.TemporaryDirectory(prefix="planacc-") as tmp:
        root = Path(tmp)
        for model in models:
            # one kind: two H20 ranks (so that a collective crosses a link)
            cases = [(mode, CHIPS[:k] if k > 1 else CHIPS[:1] * 2) for k in kinds
                     for mode in modes]
            common = dict(as_model=model, seq=args.seq_len, batch=args.batch,
                          micro=args.micro, steps=args.steps)
            pre = [predict(sets(devs, scale=None, mode=mode, **common), mode, [])[0]  # type: ignore[arg-type]
                   for mode, devs in cases]
            slowest = max((v for v in pre if v is not None), default=1.0)
            scale = min(1.0, args.target_step_s / slowest)
            print(f"{model}: time scale {scale:.3g} (slowest predicted step {slowest:.3f} "
                  f"chip s)", flush=True)
            rows: list = []
            if args.table:
                from mixfleet.catalog.table import read_table

                rows = [dataclasses.replace(r) for r in read_table(args.table)]
            elif not args.predict_only:
                for chip in CHIPS[:max(kinds)]:
                    rows += rows_for(model, chip, root, args, scale)
            for mode, devs in cases:
                ov = sets(devs, scale=scale, mode=mode, **common)  # type: ignore[arg-type]
                chip_s, refusal, _ = predict(ov, mode, rows)
                name = f"{mode:<5}{model:<12}{'+'.join(d[4:] for d in devs):<36}"
                if chip_s is None:
                    print(f"{name} refused: {refusal}", flush=True)
                    continue
                pred = chip_s * scale
                if args.predict_only:
                    print(f"{name} predicted {pred:.4f} s per step ({chip_s:.3f} chip s)",
                          flush=True)
                    continue
                d = train(root / f"{model}-{mode}-{'+'.join(x[4:] for x in devs)}", ov)
                meas = mean_step_s(d, args.warmup)
                ratios.append(pred / meas)
                print(f"{name} predicted {pred:.4f} s, measured {meas:.4f} s, "
                      f"predicted/measured = {pred / meas:.2f}", flush=True)
    if ratios:
        inside = sum(0.9 <= r <= 1.1 for r in ratios)
        print(f"plan accuracy [emulated]: {len(ratios)} runs, predicted/measured min "
              f"{min(ratios):.2f}, median {statistics.median(ratios):.2f}, max "
              f"{max(ratios):.2f}; {inside}/{len(ratios)} within 0.90-1.10")
    else:
        print("plan accuracy [emulated]: predictions only (no run measured)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
