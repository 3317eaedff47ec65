"""``mixfleet catalog`` (the chip records) and ``mixfleet devices`` (this machine's chips)."""

from __future__ import annotations

import argparse
import dataclasses
import json
from typing import Any

from rich.console import Console
from rich.table import Table

from mixfleet.catalog import load_catalog
from mixfleet.catalog.base import FIGURES, Figure
from mixfleet.catalog.detect import detect
from mixfleet.errors import ConfigError

__all__ = ["add_parser", "cmd_catalog", "cmd_devices", "ray_resources"]

_MARK = {"datasheet": "", "reported": "~", "unknown": "?"}


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("catalog", help="print the chip catalog (figures with source and "
                       "confidence)", description="Print the chip catalog. In the table, "
                       "'~' marks a reported figure and '?' an unknown one.")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--catalog", metavar="FILE", help="read this catalog TOML instead of the "
                   "packaged one")
    p.set_defaults(func=cmd_catalog)
    d = sub.add_parser("devices", help="list this machine's accelerators (vendor, chip, "
                       "memory, driver) and which vendor tools answered")
    d.add_argument("--json", action="store_true", help="print JSON instead of a table")
    d.add_argument("--run-dir", metavar="DIR", help="also show the devices blocked in this "
                   "training run directory (drained for heat or faults; never used again "
                   "there)")
    d.add_argument("--ray-resources", action="store_true",
                   help="print this node's chips as the JSON of `ray start --resources` "
                   "(chip:<id>: count), to add the node to a live fleet")
    d.set_defaults(func=cmd_devices)


def _fig(f: Figure) -> str:
    return "?" if f.value is None else f"{f.value:g}{_MARK[f.confidence]}"


def cmd_catalog(args: argparse.Namespace) -> int:
    cat = load_catalog(args.catalog)
    if args.json:
        print(json.dumps([dataclasses.asdict(c) for c in cat.values()], indent=2))
        return 0
    t = Table(title="mixfleet chip catalog  (~ reported, ? unknown)")
    for col in ("id", "vendor", "torch", "BF16 TFLOP/s", "mem GiB", "mem TB/s", "link GB/s",
                "TDP W"):
        left = col in ("id", "vendor", "torch")
        t.add_column(col, justify="left" if left else "right", no_wrap=left)
    for c in cat.values():
        t.add_row(c.id, c.vendor, c.torch_device, *(_fig(getattr(c, f)) for f in FIGURES))
    Console().print(t)
    return 0


def _blocked(run_dir: str | None) -> list[dict]:
    if run_dir is None:
        return []
    from pathlib import Path

    from mixfleet.train.mixed.blocklist import read_entries

    if not Path(run_dir).is_dir():
        raise ConfigError(f"--run-dir {run_dir!r} is not a directory; pass the --run-dir of "
                          f"a training run")
    return read_entries(run_dir)
def ray_resources(det: Any) -> tuple[dict[str, int], list[str]]:
    """``chip:<id>`` -> count of this machine's devices, and the devices left out (not in
    the catalog)."""
    res: dict[str, int] = {}
    skipped = []
    for d in det.devices:
        if d.chip_id is None:
            skipped.append(f"{d.vendor} {d.name}")
            continue
        res[f"chip:{d.chip_id}"] = res.get(f"chip:{d.chip_id}", 0) + 1
    return res, skipped


def cmd_devices(args: argparse.Namespace) -> int:
    blocked = _blocked(getattr(args, "run_dir", None))
    ids = {str(e.get("device_id")) for e in blocked if e.get("device_id")}
    det = detect()
    if args.ray_resources:
        import sys

        res, skipped = ray_resources(det)
        for name in skipped:
            print(f"note: {name} is not in the catalog; it is left out", file=sys.stderr)
        if not res:
            print("note: no accelerator found; this node adds no chips to a fleet (pools on "
                  "a CPU machine are emulated by `mixfleet fleet up`)", file=sys.stderr)
        print(json.dumps(res))
        return 0
    if args.json:
        out = det.to_dict()
        for d in out["devices"]:
            d["blocked"] = d["stable_id"] in ids
        if args.run_dir is not None:
            out["blocked"] = blocked
        print(json.dumps(out, indent=2))
        return 0
    con = Console()
    con.print(f"PyTorch accelerator: {det.accelerator or 'none (CPU only)'}"
              f"{f' x{det.accelerator_count}' if det.accelerator else ''}")
    if det.devices:
        t = Table(title="devices")
        cols = ("torch", "vendor", "chip", "name", "memory GiB", "driver", "tool", "id")
        for col in cols + (("run",) if args.run_dir is not None else ()):
            t.add_column(col)
        for d in det.devices:
            t.add_row(d.torch_device or "-", d.vendor, d.chip_id or "(not in catalog)", d.name,
                      "?" if d.memory_bytes is None else f"{d.memory_bytes / 2**30:.1f}",
                      d.driver or "?", d.tool, d.stable_id,
                      *(("BLOCKED" if d.stable_id in ids else "ok",)
                        if args.run_dir is not None else ()))
        con.print(t)
    else:
        con.print("no accelerator devices found")
    for s in det.tools:
        con.print(f"  {s.tool:<11} {s.state:<10} {s.detail}", highlight=False)
    if args.run_dir is not None:
        if not blocked:
            con.print(f"no devices blocked in {args.run_dir}", highlight=False, soft_wrap=True)
        for e in blocked:
            con.print(f"  blocked in {args.run_dir}: {e.get('device_id') or '(no stable id)'} "
                      f"{e.get('chip') or e.get('device') or ''} (rank {e.get('rank')} at step "
                      f"{e.get('step')}{', pending relaunch' if e.get('pending') else ''})",
                      highlight=False, soft_wrap=True, markup=False)
    return 0
