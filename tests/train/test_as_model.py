"""``[emulate] as_model``: ranks paced as a named large model, the small model's math
unchanged, and a model that does not fit a chip refused with the numbers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mixfleet.emulate import load_profiles
from mixfleet.emulate.asmodel import memory_need, model_shape, plan_as_model
from mixfleet.errors import ConfigError
from tests.conftest import REPO
from tests.train.helpers import DIGITS, bit_identical, events, final_weights, train_cli

RANKS = 'ranks=[{device="emu:nvidia-h20"}, {device="emu:kunlun-p800"}]'
PINNED = ("train.steps=12", "checkpoint.interval=1000", "train.log_every=100",
          'shares.mode="equal"', "shares.rebalance_every=0", "shares.max_micro_batch=4",
          "telemetry.hz=0")


def test_memory_refusal_names_the_chip_the_need_and_the_hbm():
    """llama3-8b in dp needs ~120 GiB of states alone: refused on the H20 (96 GiB) with
    the need and the HBM in the message."""
    with pytest.raises(ConfigError) as e:
        plan_as_model("llama3-8b", ["nvidia-h20", "ascend-910b"], load_profiles(),
                      shares=[32, 32], micros=[1, 1], mode="dp", optimizer="adamw")
    msg = str(e.value)
    need = memory_need(model_shape("llama3-8b"), mode="dp", world=2, micro_samples=1,
                       optimizer="adamw").total / 2**30
    assert "nvidia-h20" in msg and f"{need:.1f} GiB" in msg and "HBM is 96 GiB" in msg


def test_fsdp_with_checkpointing_fits_where_dp_does_not_and_paces_by_flops():
    """llama3-8b fits 910B (64 GiB) sharded over three chips with activation
    checkpointing; a token costs FLOPs/token / (peak x mfu) seconds; the default time scale
    makes the slowest step 0.2 s."""
    plan = plan_as_model("llama3-8b", ["nvidia-h20", "kunlun-p800", "ascend-910b"],
                         load_profiles(), shares=[22, 21, 21], micros=[1, 1, 1], mode="fsdp",
                         optimizer="adamw", activation_checkpointing=True)
    shape = plan.shape
    assert plan.token_s["nvidia-h20"] == pytest.approx(shape.flops_per_token / (148e12 * 0.4))
    assert max(plan.step_s) * plan.time_scale == pytest.approx(0.2)
    assert plan.label() == f"emulated as llama3-8b (time scale {plan.time_scale:.3g})"


def _cli(tmp_path: Path, *sets: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "mixfleet", "train", str(DIGITS), "--run-dir",
           str(tmp_path / "run")]
    for s in (RANKS, *sets):
        cmd += ["--set", s]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(("value", "words"), [
    ('"llama3-8b"', ["nvidia-h20", "GiB", "HBM is 96 GiB"]),
    ('"llama9-400b"', ["as_model", "llama9-400b", "llama3-8b"]),
])
def test_cli_refuses_a_model_that_does_not_fit_or_is_unknown_with_exit_2(
        tmp_path: Path, value: str, words: list[str]):
    """A model too big for a chip, or an unknown one: exit 2, one message, nothing written."""
    p = _cli(tmp_path, f"emulate.as_model={value}")
    assert p.returncode == 2, p.stderr[-2000:]
    assert all(w in p.stderr for w in words), p.stderr
    assert "Traceback" not in p.stderr and not (tmp_path / "run").exists()


@pytest.mark.slow  # two torchrun runs of two ranks: ~40-90 s on 2 shared cores
def test_as_model_run_has_the_same_math_and_says_emulated_as_everywhere(tmp_path: Path):
    """With shares pinned, the final weights of a run paced as llama3-1b are bit-identical
    to the same run without as_model; its metrics, summary, events, report and the CLI's
    lines say `emulated as llama3-1b` with the time scale."""
    plain = train_cli(tmp_path / "plain", RANKS, *PINNED)
    paced = train_cli(tmp_path / "paced", RANKS, *PINNED, 'emulate.as_model="llama3-1b"')
    assert bit_identical(final_weights(tmp_path / "plain"), final_weights(tmp_path / "paced"))
    assert "emulated_as" not in plain
    assert paced["emulated_as"] == "llama3-1b" and 0 < paced["time_scale"] <= 1
    ev = events(tmp_path / "paced", "emulated_as")
    assert ev and ev[0]["label"].startswith("emulated as llama3-1b (time scale")
    recs = [json.loads(x) for x in (tmp_path / "paced" / "metrics.jsonl").read_text()
            .splitlines()]
    steps = [r for r in recs if "loss" in r]
    assert steps and all(r["emulated_as"] == "llama3-1b" and "comm_s" in r for r in steps)
    rep = subprocess.run([sys.executable, "-m", "mixfleet", "report", str(tmp_path / "paced")],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert rep.returncode == 0 and "emulated as llama3-1b (time scale" in rep.stdout


FSDP = ("train.global_batch=8", "shares.max_micro_batch=1", "parallel.mode='fsdp'",
        "parallel.activation_checkpointing=true", "train.optimizer='adamw'",
        "workload.name='char-gpt'",
        "workload.options={layers=2, d_model=64, heads=2, block=32, corpus_chars=200000}")


@pytest.mark.slow  # two torchrun runs of two ranks under fsdp: ~60-120 s on 2 shared cores
def test_fsdp_paced_as_llama3_8b_keeps_the_math_and_records_comm(tmp_path: Path):
    """Under fsdp every all-gather and reduce-scatter goes through the paced custom comms:
    a run paced as llama3-8b on H20 + P800 (fits: sharded, checkpointed, 1 sequence per
    micro-batch) ends bit-identical to the same run unpaced, with priced comm in its steps."""
    sets = (RANKS, "train.steps=6", "checkpoint.interval=1000", "train.log_every=100",
            'shares.mode="equal"', "telemetry.hz=0", *FSDP)
    train_cli(tmp_path / "plain", *sets)
    paced = train_cli(tmp_path / "paced", *sets, 'emulate.as_model="llama3-8b"')
    assert bit_identical(final_weights(tmp_path / "plain"), final_weights(tmp_path / "paced"))
    assert paced["emulated_as"] == "llama3-8b"
    recs = [json.loads(x) for x in (tmp_path / "paced" / "metrics.jsonl").read_text()
            .splitlines()]
    assert all(r["comm_s"] > 0 for r in recs if "loss" in r)


def test_hf_config_shape_is_counted_on_the_meta_device(tmp_path: Path):
    """as_model = "hf:<dir>": the parameters of the config's model, built on the meta
    device, and at least 6 FLOPs per matmul parameter per token (the FLOP counter)."""
    import transformers

    transformers.LlamaConfig(hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=4, vocab_size=500,
                             max_position_embeddings=128).save_pretrained(tmp_path)
    s = model_shape(f"hf:{tmp_path}")
    matmul = 2 * (4 * 256 * 256 + 3 * 256 * 512) + 500 * 256  # blocks + output head
    assert s.params == matmul + 500 * 256 + 2 * 2 * 256 + 256  # + embedding and norms
    assert (s.seq_len, s.layers, s.dim, s.vocab) == (128, 2, 256, 500)
    assert 6 * matmul <= s.flops_per_token <= 1.2 * 6 * matmul
