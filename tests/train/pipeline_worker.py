"""One rank of an in-test pipeline job (started by tests/train/test_pipeline.py with RANK,
WORLD_SIZE, MASTER_ADDR, MASTER_PORT set), or the single-process reference (``ref``):
one step of a small workload on the first global batch of the sampler, for each spec of
a list; writes this rank's gradients (by the model's own parameter names), its loss and
its weights after one SGD step to ``OUT/rank{R}-{I}.pt`` (``OUT/ref-{I}.pt`` for the
reference) for spec ``I``.

    python -m tests.train.pipeline_worker OUT pipe|ref SPECS_JSON

A spec: ``workload``, ``ranks``, ``blocks``, ``virtual``, ``schedule``, ``microbatches``,
``B``, optional ``stage_mode``, ``tie`` (llama's head tied) and ``steps`` (then
:func:`train` instead of one step); every spec of one list has the same number of ranks.
The reference accumulates each lane's micro-batches in order (``lanes``: each lane's
gradient sum, as the pipeline's lanes do) and keeps the whole batch's one-pass gradients
(``full``).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.distributed.tensor import DTensor

from mixfleet.train.parallel.pipeline import Layout, PipelineRank, lane_order
from mixfleet.train.sampler import GlobalBatchSampler
from mixfleet.workloads import get_workload
from mixfleet.workloads.base import Workload
from mixfleet.workloads.llama import Llama, preset_config
from mixfleet.workloads.lm import lm_loss, load_lm_data

LLAMA: dict[str, object] = {
    "preset": "debug", "dim": 64, "layers": 4, "heads": 4, "kv_heads": 2, "ffn_dim": 128,
    "seq_len": 32, "tie_embeddings": False, "corpus_chars": 200_000}
GPT = {"layers": 4, "d_model": 64, "heads": 2, "block": 32, "corpus_chars": 200_000}
LR = 0.1


def workload(name: str, tie: bool = False) -> Workload:
    """char-gpt as registered; llama as ``make_llama`` builds it (model, data, loss) but
    without its FLOPs count, which takes seconds on the meta device (``tie``: the head
    tied to the embedding)."""
    if name != "llama":
        return get_workload(name, **GPT)
    opts = {k: v for k, v in LLAMA.items() if k not in ("preset", "corpus_chars")}
    opts["tie_embeddings"] = tie
    lm = load_lm_data(None, int(LLAMA["seq_len"]), corpus_chars=int(LLAMA["corpus_chars"]))
    cfg = preset_config(str(LLAMA["preset"]), data_vocab=lm.vocab, **opts)
    return Workload(name="llama", build_model=lambda: Llama(cfg), train_set=lm.train,
                    eval_set=None, loss=lm_loss)


def batch(w: Workload, b: int) -> tuple[torch.Tensor, ...]:
    return w.train_set.take(GlobalBatchSampler(len(w.train_set), b, seed=0).global_batch_at(0))


def _full(t: torch.Tensor) -> torch.Tensor:
    """A whole tensor (an FSDP shard gathered over its stage: a collective)."""
    return t.full_tensor() if isinstance(t, DTensor) else t


def grads(named: Any) -> dict[str, torch.Tensor]:
    return {k: _full(p.grad).detach().clone() for k, p in named if p.grad is not None}


def sgd(named: Any) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        return {k: (_full(p) - LR * _full(p.grad)).clone() for k, p in named}


def reference(w: Workload, spec: dict[str, Any]) -> dict[str, Any]:
    model = w.build_model()
    x, y = batch(w, spec["B"])
    layout = Layout(tuple(spec["ranks"]), tuple(spec["blocks"]), spec["virtual"])
    order = lane_order(layout, spec["microbatches"], spec["B"])
    m = spec["microbatches"]
    lanes, losses = [], []
    for lane in range(layout.lanes):
        model.zero_grad(set_to_none=True)
        for idx in order[lane * m: (lane + 1) * m]:
            i = torch.tensor(list(idx))
            part = w.loss(model, (x[i], y[i])) / spec["B"]
            part.backward()
            losses.append(part.detach())
        lanes.append(grads(model.named_parameters()))
    model.zero_grad(set_to_none=True)
    full_loss = w.loss(model, (x, y)) / spec["B"]
    full_loss.backward()
    lane_loss = [torch.stack(losses[r * m: (r + 1) * m]).sum() for r in range(layout.lanes)]
    return {"lanes": lanes, "full": grads(model.named_parameters()),
            "lane_loss": lane_loss, "full_loss": full_loss.detach(),
            "stepped": sgd(model.named_parameters())}


def pipe(w: Workload, spec: dict[str, Any], rank: int) -> dict[str, Any]:
    model = w.build_model()
    layout = Layout(tuple(spec["ranks"]), tuple(spec["blocks"]), spec["virtual"])
    pr = PipelineRank(model, layout, rank=rank, loss=w.loss, global_batch=spec["B"],
                      microbatches=spec["microbatches"], schedule=spec["schedule"],
                      stage_mode=spec.get("stage_mode", "dp"),
                      param_dtype=getattr(torch, spec.get("dtype", "float32")))
    evaluated = pr.eval_loss(batch(w, spec["B"]))  # first: it must leave no gradient
    if spec.get("warm"):  # the first step after an evaluation infers the stages' shapes
        pr.forward_backward(batch(w, spec["B"]))  # (a forward of its own): count the next
        for q in pr.parameters():
            q.grad = None
    # FSDP2's all-gathers during the training step (``dist.all_gather_single`` in torch 2.13)
    name = "all_gather_single" if hasattr(dist, "all_gather_single") else "all_gather_into_tensor"
    gather, gathers = getattr(dist, name), [0]

    def counted(*a: Any, **k: Any) -> Any:
        gathers[0] += 1
        return gather(*a, **k)

    setattr(dist, name, counted)
    try:
        loss = pr.forward_backward(batch(w, spec["B"]))
    finally:
        setattr(dist, name, gather)
    named = pr.named_parameters()
    return {"grads": grads(named), "loss": loss, "stage": pr.stage, "lanes": pr.lanes,
            "stepped": sgd(named), "eval": evaluated, "gathers": gathers[0]}


def train(w: Workload, spec: dict[str, Any], rank: int | None) -> dict[str, Any]:
    """``spec["steps"]`` AdamW steps on the sampler's successive global batches: through
    the pipeline (``rank``), or one process on each whole batch (``rank`` None). Returns
    each step's loss (the last stage's; None elsewhere) and the final weights."""
    model = w.build_model()
    sampler = GlobalBatchSampler(len(w.train_set), spec["B"], seed=0)
    pr = None
    if rank is not None:
        layout = Layout(tuple(spec["ranks"]), tuple(spec["blocks"]), spec["virtual"])
        pr = PipelineRank(model, layout, rank=rank, loss=w.loss, global_batch=spec["B"],
                          microbatches=spec["microbatches"], schedule=spec["schedule"],
                          stage_mode=spec.get("stage_mode", "dp"))
    params = pr.parameters() if pr else list(model.parameters())
    opt = torch.optim.AdamW(params, lr=1e-3)
    losses: list[float | None] = []
    for step in range(spec["steps"]):
        for q in params:
            q.grad = None
        batch = w.train_set.take(sampler.global_batch_at(step))
        if pr is None:
            loss: torch.Tensor | None = w.loss(model, batch) / spec["B"]
            assert loss is not None
            loss.backward()
        else:
            loss = pr.forward_backward(batch)
        losses.append(None if loss is None else float(loss.detach()))
        opt.step()
    named = pr.named_parameters() if pr else list(model.named_parameters())
    return {"losses": losses, "weights": {k: _full(p).detach().clone() for k, p in named},
            "lanes": pr.lanes if pr else [0]}


def main() -> None:
    out, mode, specs = Path(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3])
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    loaded: dict[str, Workload] = {}
    if mode == "pipe":
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        dist.init_process_group("gloo", rank=rank, world_size=world)
    for i, spec in enumerate(specs):
        torch.manual_seed(0)
        key = f"{spec['workload']}-{spec.get('tie', False)}"
        if key not in loaded:
            loaded[key] = workload(spec["workload"], spec.get("tie", False))
        w = loaded[key]
        torch.manual_seed(0)  # the model's initial weights
        if mode == "ref":
            got = train(w, spec, None) if spec.get("steps") else reference(w, spec)
            torch.save(got, out / f"ref-{i}.pt")
        else:
            got = train(w, spec, rank) if spec.get("steps") else pipe(w, spec, rank)
            torch.save(got, out / f"rank{rank}-{i}.pt")
    if mode == "pipe":
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
