"""Emulated fsdp links under as_model: the paced gathers and reduce-scatters of a step
move the bytes the cost model charges for the named model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from mixfleet.emulate.links import LinkPacer
from mixfleet.emulate.pricing import LinkPrices
from tests.emulate.fakeclock import FakeClock

KINDS = ["nvidia-h20", "nvidia-h20", "kunlun-p800", "kunlun-p800", "ascend-910b",
         "ascend-910b"]
SMALL = {"preset": "debug", "dim": 64, "layers": 16, "heads": 2, "kv_heads": 1,
         "ffn_dim": 129, "seq_len": 16, "tie_embeddings": False}  # odd: FSDP2 pads it
MICRO = 3  # micro-batches of the step




def _prices(latency: float) -> LinkPrices:
    return LinkPrices(bridge_latency_s=latency, intra_latency_s=latency / 3)


def _worker(rank: int, init: str, out: str, latency: float) -> None:
    from mixfleet.emulate import load_profiles
    from mixfleet.emulate.asmodel import plan_as_model
    from mixfleet.train.mixed.pacing import model_bytes
    from mixfleet.train.parallel.fsdp import FullyShardedDP
    from mixfleet.train.parallel.strategy import ParallelConfig, shard_units
    from mixfleet.workloads import load_workload

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    # pacing as accounting (sleeps advance a fake clock): priced over six ranks of three
    # kinds; two do the real gloo work
    clock = FakeClock()
    pacer = LinkPacer.for_group(KINDS, None, _prices(latency),
                                exchange=lambda t: t, clock=clock, sleep=clock.sleep)
    plan = plan_as_model("llama3-8b", KINDS, load_profiles(), shares=[1] * 6, micros=[1] * 6,
                         mode="fsdp", optimizer="adamw", check_memory=False, seq_len=4096)
    torch.manual_seed(0)
    model = load_workload("llama", SMALL).build_model()
    st = FullyShardedDP(model, device=torch.device("cpu"), world=2, group=dist.group.WORLD,
                        units=shard_units(model), cfg=ParallelConfig(mode="fsdp"), pacer=pacer)
    model_bytes(pacer, plan, model)
    st.bind(0)
    for i in range(MICRO):
        x = torch.randint(0, 256, (1, 16), generator=torch.Generator().manual_seed(i))
        st.backward(model(x).float().pow(2).mean(), last=i == MICRO - 1)
    (Path(out) / f"r{rank}.json").write_text(json.dumps(
        {"priced_s": pacer.priced_s, "transfers": pacer.transfers}))
    dist.destroy_process_group()


def test_paced_fsdp_step_moves_the_bytes_the_cost_model_charges(tmp_path: Path) -> None:
    """A step of FSDP2 (3 micro-batches) on the small llama paced as llama3-8b over H20 +
    P800 + 910B (the bridge, 32 GB/s) is priced as the cost model's fsdp communication for
    llama3-8b, equal to float rounding (latency set to 0: a small block stands for two
    layers, so it pays half the collectives' latency): FSDP2's padding of the small model
    does not count, and the collectives are those the model counts (blocks and root
    gathered for the forward and again for the backward, one reduce-scatter each)."""
    latency = 0.0
    from mixfleet.catalog.base import load_catalog
    from mixfleet.fleet.costterms import JobSpec, fsdp_comm
    from mixfleet.fleet.jobshape import RankSpec, as_model_shape

    mp.start_processes(_worker, args=(f"file://{tmp_path / 'store'}", str(tmp_path), latency),
                       nprocs=2, join=True, start_method="fork")
    job = JobSpec(model=as_model_shape("llama3-8b", 4096), global_batch=64, unit="tokens")
    ranks = [RankSpec(device=f"emu:{k}", chip=k) for k in KINDS]
    comm, links = fsdp_comm(job, ranks, MICRO, _prices(latency), load_catalog())
    assert list(comm) == ["bridge"] and links == ["bridge 32 GB/s (assumed)"]
    for r in range(2):
        got = json.loads((tmp_path / f"r{r}.json").read_text())
        assert got["transfers"] == MICRO * 2 * 17 + 17  # gathers (root too), reduce-scatters
        assert got["priced_s"] == pytest.approx(comm["bridge"], rel=1e-9)
