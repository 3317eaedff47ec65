"""``mixfleet bench --class``: throughput rows for the planner's workload classes.

Each (class, device, batch) is profiled per component (:func:`profile_class`) and becomes a
:class:`ThroughputRow` of that class, so ``simulate --throughput`` / ``plan --throughput``
use it in place of the roofline estimate:

- full size (``scale`` = 1) on a real device: origin ``measured``;
- ``scale`` < 1: origin ``measured-scaled``; samples/s = the scaled model's samples/s x its
  counted FLOPs per sample / the class's FLOPs per sample (same achieved FLOP/s assumed);
- ``emu:<chip>``: profiled on the CPU and paced by the emulated chip's relative speed;
  origin ``emulated`` (never a measurement of the chip).

The row's ``note`` gives the per-component times, counts and the extrapolation.
"""

from __future__ import annotations

import datetime
import platform
from collections.abc import Sequence

import torch

from mixfleet.bench.classes import profile_class
from mixfleet.bench.runner import BenchResult, Progress, resolve_device
from mixfleet.bench.table import ThroughputRow
from mixfleet.catalog.base import get_chip, load_catalog
from mixfleet.emulate.speed import is_emulated
from mixfleet.errors import ConfigError
from mixfleet.fleet.workloads import WORKLOAD_CLASSES

__all__ = ["run_class_bench"]


def _emu_speed(spec: str, peers: Sequence[str]) -> float:
    from mixfleet.emulate.device import EmulatedDevice

    return float(EmulatedDevice.create(spec, peers=list(peers)).speed)


def run_class_bench(classes: Sequence[str], devices: Sequence[str], batch: Sequence[int], *,
                    scale: float = 1.0, warmup: int = 2, steps: int = 5,
                    progress: Progress | None = None) -> list[BenchResult]:
    """One row per class x device x batch (inputs validated first); ``llama[:PRESET]``
    gives three per device x batch instead (:mod:`mixfleet.bench.llamaclass`)."""
    from mixfleet.bench.llamaclass import is_llama_class, llama_preset, run_llama_bench

    llama = [c for c in classes if is_llama_class(c)]
    for c in llama:
        llama_preset(c)  # an unknown preset: ConfigError before anything runs
    if llama and scale != 1.0:
        raise ConfigError(f"--scale {scale} does not apply to --class {llama[0]}: its size is "
                          f"the preset's; pick a smaller one (e.g. --class llama:debug)")
    classes = [c for c in classes if not is_llama_class(c)]
    unknown = [c for c in classes if c not in WORKLOAD_CLASSES]
    if unknown:
        raise ConfigError(f"--class {unknown[0]!r} is not a planner class; use one of "
                          f"{', '.join(WORKLOAD_CLASSES)}")
    if not 0 < scale <= 1:
        raise ConfigError(f"--scale must be in (0, 1] (got {scale}); e.g. --scale 0.05")
    if steps < 1 or warmup < 0:
        raise ConfigError(f"--steps must be >= 1 and --warmup >= 0 (got {steps}, {warmup})")
    resolved = [(d, *resolve_device(d)) for d in devices]
    emu_all = [d for d in devices if is_emulated(d)]
    cat = load_catalog()
    out: list[BenchResult] = []
    total = len(classes) * len(resolved) * len(batch)
    done = 0
    for w in classes:
        full = WORKLOAD_CLASSES[w].flops_per_sample
        for spec, tdev, chip in resolved:
            emulated = is_emulated(spec)
            for b in batch:
                prof = profile_class(w, batch=b, scale=scale, device=tdev, warmup=warmup,
                                     steps=steps)
                sps = b / prof.step_s
                note = prof.note()
                if scale < 1:
                    ratio = prof.flops_per_sample / full
                    sps *= ratio
                    note += (f"; scaled model {prof.flops_per_sample:.3g} FLOP/sample vs "
                             f"{full:.3g} full: samples/s x {ratio:.3g}")
                if emulated:
                    speed = _emu_speed(spec, emu_all)
                    sps *= speed
                    note += f"; EMULATED: host CPU x relative speed {speed:.3g}"
                origin = "emulated" if emulated else \
                    ("measured-scaled" if scale < 1 else "measured")
                peak = get_chip(chip, cat).peak_flops() if chip in cat else None
                mfu = None if emulated or peak is None else full * sps / peak
                row = ThroughputRow(
                    workload=w, chip=chip, batch=b, samples_per_s=sps,
                    step_p50_s=prof.step_s, step_p90_s=None, mfu=mfu,
                    peak_mem_bytes=prof.peak_mem_bytes, host=platform.node(),
                    torch_version=torch.__version__,
                    date=datetime.datetime.now(datetime.UTC).isoformat(
                        timespec="seconds"),
                    emulated=emulated, origin=origin, note=note)  # type: ignore[arg-type]
                out.append(BenchResult(row=row, device=spec,
                                       achieved_tflops=None if emulated else full * sps / 1e12,
                                       trend=[]))
                done += 1
                if progress is not None:
                    progress(f"classes {','.join(classes)}", done, total)
    for c in llama:
        out += run_llama_bench(c, devices, batch, warmup=warmup, steps=steps,
                               progress=progress)
    return out
