"""Workload classes of the planner: FLOPs and bytes moved per sample, memory per device.

A class stands for a family of training jobs; its figures feed the roofline estimate of
:mod:`mixfleet.fleet.throughput` where no measurement exists. Trace jobs carry no model
name, so :func:`assign_classes` gives each one a class by a documented, seeded mapping.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from mixfleet.errors import ConfigError

__all__ = ["WorkloadClass", "WORKLOAD_CLASSES", "CLASS_MIX", "assign_classes", "get_workload"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class WorkloadClass:
    """One family of training jobs, as the roofline model sees it."""

    name: str
    flops_per_sample: float  # training FLOPs (forward + backward) per sample
    bytes_per_sample: float  # device-memory traffic per sample
    mem_gib: float  # memory a device needs to hold its shard of the job
    description: str


# Training FLOPs per sample: ~3x forward for CNNs, 6 x params x tokens for transformers.
# Bytes per sample follow from a typical arithmetic intensity (FLOP/byte) for the family.
WORKLOAD_CLASSES: dict[str, WorkloadClass] = {
    w.name: w
    for w in (
        WorkloadClass(name="cnn", flops_per_sample=12.3e9, bytes_per_sample=12.3e9 / 80,
                      mem_gib=16, description="ResNet-50 class vision CNN, 224x224 images"),
        WorkloadClass(name="bert", flops_per_sample=6 * 110e6 * 512,
                      bytes_per_sample=6 * 110e6 * 512 / 150, mem_gib=24,
                      description="BERT-base class encoder, 512 tokens per sample"),
        WorkloadClass(name="recsys", flops_per_sample=1.0e8, bytes_per_sample=2.0e7,
                      mem_gib=40, description="DLRM class recommender, embedding-bound"),
        WorkloadClass(name="llm-7b", flops_per_sample=6 * 7e9 * 4096,
                      bytes_per_sample=6 * 7e9 * 4096 / 250, mem_gib=60,
                      description="7B-parameter decoder, 4096 tokens, sharded (FSDP)"),
        WorkloadClass(name="llm-70b", flops_per_sample=6 * 70e9 * 4096,
                      bytes_per_sample=6 * 70e9 * 4096 / 300, mem_gib=72,
                      description="70B-parameter decoder, 4096 tokens, sharded (FSDP)"),
    )
}

#: Probability of each class by the job's device count (upper bound of the bucket).
#: Small jobs are mostly vision, encoder and recommender training; large jobs mostly LLMs.
CLASS_MIX: tuple[tuple[int, dict[str, float]], ...] = (
    (1, {"cnn": 0.45, "bert": 0.30, "recsys": 0.20, "llm-7b": 0.05, "llm-70b": 0.0}),
    (4, {"cnn": 0.30, "bert": 0.30, "recsys": 0.10, "llm-7b": 0.25, "llm-70b": 0.05}),
    (1 << 30, {"cnn": 0.15, "bert": 0.20, "recsys": 0.05, "llm-7b": 0.40, "llm-70b": 0.20}),
)


def get_workload(name: str) -> WorkloadClass:
    """A workload class by name; an unknown name raises ConfigError listing the known ones."""
    if name not in WORKLOAD_CLASSES:
        raise ConfigError(f"unknown workload class {name!r}; use one of "
                          f"{', '.join(WORKLOAD_CLASSES)}")
    return WORKLOAD_CLASSES[name]


def assign_classes(devices: list[int], seed: int) -> list[str]:
    """A workload class per job from its device count, drawn with ``seed`` (same seed, same
    classes). One uniform draw per job, in trace order, mapped through ``CLASS_MIX``."""
    u = np.random.default_rng(seed).random(len(devices))
    tables = []
    for _, mix in CLASS_MIX:
        names = list(mix)
        cum = np.cumsum([mix[n] for n in names])
        tables.append((names, cum / cum[-1]))
    out: list[str] = []
    for n, x in zip(devices, u, strict=True):
        for (bound, _), (names, cum) in zip(CLASS_MIX, tables, strict=True):
            if n <= bound:
                out.append(names[min(int(np.searchsorted(cum, x, side="right")),
                                     len(names) - 1)])
                break
    return out
