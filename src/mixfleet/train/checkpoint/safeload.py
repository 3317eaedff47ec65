"""Reading DCP checkpoints without unpickling anything but DCP's own metadata
(docs/security.md).

DCP unpickles in two places: ``FileSystemReader.read_metadata`` (``pickle.load`` of
``.metadata``) and the default load planner's ``load_bytes`` (``torch.load`` with
``weights_only=False`` for non-tensor entries such as the optimizer's hyperparameters).
:class:`SafeReader` reads ``.metadata`` (never through a link) with an unpickler whose
``find_class`` admits only what torch writes there (DCP's metadata dataclasses,
``_StorageInfo``, ``torch.Size``, dtypes, the layout and memory-format helpers, paths), so a
planted pickle fails before any object is built; :class:`SafePlanner` loads non-tensor
entries with ``weights_only=True``. Every file of a checkpoint is also listed with its
sha256 in the manifest (:func:`hash_files`, when committing) and checked before loading
(:func:`verify_files`).
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch.distributed.checkpoint import FileSystemReader
from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner
from torch.distributed.checkpoint.metadata import Metadata

from mixfleet import safefs
from mixfleet.errors import CheckpointError, UnsafePathError

__all__ = ["METADATA", "SafeReader", "SafePlanner", "read_metadata", "hash_files",
           "verify_files"]

METADATA = ".metadata"
_CHUNK = 4 << 20
_DCP = "torch.distributed.checkpoint.metadata"
#: every global a ``.metadata`` written by torch 2.13 names (checked with pickletools on
#: dp and fsdp checkpoints); dtypes are admitted by type below
_ALLOWED = {
    ("pathlib", "PosixPath"), ("pathlib", "PurePosixPath"), ("torch", "Size"),
    ("torch.serialization", "_get_layout"),
    ("torch.distributed.checkpoint.filesystem", "_StorageInfo"),
    *((_DCP, n) for n in ("Metadata", "MetadataIndex", "StorageMeta", "TensorProperties",
                          "TensorStorageMetadata", "BytesStorageMetadata",
                          "ChunkStorageMetadata", "_MEM_FORMAT_ENCODING")),
}


class _MetadataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not something DCP metadata holds")


def read_metadata(path: Path, files: Iterable[str] | None = None) -> Metadata:
    """The DCP metadata in file ``path``; anything else (a planted pickle, a link, data
    naming files outside the checkpoint or not in ``files``) raises CheckpointError naming
    the file, before any object but DCP's own is built."""
    try:
        data = safefs.read_bytes(path)
        md = _MetadataUnpickler(io.BytesIO(data)).load()
    except (UnsafePathError, OSError) as e:
        raise CheckpointError(f"{path} refused: {e}") from None
    except Exception as e:  # noqa: BLE001 - whatever the bytes make the unpickler raise
        raise CheckpointError(f"{path} refused: not DCP metadata ({type(e).__name__}: "
                              f"{str(e)[:160]}); nothing in it was run. Delete the checkpoint "
                              f"directory, or check who else writes there") from None
    if not isinstance(md, Metadata) or not isinstance(md.storage_data, dict):
        raise CheckpointError(f"{path} refused: it holds {type(md).__name__}, not DCP "
                              f"metadata")
    known = None if files is None else set(files)
    for info in md.storage_data.values():
        rel = getattr(info, "relative_path", None)
        if (not isinstance(rel, str) or rel in ("", ".", "..") or "/" in rel
                or (known is not None and rel not in known)):
            raise CheckpointError(f"{path} refused: it names data file {rel!r}, which is not "
                                  f"a file of this checkpoint's manifest")
    return md


class SafeReader(FileSystemReader):
    """A FileSystemReader whose metadata comes from :func:`read_metadata` (no pickle)."""

    def __init__(self, path: str | os.PathLike[str], files: Iterable[str] | None = None
                 ) -> None:
        super().__init__(path)
        self._files = None if files is None else sorted(files)

    def read_metadata(self, *args: Any, **kwargs: Any) -> Metadata:
        md = read_metadata(Path(self._get_metadata_path(kwargs.get("rank"))), self._files)
        if getattr(md, "storage_meta", None) is None:
            from torch.distributed.checkpoint.metadata import StorageMeta

            md.storage_meta = StorageMeta()
        md.storage_meta.load_id = self.load_id  # type: ignore[union-attr]
        return md


class SafePlanner(DefaultLoadPlanner):
    """DCP's default load planner, with non-tensor entries loaded ``weights_only``."""

    def load_bytes(self, read_item: Any, value: io.BytesIO) -> None:
        from torch.distributed.checkpoint._traverse import set_element

        obj = torch.load(value, weights_only=True)  # a pickled payload raises, never runs
        fqn = read_item.dest_index.fqn
        if self.flatten_state_dict:
            set_element(self.original_state_dict, self.mappings[fqn], obj)
        else:
            self.state_dict[fqn] = obj


def _digest(path: Path, *, chmod: int | None = None) -> tuple[str, int]:
    fd = safefs.open_fd(path, own=chmod is not None)  # a regular file, never a link
    try:
        if chmod is not None:
            os.fchmod(fd, chmod)  # DCP creates files with the umask: make them private
        h, n = hashlib.sha256(), 0
        while chunk := os.read(fd, _CHUNK):
            h.update(chunk)
            n += len(chunk)
        return h.hexdigest(), n
    finally:
        os.close(fd)


def hash_files(d: Path, names: Iterable[str]) -> dict[str, dict[str, Any]]:
    """{name: {"sha256", "bytes"}} of files ``names`` of checkpoint ``d`` (made as private
    as ``d`` on the way)."""
    mode = safefs.file_mode_in(d)
    out = {}
    for name in sorted(names):
        digest, n = _digest(d / name, chmod=mode)
        out[name] = {"sha256": digest, "bytes": n}
    return out


def verify_files(d: Path, files: dict[str, Any], names: Iterable[str]) -> None:
    """Check files ``names`` of checkpoint ``d`` against their sha256 in ``files`` (the
    manifest's); CheckpointError names the first that differs."""
    for name in names:
        want = files.get(name)
        if not isinstance(want, dict):
            raise CheckpointError(f"{d / name} is not in the checkpoint's manifest; refused")
        try:
            digest, _ = _digest(d / name)
        except (UnsafePathError, OSError) as e:
            raise CheckpointError(f"{d / name} refused: {e}") from None
        if digest != want.get("sha256"):
            raise CheckpointError(f"{d / name} does not match its sha256 in the manifest "
                                  f"(changed after it was committed); checkpoint refused")
