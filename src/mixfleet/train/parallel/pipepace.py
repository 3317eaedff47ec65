"""Emulated chips in a pipeline: each stage's chunks paced at their chip's time (see
docs/pipeline.md, "Emulated stages"; the pacer itself is
:mod:`mixfleet.emulate.stagepace`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mixfleet.emulate.stagepace import ChunkPace
from mixfleet.train.parallel.fsdp import param_bytes_for
from mixfleet.train.parallel.pipeplan import AsModelCosts, PipelinePlan, as_model_costs

__all__ = ["chunk_paces", "pace_stages"]


def chunk_paces(plan: PipelinePlan, costs: AsModelCosts, kinds: Sequence[str], *,
                global_batch: int, time_scale: float, prices: Any,
                nodes: Sequence[int], param_bytes: int = 2) -> dict[int, ChunkPace]:
    """Each virtual stage's wall seconds per micro-batch under ``as_model``, x
    ``time_scale`` (``kinds``/``nodes``: each pipeline rank's chip kind and node):

    - compute: its share of the model's training FLOPs (its blocks, the head on the last)
      of one micro-batch at the profile's cost shape in tokens (micro-batch fixed cost and
      efficiency curve, as the dp/fsdp emulation pays them), forward 1/3, backward 2/3;
      the profile's per-step fixed cost (its share) once per step, before the first chunk;
    - the activations of a micro-batch (bf16) to the next stage and their gradient back,
      over the priced link between the two stages' first ranks;
    - the stage's own collectives over its ranks' link: under fsdp the all-gather of its
      parameters (``param_bytes`` each) once per step, issued at its start (its first
      forward waits for it; :mod:`~mixfleet.train.parallel.stagefsdp`), and the
      reduce-scatter of their gradients (fp32) once after the last backward; under dp the
      all-reduce of the gradients (fp32) once after the last;
    - activations (and their gradients) in the sending stage's compute dtype:
      ``param_bytes`` under fsdp over several ranks, else fp32."""
    from mixfleet.emulate import load_profiles
    from mixfleet.emulate.pricing import transfer_s
    lay = plan.layout
    profiles = load_profiles()
    p, n_blocks = lay.stages, sum(lay.blocks)
    tokens = float(global_batch // lay.lanes // plan.microbatches * costs.seq_len)
    first = [lay.first_rank(s) for s in range(p)]
    sharded = [plan.stage_mode == "fsdp" and lay.ranks[s] > 1 for s in range(p)]

    def send(a: int, b: int) -> float:  # the tensor of the earlier stage, either way
        ra, rb = first[a % p], first[b % p]
        link = prices.link(kinds[ra], kinds[rb], same_node=nodes[ra] == nodes[rb])
        nbytes = tokens * costs.dim * (param_bytes if sharded[min(a, b) % p] else 4)
        return float(link.latency_s + nbytes / (link.gbps * 1e9))

    emb = float(costs.dim * costs.vocab)
    per_block = max(0.0, (costs.params - 2 * emb) / costs.layers) * costs.layers / n_blocks
    out: dict[int, ChunkPace] = {}
    total = p * lay.virtual
    gathered = [0.0] * p  # each stage's gathers so far (its virtual stages', in turn)
    for j, k in enumerate(lay.blocks):
        s = j % p
        kind = kinds[first[s]]
        t = k * costs.block_s(kind, n_blocks, tokens)
        if j == total - 1:
            t += costs.head_s(kind, tokens)
        full = costs.token_s[kind] * tokens  # the whole model's micro-batch at full speed
        cost = profiles[kind].step_cost("tokens")
        t *= cost.microbatch_s(tokens, costs.token_s[kind]) / full  # fixed cost, efficiency
        share = t / full
        params = k * per_block + (emb if j == 0 else 0.0) + (emb if j == total - 1 else 0.0)
        n = lay.ranks[s]
        rs = list(range(first[s], first[s] + n))
        link = prices.group_link([kinds[r] for r in rs], [nodes[r] for r in rs])
        pre, post = share * cost.step_fixed_s, 0.0
        if sharded[s]:  # gathered once per step, from its start (one link: in turn)
            gathered[s] += transfer_s("all_gather", float(param_bytes) * params, n, link)
            post += transfer_s("reduce_scatter", 4.0 * params, n, link)
        elif n > 1:
            post += transfer_s("all_reduce", 4.0 * params, n, link)
        out[j] = ChunkPace(fwd_s=t / 3 * time_scale, bwd_s=2 * t / 3 * time_scale,
                           send_fwd_s=send(j, j + 1) * time_scale if j < total - 1 else 0.0,
                           send_bwd_s=send(j, j - 1) * time_scale if j > 0 else 0.0,
                           pre_step_s=pre * time_scale, post_step_s=post * time_scale,
                           gather_s=gathered[s] * time_scale if sharded[s] else 0.0)
    return out


def pace_stages(trainer: Any, emu: Any, plan: PipelinePlan, as_model: Any, cfg: Any,
                places: Sequence[Any], local_world: int) -> None:
    """An emulated rank of a pipeline: its stages' chunks take its chip's time
    (:class:`~mixfleet.emulate.stagepace.ChunkPacer`; under ``as_model`` the named model's
    per-stage times and activation transfers, else the real time / the chip's relative
    speed), and the emulated device no longer pads whole steps."""
    from mixfleet.emulate.stagepace import ChunkPacer

    kinds = [p.kind for p in places]
    paces = None
    if as_model is not None:
        costs = as_model_costs(cfg.emulate.as_model, kinds, cfg.train.optimizer,
                               cfg.emulate.as_model_seq_len or None)
        paces = chunk_paces(plan, costs, kinds, global_batch=cfg.train.global_batch,
                            time_scale=as_model.time_scale, prices=cfg.emulate.link_prices(),
                            nodes=[r // max(1, local_world) for r in range(len(kinds))],
                            param_bytes=param_bytes_for(cfg.parallel.param_dtype))
    if as_model is not None:  # every step record says what it is paced as
        emu.labels = dict(as_model.fields())
    pacer: ChunkPacer = trainer.strategy.chunks
    pacer.paces, pacer.speed, pacer.factor = paces, emu.speed, emu.clock_factor
    pacer.per_step = plan.microbatches * len(plan.layout.lanes_of(trainer.rank))
    emu.pace_externally()
