"""Emulation accuracy: requested vs achieved relative speed of emulated chips.

For relative speeds 0.25, 0.5 and 0.75 (and the 1.0 reference), run 1 and then 3 emulated
ranks at once (separate processes sharing this machine's CPU cores, one torch thread each),
each training ``mlp-matmul`` steps wrapped in ``EmulatedDevice.step()``. The budget of speed
1.0 is calibrated once (host p90 step time, measured with the same number of ranks running).
Achieved speed = throughput at s / throughput at 1.0 (mean step times, so overruns count).
Last line: the worst relative error over all cases.

    .venv/bin/python benchmarks/emulation_accuracy.py [--steps 30]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import time

SPEEDS = (0.25, 0.5, 0.75)


def _rank(speed: float | None, base: float | None, nranks: int, steps: int, seed: int,
          out: mp.Queue) -> None:
    import torch

    from mixfleet.bench.mlp import make_mlp_matmul
    from mixfleet.emulate import EmulatedDevice, EmulationConfig

    torch.set_num_threads(1)
    wl = make_mlp_matmul(d_in=256, hidden=384, layers=3)
    model = wl.build_model()
    opt = torch.optim.SGD(model.parameters(), lr=1e-4)
    gen = torch.Generator().manual_seed(seed)
    emu = None
    if speed is not None:
        emu = EmulatedDevice("nvidia-h20", speed=speed,
                             config=EmulationConfig(local_ranks=nranks, faults=False))
        assert base is not None
        emu.calibrate(base)
    times = []
    for _ in range(steps + 3):
        batch = wl.train_set.take(torch.randint(0, len(wl.train_set), (64,), generator=gen))
        t0 = time.perf_counter()
        if emu is not None:
            emu.step_begin()
        (wl.loss(model, batch) / 64).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if emu is not None:
            emu.step_end()
        times.append(time.perf_counter() - t0)
    out.put(times[3:])


def run(speed: float | None, base: float | None, nranks: int, steps: int) -> list[list[float]]:
    ctx = mp.get_context("spawn")
    q: mp.Queue = ctx.Queue()
    procs = [ctx.Process(target=_rank, args=(speed, base, nranks, steps, r, q))
             for r in range(nranks)]
    for p in procs:
        p.start()
    res = [q.get(timeout=600) for _ in procs]
    for p in procs:
        p.join()
    return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=30)
    args = ap.parse_args()
    worst = 0.0
    for nranks in (1, 3):
        cal = run(None, None, nranks, max(20, args.steps))
        all_times = sorted(t for ts in cal for t in ts)
        base = all_times[int(0.9 * (len(all_times) - 1))]
        mean_t = {}
        for s in (1.0, *SPEEDS):
            ts = run(s, base, nranks, args.steps)
            mean_t[s] = statistics.mean(t for r in ts for t in r)
        for s in SPEEDS:
            achieved = mean_t[1.0] / mean_t[s]
            err = abs(achieved - s) / s
            worst = max(worst, err)
            print(f"ranks={nranks} requested={s:.2f} achieved={achieved:.3f} "
                  f"error={err:.1%} (host p90 step {base * 1e3:.1f} ms)")
    print(f"emulation accuracy: worst relative speed error {worst:.1%}")


if __name__ == "__main__":
    main()
