"""Built-in workloads and user workloads, chosen by name.

``get_workload("digits-cnn")``, ``get_workload("char-gpt", d_model=128)``,
``get_workload("llama", preset="debug")``, a local Hugging Face model
``get_workload("hf:path/to/dir")``, or a user's ``get_workload("mypkg.models:build",
**options)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mixfleet.errors import WorkloadError
from mixfleet.workloads.base import Dataset, Workload, count_train_flops

__all__ = ["BUILTIN", "Dataset", "Workload", "count_train_flops", "get_workload",
           "load_workload", "check_workload_name"]


def _digits(**kw: Any) -> Workload:
    from mixfleet.workloads.digits import make_digits_cnn

    return make_digits_cnn(**kw)


def _chargpt(**kw: Any) -> Workload:
    from mixfleet.workloads.chargpt import make_char_gpt

    return make_char_gpt(**kw)


def _llama(**kw: Any) -> Workload:
    from mixfleet.workloads.llama import make_llama

    return make_llama(**kw)


BUILTIN: dict[str, Callable[..., Workload]] = {"digits-cnn": _digits, "char-gpt": _chargpt,
                                               "llama": _llama}
HF_PREFIX = "hf:"  # hf:<dir>: a transformers causal LM from a local directory


def check_workload_name(name: str) -> None:
    """Raise WorkloadError unless ``name`` is a built-in, ``hf:<dir>`` or a
    ``module:function`` ref."""
    if name.startswith(HF_PREFIX):
        if name[len(HF_PREFIX):]:
            return
        raise WorkloadError(f"workload.name {name!r} names no directory; use "
                            f"'hf:path/to/model' (a folder with config.json)")
    if name in BUILTIN or (":" in name and all(name.partition(":")[::2])):
        return
    raise WorkloadError(f"workload.name {name!r} is unknown; use one of "
                        f"{', '.join(BUILTIN)}, 'hf:<dir>' for a local transformers model, "
                        f"or 'package.module:function' for your own model")


def get_workload(name: str, **options: Any) -> Workload:
    check_workload_name(name)
    if name in BUILTIN:
        try:
            return BUILTIN[name](**options)
        except TypeError as e:
            raise WorkloadError(f"[workload.options] {options!r} do not fit {name!r} ({e}); "
                                f"remove the unknown option") from None
    if name.startswith(HF_PREFIX):
        from mixfleet.workloads.hf import make_hf

        try:
            return make_hf(name[len(HF_PREFIX):], **options)
        except TypeError as e:
            raise WorkloadError(f"[workload.options] {options!r} do not fit 'hf:' ({e}); "
                                f"remove the unknown option") from None
    from mixfleet.workloads.user import load_user_workload

    return load_user_workload(name, options)


def load_workload(name: str, options: dict[str, Any], path: str = "") -> Workload:
    """The workload of a run's ``[workload]``: :func:`get_workload`, with a user
    workload imported from the directory ``path`` too (mixfleet.workloads.user)."""
    if path and ":" in name and not name.startswith(HF_PREFIX):
        check_workload_name(name)
        from mixfleet.workloads.user import load_user_workload

        return load_user_workload(name, options, path)
    return get_workload(name, **options)
