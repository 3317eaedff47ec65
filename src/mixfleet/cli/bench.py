"""``mixfleet bench`` (measure workloads x devices) and ``mixfleet bench compare``."""

from __future__ import annotations

import argparse
import sys

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

__all__ = ["add_parser", "cmd_bench", "cmd_compare"]


def _list(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench", help="measure workloads on devices -> throughput table (+ compare)",
        description="Measure each workload on each device after a warm-up: samples/s, step "
        "time p50/p90, achieved TFLOP/s, MFU against the catalog peak (null when unknown), "
        "peak memory, temperature and clock trend. Writes DIR/throughput.json, .csv, .png "
        "and DIR/trend.json. Devices: auto, cpu, cuda:0, npu:0, ..., emu:<chip-id> "
        "(emulated: labeled so in every output).")
    p.add_argument("--workloads", nargs="+", default=["mlp-matmul"], metavar="NAME",
                   help="mlp-matmul, digits-cnn, char-gpt or module:function (space or comma "
                   "separated; default mlp-matmul)")
    p.add_argument("--class", dest="classes", nargs="+", metavar="CLASS",
                   help="measure the planner's workload classes instead (cnn, bert, recsys, "
                   "llm-7b, llm-70b): per-component profile, extrapolated; rows feed "
                   "simulate/plan --throughput (docs/chips.md); or llama[:PRESET]: a row "
                   "each for the embedding, one decoder block and the head per micro-batch, "
                   "for [parallel] split_times (docs/pipeline.md)")
    p.add_argument("--scale", type=float, default=1.0,
                   help="with --class: shrink widths and sequence/image size by F (rows "
                   "labeled measured-scaled; e.g. 0.05 on a CPU)")
    p.add_argument("--devices", nargs="+", default=["auto"], metavar="DEV",
                   help="devices (default auto: the accelerator, else cpu)")
    p.add_argument("--batch", nargs="+", default=["32"], metavar="N",
                   help="per-device batch sizes (default 32)")
    p.add_argument("--steps", type=int, default=20, help="measured steps (default 20)")
    p.add_argument("--warmup", type=int, default=3, help="warm-up steps (default 3)")
    p.add_argument("--seed", type=int, default=0, help="seed (data order, emulated chips)")
    p.add_argument("--out", default="bench-out", metavar="DIR", help="output folder")
    p.set_defaults(func=cmd_bench)
    bsub = p.add_subparsers(dest="bench_command", metavar="{compare}")
    c = bsub.add_parser("compare", help="each chip's ratio to a baseline chip per workload")
    c.add_argument("table", metavar="TABLE", help="throughput.json or .csv")
    c.add_argument("--baseline", default="nvidia-h20", help="baseline chip id "
                   "(default nvidia-h20)")
    c.set_defaults(func=cmd_compare)


def _console() -> Console:
    return Console() if sys.stdout.isatty() else Console(width=160)


def _ints(values: list[str]) -> list[int]:
    from mixfleet.errors import ConfigError

    out = []
    for v in (x for item in values for x in _list(item)):
        try:
            out.append(int(v))
        except ValueError:
            raise ConfigError(f"--batch {v!r} is not an integer; e.g. --batch 32 64") from None
    return out


def cmd_bench(args: argparse.Namespace) -> int:
    from mixfleet.bench.output import save_results
    from mixfleet.bench.planner import run_class_bench
    from mixfleet.bench.runner import BenchConfig, run_bench
    from mixfleet.errors import ConfigError

    if args.scale != 1.0 and not args.classes:
        raise ConfigError(f"--scale {args.scale} applies to --class only; e.g. --class cnn "
                          f"--scale 0.05")
    cfg = BenchConfig(workloads=[x for w in args.workloads for x in _list(w)],
                      devices=[x for d in args.devices for x in _list(d)],
                      batch=_ints(args.batch), steps=args.steps, warmup=args.warmup,
                      seed=args.seed)
    con = Console(stderr=True)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=con, transient=True) as bar:
        tasks: dict[str, object] = {}

        def progress(what: str, done: int, total: int) -> None:
            if what not in tasks:
                tasks[what] = bar.add_task(what, total=total)
            bar.update(tasks[what], completed=done)  # type: ignore[arg-type]
        if args.classes:
            results = run_class_bench([x for c in args.classes for x in _list(c)],
                                      cfg.devices, cfg.batch, scale=args.scale,
                                      warmup=cfg.warmup, steps=cfg.steps, progress=progress)
        else:
            results = run_bench(cfg, progress=progress)
    paths = save_results(results, args.out)
    t = Table(title="mixfleet bench")
    for col in ("workload", "chip", "batch", "samples/s", "p50 ms", "p90 ms", "TFLOP/s", "MFU",
                "peak mem MiB", "temp C", "clock MHz", "origin"):
        t.add_column(col, justify="left" if col in ("workload", "chip", "origin") else "right")
    for r in results:
        row = r.row

        def trend(key: str, r: object = r) -> str:
            vals = [s[key] for s in r.trend if s[key] is not None]  # type: ignore[attr-defined]
            return "-" if not vals else f"{vals[0]:.0f}->{vals[-1]:.0f}"
        t.add_row(row.workload, row.chip, str(row.batch), f"{row.samples_per_s:.1f}",
                  f"{(row.step_p50_s or 0) * 1e3:.2f}", f"{(row.step_p90_s or 0) * 1e3:.2f}",
                  "-" if r.achieved_tflops is None else f"{r.achieved_tflops:.4f}",
                  "unknown" if row.mfu is None else f"{row.mfu:.2%}",
                  "-" if row.peak_mem_bytes is None else f"{row.peak_mem_bytes / 2**20:.0f}",
                  trend("temp_c"), trend("clock_mhz"),
                  "EMULATED" if row.emulated else row.origin)
    out = _console()
    out.print(t)
    for r in results:
        if r.row.note:
            out.print(f"{r.row.workload} on {r.row.chip} ({r.row.origin}): {r.row.note}",
                      highlight=False)
    if any(r.row.emulated for r in results):
        out.print("EMULATED rows: CPU compute scaled to the chip's relative speed; not a "
                  "measurement of the chip, MFU not given.")
    out.print(f"wrote {paths['json']}, {paths['csv']}, {paths['png']}, {paths['trend']}",
              highlight=False)
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from mixfleet.bench.compare import compare
    from mixfleet.catalog.table import read_table

    ratios = compare(read_table(args.table), args.baseline)
    t = Table(title=f"throughput relative to {args.baseline}")
    for col in ("workload", "chip", "batch", "samples/s", f"x {args.baseline}", "origin"):
        t.add_column(col, justify="left" if col in ("workload", "chip", "origin") else "right")
    for r in ratios:
        t.add_row(r.workload, r.chip, str(r.batch), f"{r.samples_per_s:.1f}",
                  "-" if r.ratio is None else f"{r.ratio:.2f}",
                  "EMULATED" if r.emulated else r.origin)
    _console().print(t)
    return 0
