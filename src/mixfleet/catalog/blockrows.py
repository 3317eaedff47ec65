"""Throughput rows of a decoder's components (``mixfleet bench --class llama``): their
workload names, the shape they were timed at, and its FLOPs (see docs/pipeline.md, "The
split").

``bench --class llama[:PRESET]`` writes three rows per (chip, micro-batch): workload
``llama:PRESET/embedding``, ``llama:PRESET/block`` (one decoder block: RMSNorm, GQA
attention with RoPE, SwiGLU MLP) and ``llama:PRESET/head`` (final norm, head and loss).
Each row's ``step_p50_s`` is that component's forward + backward seconds per micro-batch
of ``batch`` sequences; its ``note`` ends with the shape (:func:`shape_note`), which
:func:`parse_row` reads back. The planner's classes ignore these rows (not planner
classes); the pipeline's split reads them (:mod:`mixfleet.train.parallel.benchsplit`).

This module sits below both ``bench`` (the writer) and ``train`` (the reader), as
:mod:`mixfleet.catalog.table` does.
"""

from __future__ import annotations

import dataclasses
import re

from mixfleet.catalog.table import ThroughputRow

__all__ = ["COMPONENTS", "BlockShape", "row_workload", "shape_note", "parse_row",
           "ComponentRow"]

COMPONENTS = ("embedding", "block", "head")
_NAME = re.compile(r"^llama:([A-Za-z0-9._-]+)/(embedding|block|head)$")
_SHAPE = re.compile(r"shape: dim=(\d+) heads=(\d+) kv_heads=(\d+) ffn_dim=(\d+) "
                    r"vocab=(\d+) seq_len=(\d+)")


@dataclasses.dataclass(frozen=True, kw_only=True)
class BlockShape:
    """The sizes of a Llama-style decoder that set its components' work."""

    dim: int
    heads: int
    kv_heads: int
    ffn_dim: int
    vocab: int
    seq_len: int

    def flops(self, component: str, sequences: int) -> float:
        """Forward + backward FLOPs of one ``component`` on a micro-batch of ``sequences``
        (PaLM's convention, as ``workloads.llama.analytic_flops_per_token``: 6 x matmul
        parameters x tokens, attention 12 x dim x seq_len per token; the embedding, a
        lookup, counts its bytes moved: 2 x dim per token)."""
        tokens = float(sequences * self.seq_len)
        d, kv = self.dim, self.kv_heads * (self.dim // self.heads)
        if component == "block":
            return (6.0 * (2 * d * d + 2 * d * kv + 3 * d * self.ffn_dim)
                    + 12.0 * d * self.seq_len) * tokens
        if component == "head":
            return 6.0 * d * self.vocab * tokens
        return 2.0 * d * tokens

    def label(self) -> str:
        return (f"dim {self.dim}, heads {self.heads}/{self.kv_heads} kv, ffn {self.ffn_dim}, "
                f"vocab {self.vocab}, seq {self.seq_len}")


def row_workload(preset: str, component: str) -> str:
    """The workload name of a component's row."""
    return f"llama:{preset}/{component}"


def shape_note(shape: BlockShape) -> str:
    """The note's tail that records the shape (read back by :func:`parse_row`)."""
    return (f"shape: dim={shape.dim} heads={shape.heads} kv_heads={shape.kv_heads} "
            f"ffn_dim={shape.ffn_dim} vocab={shape.vocab} seq_len={shape.seq_len}")


@dataclasses.dataclass(frozen=True)
class ComponentRow:
    """A row of ``bench --class llama`` read back."""

    preset: str
    component: str
    shape: BlockShape
    row: ThroughputRow

    @property
    def seconds(self) -> float:
        """Forward + backward seconds of the component per micro-batch of ``row.batch``."""
        return float(self.row.step_p50_s or self.row.batch / self.row.samples_per_s)


def parse_row(row: ThroughputRow) -> ComponentRow | None:
    """The component row, or None when ``row`` is not one of ``bench --class llama``'s
    (another workload, or a note without the shape)."""
    m, s = _NAME.match(row.workload), _SHAPE.search(row.note)
    if m is None or s is None:
        return None
    dim, heads, kv, ffn, vocab, seq = (int(x) for x in s.groups())
    if min(dim, heads, kv, ffn, vocab, seq) < 1:
        return None
    return ComponentRow(m.group(1), m.group(2), BlockShape(dim=dim, heads=heads, kv_heads=kv,
                                                           ffn_dim=ffn, vocab=vocab,
                                                           seq_len=seq), row)
