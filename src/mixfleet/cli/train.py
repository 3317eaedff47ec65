"""``mixfleet train CONFIG.toml``: train a model, surviving crashes of its ranks."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from mixfleet.train.autoplan import resolve_auto
from mixfleet.train.launch import check_rendezvous, launch, prepare_run, resolve_config

__all__ = ["add_parser", "cmd_train"]

EPILOG = """\
Multi-node: torchrun's own flags pass through, e.g.
  mixfleet train cfg.toml --nproc 8 --nnodes 2 --node-rank 0 \\
      --rdzv-endpoint head-node:29400 --rdzv-id job42
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model on this machine's devices",
                       description=__doc__, epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", help="TOML config (see examples/digits-cnn.toml)")
    p.add_argument("--nproc", type=int, help="ranks on this machine (overrides launch.nproc)")
    p.add_argument("--device", help="auto, cpu, cuda, npu, xpu, mlu, ... (launch.device)")
    p.add_argument("--ranks", metavar="DEV,DEV,...",
                   help="one device per rank, e.g. emu:nvidia-h20,emu:kunlun-p800,"
                        "emu:ascend-910b (the [[ranks]] list; their number sets --nproc)")
    p.add_argument("--shares", choices=["equal", "speed", "measured"],
                   help="initial shares of the global batch ([shares] mode)")
    p.add_argument("--rebalance-every", type=int, metavar="K",
                   help="rebalance the shares every K steps ([shares] rebalance_every)")
    p.add_argument("--backend", help="collective backend (launch.backend; default follows "
                                     "the device)")
    p.add_argument("--run-dir", help="run directory (default: runs/<config name>)")
    p.add_argument("--resume", default="auto", choices=["auto", "never"],
                   help="auto: continue from the newest committed checkpoint (default)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a config field (repeatable), validated like the file")
    p.add_argument("--inject", action="append", default=[], metavar="FAULT",
                   help="inject a fault (repeatable), e.g. kill@rank=1,step=40; added to "
                        "[faults] inject")
    p.add_argument("--json", action="store_true",
                   help="print the summary as JSON on the last line of stdout")
    p.add_argument("--help-config", action=_HelpConfig, nargs=0,
                   help="list every config key with its default and meaning, then exit")
    p.set_defaults(func=cmd_train, check_passthrough=check_passthrough)


class _HelpConfig(argparse.Action):
    """``--help-config``: the reference of every key of a run config (like ``--help``)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: object, option_string: str | None = None) -> None:
        from mixfleet.config import reference
        from mixfleet.train.config import RunConfig

        for key, default, bounds, text in reference(RunConfig):
            print(f"{key} = {default}{f'  ({bounds})' if bounds else ''}\n    {text}")
        parser.exit(0)


def check_passthrough(extra: list[str]) -> str | None:
    """None if ``extra`` holds only torchrun multi-node flags (and their values)."""
    from mixfleet.train.launch import MULTINODE_FLAGS

    for tok in extra:
        if tok.startswith("-") and tok.split("=")[0] not in MULTINODE_FLAGS:
            return (f"unrecognized argument {tok!r}; only torchrun's multi-node flags pass "
                    f"through ({', '.join(f for f in MULTINODE_FLAGS if '_' not in f)})")
    return None


def _hetero_flags(args: argparse.Namespace) -> list[str]:
    """``--ranks/--shares/--rebalance-every`` as ``--set`` overrides."""
    out = []
    if args.ranks is not None:
        devs = [d.strip() for d in args.ranks.split(",") if d.strip()]
        if not devs or any('"' in d or "\\" in d for d in devs):
            from mixfleet.errors import ConfigError

            raise ConfigError(f"--ranks {args.ranks!r} names no devices; pass them "
                              f"comma-separated, e.g. --ranks emu:nvidia-h20,emu:kunlun-p800")
        out.append("ranks=[" + ", ".join(f'{{device = "{d}"}}' for d in devs) + "]")
        if args.nproc is None:
            out.append(f"launch.nproc={len(devs)}")
    if args.shares is not None:
        out.append(f'shares.mode="{args.shares}"')
    if args.rebalance_every is not None:
        out.append(f"shares.rebalance_every={args.rebalance_every}")
    return out


def cmd_train(args: argparse.Namespace) -> int:
    flags = [f"launch.{k}={v!r}" if isinstance(v, str) else f"launch.{k}={v}"
             for k, v in (("nproc", args.nproc), ("device", args.device),
                          ("backend", args.backend)) if v is not None]
    flags = [f.replace("'", '"') for f in flags]
    flags += _hetero_flags(args)
    if args.inject:
        from mixfleet.config import load_toml

        base = load_toml(args.config).get("faults", {}).get("inject", [])
        flags.append("faults.inject=" + json.dumps([*base, *args.inject]))
    cfg = resolve_config(args.config, list(args.set) + flags)
    out = sys.stderr if args.json else sys.stdout
    run_dir = args.run_dir or str(Path("runs") / Path(args.config).stem)
    cfg, plan = resolve_auto(cfg)  # [parallel] mode = "auto": the cost model's pick
    if plan is not None and plan.pick is not None:
        label = f" [{plan.label()}]" if plan.label() else ""
        print(f"parallel mode auto -> {plan.pick.mode}: predicted {plan.pick.step_s:.3f} s per "
              f"step{label}; " + "; ".join(f"{m} loses: {w}" for m, w in plan.why.items()),
              file=out)
    from mixfleet.train.mixed.pacing import as_model_plan

    # after the mode is resolved: the memory check depends on it (ConfigError, exit 2)
    asplan = as_model_plan(cfg) if cfg.parallel.mode != "pipeline" else None
    if asplan is not None:
        print(f"{asplan.label()}: a step of the slowest rank ~"
              f"{max(asplan.step_s) * asplan.time_scale:.2f} s here for "
              f"{max(asplan.step_s):.1f} s on the chip", file=out, flush=True)
    if cfg.parallel.mode == "pipeline":  # the stages, before anything runs (exit 2 if bad)
        from mixfleet.train.launch import job_placements
        from mixfleet.train.parallel.pipeplan import job_pipeline
        from mixfleet.workloads import load_workload

        pplan = job_pipeline(cfg, [p.kind for p in job_placements(cfg)], load_workload(
            cfg.workload.name, cfg.workload.options, cfg.workload.path))
        if pplan is not None:
            print(pplan.describe(), file=out, flush=True)
    passthrough = list(getattr(args, "extra", []))
    check_rendezvous(passthrough)  # before anything is written
    run = prepare_run(cfg, run_dir, resume=args.resume, plan=plan)
    summary = launch(cfg, run, passthrough=passthrough, progress_to_stderr=args.json)
    if args.json:
        print(json.dumps(summary), flush=True)
    else:
        m = summary["final_metric"]
        metric = f"{m['name']} {m['value']:.4f}" if m else "no metric"
        print(f"done: {summary['steps']} steps in {summary['wall_s']:.1f}s, "
              f"{summary['samples_per_s']:.0f} samples/s, restarts {summary['restarts']}, "
              f"steps lost {summary['steps_lost']}, {metric}; run dir {run.root}"
              + (f"; {asplan.label()}" if asplan is not None else ""),
              file=sys.stdout)
    return 0
