"""``hf:<dir>``: any causal language model of ``transformers``, from a local directory.

The directory holds a ``config.json`` and, for fine-tuning, ``*.safetensors`` weights.
With weights the model is ``AutoModelForCausalLM.from_pretrained(dir,
local_files_only=True, use_safetensors=True)``; without, ``from_config`` (random init from
the torch RNG, so every rank starts alike). Nothing is downloaded: ``HF_HUB_OFFLINE`` and
``TRANSFORMERS_OFFLINE`` are set before ``transformers`` is imported, files are local
only and remote code is refused. Pickled weights (``*.bin``, ``*.pt``) are never loaded.
Parameters are float32 (the trainer's reduction buffer is float32).

Data, loss and metric are those of every LM workload (:mod:`mixfleet.workloads.lm`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mixfleet.errors import WorkloadError
from mixfleet.workloads.base import Workload
from mixfleet.workloads.llama import meta_flops_per_sample
from mixfleet.workloads.lm import (
    check_common,
    largest_module_list,
    lm_evaluate,
    lm_loss,
    load_lm_data,
)

__all__ = ["make_hf", "offline_transformers"]

_PICKLES = ("*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl")


def offline_transformers() -> Any:
    """``transformers``, imported with the hub switched off."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    import transformers

    transformers.utils.logging.disable_progress_bar()  # a library prints nothing
    return transformers


def _first_line(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return f"{type(e).__name__}: {' '.join(lines[:2])[:300]}"


def _fail(name: str, what: str, fix: str) -> WorkloadError:
    return WorkloadError(f"workload.name {name!r}: {what}; {fix}")


def _config(name: str, root: Path) -> Any:
    if not root.is_dir():
        raise _fail(name, f"directory {str(root)!r} does not exist", "point hf: at a local "
                    "folder holding the model's config.json (nothing is downloaded)")
    cfg_path = root / "config.json"
    if not cfg_path.is_file():
        raise _fail(name, f"{str(root)!r} has no config.json", "save one with "
                    "model.config.save_pretrained(dir) or copy the model's config.json there")
    try:
        raw = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise _fail(name, f"config.json cannot be read ({e})", "fix or replace the file"
                    ) from None
    if not isinstance(raw, dict) or not isinstance(raw.get("model_type"), str):
        raise _fail(name, "config.json has no 'model_type'", "use a transformers config "
                    "(e.g. written by config.save_pretrained)")
    if "auto_map" in raw:
        raise _fail(name, f"model_type {raw['model_type']!r} needs remote code (auto_map)",
                    "use an architecture that transformers ships (llama, qwen2, gpt2, "
                    "mistral, ...); remote code is never run")
    tf = offline_transformers()
    if raw["model_type"] not in tf.models.auto.configuration_auto.CONFIG_MAPPING:
        raise _fail(name, f"model_type {raw['model_type']!r} is not supported by "
                    f"transformers {tf.__version__}", "use an architecture that "
                    "transformers ships (llama, qwen2, gpt2, mistral, ...)")
    try:
        config = tf.AutoConfig.from_pretrained(str(root), local_files_only=True,
                                               trust_remote_code=False)
    except Exception as e:  # noqa: BLE001 - any failure to read it is the file's
        raise _fail(name, f"config.json (model_type {raw['model_type']!r}) cannot be "
                    f"loaded ({_first_line(e)})", "fix its fields (e.g. write it with "
                    "config.save_pretrained)") from None
    mapping = tf.models.auto.modeling_auto.MODEL_FOR_CAUSAL_LM_MAPPING
    if type(config) not in mapping:
        raise _fail(name, f"model_type {config.model_type!r} has no causal-LM class in "
                    f"transformers", "use a decoder-only language model (llama, qwen2, gpt2, "
                    "mistral, ...)")
    return config


def make_hf(path: str, *, data: str | None = None, seq_len: int = 256,
            eval_samples: int = 64, metric: str = "val_loss", corpus_chars: int = 10**9,
            verify_data: bool = True) -> Workload:
    """The ``hf:<path>`` workload (see the module docstring)."""
    name = f"hf:{path}"
    check_common(eval_samples=eval_samples, metric=metric)
    if not isinstance(seq_len, int) or isinstance(seq_len, bool) or seq_len < 1:
        raise WorkloadError(f"workload.options.seq_len must be an integer >= 1 (got "
                            f"{seq_len!r}); e.g. seq_len = 256")
    root = Path(path).expanduser()
    config = _config(name, root)
    weights = sorted(root.glob("*.safetensors"))
    pickles = [p for pat in _PICKLES for p in root.glob(pat)]
    if not weights and pickles:
        raise _fail(name, f"weights {pickles[0].name!r} are pickled; only *.safetensors is "
                    f"loaded", "convert them (model.save_pretrained(dir) writes safetensors), "
                    "or remove them to start from a random init")
    max_pos = getattr(config, "max_position_embeddings", None)
    if isinstance(max_pos, int) and seq_len > max_pos:
        raise WorkloadError(f"workload.options.seq_len ({seq_len}) exceeds the model's "
                            f"max_position_embeddings ({max_pos}); set seq_len <= {max_pos}")
    lm = load_lm_data(data, seq_len, corpus_chars=corpus_chars, verify=verify_data)
    vocab = getattr(config, "vocab_size", None)
    if isinstance(vocab, int) and vocab < lm.vocab:
        raise WorkloadError(f"{name}: the model's vocab_size ({vocab}) is smaller than the "
                            f"data's vocabulary ({lm.vocab}); prepare data with --vocab "
                            f"{vocab} or fewer, or use a model with a larger vocabulary")
    tf = offline_transformers()
    auto = tf.AutoModelForCausalLM

    def build() -> nn.Module:
        if weights:
            model = auto.from_pretrained(str(root), local_files_only=True,
                                         use_safetensors=True, trust_remote_code=False,
                                         dtype=torch.float32)
        else:
            model = auto.from_config(config, dtype=torch.float32)
        model.config.use_cache = False
        return model

    def build_meta() -> nn.Module:
        return auto.from_config(config)

    try:  # the config must build a model (checked on the meta device: no memory)
        with torch.device("meta"):
            params = sum(p.numel() for p in build_meta().parameters())
    except Exception as e:  # noqa: BLE001 - any failure here is the config's
        raise _fail(name, f"config.json does not build a {config.model_type!r} model "
                    f"({_first_line(e)})",
                    "fix the config's fields") from None
    try:
        flops: float | None = meta_flops_per_sample(build_meta, seq_len)
    except Exception:  # noqa: BLE001 - FLOPs are optional; unknown stays unknown
        flops = None
    ev = lm.val
    return Workload(
        name=name, build_model=build, train_set=lm.train, eval_set=ev, loss=lm_loss,
        evaluate=lm_evaluate(ev, eval_samples, metric) if ev else None,
        flops_per_sample=flops, shard_units=largest_module_list,
        info={**lm.info, "model_type": config.model_type, "parameters": params,
              "weights": [p.name for p in weights] or "random init (from_config)",
              "vocab": vocab, "data_vocab": lm.vocab},
    )
