"""``[parallel] mode = "fsdp"`` (FSDP2 on the CPU with gloo): sharded training keeps the math
of one process — summed gradients with uneven and changing shares, no hang — holds 1/N
of the parameters and optimizer state per rank, and keeps every guarantee of ``dp``
(exact resume after a kill, resume on another world size, the health actions)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mixfleet.train.rundir import RunDir
from mixfleet.train.trainer import Trainer
from mixfleet.workloads import get_workload
from tests.conftest import REPO
from tests.train.fsdp_worker import GPT, config, local_bytes
from tests.train.helpers import bit_identical, events, final_weights, losses, train_cli

ONE_STEP_ATOL = 1e-6
MANY_STEPS_ATOL = 1e-4
FSDP = ("parallel.mode='fsdp'", "workload.name='char-gpt'", "train.schedule='constant'",
        "workload.options={layers=2, d_model=64, heads=2, block=32, corpus_chars=200000}")


def _spawn(out: Path, mode: str, schedule: list[list[int]], world: int = 2) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = []
    for r in range(world):
        env = {**os.environ, "RANK": str(r), "WORLD_SIZE": str(world),
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "tests.train.fsdp_worker", str(out), mode,
             json.dumps(schedule)], cwd=REPO, env=env, stderr=subprocess.PIPE, text=True))
    for p in procs:
        _, err = p.communicate(timeout=240)  # a hang fails here
        assert p.returncode == 0, err[-3000:]


def _reference(tmp: Path, steps: int) -> Trainer:
    ref = Trainer(config("dp", max(1, steps)), get_workload("char-gpt", **GPT),  # type: ignore[arg-type]
                  run=RunDir(tmp / "ref"), device=torch.device("cpu"))
    for _ in range(steps):
        ref.train_step()
    return ref


def _max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def test_one_fsdp_step_with_shares_48_16_equals_batch_64(tmp_path: Path) -> None:
    """Two FSDP ranks with shares (48, 16) — rank 0 in more micro-batches than rank 1, so
    rank 1 runs stand-ins — make the step of one process with batch 64 (atol 1e-6)."""
    _spawn(tmp_path, "fsdp", [[48, 16]])
    ref = _reference(tmp_path, 1)
    w = torch.load(tmp_path / "model.pt", weights_only=True)
    assert _max_diff(w, ref.final_state_dict()) <= ONE_STEP_ATOL
    start = _reference(tmp_path / "start", 0).final_state_dict()
    assert _max_diff(w, start) > 1e-4  # it did move


def test_fsdp_shares_changing_every_10_steps_match_and_shard_the_state(tmp_path: Path) -> None:
    """50 FSDP steps with shares changing every 10 steps do not hang and stay within
    atol 1e-4 of one process; each rank holds at most half (+5%) of dp's parameter and
    optimizer-state bytes."""
    cycle = [[32, 32], [48, 16], [10, 54], [63, 1], [40, 24]]
    _spawn(tmp_path, "fsdp", [cycle[s // 10] for s in range(50)])
    ref = _reference(tmp_path, 50)
    w = torch.load(tmp_path / "model.pt", weights_only=True)
    assert _max_diff(w, ref.final_state_dict()) <= MANY_STEPS_ATOL
    dp_bytes = local_bytes(ref)
    for r in range(2):
        assert json.loads((tmp_path / f"bytes{r}.json").read_text()) <= dp_bytes / 2 * 1.05


def test_fsdp_and_dp_give_the_same_losses(tmp_path: Path) -> None:
    """The first 50 steps of fsdp and dp on 2 ranks (char-gpt, fp32) have the same losses
    (relative 1e-5)."""
    common = ("train.steps=50", "checkpoint.interval=25", "train.log_every=100",
              "telemetry.hz=0")
    train_cli(tmp_path / "fsdp", *FSDP, *common)
    train_cli(tmp_path / "dp", *FSDP[1:], *common)
    a, b = losses(tmp_path / "fsdp"), losses(tmp_path / "dp")
    assert sorted(a) == list(range(1, 51))
    assert max(abs(a[k] - b[k]) / abs(b[k]) for k in b) <= 1e-5


@pytest.fixture(scope="module")
def fsdp_reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("fsdp-ref") / "run"
    train_cli(d, *FSDP, "train.steps=60", "checkpoint.interval=20", "train.log_every=100",
              "telemetry.hz=0")
    return d


def test_fsdp_kill_resumes_bit_identical(tmp_path: Path, fsdp_reference: Path) -> None:
    """A rank SIGKILLed at step 37 resumes from its in-memory shards; the final weights
    are bit-identical to the uninterrupted run and at most one step is lost."""
    d = tmp_path / "run"
    s = train_cli(d, *FSDP, "train.steps=60", "checkpoint.interval=20", "train.log_every=100",
                  "telemetry.hz=0", "faults.inject=['kill@rank=1,step=37']")
    assert s["restarts"] == 1 and s["steps_lost"] <= 1
    assert events(d, "run_start")[-1]["source"] == "memory"
    assert bit_identical(final_weights(d), final_weights(fsdp_reference))


def test_fsdp_kill_while_checkpoint_is_written(tmp_path: Path, fsdp_reference: Path) -> None:
    """A rank killed while writing the step-40 checkpoint: the run resumes and ends
    bit-identical to the uninterrupted run."""
    d = tmp_path / "run"
    train_cli(d, *FSDP, "train.steps=60", "checkpoint.interval=20", "train.log_every=100",
              "telemetry.hz=0", "faults.inject=['kill-in-checkpoint@rank=0,step=40']")
    assert bit_identical(final_weights(d), final_weights(fsdp_reference))


@pytest.mark.slow
@pytest.mark.parametrize("first,second", [(2, 1), (1, 2)])
def test_fsdp_resume_on_another_world_size(tmp_path: Path, fsdp_reference: Path, first: int,
                                           second: int) -> None:
    """30 steps on ``first`` ranks, then on ``second`` (DCP reshards the checkpoint): the
    same global batches follow and the losses match the uninterrupted run (rel 1e-4)."""
    d = tmp_path / "run"
    train_cli(d, *FSDP, "train.steps=40", "checkpoint.interval=20", "train.log_every=100",
              "telemetry.hz=0", nproc=first)
    train_cli(d, *FSDP, "train.steps=60", "checkpoint.interval=20", "train.log_every=100",
              "telemetry.hz=0", nproc=second)
    assert events(d, "run_start")[-1]["resumed_from"] == 40
    a, b = losses(d), losses(fsdp_reference)
    assert max(abs(a[k] - b[k]) / abs(b[k]) for k in range(41, 61)) <= 1e-4


@pytest.mark.slow
def test_fsdp_nan_rollback_and_thermal_drain(tmp_path: Path) -> None:
    """Under fsdp, repeated NaNs roll back to the last checkpoint and skip the batches,
    and critical heat on rank 1 drains it: the run relaunches on one rank and finishes."""
    d = tmp_path / "run"
    s = train_cli(d, *FSDP, "train.steps=60", "checkpoint.interval=10", "train.log_every=100",
                  "telemetry.hz=0", "faults.inject=['nan@step=23,count=3', "
                  "'overheat@rank=1,step=45,celsius=20']")
    (rb,) = events(d, "rollback")
    assert rb["bad_steps"] == [23, 24, 25] and rb["to_step"] == 20
    assert s["drained_ranks"] == [1] and s["world_size"] == 1


def test_hf_model_under_fsdp_resumes_bit_identically(tmp_path: Path) -> None:
    """An `hf:` Llama built by the test from a transformers config (no download) trains
    under fsdp on 2 ranks; a rank killed at step 9 resumes and the final weights are
    bit-identical to the uninterrupted run."""
    from mixfleet.workloads.hf import offline_transformers

    tf = offline_transformers()
    cfg = tf.LlamaConfig(vocab_size=256, hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=64)
    model_dir = tmp_path / "model"
    cfg.save_pretrained(model_dir)
    sets = (f'workload.name="hf:{model_dir}"', "parallel.mode='fsdp'",
            "workload.options={seq_len=16, eval_samples=8, corpus_chars=40000}",
            "train.steps=16", "train.global_batch=8", "train.optimizer='adamw'",
            "train.lr=0.003", "checkpoint.interval=8", "train.log_every=100", "telemetry.hz=0")
    train_cli(tmp_path / "ref", *sets)
    s = train_cli(tmp_path / "run", *sets, "faults.inject=['kill@rank=1,step=9']")
    assert s["restarts"] == 1
    assert bit_identical(final_weights(tmp_path / "run"), final_weights(tmp_path / "ref"))
