"""``[parallel] split_times = "bench:PATH"``: each stage's per-block, embedding and head
seconds per micro-batch from ``mixfleet bench --class llama`` rows (see docs/pipeline.md,
"The split").

For each chip kind of the stages, the kind's rows in the table (all three components at
one shape and micro-batch) are taken: a measured row before an emulated one, then the
rows whose shape and micro-batch are nearest the trained model's (in block FLOPs). When
the rows were timed at another shape or micro-batch, each component's seconds are scaled
by its FLOPs on the trained model over its FLOPs at the rows' size
(:meth:`~mixfleet.catalog.blockrows.BlockShape.flops`), i.e. the same achieved FLOP/s is
assumed; the plan's ``times`` says so. Any mismatch in the file or the model is a
:class:`~mixfleet.errors.ConfigError` naming the field, the value and the fix.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from pathlib import Path

from torch import nn

from mixfleet.catalog.blockrows import BlockShape, ComponentRow, parse_row
from mixfleet.catalog.table import read_table
from mixfleet.errors import ConfigError

__all__ = ["KindTimes", "BenchTimes", "bench_times", "model_shape", "PREFIX"]

PREFIX = "bench:"
_RANK = {"measured": 0, "measured-scaled": 1, "emulated": 2, "estimated": 3}


@dataclasses.dataclass(frozen=True)
class KindTimes:
    """One chip kind's seconds per micro-batch on the trained model (forward + backward)."""

    block_s: float
    embed_s: float
    head_s: float
    scaled: float  # the block's FLOP ratio applied (1.0: the rows' own size)
    emulated: bool


@dataclasses.dataclass(frozen=True)
class BenchTimes:
    """Per-kind times and where they come from (the plan's ``times``)."""

    kinds: dict[str, KindTimes]
    label: str


def model_shape(model: nn.Module, sample_tokens: int) -> BlockShape | None:
    """The decoder shape of the trained model (the ``llama`` workload's config), or None."""
    cfg = getattr(model, "cfg", None)
    need = ("dim", "heads", "kv_heads", "ffn_dim", "vocab")
    if cfg is None or not all(isinstance(getattr(cfg, k, None), int) for k in need):
        return None
    return BlockShape(dim=cfg.dim, heads=cfg.heads, kv_heads=cfg.kv_heads,
                      ffn_dim=cfg.ffn_dim, vocab=cfg.vocab, seq_len=max(1, sample_tokens))


def _fail(value: str, why: str, fix: str) -> ConfigError:
    return ConfigError(f"parallel.split_times = {value!r}: {why}; {fix}")


def bench_times(value: str, kinds: Sequence[str], model: nn.Module, *, micro: int,
                sample_tokens: int) -> BenchTimes:
    """The per-kind times of ``split_times = value`` for stages of chip ``kinds`` training
    ``model`` (may be on the meta device) with micro-batches of ``micro`` samples of
    ``sample_tokens`` tokens."""
    devs = " ".join("cpu" if k == "cpu" else f"emu:{k}" for k in dict.fromkeys(kinds))
    how = (f"write the rows with `mixfleet bench --class llama --devices {devs} --out DIR` "
           f"(a real chip's device in place of its emu:) and set split_times = "
           f"\"bench:DIR/throughput.json\"")
    if not value.startswith(PREFIX) or not value[len(PREFIX):]:
        raise _fail(value, "expected \"bench:PATH\"", how)
    path = value[len(PREFIX):]
    shape = model_shape(model, sample_tokens)
    if shape is None:
        raise _fail(value, f"its rows time Llama blocks but the workload's model "
                    f"({type(model).__name__}) is not a Llama decoder", "remove split_times "
                    "(the split then uses parameters / catalog peak) or train the llama "
                    "workload")
    if not Path(path).is_file():
        raise _fail(value, f"no file {path!r}", how)
    try:
        rows = read_table(path)
    except ConfigError as e:
        raise _fail(value, str(e), how) from None
    parsed = [p for p in map(parse_row, rows) if p is not None]
    if not parsed:
        found = sorted({r.workload for r in rows})
        raise _fail(value, f"the table holds no `bench --class llama` rows (workloads there: "
                    f"{', '.join(found) or 'none'})", how)
    out: dict[str, KindTimes] = {}
    picked: dict[str, str] = {}
    for kind in dict.fromkeys(kinds):
        groups: dict[tuple[str, int, str], dict[str, ComponentRow]] = {}
        for p in parsed:
            if p.row.chip == kind:
                groups.setdefault((p.preset, p.row.batch, p.row.origin), {})[p.component] = p
        whole = [g for g in groups.values() if len(g) == 3]
        if not whole:
            have = sorted({p.row.chip for p in parsed})
            raise _fail(value, f"no complete llama rows (embedding, block, head) for chip "
                        f"kind {kind!r} of a stage (rows there are for {', '.join(have)})",
                        how)

        def far(g: dict[str, ComponentRow]) -> tuple[int, float]:
            b = g["block"]
            ratio = shape.flops("block", micro) / b.shape.flops("block", b.row.batch)
            return _RANK[b.row.origin], abs(math.log(ratio))
        g = min(whole, key=far)
        scale = {c: shape.flops(c, micro) / g[c].shape.flops(c, g[c].row.batch) for c in g}
        out[kind] = KindTimes(block_s=g["block"].seconds * scale["block"],
                              embed_s=g["embedding"].seconds * scale["embedding"],
                              head_s=g["head"].seconds * scale["head"],
                              scaled=scale["block"], emulated=g["block"].row.emulated)
        b = g["block"]
        picked[kind] = (f"{kind} {b.row.workload.rsplit('/', 1)[0]} micro-batch "
                        f"{b.row.batch} x {b.shape.seq_len} tokens"
                        + (" emulated" if b.row.emulated else "")
                        + ("" if scale["block"] == 1.0 else f" (block x{scale['block']:.3g})"))
    emu = any(t.emulated for t in out.values())
    scaled = any(t.scaled != 1.0 for t in out.values())
    label = (f"bench rows {Path(path)}" + (" (EMULATED)" if emu else "") + ": "
             + ", ".join(picked.values())
             + (f"; scaled by FLOPs to this model ({shape.label()}, micro-batch {micro}; the "
                f"same FLOP/s assumed)" if scaled else ""))
    return BenchTimes(kinds=out, label=label)
