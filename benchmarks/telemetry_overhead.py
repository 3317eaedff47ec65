"""Telemetry overhead: training steps/s with the node's telemetry running against none.

The *real* reader path on the fake node of the tests (``tests/fakes``): 4 H20 + 4 P800,
a fake NVML module read in-process and the fake ``xpu_smi`` run as a subprocess, both at
``--hz`` (default 1 Hz, ``[telemetry] hz``'s default; SMI tools at most once a second),
publishing the per-device table file (``mixfleet.telemetry.DeviceTable``); every training
step the rank's thermal guard reads its own device's temperature from that file
(``device_temperature``). On a machine whose NVML answers for real, ``--real`` measures that
reader instead. Blocks alternate (off, on, off, on, ...) so drifting load hits both alike;
the ratio is the median of the per-round ratios. It also prints what one read costs in each
way a rank could get its temperature (why one sampler per node + a table file), and first
the ratio of the in-process reader alone (no subprocess).
Last line: the ratio of the full path (target >= 0.99).

    .venv/bin/python benchmarks/telemetry_overhead.py [--rounds 16] [--block-s 1.5] [--hz 1]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.fakes

from mixfleet.bench.mlp import make_mlp_matmul  # noqa: E402
from mixfleet.catalog.detect import detect  # noqa: E402
from mixfleet.telemetry import (  # noqa: E402
    DeviceTable,
    Sampler,
    device_temperature,
    open_reader,
)
from mixfleet.telemetry.smi import SmiReader  # noqa: E402


def _per_call_us(fn, n: int) -> float:  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n * 1e6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--block-s", type=float, default=1.5)
    ap.add_argument("--hz", type=float, default=1.0)
    ap.add_argument("--real", action="store_true", help="this machine's NVML, no fake node")
    ap.add_argument("--threads", type=int, default=1, help="torch threads of the training")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="mixfleet-telemetry-"))
    if args.real:
        readers = [open_reader("nvml")]
        run = _measure(args, readers, tmp)
    else:
        from tests.fakes.node import FakeNode

        node = FakeNode(tmp / "node", ["nvidia-h20"] * 4 + ["kunlun-p800"] * 4)
        with node.activated():
            print("-- in-process reader only (fake NVML) --")
            print(_measure(args, [open_reader("nvml")], tmp))
            print("-- the node's full reader path (fake NVML + xpu_smi subprocess) --")
            run = _measure(args, [open_reader("nvml"), SmiReader("xpu_smi")], tmp)
    print(run)


def _measure(args: argparse.Namespace, readers: list, tmp: Path) -> str:  # type: ignore[type-arg]
    acc = torch.accelerator.current_accelerator() if torch.accelerator.is_available() else None
    device = "cpu" if acc is None else f"{acc.type}:0"
    torch.set_num_threads(args.threads)  # a CPU rank's threads (cpu_threads(local_world))
    det = detect()
    table_path = tmp / "run" / "telemetry" / "devices-node.json"
    table = DeviceTable(table_path)
    for r in readers:
        table(r.read())
    temp = device_temperature(table_path, 1, vendor="nvidia", detection=det)  # rank on H20 #1
    assert temp() is not None, "the rank's device is not in the table"
    print(f"per read: table file {_per_call_us(temp, 2000):.1f} us, "
          f"{readers[0].name} {_per_call_us(readers[0].read, 200):.1f} us"
          + (f", {readers[1].name} (subprocess) "
             f"{_per_call_us(lambda: SmiReader(readers[1].name, min_interval_s=0).read(), 5):.0f}"
             f" us" if len(readers) > 1 else ""))
    wl = make_mlp_matmul(d_in=256, hidden=512, layers=3)
    model = wl.build_model().to(device)
    opt = torch.optim.SGD(model.parameters(), lr=1e-4)
    x, y = (t.to(device) for t in wl.train_set.take(torch.arange(128)))

    def sync() -> None:
        if device != "cpu":
            torch.accelerator.synchronize()

    def block(seconds: float, guard: bool) -> float:
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            (wl.loss(model, (x, y)) / 128).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            if guard:
                temp()  # the thermal guard's read, once per step
            n += 1
            if n % 10 == 0:
                sync()
        sync()
        return n / (time.perf_counter() - t0)

    block(1.0, False)  # warm-up
    ratios, reads, errors = [], 0, 0
    for _ in range(args.rounds):
        off = block(args.block_s, False)
        samplers = [Sampler(r, hz=args.hz, sink=table).start() for r in readers]
        on = block(args.block_s, True)
        for s in samplers:
            s.stop()
            reads += s.reads
            errors += s.errors
        ratios.append(on / off)
        print(f"off {off:8.1f} steps/s   on {on:8.1f} steps/s   ratio {on / off:.4f}")
    print(f"device {device}, readers {', '.join(r.name for r in readers)}, {reads} reads "
          f"({errors} errors) at {args.hz:g} Hz, table {table_path.name}")
    return (f"telemetry overhead: steps/s with {args.hz:g} Hz node sampling + per-step "
            f"table reads / without = {statistics.median(ratios):.4f}")


if __name__ == "__main__":
    main()
