"""LLM training throughput: tokens/s per device for the llama presets that fit, and MFU.

For each preset: the project's decoder (:mod:`mixfleet.workloads.llama`) trained by a
plain PyTorch loop on one device (AdamW, optional bf16 autocast, optional
``torch.compile``) on the workload's own batches (the byte-level Shakespeare corpus unless
``--data DIR``). ``--warmup`` steps, then ``--steps`` timed steps (device synchronised
around each); tokens/s = batch x seq_len / median step time.

MFU = measured tokens/s / the tokens/s the chip's dense bf16 peak would allow at the
analytic FLOPs per token (6 x matmul parameters + 12 x layers x dim x seq_len, PaLM's
convention; :func:`~mixfleet.workloads.llama.analytic_flops_per_token`). The peak comes
from the chip catalog through device detection; the CPU and chips whose peak is unknown
get "MFU unknown", never a guess. A preset that does not fit the device's memory is
reported as such and skipped.

Anchor (issue 14): torchtitan, Llama 3.1 8B on 8 H100 (500 W cap), FSDP: 5,762 tokens/s
per GPU, 33-39% MFU.

Last line: the MFU of the last preset measured (the ratio measured / peak-bound tokens/s),
or why it is unknown. The comparison mixfleet loop / plain loop for LLMs comes with the
sharded trainer (``benchmarks/fsdp_overhead.py``), not here.

    .venv/bin/python benchmarks/llm_throughput.py                      # CPU: debug preset
    python benchmarks/llm_throughput.py --preset debug llama3-1b --seq-len 2048 --batch 8 \\
        --bf16 --compile                                                # on a GPU
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Any

import torch

from mixfleet.workloads.llama import (
    PRESETS,
    Llama,
    analytic_flops_per_token,
    parameter_count,
    preset_config,
)
from mixfleet.workloads.lm import lm_loss, load_lm_data


def _device(spec: str) -> tuple[torch.device, str | None, float | None]:
    """(torch device, chip id or None, dense bf16 peak FLOP/s or None)."""
    from mixfleet.bench.runner import resolve_device
    from mixfleet.catalog import load_catalog

    dev, chip = resolve_device(spec)
    if dev == "cpu":
        return torch.device("cpu"), None, None
    cat = load_catalog()
    peak = cat[chip].peak_flops() if chip in cat else None
    return torch.device(dev if ":" in dev else f"{dev}:0"), chip if chip in cat else None, peak


def _sync(dev: torch.device) -> None:
    if dev.type != "cpu":
        torch.accelerator.synchronize()


def _fits(params: int, dev: torch.device) -> tuple[bool, str]:
    """fp32 weights + grads + AdamW moments (16 bytes/parameter) against free memory."""
    need = 16 * params
    if dev.type == "cpu":
        import os

        free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    else:
        free, _total = torch.accelerator.get_memory_info(dev) if hasattr(
            torch.accelerator, "get_memory_info") else (None, None)
        if free is None:
            return True, ""
    return need < 0.8 * free, f"needs ~{need / 2**30:.1f} GiB for weights, grads and " \
                              f"AdamW state; {free / 2**30:.1f} GiB free"


def measure(preset: str, args: argparse.Namespace, dev: torch.device) -> dict[str, Any]:
    seq = args.seq_len or PRESETS[preset].seq_len
    data = load_lm_data(args.data, seq, corpus_chars=args.corpus_chars)
    cfg = preset_config(preset, data_vocab=data.vocab, seq_len=seq)
    n_params = parameter_count(cfg)
    ok, why = _fits(n_params, dev)
    if not ok:
        return {"preset": preset, "skipped": why}
    torch.manual_seed(0)
    model: Any = Llama(cfg).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=dev.type == "cuda")
    if args.compile:
        model = torch.compile(model)
    gen = torch.Generator().manual_seed(0)
    n = len(data.train)
    times: list[float] = []
    if dev.type != "cpu":
        torch.accelerator.reset_peak_memory_stats()
    for i in range(args.warmup + args.steps):
        idx = torch.randint(0, n, (args.batch,), generator=gen)
        x, y = (t.to(dev, non_blocking=True) for t in data.train.take(idx))
        _sync(dev)
        t0 = time.perf_counter()
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=args.bf16):
            loss = lm_loss(model, (x, y)) / args.batch
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        _sync(dev)
        if i >= args.warmup:
            times.append(time.perf_counter() - t0)
    step = statistics.median(times)
    tps = args.batch * seq / step
    fpt = analytic_flops_per_token(cfg)
    peak_mem = torch.accelerator.max_memory_allocated() if dev.type != "cpu" else None
    return {"preset": preset, "params": n_params, "seq": seq, "batch": args.batch,
            "step_s": step, "tokens_per_s": tps, "flops_per_token": fpt,
            "achieved_tflops": tps * fpt / 1e12, "peak_mem": peak_mem,
            "loss": float(loss.item())}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", nargs="+", default=None, choices=sorted(PRESETS),
                   help="presets to measure (default: debug on CPU; debug and llama3-1b on "
                        "an accelerator)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda:0, npu:0, ...")
    p.add_argument("--seq-len", type=int, default=None, help="tokens per sequence (default: "
                   "128 on CPU, else the preset's)")
    p.add_argument("--batch", type=int, default=None, help="sequences per step (default: 4 "
                   "on CPU, 8 on an accelerator)")
    p.add_argument("--steps", type=int, default=10, help="timed steps (default 10)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (default 3)")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast (fp32 master weights)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--threads", type=int, default=0, help="CPU intra-op threads (0: torch's "
                   "default)")
    p.add_argument("--data", default=None, metavar="DIR", help="token data from `mixfleet "
                   "data prepare` (default: Shakespeare as bytes)")
    p.add_argument("--corpus-chars", type=int, default=2_000_000, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    dev, chip, peak = _device(args.device)
    cpu = dev.type == "cpu"
    args.preset = args.preset or (["debug"] if cpu else ["debug", "llama3-1b"])
    args.seq_len = args.seq_len or (128 if cpu else None)
    args.batch = args.batch or (4 if cpu else 8)
    where = f"{dev} ({chip or ('cpu' if cpu else 'not in the catalog')}), torch " \
            f"{torch.__version__}, threads {torch.get_num_threads()}"
    print(f"llm_throughput on {where}; bf16 autocast {'on' if args.bf16 else 'off'}, "
          f"compile {'on' if args.compile else 'off'}, AdamW, {args.steps} timed steps after "
          f"{args.warmup} warm-up", flush=True)
    last: dict[str, Any] | None = None
    for preset in args.preset:
        try:
            r = measure(preset, args, dev)
        except torch.OutOfMemoryError as e:
            r = {"preset": preset, "skipped": f"out of memory ({str(e).splitlines()[0]})"}
        if "skipped" in r:
            print(f"{preset}: does not fit: {r['skipped']}", flush=True)
            continue
        mem = f", peak memory {r['peak_mem'] / 2**30:.1f} GiB" if r["peak_mem"] else ""
        mfu = r["tokens_per_s"] * r["flops_per_token"] / peak if peak else None
        r["mfu"] = mfu
        print(f"{preset}: {r['params'] / 1e6:,.1f}M params, seq {r['seq']}, batch "
              f"{r['batch']}: {r['tokens_per_s']:,.0f} tokens/s per device, step "
              f"{r['step_s'] * 1e3:.1f} ms (median), {r['flops_per_token'] / 1e9:.3f} GFLOP/"
              f"token -> {r['achieved_tflops']:.3f} TFLOP/s achieved, MFU "
              f"{'unknown' if mfu is None else f'{100 * mfu:.1f}%'}{mem}, last loss "
              f"{r['loss']:.3f} nats/token", flush=True)
        last = r
    if last is None:
        print("MFU: unknown (no preset fit the device)")
        return 1
    if last["mfu"] is None:
        why = "the CPU has no bf16 peak in the catalog" if cpu else \
            f"the catalog has no bf16 peak for {chip or dev}"
        print(f"MFU ({last['preset']}, measured tokens/s / peak-bound tokens/s): unknown "
              f"({why}); measured {last['tokens_per_s']:,.0f} tokens/s = "
              f"{last['achieved_tflops']:.3f} TFLOP/s")
    else:
        bound = peak / last["flops_per_token"]  # type: ignore[operator]
        print(f"MFU ({last['preset']}, measured / peak-bound tokens/s = "
              f"{last['tokens_per_s']:,.0f} / {bound:,.0f}): {last['mfu']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
