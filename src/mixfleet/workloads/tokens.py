"""Token data on disk, as ``mixfleet data prepare`` writes it, and its training samples.

A token directory holds::

    tokenizer.json   the byte-level BPE tokenizer (``tokenizers`` library)
    tokens.bin       every token id, little-endian uint16 (vocab <= 65,535) or uint32;
                     training tokens first, then validation tokens
    meta.json        format, dtype, counts, split point, sha256 of both files, sources

:func:`load_token_data` checks all of it (missing file, wrong size, hash mismatch, a token
id outside the vocabulary) and raises :class:`~mixfleet.errors.ConfigError` naming the
file and the fix; the tokens are memory-mapped, never read whole. :class:`TokenWindows`
turns a token array into fixed-length samples: non-overlapping windows of ``seq_len + 1``
tokens, inputs = the first ``seq_len``, targets = the last ``seq_len``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mixfleet.errors import ConfigError

__all__ = ["FORMAT", "META_FILE", "TOKENS_FILE", "TOKENIZER_FILE", "DTYPES", "TokenData",
           "TokenWindows", "load_token_data", "dtype_for_vocab", "sha256_file"]

FORMAT = "mixfleet-tokens/1"
META_FILE, TOKENS_FILE, TOKENIZER_FILE = "meta.json", "tokens.bin", "tokenizer.json"
DTYPES: dict[str, np.dtype[Any]] = {"uint16": np.dtype("<u2"), "uint32": np.dtype("<u4")}
_CHUNK = 1 << 24  # tokens hashed/checked per read


def dtype_for_vocab(vocab: int) -> str:
    """uint16 when every id fits (vocab <= 65,535), else uint32."""
    return "uint16" if vocab <= 65535 else "uint32"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


class TokenWindows:
    """Samples of ``seq_len + 1`` consecutive tokens (non-overlapping) of a 1-D array.

    ``take_batch(index)`` returns ``(inputs, targets)``, int64 tensors of shape
    ``(len(index), seq_len)``; a window's targets are its inputs shifted by one token.
    """

    def __init__(self, tokens: np.ndarray, seq_len: int) -> None:
        self.seq_len = seq_len
        self.n = len(tokens) // (seq_len + 1)
        self._rows = tokens[: self.n * (seq_len + 1)].reshape(self.n, seq_len + 1)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.take_batch(torch.tensor([i]))
        return x[0], y[0]

    def take_batch(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        idx = index.numpy() if isinstance(index, torch.Tensor) else np.asarray(index)
        rows = torch.from_numpy(self._rows[idx].astype(np.int64))
        return rows[:, :-1].contiguous(), rows[:, 1:].contiguous()


@dataclasses.dataclass(frozen=True)
class TokenData:
    """A checked token directory: the memory-mapped tokens and what meta.json says."""

    root: Path
    tokens: np.ndarray
    split: int  # tokens[:split] train, tokens[split:] validation
    vocab_size: int
    meta: dict[str, Any]

    @property
    def train_tokens(self) -> np.ndarray:
        return self.tokens[: self.split]

    @property
    def val_tokens(self) -> np.ndarray:
        return self.tokens[self.split:]


def _bad(root: Path, what: str) -> ConfigError:
    return ConfigError(f"token data {str(root)!r}: {what}; run `mixfleet data prepare "
                       f"TEXT_FILES... --out {root}` again into an empty directory (or point "
                       f"[workload.options] data at a prepared directory)")


def _int(meta: dict[str, Any], key: str, root: Path, lo: int = 0) -> int:
    v = meta.get(key)
    if not isinstance(v, int) or isinstance(v, bool) or v < lo:
        raise _bad(root, f"meta.json field {key!r} is {v!r}, not an integer >= {lo}")
    return v


def _str(meta: dict[str, Any], key: str, root: Path) -> str:
    v = meta.get(key)
    if not isinstance(v, str) or not v:
        raise _bad(root, f"meta.json field {key!r} is {v!r}, not a string")
    return v


def _read_meta(root: Path) -> dict[str, Any]:
    if not root.is_dir():
        raise ConfigError(f"workload.options.data {str(root)!r} is not a directory; prepare "
                          f"one with `mixfleet data prepare TEXT_FILES... --out {root}`")
    for name in (META_FILE, TOKENS_FILE, TOKENIZER_FILE):
        if not (root / name).is_file():
            raise _bad(root, f"{name} is missing")
    try:
        meta = json.loads((root / META_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise _bad(root, f"meta.json cannot be read ({type(e).__name__}: {e})") from None
    if not isinstance(meta, dict):
        raise _bad(root, f"meta.json holds a {type(meta).__name__}, not an object")
    if meta.get("format") != FORMAT:
        raise _bad(root, f"meta.json format is {meta.get('format')!r}, not {FORMAT!r}")
    return meta


def _scan(path: Path, dtype: np.dtype, n: int) -> tuple[str, int]:
    """(sha256, largest id) of the token file, read in chunks."""
    h = hashlib.sha256()
    top = 0
    with path.open("rb") as f:
        for start in range(0, n, _CHUNK):
            buf = f.read(min(_CHUNK, n - start) * dtype.itemsize)
            h.update(buf)
            arr = np.frombuffer(buf, dtype=dtype)
            if len(arr):
                top = max(top, int(arr.max()))
    return h.hexdigest(), top


def load_token_data(root: str | Path, *, verify: bool = True) -> TokenData:
    """Open a prepared token directory; with ``verify`` also check both sha256 hashes and
    that every id is inside the vocabulary (one pass over the file)."""
    root = Path(root)
    meta = _read_meta(root)
    dt_name = _str(meta, "dtype", root)
    if dt_name not in DTYPES:
        raise _bad(root, f"meta.json dtype {dt_name!r} is not one of {', '.join(DTYPES)}")
    dtype = DTYPES[dt_name]
    n = _int(meta, "n_tokens", root, lo=1)
    split = _int(meta, "split", root)
    vocab = _int(meta, "vocab_size", root, lo=2)
    if split > n:
        raise _bad(root, f"meta.json split {split} is beyond n_tokens {n}")
    if dt_name == "uint16" and vocab > 65535:
        raise _bad(root, f"vocab_size {vocab} does not fit dtype {dt_name}")
    path = root / TOKENS_FILE
    size = path.stat().st_size
    if size != n * dtype.itemsize:
        raise _bad(root, f"{TOKENS_FILE} has {size} bytes; meta.json says {n} tokens of "
                         f"{dt_name} ({n * dtype.itemsize} bytes)")
    if verify:
        want = _str(meta, "tokens_sha256", root)
        got, top = _scan(path, dtype, n)
        if got != want:
            raise _bad(root, f"{TOKENS_FILE} sha256 {got[:12]}... does not match meta.json "
                             f"({want[:12]}...): the file changed")
        if top >= vocab:
            raise _bad(root, f"{TOKENS_FILE} holds token id {top}, outside vocab_size {vocab}")
        tok_want = _str(meta, "tokenizer_sha256", root)
        if sha256_file(root / TOKENIZER_FILE) != tok_want:
            raise _bad(root, f"{TOKENIZER_FILE} does not match its sha256 in meta.json")
    tokens = np.memmap(path, dtype=dtype, mode="r", shape=(n,))
    return TokenData(root=root, tokens=tokens, split=split, vocab_size=vocab, meta=meta)
