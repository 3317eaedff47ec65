"""A user's own model: ``[workload] name = "package.module:function"``.

The function is called with the ``[workload.options]`` table as keyword arguments and
returns a dict with:

- ``model``: an ``nn.Module`` (or a zero-argument callable building one, called once per
  rank after seeding so every rank starts from the same weights);
- ``dataset``: a map-style dataset (``__len__``, ``__getitem__`` returning
  ``(inputs..., target)``) or a tuple of tensors whose first dimension is the sample;
- ``loss``: ``loss(outputs, targets)`` returning the **sum** over the batch
  (e.g. ``F.cross_entropy(out, y, reduction="sum")``);
- optionally ``eval_dataset`` (same form) and ``metric``: ``metric(outputs, targets)`` -> a
  float averaged over samples, with ``metric_name`` (default ``"eval_loss"``, the mean
  loss when no metric is given).

Where the module comes from (docs/security.md): an installed package, the directory of
``[workload] path``, or, without it, the directory of the config file when that directory
is the user's own and not writable by group or others. The directory is appended to
``sys.path`` (installed packages win); the working directory is never searched.
"""

from __future__ import annotations

import copy
import importlib
import os
import stat
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mixfleet.errors import WorkloadError
from mixfleet.workloads.base import Batch, Dataset, Workload, count_train_flops

__all__ = ["load_user_workload", "is_user_ref", "trusted_dir", "workload_dir"]


def _as_dataset(obj: Any, what: str, ref: str) -> Dataset:
    if isinstance(obj, (tuple, list)) and obj and all(isinstance(t, torch.Tensor) for t in obj):
        n = obj[0].shape[0]
        if any(t.shape[0] != n for t in obj):
            raise WorkloadError(f"{ref}: {what} tensors differ in their first dimension; "
                                f"each must have one row per sample")
        return Dataset(tensors=tuple(obj))
    if hasattr(obj, "__len__") and hasattr(obj, "__getitem__"):
        return Dataset(items=obj)
    raise WorkloadError(f"{ref}: {what} must be a map-style dataset or a tuple of tensors "
                        f"(got {type(obj).__name__})")


def is_user_ref(name: str) -> bool:
    """``package.module:function`` (not ``hf:<dir>``)."""
    return ":" in name and not name.startswith("hf:")


def trusted_dir(d: Path) -> bool:
    """A directory code may be imported from: owned by this user, not writable by group
    or others (its files could be replaced by them otherwise)."""
    try:
        st = d.stat()
    except OSError:
        return False
    return (stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid()
            and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH))


def workload_dir(name: str, path: str, config_dir: Path | None) -> str:
    """The directory a user workload ``name`` is imported from, absolute: ``path`` (relative
    to ``config_dir``), else ``config_dir`` when :func:`trusted_dir`, else ``""``
    (installed packages only)."""
    if not is_user_ref(name):
        return path
    if path:
        p = Path(path).expanduser()
        if not p.is_absolute() and config_dir is not None:
            p = config_dir / p
        return str(p.absolute())
    if config_dir is not None and trusted_dir(config_dir):
        return str(config_dir.absolute())
    return ""


def _import(ref: str, path: str = "") -> Any:
    mod_name, _, fn_name = ref.partition(":")
    if not mod_name or not fn_name:
        raise WorkloadError(f"workload.name {ref!r} is not of the form "
                            f"'package.module:function'")
    if path and path not in sys.path:
        sys.path.append(path)  # after the installed packages: they are not shadowed
    try:
        mod = importlib.import_module(mod_name)
    except ImportError as e:
        where = f"installed packages and {path}" if path else "installed packages"
        raise WorkloadError(f"workload.name {ref!r}: cannot import {mod_name!r} from "
                            f"{where} ({e}); install it, set [workload] path = \"DIR\" to "
                            f"the folder holding it, or keep it beside the config file in a "
                            f"folder you own that group and others cannot write (the "
                            f"working directory is never searched)") from None
    fn = getattr(mod, fn_name, None)
    if not callable(fn):
        raise WorkloadError(f"workload.name {ref!r}: {mod_name} has no function "
                            f"{fn_name!r}")
    return fn


def load_user_workload(ref: str, options: dict[str, Any], path: str = "") -> Workload:
    """Import ``ref`` (installed, or from the directory ``path``), call it and wrap what it
    returns as a :class:`Workload`."""
    fn = _import(ref, path)
    try:
        out = fn(**options)
    except TypeError as e:
        raise WorkloadError(f"workload {ref!r} rejected [workload.options] {options!r} "
                            f"({e}); pass only the keyword arguments it takes") from None
    if not isinstance(out, dict) or not {"model", "dataset", "loss"} <= set(out):
        raise WorkloadError(f"workload {ref!r} must return a dict with keys 'model', "
                            f"'dataset' and 'loss' (got {type(out).__name__})")
    model_obj, loss_fn = out["model"], out["loss"]
    if isinstance(model_obj, nn.Module):
        initial = copy.deepcopy(model_obj)

        def build() -> nn.Module:
            return copy.deepcopy(initial)
    elif callable(model_obj):
        build = model_obj
    else:
        raise WorkloadError(f"workload {ref!r}: 'model' must be an nn.Module or a callable "
                            f"returning one")
    train = _as_dataset(out["dataset"], "dataset", ref)
    ev = out.get("eval_dataset")
    eval_set = _as_dataset(ev, "eval_dataset", ref) if ev is not None else None

    def loss(model: nn.Module, batch: Batch) -> torch.Tensor:
        return loss_fn(model(*batch[:-1]), batch[-1])

    metric, metric_name = out.get("metric"), out.get("metric_name", "eval_loss")

    def evaluate(model: nn.Module, device: torch.device) -> tuple[str, float]:
        assert eval_set is not None
        b = tuple(t.to(device) for t in eval_set.take(torch.arange(len(eval_set))))
        with torch.no_grad():
            if metric is None:
                return metric_name, float(loss(model, b).item()) / len(eval_set)
            return metric_name, float(metric(model(*b[:-1]), b[-1]))

    w = Workload(name=ref, build_model=build, train_set=train, eval_set=eval_set, loss=loss,
                 evaluate=evaluate if eval_set is not None else None,
                 info={"data": f"user workload {ref}"})
    try:
        w.flops_per_sample = count_train_flops(build(), loss, train.take(torch.arange(1)))
    except Exception:  # noqa: BLE001 - FLOPs are optional; unknown stays unknown
        w.flops_per_sample = None
    return w
