"""The cost model: balanced shares, priced links, memory refusals, one roofline."""

from __future__ import annotations

import dataclasses
import itertools

import pytest

from mixfleet.catalog.base import get_chip
from mixfleet.emulate.pricing import LinkPrices, transfer_s
from mixfleet.emulate.profile import get_profile
from mixfleet.fleet.costmodel import JobSpec, choose, predict
from mixfleet.fleet.costterms import rank_time
from mixfleet.fleet.jobshape import ModelShape, parse_rank_specs, preset_shape
from mixfleet.fleet.throughput import COMPUTE_EFF, roofline
from mixfleet.fleet.workloads import WORKLOAD_CLASSES
from mixfleet.train.mixed.shares import largest_remainder

THREE = "emu:nvidia-h20,emu:kunlun-p800,emu:ascend-910b"
SMALL = ModelShape(name="toy", params=50_000_000, flops_per_sample=3e11, blocks=4,
                   block_params=10_000_000, seq_len=None, act_bytes_per_sample=1e6)


def _job(**kw: object) -> JobSpec:
    base: dict[str, object] = {"model": SMALL, "global_batch": 24, "max_micro_batch": 4,
                               "max_accum": 8}
    return JobSpec(**{**base, **kw})  # type: ignore[arg-type]


def test_uneven_shares_beat_equal_shares_with_fixed_costs_on() -> None:
    """On H20 + P800 + 910B with the profiles' fixed costs, balanced dp shares give a
    shorter predicted step than equal shares."""
    ranks = parse_rank_specs(THREE)
    assert all(get_profile(r.chip).step_cost().step_fixed_s > 0 for r in ranks)
    balanced = predict(_job(), ranks, modes=("dp",))[0]
    equal = predict(_job(shares=tuple(largest_remainder([1.0] * 3, 24))), ranks,
                    modes=("dp",))[0]
    assert [r.share for r in equal.ranks] == [8, 8, 8]
    assert len({r.share for r in balanced.ranks}) > 1
    assert balanced.step_s < equal.step_s * 0.97


def test_balanced_shares_equal_the_brute_force_optimum() -> None:
    """The predicted shares minimize the slowest rank's whole step (compute, per-micro-batch
    and per-step fixed costs) over every split of the batch (brute force)."""
    ranks = parse_rank_specs(THREE)
    job = _job(global_batch=21, max_micro_batch=3)
    plan = predict(job, ranks, modes=("dp",))[0]
    costs = [get_profile(r.chip).step_cost() for r in ranks]
    units = [r.unit_s.value for r in plan.ranks]

    def slowest(shares: tuple[int, ...]) -> float:
        return max(sum(rank_time(s, 3, costs[i], units[i], 1)[:2])
                   for i, s in enumerate(shares))

    best = min(slowest(s) for s in itertools.product(range(1, 20), repeat=3) if sum(s) == 21)
    assert plan.critical.busy_s == pytest.approx(best, rel=1e-12)
    assert slowest(tuple(r.share for r in plan.ranks)) == pytest.approx(best, rel=1e-12)


def test_rank_time_is_the_pricing_layers_step_cost() -> None:
    """A rank's compute + fixed time is StepCost.step_s over its micro-batches; under fsdp
    (n_micro) the share is cut as the trainer cuts it (torch.tensor_split into n_micro) and
    each stand-in (listed as 0) is priced as the one sample it computes."""
    import torch

    cost = get_profile("kunlun-p800").step_cost()
    comp, fixed, mbs = rank_time(11, 4, cost, 0.002, 1)
    assert mbs == [4, 4, 3]
    assert comp + fixed == pytest.approx(cost.step_s([4, 4, 3], 0.002))
    for share, n_micro in ((7, 3), (2, 3)):
        c, f, m = rank_time(share, 4, cost, 0.002, 1, n_micro=n_micro)
        assert m == [len(x) for x in torch.tensor_split(torch.arange(share), n_micro)]
        assert c + f == pytest.approx(cost.step_s([b or 1 for b in m], 0.002))
    assert rank_time(2, 4, cost, 0.002, 1, n_micro=3)[2] == [1, 1, 0]  # one stand-in


def test_dp_gradients_cross_the_bridge_at_the_priced_time() -> None:
    """dp on two kinds: one all-reduce of the fp32 gradients on the bridge; on one kind:
    the catalog's link_gbps."""
    prices = LinkPrices(bridge_gbps=10.0)
    mixed = predict(_job(), parse_rank_specs("emu:nvidia-h20,emu:kunlun-p800"),
                    modes=("dp",), prices=prices)[0]
    bridge = prices.link("nvidia-h20", "kunlun-p800")
    assert mixed.comm == {"bridge": pytest.approx(
        transfer_s("all_reduce", SMALL.params * 4, 2, bridge))}
    same = predict(_job(), parse_rank_specs("emu:nvidia-h20,emu:nvidia-h20"), modes=("dp",),
                   prices=prices)[0]
    intra = prices.link("nvidia-h20", "nvidia-h20")
    assert intra.gbps == get_chip("nvidia-h20").link_gbps.value
    assert same.comm == {"intra": pytest.approx(
        transfer_s("all_reduce", SMALL.params * 4, 2, intra))}
    assert same.step_s < mixed.step_s


def test_fsdp_gathers_every_block_each_micro_batch() -> None:
    """fsdp: per micro-batch 2 all-gathers (forward, backward) of each block and of the
    root (mixfleet sets reshard_after_forward on the root too: FSDP2 then regathers it,
    tests/train/test_fsdp_pacing.py counts it), plus one reduce-scatter per unit, on the
    group's slowest link; none on one rank."""
    ranks = parse_rank_specs("emu:nvidia-h20,emu:ascend-910b")
    job = _job(global_batch=8, max_micro_batch=2)
    plan = predict(job, ranks, modes=("fsdp",))[0]
    lk = LinkPrices().group_link(["nvidia-h20", "ascend-910b"])
    n_micro = max(len(r.micro_batches) for r in plan.ranks)
    units = [(SMALL.block_params, 2)] * 4 + [(SMALL.root_params, 2)]
    want = sum(g * n_micro * transfer_s("all_gather", u * 2, 2, lk)
               + transfer_s("reduce_scatter", u * 4, 2, lk) for u, g in units)
    assert plan.comm["bridge"] == pytest.approx(want)
    assert predict(job, ranks[:1], modes=("fsdp",))[0].comm == {}


def test_memory_refusal_names_the_chip_the_need_and_the_hbm() -> None:
    """llama3-8b under dp fits none of H20, P800, 910B: the refusal names the chip that
    misses most, its need and its HBM; fsdp over the three fits and is picked."""
    model = preset_shape("llama3-8b", 2048)
    job = JobSpec(model=model, global_batch=12, unit="tokens", max_micro_batch=1,
                  max_accum=16)
    plans = predict(job, parse_rank_specs(THREE))
    dp = next(p for p in plans if p.mode == "dp")
    assert not dp.fits and all(not r.fits for r in dp.ranks)
    assert "ascend-910b" in dp.refusal and "HBM 64 GiB" in dp.refusal
    need = dp.ranks[2].need_bytes / 2**30
    assert f"needs {need:.1f} GiB" in dp.refusal
    best, why = choose(plans)
    assert best is not None and best.mode == "fsdp"
    assert why["dp"] == dp.refusal


def test_prediction_is_deterministic_and_labelled() -> None:
    """The same input gives the same figures; each figure names its origin."""
    ranks = parse_rank_specs(THREE)
    a = [p.as_dict() for p in predict(_job(), ranks)]
    b = [p.as_dict() for p in predict(_job(), ranks)]
    assert a == b
    assert a[0]["origins"]["compute"] == "catalog"
    assert a[0]["origins"]["fixed"] == "assumed"
    assert a[0]["origins"]["comm"] == "assumed"  # the bridge's default is assumed


def test_bench_rows_override_the_roofline() -> None:
    """A bench row of the model on a chip gives its seconds per unit (origin measured);
    the profile's fixed costs are taken out of the row's step time."""
    from mixfleet.catalog.table import ThroughputRow

    cost = get_profile("nvidia-h20").step_cost()
    step = cost.step_fixed_s + cost.microbatch_fixed_s + 16 * 0.01
    row = ThroughputRow(workload="toy", chip="nvidia-h20", batch=16, samples_per_s=16 / step,
                        step_p50_s=step, step_p90_s=step, mfu=None, peak_mem_bytes=None,
                        host="h", torch_version="t", date="d", emulated=False,
                        origin="measured")
    plan = predict(_job(), parse_rank_specs("nvidia-h20"), modes=("dp",), rows=[row])[0]
    assert plan.ranks[0].unit_s.origin == "measured"
    assert plan.ranks[0].unit_s.value == pytest.approx(0.01)


def test_fleet_roofline_is_the_cost_models() -> None:
    """The fleet planner's roofline goes through the cost model's one function."""
    from mixfleet.fleet.costterms import roofline_s

    w = WORKLOAD_CLASSES["llm-7b"]
    chip = get_chip("nvidia-h20")
    t = roofline_s(w.flops_per_sample, chip, COMPUTE_EFF, nbytes=w.bytes_per_sample,
                   memory_efficiency=0.7)
    assert t is not None and roofline(w, chip) == pytest.approx(1.0 / t)


def test_a_registered_mode_is_predicted_and_chosen_like_the_others(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The pipeline mode's hook: a predictor added to MODES is called with the shared
    context and competes in choose()."""
    from mixfleet.fleet import costmodel

    def fake(mode: str, ctx: costmodel.Context) -> costmodel.ModePlan:
        p = costmodel.data_parallel("dp", ctx)  # dp's compute (fsdp runs stand-ins)
        return dataclasses.replace(p, mode=mode, comm={})  # no communication at all

    monkeypatch.setitem(costmodel.MODES, "pipeline", fake)
    plans = predict(_job(), parse_rank_specs(THREE), modes=("dp", "fsdp", "pipeline"))
    best, why = choose(plans)
    assert best is not None and best.mode == "pipeline" and set(why) == {"dp", "fsdp"}
