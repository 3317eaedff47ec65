"""Export a run's model weights from a committed DCP checkpoint to sharded ``safetensors``
files (Hugging Face layout: ``model-00001-of-0000N.safetensors`` and
``model.safetensors.index.json``), one tensor at a time: host memory never holds more
than one shard, so models larger than a node's memory export too. (``final/model.pt`` is
the whole model gathered on rank 0, for models that fit host memory.)
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

import torch

from mixfleet.errors import CheckpointError, ConfigError
from mixfleet.train.checkpoint.dcp import committed_steps, verify
from mixfleet.train.checkpoint.safeload import METADATA, SafePlanner, SafeReader, read_metadata

__all__ = ["export_safetensors"]


def _tensor_keys(ckpt: Path, files: dict[str, Any]) -> dict[str, Any]:
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    md = read_metadata(ckpt / METADATA, files)  # no pickle beyond DCP's metadata classes
    return {k: v for k, v in md.state_dict_metadata.items()
            if k.startswith("model.") and isinstance(v, TensorStorageMetadata)}


def _load(ckpt: Path, files: dict[str, Any], key: str, meta: Any) -> torch.Tensor:
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.api import CheckpointException

    t = torch.empty(tuple(meta.size), dtype=meta.properties.dtype)
    box = {"model": {key[len("model."):]: t}}
    with warnings.catch_warnings():  # "assuming the intent is to load in a single process"
        warnings.simplefilter("ignore", UserWarning)
        try:
            dcp.load(box, storage_reader=SafeReader(ckpt, files), planner=SafePlanner(),
                     no_dist=True)
        except (Exception, CheckpointException) as e:  # noqa: BLE001 - said in one line
            raise CheckpointError(f"cannot read {key} from {ckpt}: {type(e).__name__}: "
                                  f"{str(e).splitlines()[0][:200] if str(e) else ''}") from None
    return box["model"][key[len("model."):]]


def export_safetensors(run_dir: str | Path, out: str | Path, *, step: int | None = None,
                       shard_bytes: int = 2 * 2**30) -> dict[str, Any]:
    """Write the model of checkpoint ``step`` (default: the newest committed one) of
    ``run_dir`` to ``out``; returns the index (``weight_map``, ``metadata``)."""
    from safetensors.torch import save_file

    valid, _ = committed_steps(Path(run_dir) / "checkpoints")
    if not valid:
        raise ConfigError(f"run_dir {str(run_dir)!r} has no committed checkpoint; train first "
                          f"(mixfleet train --run-dir {run_dir})")
    pick = [(s, d) for s, d in valid if step is None or s == step]
    if not pick:
        raise ConfigError(f"--step {step} is not a committed checkpoint of {run_dir}; "
                          f"committed: {', '.join(str(s) for s, _ in valid)}")
    chosen, ckpt = pick[0]
    dest = Path(out)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise ConfigError(f"--out {str(dest)!r} is not an empty directory; pass a new one")
    files = verify(ckpt)["files"]  # every file against its sha256, .metadata unpickle-free
    keys = _tensor_keys(ckpt, files)
    if not keys:
        raise CheckpointError(f"{ckpt} holds no model tensors")
    groups: list[list[str]] = [[]]
    size = 0
    for k in sorted(keys):
        meta = keys[k]
        n = meta.properties.dtype.itemsize * int(torch.Size(meta.size).numel())
        if groups[-1] and size + n > shard_bytes:
            groups.append([])
            size = 0
        groups[-1].append(k)
        size += n
    dest.mkdir(parents=True, exist_ok=True)
    weight_map, total = {}, 0
    for i, group in enumerate(groups):
        name = f"model-{i + 1:05d}-of-{len(groups):05d}.safetensors"
        tensors = {k[len("model."):]: _load(ckpt, files, k, keys[k]).contiguous() for k in group}
        total += sum(t.numel() * t.element_size() for t in tensors.values())
        tmp = dest / (name + ".tmp")
        save_file(tensors, str(tmp), metadata={"format": "pt", "step": str(chosen)})
        os.replace(tmp, dest / name)
        weight_map.update({k: name for k in tensors})
    index = {"metadata": {"total_size": total, "step": chosen, "source": str(ckpt)},
             "weight_map": weight_map}
    (dest / "model.safetensors.index.json").write_text(json.dumps(index, indent=1) + "\n")
    return index
