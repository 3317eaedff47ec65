"""Measure workloads on devices: samples/s, step time p50/p90, achieved FLOP/s, MFU, peak
memory, and the temperature/clock trend, as throughput-table rows.

The library never prints: progress goes to an optional callback. Devices are ``cpu``,
a PyTorch accelerator device (``cuda:0``, ``npu:0``, ...; the chip comes from detection),
``auto`` (the accelerator if there is one, else ``cpu``) or ``emu:<chip-id>``. Emulated rows
are ``emulated: true`` with origin ``emulated`` and MFU null: their speed is the host's,
scaled, never a measurement of the chip.
"""

from __future__ import annotations

import dataclasses
import datetime
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from mixfleet.bench.table import ThroughputRow
from mixfleet.catalog.base import get_chip, load_catalog
from mixfleet.config import Section, field
from mixfleet.emulate.device import EmulatedDevice, EmulationConfig
from mixfleet.emulate.speed import is_emulated, parse_emu_device
from mixfleet.errors import ConfigError, WorkloadError
from mixfleet.telemetry.base import Sample, TelemetryReader
from mixfleet.telemetry.sampler import Sampler
from mixfleet.workloads.base import Workload

__all__ = ["BenchConfig", "BenchResult", "measure", "run_bench", "get_bench_workload",
           "resolve_device", "mfu"]

Progress = Callable[[str, int, int], None]  # (what, steps done, steps total)


@dataclasses.dataclass(kw_only=True, frozen=True)
class BenchConfig(Section):
    """What ``mixfleet bench`` measures."""

    workloads: list[str] = field(["mlp-matmul"], help="workload names (mlp-matmul, "
                                 "digits-cnn, char-gpt, or module:function)")
    devices: list[str] = field(["auto"], help="auto, cpu, cuda:0, npu:0, ..., emu:<chip-id>")
    batch: list[int] = field([32], help="per-device batch sizes", ge=1, flag="--batch")
    warmup: int = field(3, help="steps run before measuring", ge=0, flag="--warmup")
    steps: int = field(20, help="measured steps per (workload, device, batch)", ge=2,
                       flag="--steps")
    seed: int = field(0, help="seed of data order and emulated chips")
    telemetry_hz: float = field(2.0, help="telemetry samples per second during a run; 0 = off",
                                ge=0, le=100)

    def __post_init__(self) -> None:
        if not self.workloads or not self.devices or not self.batch:
            raise ConfigError("bench needs at least one workload, device and batch; e.g. "
                              "--workloads mlp-matmul --devices cpu --batch 32")


@dataclasses.dataclass(frozen=True, kw_only=True)
class BenchResult:
    """One measured (workload, device, batch): the table row plus what does not fit in it."""

    row: ThroughputRow
    device: str
    achieved_tflops: float | None
    trend: list[dict[str, Any]]  # telemetry samples over the run: t, temp_c, clock_mhz


def mfu(flops_per_sample: float | None, samples_per_s: float,
        peak_flops: float | None) -> float | None:
    """Model FLOPs utilization; None when the FLOPs or the peak are unknown."""
    if flops_per_sample is None or peak_flops is None or peak_flops <= 0:
        return None
    return flops_per_sample * samples_per_s / peak_flops


def get_bench_workload(name: str) -> Workload:
    """``mlp-matmul`` (bench's own) or anything :func:`mixfleet.workloads.get_workload` knows."""
    if name == "mlp-matmul":
        from mixfleet.bench.mlp import make_mlp_matmul

        return make_mlp_matmul()
    from mixfleet.workloads import get_workload

    return get_workload(name)


def resolve_device(device: str) -> tuple[str, str]:
    """``(torch device, chip id)`` of a bench device string."""
    if is_emulated(device):
        return "cpu", parse_emu_device(device)
    acc = getattr(torch, "accelerator", None)
    if device == "auto":
        cur = acc.current_accelerator() if acc is not None and acc.is_available() else None
        device = "cpu" if cur is None else f"{cur.type}:0"
    if device == "cpu":
        return "cpu", "cpu"
    kind = device.split(":")[0]
    cur = acc.current_accelerator() if acc is not None and acc.is_available() else None
    if cur is None or cur.type != kind:
        raise ConfigError(f"device {device!r} is not available here (PyTorch accelerator: "
                          f"{cur.type if cur else 'none'}); use --devices cpu, auto or "
                          f"emu:<chip-id>")
    from mixfleet.catalog.detect import detect

    for d in detect().devices:
        if d.torch_device == (device if ":" in device else f"{device}:0") and d.chip_id:
            return device, d.chip_id
    return device, device  # not in the catalog: MFU stays unknown


def _sync(device: str) -> None:
    if device != "cpu":
        torch.accelerator.synchronize()


def _pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


def measure(workload: Workload, device: str, batch: int, *, warmup: int = 3, steps: int = 20,
            chip: str | None = None, peak_flops: float | None = None,
            emu: EmulatedDevice | None = None, reader: TelemetryReader | None = None,
            telemetry_hz: float = 0.0, seed: int = 0, progress: Progress | None = None,
            clock: Callable[[], float] = time.perf_counter) -> BenchResult:
    """Train ``workload`` for ``warmup + steps`` steps on ``device`` and measure the rest."""
    torch.manual_seed(seed)
    model = workload.build_model().to(device)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-4)
    n = len(workload.train_set)
    gen = torch.Generator().manual_seed(seed)
    accel = device != "cpu"
    if accel:
        torch.accelerator.reset_peak_memory_stats()
    sampler = Sampler(reader, hz=telemetry_hz) if reader is not None and telemetry_hz > 0 \
        else None
    times: list[float] = []
    total = warmup + steps
    label = f"{workload.name} on {emu.device_string if emu else device} batch {batch}"
    try:
        for i in range(total):
            if i == warmup and sampler is not None:
                sampler.start()
            idx = torch.randint(0, n, (batch,), generator=gen)
            data = tuple(t.to(device) for t in workload.train_set.take(idx))
            _sync(device)
            t0 = clock()
            if emu is not None:
                emu.step_begin()
            loss = workload.loss(model, data) / batch
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            _sync(device)
            if emu is not None:
                emu.step_end()
            dt = clock() - t0
            if i >= warmup:
                times.append(dt)
            if progress is not None:
                progress(label, i + 1, total)
    finally:
        if sampler is not None:
            sampler.stop()
    sps = batch * len(times) / max(sum(times), 1e-12)
    peak_mem = int(torch.accelerator.max_memory_allocated()) if accel else None
    emulated = emu is not None
    the_mfu = None if emulated else mfu(workload.flops_per_sample, sps, peak_flops)
    row = ThroughputRow(
        workload=workload.name, chip=chip or device, batch=batch, samples_per_s=sps,
        step_p50_s=statistics.median(times), step_p90_s=_pct(times, 0.9), mfu=the_mfu,
        peak_mem_bytes=peak_mem, host=platform.node(), torch_version=torch.__version__,
        date=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        emulated=emulated, origin="emulated" if emulated else "measured")
    flops = workload.flops_per_sample
    achieved = None if flops is None or emulated else flops * sps / 1e12
    trend = [_trend(s) for s in (sampler.drain() if sampler else [])]
    return BenchResult(row=row, device=emu.device_string if emu else device,
                       achieved_tflops=achieved, trend=trend)


def _trend(s: Sample) -> dict[str, Any]:
    return {"t": s.t, "device": s.device, "temp_c": s.temp_c, "clock_mhz": s.clock_mhz,
            "power_w": s.power_w, "emulated": s.emulated}


def run_bench(config: BenchConfig, progress: Progress | None = None,
              emulation: EmulationConfig | None = None,
              workload_factory: Callable[[str], Workload] = get_bench_workload,
              ) -> list[BenchResult]:
    """Every workload x device x batch of ``config`` (all inputs validated first)."""
    from mixfleet.telemetry import open_reader

    workloads = []
    for name in config.workloads:
        try:
            workloads.append(workload_factory(name))
        except WorkloadError:
            raise
        except ConfigError as e:
            raise WorkloadError(f"bench workload {name!r}: {e}") from None
    devices = [(d, *resolve_device(d)) for d in config.devices]
    cat = load_catalog()
    emu_all = [d for d in config.devices if is_emulated(d)]
    econf = emulation or EmulationConfig(seed=config.seed)
    results = []
    for wl in workloads:
        base: dict[int, float] = {}  # batch -> host step time, shared by all emulated chips
        for spec, tdev, chip in devices:
            peak = get_chip(chip, cat).peak_flops() if chip in cat else None
            for b in config.batch:
                emu = None
                threads = torch.get_num_threads()
                if is_emulated(spec):
                    torch.set_num_threads(1)  # one core per emulated chip, as in training
                    if b not in base:
                        # the host's p90 step time is the budget of relative speed 1.0
                        cal = measure(wl, "cpu", b, warmup=config.warmup,
                                      steps=max(10, config.steps), seed=config.seed,
                                      progress=progress)
                        base[b] = cal.row.step_p90_s or 0.0
                    emu = EmulatedDevice.create(spec, peers=emu_all, config=econf)
                    emu.calibrate(base[b])
                reader: TelemetryReader | None = None
                if config.telemetry_hz > 0:
                    reader = open_reader("emulated", [emu]) if emu is not None else \
                        (open_reader("auto") if tdev != "cpu" else None)
                try:
                    results.append(measure(
                        wl, tdev, b, warmup=config.warmup, steps=config.steps, chip=chip,
                        peak_flops=peak, emu=emu, reader=reader,
                        telemetry_hz=config.telemetry_hz, seed=config.seed, progress=progress))
                finally:
                    torch.set_num_threads(threads)
    return results

