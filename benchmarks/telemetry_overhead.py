"""Telemetry overhead: training steps/s with telemetry sampled at 10 Hz against sampling off.

Trains ``mlp-matmul`` on the accelerator if there is one (else the CPU) in alternating
blocks (off, on, off, on, ...) so drifting load hits both alike; the ratio is the median of
the per-round ratios. The reader is ``open_reader("auto")`` (NVML or a vendor tool) when one
answers, else the emulated reader of an emulated chip (the same thread, wake-ups and reads).
Last line: the ratio (target >= 0.99).

    .venv/bin/python benchmarks/telemetry_overhead.py [--rounds 16] [--block-s 1.5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from mixfleet.bench.mlp import make_mlp_matmul
from mixfleet.emulate import EmulatedDevice
from mixfleet.telemetry import NullReader, Sampler, open_reader
from mixfleet.telemetry.emulated import EmulatedReader


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=16)
    ap.add_argument("--block-s", type=float, default=1.5)
    ap.add_argument("--hz", type=float, default=10.0)
    args = ap.parse_args()
    acc = torch.accelerator.current_accelerator() if torch.accelerator.is_available() else None
    device = "cpu" if acc is None else f"{acc.type}:0"
    reader = open_reader("auto")
    if isinstance(reader, NullReader):
        reader = EmulatedReader([EmulatedDevice("nvidia-h20")])
    wl = make_mlp_matmul(d_in=512, hidden=1024, layers=3)
    model = wl.build_model().to(device)
    opt = torch.optim.SGD(model.parameters(), lr=1e-4)
    x, y = (t.to(device) for t in wl.train_set.take(torch.arange(128)))

    def sync() -> None:
        if device != "cpu":
            torch.accelerator.synchronize()

    def block(seconds: float) -> float:
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            (wl.loss(model, (x, y)) / 128).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            n += 1
            if n % 10 == 0:
                sync()
        sync()
        return n / (time.perf_counter() - t0)

    block(1.0)  # warm-up
    ratios, reads = [], 0
    for _ in range(args.rounds):
        off = block(args.block_s)
        sampler = Sampler(reader, hz=args.hz).start()
        on = block(args.block_s)
        sampler.stop()
        reads += sampler.reads
        ratios.append(on / off)
        print(f"off {off:8.1f} steps/s   on {on:8.1f} steps/s   ratio {on / off:.4f}")
    print(f"device {device}, reader {reader.name}, {reads} reads at {args.hz:g} Hz")
    print(f"telemetry overhead: steps/s with {args.hz:g} Hz sampling / without = "
          f"{statistics.median(ratios):.4f}")


if __name__ == "__main__":
    main()
