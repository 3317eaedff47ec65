"""Per-component extrapolation of `mixfleet bench --class` vs timing the whole model.

For ``cnn`` (ResNet-50) at a scale that runs on the CPU (0.5: 112 px, half the channels;
batch 4, fp32, one thread), the step time extrapolated from one profiled instance of each
component (stem, first and one repeated bottleneck per stage, head; x their counts) is
compared with forward + backward of the full chained model at the same scale. Both sides
take the fastest of several repetitions, interleaved, timed in this process's CPU seconds
(``time.process_time``), so other load on a shared host counts on neither side.
Last line: extrapolated / full (target 0.9-1.1). Smaller scales fit in the CPU caches
block by block but not as a whole model, which makes the extrapolation optimistic there.
"""

from __future__ import annotations

import sys
import time

import torch

from mixfleet.bench.classes import profile_class, time_full_model


def main() -> None:
    scale = float(sys.argv[1]) if len(sys.argv) > 1 else 0.5
    torch.set_num_threads(1)
    torch.manual_seed(0)
    clock = time.process_time  # CPU seconds of this process: other load on the host is out
    ext, full = [], []
    for _ in range(3):
        p = profile_class("cnn", batch=4, scale=scale, warmup=1, steps=3, clock=clock)
        ext.append(p.step_s)
        full.append(time_full_model("cnn", batch=4, scale=scale, warmup=1, steps=3,
                                    clock=clock))
        print(f"extrapolated {p.step_s * 1e3:8.1f} ms   full model {full[-1] * 1e3:8.1f} ms",
              flush=True)
    print(p.note())
    e, f = min(ext), min(full)
    print(f"bench_class: cnn scale {scale:g} extrapolated/full {e / f:.2f} "
          f"(extrapolated {e * 1e3:.1f} ms, full {f * 1e3:.1f} ms; target 0.9-1.1)")


if __name__ == "__main__":
    main()
