"""Pipeline stages (mixfleet.train.parallel.stages, .pipeline) on gloo on the CPU: a stage
holds the model's own modules under the model's own names; one step of a pipeline (1F1B,
GPipe, interleaved 1F1B; 2 and 3 stages; stages with 2 ranks beside stages with 1) gives
the gradients of one process that sums each lane's micro-batches in order, then the
lanes, bit for bit, and the loss, gradients and SGD step of one process on the whole global batch
within ONE_STEP_ATOL (the sums over micro-batches are ordered differently)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from mixfleet.errors import ConfigError
from mixfleet.train.parallel.pipeline import Layout, PipelineRank, bubble_fraction
from mixfleet.train.parallel.stages import StageModule, split_bounds
from mixfleet.workloads.llama import Llama, preset_config
from tests.conftest import REPO

ONE_STEP_ATOL = 1e-6
LLAMA2 = {"workload": "llama", "ranks": [1, 1], "blocks": [1, 3], "virtual": 1,
          "schedule": "1f1b", "microbatches": 4, "B": 8}


def _small_llama(**kw: Any) -> Llama:
    torch.manual_seed(0)
    return Llama(preset_config("debug", dim=32, layers=4, heads=2, kv_heads=1, ffn_dim=64,
                               vocab=64, seq_len=16, **{"tie_embeddings": False, **kw}))


def test_stages_keep_the_models_names_and_compose_to_its_forward() -> None:
    """Stages of a split hold every parameter of the model exactly once under the model's
    own names, and running them one after the other is the model's forward, bit for bit."""
    model = _small_llama()
    bounds = split_bounds([1, 2, 1])
    stages = [StageModule(model, lo, hi, first=s == 0, last=s == 2)
              for s, (lo, hi) in enumerate(bounds)]
    keys = [k for st in stages for k in st.state_dict()]
    assert sorted(keys) == sorted(model.state_dict()) and len(keys) == len(set(keys))
    assert "layers.3.ffn.down_proj.weight" in stages[2].state_dict()
    x = torch.randint(0, 64, (3, 16))
    h = x
    for st in stages:
        h = st(h)
    assert torch.equal(h, model(x))


def test_a_whole_models_state_loads_into_the_stages_of_any_split_by_its_names() -> None:
    """Model and optimizer state (torch's get_state_dict, keyed by the model's FQNs) of a
    trained whole model loads into the stages of any split, each taking its own keys, and
    the stages then give back exactly that state: any layout can resume any other."""
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    model = _small_llama()
    opt = torch.optim.AdamW(model.parameters(), lr=0.01)
    model(torch.randint(0, 64, (2, 16))).sum().backward()
    opt.step()
    msd, osd = get_state_dict(model, opt)
    for split in ([1, 3], [3, 1], [1, 2, 1]):
        torch.manual_seed(7)
        other = _small_llama()  # other weights: everything must come from the state
        covered: set[str] = set()
        for s, (lo, hi) in enumerate(split_bounds(split)):
            st = StageModule(other, lo, hi, first=s == 0, last=s == len(split) - 1)
            sopt = torch.optim.AdamW(st.parameters(), lr=0.01)
            names = set(st.state_dict())
            groups = [{**g, "params": [n for n in g["params"] if n in names]}
                      for g in osd["param_groups"]]
            set_state_dict(st, sopt, model_state_dict={k: msd[k] for k in names},
                           optim_state_dict={"state": {k: v for k, v in osd["state"].items()
                                                       if k in names},
                                             "param_groups": groups})
            got_m, got_o = get_state_dict(st, sopt)
            assert all(torch.equal(v, msd[k]) for k, v in got_m.items())
            assert got_o["state"].keys() == names
            for k, state in got_o["state"].items():
                assert all(torch.equal(state[x], osd["state"][k][x]) for x in state)
            covered |= names
        assert covered == set(msd)


def test_bad_layouts_are_refused_with_the_fix() -> None:
    """fsdp with tied embeddings, ranks per stage that do not divide the largest, a global batch
    that is not lanes x micro-batches slices, 1F1B with fewer micro-batches than stages,
    a stage without blocks, and fsdp inside a stage whose ranks serve several lanes each
    are refused before any process group is made."""
    with pytest.raises(ConfigError, match="fsdp' with tied embeddings"):
        PipelineRank(_small_llama(tie_embeddings=True), Layout((2, 2), (2, 2)), rank=0,
                     loss=lambda m, b: m(b[0]).sum(), global_batch=12, microbatches=3,
                     stage_mode="fsdp")
    with pytest.raises(ConfigError, match="must divide the largest"):
        Layout((3, 2), (2, 2))
    with pytest.raises(ConfigError, match="at least 1 block"):
        Layout((1, 1), (4, 0))
    model, layout = _small_llama(), Layout((2, 1), (2, 2))
    with pytest.raises(ConfigError, match=r"multiple of lanes x microbatches \(2 x 4 = 8\)"):
        PipelineRank(model, layout, rank=0, loss=lambda m, b: m(b[0]).sum(), global_batch=12,
                     microbatches=4)
    with pytest.raises(ConfigError, match="microbatches >= 2 or schedule = 'gpipe'"):
        PipelineRank(model, layout, rank=0, loss=lambda m, b: m(b[0]).sum(), global_batch=8,
                     microbatches=1)
    with pytest.raises(ConfigError, match="fsdp' needs every stage to have 1 rank or the most"):
        PipelineRank(model, Layout((4, 2, 1), (1, 2, 1)), rank=0,
                     loss=lambda m, b: m(b[0]).sum(), global_batch=12, microbatches=3,
                     stage_mode="fsdp")
    assert bubble_fraction(3, 32) == pytest.approx(2 / 34)  # the 6%
    assert bubble_fraction(3, 6) == pytest.approx(0.25)


def _spawn(out: Path, specs: list[dict[str, Any]]) -> None:
    """Every rank of the specs' layout and the reference process, side by side."""
    world = sum(specs[0]["ranks"])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "tests.train.pipeline_worker", str(out)]
    procs = [subprocess.Popen([*cmd, "ref", json.dumps(specs)], cwd=REPO,
                              stderr=subprocess.PIPE, text=True)]
    for r in range(world):
        env = {**os.environ, "RANK": str(r), "WORLD_SIZE": str(world),
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "GLOO_SOCKET_IFNAME": "lo"}
        procs.append(subprocess.Popen([*cmd, "pipe", json.dumps(specs)], cwd=REPO, env=env,
                                      stderr=subprocess.PIPE, text=True))
    for p in procs:
        _, err = p.communicate(timeout=240)  # a hang fails here
        assert p.returncode == 0, err[-3000:]


def _load(path: Path) -> Any:
    return torch.load(path, weights_only=True)


def _check(out: Path, i: int, spec: dict[str, Any]) -> None:
    ref = _load(out / f"ref-{i}.pt")
    ranks, lanes = spec["ranks"], max(spec["ranks"])
    tied = {"head.weight": "embed.weight"} if spec.get("tie") else {}
    seen: dict[str, torch.Tensor] = {}
    losses: dict[int, torch.Tensor] = {}
    for r in range(sum(ranks)):
        got = _load(out / f"rank{r}-{i}.pt")
        n = ranks[got["stage"]]
        for k, g in got["grads"].items():
            k = tied.get(k, k)  # a tied head's copy: the embedding's gradient in one process
            if k in tied.values():  # summed across the two ends: not in one process's order
                pass
            elif n == 1 or n == lanes == 2:  # each lane's sum, then their sum in lane order
                want = ref["lanes"][0][k]
                for lane in range(1, lanes):
                    want = want + ref["lanes"][lane][k]
                assert torch.equal(g, want), (spec, k)
            assert float((g - ref["full"][k]).abs().max()) <= ONE_STEP_ATOL, (spec, k)
            if k in seen:  # the ranks of a stage (or both ends) hold the same sum
                assert torch.equal(seen[k], g), (spec, k)
            seen[k] = g
        for k, w in got["stepped"].items():
            want = ref["stepped"][tied.get(k, k)]
            assert float((w - want).abs().max()) <= ONE_STEP_ATOL, (spec, k)
        if got["loss"] is not None:
            losses[got["lanes"][0]] = got["loss"]
            assert torch.equal(got["eval"], got["loss"]), spec  # eval: the same forward
    assert seen.keys() == ref["full"].keys()  # every parameter, under the model's names
    loss = losses[min(losses)]
    for lane in sorted(losses)[1:]:
        loss = loss + losses[lane]
    want = ref["lane_loss"][0]
    for part in ref["lane_loss"][1:]:
        want = want + part
    assert torch.equal(loss, want), spec
    assert abs(float(loss) - float(ref["full_loss"])) <= ONE_STEP_ATOL


def test_two_stage_1f1b_gpipe_and_interleaved_steps_equal_one_process(tmp_path: Path) -> None:
    """2 stages of a small llama, one rank each, under 1F1B, GPipe and interleaved 1F1B
    (2 virtual stages per rank): gradients bit-identical to one process accumulating the
    same micro-batches; loss, gradients and SGD step within 1e-6 of the whole batch; an
    evaluation through the pipeline before the step gives the same loss and no gradient."""
    specs = [LLAMA2, {**LLAMA2, "schedule": "gpipe", "microbatches": 2},
             {**LLAMA2, "schedule": "interleaved-1f1b", "virtual": 2, "blocks": [1, 1, 1, 1]}]
    _spawn(tmp_path, specs)
    for i, spec in enumerate(specs):
        _check(tmp_path, i, spec)


@pytest.mark.slow
def test_a_stage_of_two_ranks_beside_a_stage_of_one_equals_one_process(tmp_path: Path) -> None:
    """Stages with different numbers of ranks (2 + 1 with 1F1B on llama, also with the head
    tied to the embedding; 1 + 2 with GPipe on char-gpt): the single rank runs both lanes
    at once on two replicas and sums them, the pair sums its gradients, the tied copies
    sum theirs; the step equals one process's (bit for bit against the same order of
    sums, the tied weight within 1e-6)."""
    specs = [{**LLAMA2, "ranks": [2, 1], "blocks": [2, 2], "microbatches": 2},
             {**LLAMA2, "ranks": [2, 1], "blocks": [2, 2], "microbatches": 2, "tie": True},
             {**LLAMA2, "workload": "char-gpt", "ranks": [1, 2], "blocks": [3, 1],
              "schedule": "gpipe", "microbatches": 2}]
    _spawn(tmp_path, specs)
    for i, spec in enumerate(specs):
        _check(tmp_path, i, spec)


@pytest.mark.slow
def test_three_stages_equal_one_process(tmp_path: Path) -> None:
    """3 stages of one rank each (1F1B with 3 and 6 micro-batches): the step equals one
    process's."""
    specs = [{**LLAMA2, "ranks": [1, 1, 1], "blocks": [1, 2, 1], "microbatches": 3, "B": 6},
             {**LLAMA2, "ranks": [1, 1, 1], "blocks": [2, 1, 1], "microbatches": 6, "B": 12}]
    _spawn(tmp_path, specs)
    for i, spec in enumerate(specs):
        _check(tmp_path, i, spec)


@pytest.mark.slow
@pytest.mark.parametrize("ranks", [[2, 2], [2, 1]])
def test_fsdp_inside_stages_equals_one_process(tmp_path: Path, ranks: list[int]) -> None:
    """FSDP2 inside the stages of 2 ranks (2 + 2, and 2 + 1 where the single rank runs both
    lanes at once), summed reduce-scatter: the step equals one process's, bit for bit
    against the same order of sums (gradients gathered from the shards)."""
    specs = [{**LLAMA2, "ranks": ranks, "blocks": [2, 2], "microbatches": 2,
              "stage_mode": "fsdp"}]
    _spawn(tmp_path, specs)
    _check(tmp_path, 0, specs[0])


@pytest.mark.slow
def test_fsdp_stages_gather_once_per_step_and_compute_in_bf16(tmp_path: Path) -> None:
    """A stage under fsdp gathers its parameters once per step, whatever the number of
    micro-batches (2 and 4 give the same count of all-gathers, as many as its FSDP
    modules; counted on the second step after an evaluation: the first infers the stages'
    shapes with a forward of its own); with bf16 parameters in the sharded stage beside an
    fp32 stage of one rank, the step stays within bf16 precision of one fp32 process."""
    base = {**LLAMA2, "ranks": [2, 1], "blocks": [2, 2], "stage_mode": "fsdp", "warm": True}
    specs = [{**base, "microbatches": 2}, {**base, "microbatches": 4, "B": 8},
             {**base, "microbatches": 2, "dtype": "bfloat16"}]
    _spawn(tmp_path, specs)
    for r in (0, 1):  # the sharded stage's ranks
        two, four = (_load(tmp_path / f"rank{r}-{i}.pt")["gathers"] for i in (0, 1))
        assert two == four == 2 + 1, (two, four)  # 2 blocks and the stage module
    ref = _load(tmp_path / "ref-2.pt")
    got = _load(tmp_path / "rank2-2.pt")  # the last stage (fp32) holds the loss
    assert got["loss"] is not None
    assert got["loss"].dtype == torch.float32
    assert abs(float(got["loss"]) / float(ref["full_loss"]) - 1) <= 2e-2
    first = _load(tmp_path / "rank0-2.pt")["grads"]
    fp32 = _load(tmp_path / "rank0-0.pt")["grads"]  # the same step with fp32 parameters
    assert any(not torch.equal(g, fp32[k]) for k, g in first.items())  # bf16 did compute
    for k, g in first.items():
        want = ref["full"][k]
        assert float((g.float() - want).norm()) <= 5e-2 * float(want.norm()) + 1e-6, k


MANY_STEPS_ATOL = 1e-5


@pytest.mark.slow
def test_30_adamw_steps_of_a_pipeline_track_one_process(tmp_path: Path) -> None:
    """30 AdamW steps on the sampler's successive global batches, 2 + 1 ranks under 1F1B:
    every step's loss within 1e-5 of one process on the whole batches, and the final
    weights within 1e-4 (the float sums are ordered differently; nothing drifts)."""
    spec = {**LLAMA2, "ranks": [2, 1], "blocks": [2, 2], "microbatches": 2, "steps": 30}
    _spawn(tmp_path, [spec])
    ref = _load(tmp_path / "ref-0.pt")
    last = _load(tmp_path / "rank2-0.pt")  # the last stage's only rank
    assert len(last["losses"]) == 30
    for got, want in zip(last["losses"], ref["losses"], strict=True):
        assert abs(got - want) <= MANY_STEPS_ATOL
    assert ref["losses"][-1] < ref["losses"][0] - 0.1  # it did learn
    for r in range(3):
        for k, w in _load(tmp_path / f"rank{r}-0.pt")["weights"].items():
            assert float((w - ref["weights"][k]).abs().max()) <= 1e-4, k
