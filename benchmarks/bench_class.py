"""Per-component extrapolation of `mixfleet bench --class` vs timing the whole model.

For ``cnn`` (ResNet-50) at a scale that runs on the CPU (0.5: 112 px, half the channels;
batch 4, fp32, one thread), the step time extrapolated from one profiled instance of each
component (stem, first and one repeated bottleneck per stage, head; x their counts) is
compared with forward + backward of the full chained model at the same scale. Both sides
take the fastest of several repetitions, interleaved, timed in this process's CPU seconds
(``time.process_time``), so other load on a shared host counts on neither side.
Last line: extrapolated / full (target 0.9-1.1). Smaller scales fit in the CPU caches
block by block but not as a whole model, which makes the extrapolation optimistic there.

``bench_class.py llama [PRESET]`` checks ``bench --class llama`` the same way (the rows the
pipeline's split reads): embedding + layers x one decoder block + head, each timed alone
(:func:`mixfleet.bench.llamaclass.llama_modules`), against forward + backward of the whole
:class:`mixfleet.workloads.llama.Llama` of that preset (``debug`` by default; batch 1).
"""

from __future__ import annotations

import sys
import time

import torch

from mixfleet.bench.classes import profile_class, time_full_model


def llama(preset: str) -> None:
    import torch.nn.functional as F
    from torch import nn

    from mixfleet.bench.classes import time_fwd_bwd
    from mixfleet.bench.llamaclass import llama_modules, llama_preset
    from mixfleet.workloads.llama import Llama

    torch.set_num_threads(1)
    torch.manual_seed(0)
    clock = time.process_time
    cfg = llama_preset(f"llama:{preset}")

    class Whole(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = Llama(cfg)

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            logits = self.model(ids).float()
            return F.cross_entropy(logits.flatten(0, 1), ids.flatten())

    mods, whole = llama_modules(cfg, "cpu"), Whole().train()
    ids = mods["embedding"][1]
    ext, full = [], []
    for _ in range(3):
        per = {k: time_fwd_bwd(m, f, 1, "cpu", 1, 3, clock) for k, (m, f) in mods.items()}
        ext.append(per["embedding"] + cfg.layers * per["block"] + per["head"])
        full.append(time_fwd_bwd(whole, ids, 1, "cpu", 1, 3, clock))
        print(f"extrapolated {ext[-1] * 1e3:8.1f} ms   full model {full[-1] * 1e3:8.1f} ms  "
              f"(block {per['block'] * 1e3:.1f} ms x{cfg.layers})", flush=True)
    e, f = min(ext), min(full)
    print(f"bench_class: llama:{preset} extrapolated/full {e / f:.2f} (extrapolated "
          f"{e * 1e3:.1f} ms, full {f * 1e3:.1f} ms; target 0.9-1.1)")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "llama":
        llama(sys.argv[2] if len(sys.argv) > 2 else "debug")
        return
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
