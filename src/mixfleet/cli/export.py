"""``mixfleet export RUN_DIR --out DIR``: a run's model weights from a committed checkpoint
as sharded ``safetensors`` files with a Hugging Face style index, one tensor at a time (for
models larger than host memory; ``final/model.pt`` holds smaller ones whole)."""

from __future__ import annotations

import argparse

from mixfleet.errors import CheckpointError, ConfigError

__all__ = ["add_parser"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a checkpoint's weights to sharded safetensors",
                       description=__doc__)
    p.add_argument("run_dir", help="a run directory written by `mixfleet train`")
    p.add_argument("--out", required=True, help="a new (or empty) directory")
    p.add_argument("--step", type=int, help="checkpoint step (default: the newest committed)")
    p.add_argument("--shard-gib", type=float, default=2.0, help="largest shard (GiB)")
    p.set_defaults(func=cmd_export)


def cmd_export(args: argparse.Namespace) -> int:
    from mixfleet.train.checkpoint.export import export_safetensors

    if args.shard_gib <= 0:
        raise ConfigError(f"--shard-gib must be > 0 (got {args.shard_gib}); e.g. --shard-gib 2")
    try:
        idx = export_safetensors(args.run_dir, args.out, step=args.step,
                                 shard_bytes=int(args.shard_gib * 2**30))
    except CheckpointError as e:  # a damaged or planted checkpoint: bad input, one line
        raise ConfigError(f"{e}; export another --step, or retrain") from None
    files = sorted(set(idx["weight_map"].values()))
    print(f"exported step {idx['metadata']['step']}: {len(idx['weight_map'])} tensors, "
          f"{idx['metadata']['total_size'] / 2**20:.1f} MiB in {len(files)} file(s) under "
          f"{args.out}")
    return 0
