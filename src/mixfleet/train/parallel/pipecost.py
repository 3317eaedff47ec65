"""The pipeline mode in the cost model (docs/costmodel.md, "Pipeline"): each stage order
and stage mode of a job's chip kinds, split by :func:`~.split.split_blocks`, priced with
the same terms as dp and fsdp, and the fastest that fits as one
:class:`~mixfleet.fleet.costmodel.ModePlan`. Registers itself as the ``pipeline`` mode of
:data:`~mixfleet.fleet.costmodel.MODES`.

A stage is one chip kind (one job: one stage per kind; one kind: a stage per rank). Its
time per micro-batch slot is ``split.stage_cost``'s, with per-block seconds taken from the
cost model's seconds per work unit of the kind (the slowest rank of it), each block its
share of the model's training FLOPs, through the profile's efficiency curve at the
micro-batch's size; every slot also pays the profile's micro-batch fixed cost, the
stage's point-to-point sends (activations forward, their gradients backward, priced by
:class:`~mixfleet.emulate.pricing.LinkPrices` between the neighbouring ranks) and, with
fsdp inside the stage, its all-gathers. The step is ``(m + P - 1)`` slots of the slowest
stage, then the slowest stage tail (its gradient all-reduce or reduce-scatter over its own
link and the profile's step fixed cost).
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence
from typing import Any, Literal

from mixfleet.emulate.pricing import Link, transfer_s
from mixfleet.errors import ConfigError
from mixfleet.fleet.costmodel import Context, ModePlan, RankPlan, refusal_text, register_mode
from mixfleet.fleet.costterms import GRAD_BYTES, HBM_USABLE, MASTER_BYTES, OPT_BYTES
from mixfleet.train.parallel.pipeconfig import (
    PipelineConfig,
    StageConfig,
    default_stages,
    resolve_stages,
)
from mixfleet.train.parallel.pipeline import check_schedule
from mixfleet.train.parallel.pipeplan import pick_microbatches
from mixfleet.train.parallel.split import (
    ModelBytes,
    SplitPlan,
    StageChip,
    in_flight,
    split_blocks,
    stage_cost,
)

__all__ = ["PIPELINE", "ACT_BYTES", "predict_pipeline"]

PIPELINE = "pipeline"
#: Bytes per activation value of a stage under dp (or of one rank): it computes and sends in
#: fp32; a stage under fsdp of several ranks computes, gathers and sends in the
#: parameters' dtype (``job.param_bytes``; stagefsdp.py).
ACT_BYTES = 4
#: Every stage order is tried up to this many chip kinds (4! = 24 orders); above, the
#: default order of :func:`~.pipeconfig.default_stages` only.
MAX_KINDS_PERMUTED = 4
_HOST = 1e15  # bytes: a chip without a catalog HBM is not limited


@dataclasses.dataclass(frozen=True)
class _Stage:
    chip: str
    ranks: tuple[int, ...]  # job ranks
    blocks: int = 0  # given ([[parallel.stages]] blocks); 0: the split picks


@dataclasses.dataclass(frozen=True)
class _Figs:
    """A stage's per-micro-batch figures before the split: its slowest rank, the whole
    model's work on it, its own link, its all-gathers (per block, embedding, head; 0
    without fsdp) and its sends per slot."""

    rank: int
    work: float
    own: Link
    block_g: float
    embed_g: float
    head_g: float
    sends: float


def _parts(ctx: Context) -> tuple[float, float, float, float]:
    """(FLOP share of one block, FLOP share of the head, embedding and head parameters):
    the head costs ``6 x dim x vocab`` FLOPs per token (as the llama count has it), the
    blocks share the rest equally; a tied head holds the embedding's weight too."""
    m = ctx.job.model
    head_f = 6.0 * m.dim * m.vocab * m.seq_len if m.dim and m.vocab and m.seq_len else 0.0
    head_f = min(head_f, 0.5 * m.flops_per_sample)
    block_f = (m.flops_per_sample - head_f) / max(1, m.blocks) / m.flops_per_sample
    root = float(m.root_params)
    emb = min(root, float(m.dim * m.vocab)) if m.dim and m.vocab else root / 2
    head = root - emb if root - emb >= emb else root
    return block_f, head_f / m.flops_per_sample, emb, head


def _between(ctx: Context, s: _Stage, t: _Stage, lanes: int) -> Link:
    """The slowest link between neighbouring stages over the lanes (lane r: rank
    ``r % ranks`` of each)."""
    pairs = [(ctx.ranks[s.ranks[r % len(s.ranks)]], ctx.ranks[t.ranks[r % len(t.ranks)]])
             for r in range(lanes)]
    links = [ctx.prices.link(a.chip, b.chip, same_node=a.node == b.node, catalog=ctx.catalog)
             for a, b in pairs]
    return min(links, key=lambda lk: (lk.gbps, -lk.latency_s))


def _option(ctx: Context, stages: Sequence[_Stage], stage_mode: str, m: int, b: int,
            lanes: int, schedule: Literal["1f1b", "gpipe"]) -> ModePlan:
    """One stage order and stage mode, split and priced (see the module doc)."""
    job, mdl = ctx.job, ctx.job.model
    p, n_blocks, upb = len(stages), mdl.blocks, job.units_per_sample
    sharded = stage_mode == "fsdp"
    block_f, head_f, emb, head = _parts(ctx)
    # activations in the compute dtype: the parameters' under fsdp in every stage
    act_dtype = job.param_bytes if sharded and all(len(st.ranks) > 1 for st in stages) \
        else ACT_BYTES
    act = mdl.act_bytes(b, act_bytes=act_dtype)
    logits = mdl.logits_bytes() * b * ACT_BYTES / 2.0 if act is not None else 0.0
    model = ModelBytes(block_params=(mdl.block_params * MASTER_BYTES,) * n_blocks,
                       block_acts=(((act or 0.0) - logits) / n_blocks,) * n_blocks,
                       embed_params=emb * MASTER_BYTES, head_params=head * MASTER_BYTES,
                       head_acts=logits,
                       state_factor=(MASTER_BYTES + GRAD_BYTES + OPT_BYTES[job.optimizer])
                       / MASTER_BYTES,
                       gathered_factor=(job.param_bytes + GRAD_BYTES) / MASTER_BYTES)
    # a stage under fsdp computes (and sends) in the parameters' dtype, else in fp32
    dtype = [job.param_bytes if sharded and len(st.ranks) > 1 else ACT_BYTES for st in stages]
    send_bytes = [b * (mdl.seq_len or 1) * (mdl.dim or 0) * dtype[s] for s in range(p - 1)]
    hops = [_between(ctx, stages[s], stages[s + 1], lanes) for s in range(p - 1)]
    hop_s = [transfer_s("send", send_bytes[s], 2, lk) for s, lk in enumerate(hops)]
    chips, figs = [], []
    for s, st in enumerate(stages):
        i = max(st.ranks, key=lambda r: (ctx.units[r].value, -r))  # the slowest rank
        cost, n = ctx.costs[i], len(st.ranks)
        work = b * upb * ctx.units[i].value / cost.efficiency(b * upb)
        own = ctx.prices.group_link([ctx.ranks[r].chip for r in st.ranks],
                                    [ctx.ranks[r].node for r in st.ranks], catalog=ctx.catalog)
        gather = n > 1 and sharded

        def ag(params: float, own: Link = own, n: int = n, gather: bool = gather) -> float:
            return transfer_s("all_gather", params * job.param_bytes, n, own) if gather else 0.0

        # fsdp gathers a stage's parameters once per step (stagefsdp.py), not per slot
        f = _Figs(rank=i, work=work, own=own, block_g=ag(mdl.block_params),
                  embed_g=ag(emb), head_g=ag(head),
                  sends=(hop_s[s] if s < p - 1 else 0.0) + (hop_s[s - 1] if s > 0 else 0.0))
        chips.append(StageChip(
            chip=st.chip, ranks=n, block_s=(block_f * work,) * n_blocks,
            head_s=head_f * work, slot_fixed_s=cost.microbatch_fixed_s + f.sends,
            memory_bytes=_hbm(ctx, st.chip) or _HOST))
        figs.append(f)
    if stages[0].blocks:  # given: priced as they are
        split = _given(chips, model, [st.blocks for st in stages], m, schedule, sharded)
        over = [(c.chip, mem) for c, mem in zip(chips, split.stage_bytes, strict=True)
                if mem > c.memory_bytes]
        refusal = (f"the given blocks {[st.blocks for st in stages]} do not fit: "
                   f"{over[0][0]} needs {over[0][1] / 2**30:.2f} GiB per chip" if over else "")
    else:
        try:
            split, refusal = split_blocks(chips, model, microbatches=m, schedule=schedule,
                                          sharded=sharded), ""
        except ConfigError as e:  # the fastest split as if memory were no limit, refused
            refusal = str(e)
            split = split_blocks([dataclasses.replace(c, memory_bytes=float("inf"))
                                  for c in chips], model, microbatches=m, schedule=schedule,
                                 sharded=sharded)
    return _priced(ctx, stages, stage_mode, schedule, m, b, lanes, chips, model, split, figs,
                   (block_f, head_f, emb, head), hops, hop_s, send_bytes, refusal)


def _given(chips: Sequence[StageChip], model: ModelBytes, blocks: Sequence[int], m: int,
           schedule: Literal["1f1b", "gpipe"], sharded: bool) -> SplitPlan:
    """A given split, priced by ``stage_cost`` as ``split_blocks`` prices its own."""
    times, mems, lo = [], [], 0
    for s, k in enumerate(blocks):
        t, mem = stage_cost(chips, model, s, lo, lo + k, microbatches=m, schedule=schedule,
                            sharded=sharded)
        times.append(t)
        mems.append(mem)
        lo += k
    p = len(blocks)
    return SplitPlan(blocks=tuple(blocks), stage_s=tuple(times), stage_bytes=tuple(mems),
                     step_s=(m + p - 1) * max(times), bubble=(p - 1) / (m + p - 1))


def _hbm(ctx: Context, chip: str) -> float | None:
    c = ctx.catalog.get(chip)
    gib = c.hbm_gib.value if c is not None else None
    return gib * 2**30 * HBM_USABLE if gib is not None else None


def _priced(ctx: Context, stages: Sequence[_Stage], stage_mode: str, schedule: str, m: int,
            b: int, lanes: int, chips: list[StageChip], model: ModelBytes, split: SplitPlan,
            figs: list[_Figs], parts: tuple[float, float, float, float], hops: list[Link],
            hop_s: list[float], send_bytes: Sequence[float], refusal: str) -> ModePlan:
    """The split's stages as rank plans, the step's breakdown and the option's detail."""
    job, p = ctx.job, len(stages)
    block_f, head_f, emb, head = parts
    sharded = stage_mode == "fsdp"
    rps: list[RankPlan] = []
    rows: list[dict[str, Any]] = []
    tails: list[tuple[float, int]] = []
    lo = 0
    for s, (st, k) in enumerate(zip(stages, split.blocks, strict=True)):
        f = figs[s]
        i, work, own = f.rank, f.work, f.own
        n, first, last = len(st.ranks), s == 0, s == p - 1
        per = lanes / n
        slot, mem = stage_cost(chips, model, s, lo, lo + k, microbatches=m,
                               schedule=schedule, sharded=sharded)
        compute = (k * block_f + (head_f if last else 0.0)) * work * per
        gather = (k * f.block_g + (f.embed_g if first else 0.0)  # once per step
                  + (f.head_g if last else 0.0))
        params = k * job.model.block_params + (emb if first else 0.0) + (head if last else 0.0)
        units = [job.model.block_params] * k + ([emb] if first else []) + ([head] if last else [])
        if n == 1:
            reduce = 0.0
        elif sharded:
            reduce = sum(transfer_s("reduce_scatter", u * GRAD_BYTES, n, own) for u in units)
        else:
            reduce = transfer_s("all_reduce", params * GRAD_BYTES, n, own)
        shard = n if sharded else 1
        acts = (sum(model.block_acts[lo:lo + k]) + (model.head_acts if last else 0.0))
        memory = {"params": params * MASTER_BYTES / shard, "grads": params * GRAD_BYTES / shard,
                  "optimizer": params * OPT_BYTES[job.optimizer] / shard,
                  "activations": acts * in_flight(schedule, p, s, m) * per}
        if sharded and n > 1:  # gathered parameters and unsharded gradients, all step
            memory["gathered"] = params * (job.param_bytes + GRAD_BYTES)
        hbm = _hbm(ctx, st.chip)
        cost = ctx.costs[i]
        tails.append((cost.step_fixed_s + reduce, s))
        for r in st.ranks:
            rps.append(RankPlan(rank=r, chip=st.chip, share=job.global_batch // n,
                                micro_batches=(b,) * int(m * per), compute_s=m * compute,
                                fixed_s=m * cost.microbatch_fixed_s * per + cost.step_fixed_s,
                                unit_s=ctx.units[r], memory=memory, hbm_bytes=hbm,
                                fits=hbm is None or mem <= hbm))
        rows.append({"chip": st.chip, "ranks": n, "job_ranks": list(st.ranks), "blocks": k,
                     "slot_s": slot, "compute_s": compute, "send_s": f.sends * per,
                     "gather_s": gather, "fixed_s": cost.microbatch_fixed_s * per,
                     "reduce_s": reduce, "step_fixed_s": cost.step_fixed_s,
                     "link": own.describe() if n > 1 else None, "memory_bytes": mem,
                     "hbm_bytes": hbm, "fits": hbm is None or mem <= hbm})
        lo += k
    crit = max(range(p), key=lambda s: (rows[s]["slot_s"], -s))
    cr = rows[crit]
    comm: dict[str, float] = {}
    for s, lk in ((crit, hops[crit] if crit < p - 1 else None),
                  (crit - 1, hops[crit - 1] if crit > 0 else None)):
        if lk is not None:
            comm[lk.cls] = comm.get(lk.cls, 0.0) + m * hop_s[s] * lanes / cr["ranks"]
    if cr["ranks"] > 1:
        cls = figs[crit].own.cls
        comm[cls] = comm.get(cls, 0.0) + cr["reduce_s"]
    # The gathers start with the step (prefetched): stage s waits for its own only past
    # the forwards of the stages before it (a third of their slots)
    waits = [(rows[s]["gather_s"] - sum(rows[j]["slot_s"] for j in range(s)) / 3, s)
             for s in range(p)]
    wait, ws = max(waits)
    if wait > 0:
        cls = figs[ws].own.cls
        comm[cls] = comm.get(cls, 0.0) + wait
    tail = max(tails)[0]
    idle = (p - 1) * cr["slot_s"] + tail - cr["step_fixed_s"] - cr["reduce_s"]
    links = sorted({lk.describe() for lk in hops}
                   | {r["link"] for r in rows if r["link"] is not None})
    order = [st.chip for st in stages]
    bad = [r for r in rps if not r.fits]
    if refusal:
        refusal = (f"pipeline does not fit ({' > '.join(order)}, {stage_mode} inside "
                   f"stages): {refusal}")
    elif bad:
        worst = max(bad, key=lambda r: (r.need_bytes - (r.hbm_bytes or 0), -r.rank))
        refusal = refusal_text(worst, PIPELINE)
    act_origin = "assumed" if job.model.act_bytes(1) is None else job.model.act_origin
    detail = {"order": order, "stage_mode": stage_mode, "schedule": schedule,
              "microbatches": m, "micro_batch": b, "lanes": lanes,
              "bubble": split.bubble, "bubble_s": (p - 1) * cr["slot_s"], "stages": rows,
              "transfers": [{"from": order[s], "to": order[s + 1], "link": hops[s].describe(),
                             "bytes": send_bytes[s], "send_s": hop_s[s]}
                            for s in range(p - 1)]}
    origins = {"compute": "+".join(sorted({u.origin for u in ctx.units})),
               "fixed": "+".join(sorted({c.origin.split(" ")[0] for c in ctx.costs})),
               "comm": "+".join(sorted({d.rsplit("(", 1)[-1].rstrip(")") for d in links}))
               or "none", "memory": f"catalog HBM; activations {act_origin}"}
    return ModePlan(mode=PIPELINE, ranks=tuple(sorted(rps, key=lambda r: r.rank)), comm=comm,
                    links=tuple(links), samples_per_step=job.global_batch,
                    units_per_sample=job.model.seq_len or 1, origins=origins,
                    refusal=refusal, idle_s=idle, critical_rank=stages[crit].ranks[0],
                    detail=detail)


def _stages(ctx: Context) -> tuple[list[list[_Stage]], str]:
    """The stage orders to try (and a note): the job's given stages (their blocks when they
    add up to the model's), else one stage per chip kind in every order (the default order
    of ``default_stages`` first), or a stage per rank when all ranks are one kind."""
    job, chips = ctx.job, [r.chip for r in ctx.ranks]
    if job.stages:
        given = [StageConfig(chip=c, ranks=n, blocks=k) for c, n, k in job.stages]
        fits = sum(k for _, _, k in job.stages) == job.model.blocks
        cfg = PipelineConfig(stages=given if fits else
                             [dataclasses.replace(g, blocks=0) for g in given])
        res = resolve_stages(cfg, chips, job.model.blocks)
        out, at = [], 0
        for st in res.stages:
            out.append(_Stage(st.chip, tuple(res.order[at:at + st.ranks]), st.blocks))
            at += st.ranks
        note = "" if fits or not given[0].blocks else (
            f"the given blocks {[g.blocks for g in given]} are the trained model's; the "
            f"split of {job.model.name}'s {job.model.blocks} is predicted")
        return [out], note
    by_kind: dict[str, tuple[int, ...]] = {}
    for i, c in enumerate(chips):
        by_kind[c] = (*by_kind.get(c, ()), i)
    if len(by_kind) == 1:
        return [[_Stage(chips[0], (i,)) for i in range(len(chips))]], ""
    mem = {c: (ctx.catalog[c].hbm_gib.value if c in ctx.catalog else None) for c in by_kind}
    first = tuple(s.chip for s in default_stages(chips, mem))
    orders = [first]
    if len(by_kind) <= MAX_KINDS_PERMUTED:
        orders += [o for o in itertools.permutations(first) if o != first]
    return [[_Stage(c, by_kind[c]) for c in o] for o in orders], ""


def _refused(ctx: Context, why: str) -> ModePlan:
    """A pipeline that cannot be laid out at all: no figures, the reason."""
    rps = tuple(RankPlan(rank=i, chip=r.chip, share=0, micro_batches=(), compute_s=0.0,
                         fixed_s=0.0, unit_s=ctx.units[i], memory={}, hbm_bytes=_hbm(ctx, r.chip),
                         fits=False) for i, r in enumerate(ctx.ranks))
    return ModePlan(mode=PIPELINE, ranks=rps, comm={}, links=(),
                    samples_per_step=ctx.job.global_batch,
                    units_per_sample=ctx.job.model.seq_len or 1, origins={},
                    refusal=f"pipeline does not fit: {why}")


def predict_pipeline(mode: str, ctx: Context) -> ModePlan:
    """The fastest pipeline (stage order x dp or fsdp inside the stages) that fits, with
    every option tried in ``detail["options"]``; the fastest refused one when none fits."""
    job = ctx.job
    if len(ctx.ranks) < 2:
        return _refused(ctx, "it needs at least 2 ranks")
    if not job.stage_modes:
        return _refused(ctx, "the workload trained cannot run it: it cannot be cut into "
                             "stages (llama and char-gpt can), or its head is tied to its "
                             "embedding and stage_mode = 'fsdp' (use 'dp')")
    try:
        orders, note = _stages(ctx)
    except ConfigError as e:
        return _refused(ctx, str(e))
    p, n_blocks, b_total = len(orders[0]), job.model.blocks, job.global_batch
    sizes = [len(s.ranks) for s in orders[0]]
    lanes = max(sizes)
    schedule: Literal["1f1b", "gpipe"] = "gpipe" if job.schedule == "gpipe" else "1f1b"
    if n_blocks < p:
        return _refused(ctx, f"{p} stages need at least {p} blocks; {job.model.name} has "
                             f"{n_blocks}")
    if any(lanes % n for n in sizes):
        return _refused(ctx, f"the ranks per stage {sizes} must divide the largest ({lanes})")
    if b_total % lanes:
        return _refused(ctx, f"train.global_batch ({b_total}) is not a multiple of the "
                             f"pipeline's lanes ({lanes})")
    m = job.microbatches or pick_microbatches(p, b_total // lanes, schedule)
    if b_total % (lanes * m) or (schedule == "1f1b" and m < p):
        return _refused(ctx, f"{m} micro-batches per lane do not suit a global batch of "
                             f"{b_total} over {lanes} lane(s) and {p} stages under {schedule}")
    try:  # the run's own schedule (interleaved: m a multiple of its rounds)
        check_schedule(job.schedule, p, m)
    except ConfigError as e:
        return _refused(ctx, str(e))
    b = b_total // (lanes * m)
    modes = [sm for sm in job.stage_modes  # fsdp over one rank is dp
             if sm == "dp" or (lanes > 1 and all(n in (1, lanes) for n in sizes))]
    if not modes:
        return _refused(ctx, f"fsdp inside stages needs every stage to have 1 rank or the "
                             f"most ({lanes}); got {sizes}, and dp is ruled out")
    options = [_option(ctx, st, sm, m, b, lanes, schedule) for st in orders for sm in modes]
    fit = [o for o in options if o.fits]
    best = min(fit or options, key=lambda o: o.step_s)  # ties: the earlier (default) order
    listed = [{"order": o.detail["order"], "stage_mode": o.detail["stage_mode"],
               "blocks": [r["blocks"] for r in o.detail["stages"]], "step_s": o.step_s,
               "fits": o.fits, "refusal": o.refusal or None} for o in options]
    notes = [note] if note else []
    if job.schedule == "interleaved-1f1b":
        notes.append("interleaved-1f1b is predicted as 1f1b")
    detail = {**best.detail, "options": listed, "note": "; ".join(notes) or None}
    return dataclasses.replace(best, mode=mode, detail=detail)


register_mode(PIPELINE, predict_pipeline)
