"""Token data: `mixfleet data prepare` (tokenizer + token file + meta.json), the checked
loader, fixed-length windows, and bad input that writes nothing."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mixfleet.cli import main
from mixfleet.errors import ConfigError, MixfleetError
from mixfleet.workloads import get_workload
from mixfleet.workloads.prepare import PrepareConfig, prepare_tokens
from mixfleet.workloads.tokens import (
    FORMAT,
    TokenWindows,
    dtype_for_vocab,
    load_token_data,
    sha256_file,
)

TEXT = ("To be, or not to be, that is the question:\nWhether 'tis nobler in the mind to "
        "suffer\nThe slings and arrows of outrageous fortune,\n") * 40
DOCS = ["Now is the winter of our discontent\nMade glorious summer by this sun of York;",
        "Ünïcödé — “quotes” and emoji 🎭 survive byte-level BPE.", "A third, short one."]


def _inputs(d: Path) -> list[str]:
    (d / "a.txt").write_text(TEXT, encoding="utf-8")
    with (d / "b.jsonl").open("w", encoding="utf-8") as f:
        for doc in DOCS:
            f.write(json.dumps({"text": doc, "id": 1}) + "\n")
        f.write("\n")  # blank lines are skipped
    return [str(d / "a.txt"), str(d / "b.jsonl")]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("tok")
    prepare_tokens(PrepareConfig(inputs=tuple(_inputs(d)), out=str(d / "out"), vocab=400,
                                 val_fraction=0.2))
    return d / "out"


def test_prepared_tokens_decode_back_to_the_documents(prepared: Path) -> None:
    """The token file decodes to the documents in input order, each followed by
    <|endoftext|>; meta.json's counts, split, dtype and hashes describe the files."""
    from tokenizers import Tokenizer

    meta = json.loads((prepared / "meta.json").read_text())
    data = load_token_data(prepared)
    tok = Tokenizer.from_file(str(prepared / "tokenizer.json"))
    ids = np.asarray(data.tokens).tolist()
    eot = meta["eot_id"]
    docs, cur = [], []
    for i in ids:
        if i == eot:
            docs.append(tok.decode(cur))
            cur = []
        else:
            cur.append(i)
    assert docs == [TEXT, *DOCS] and not cur
    assert meta["format"] == FORMAT and meta["dtype"] == "uint16"
    assert meta["n_tokens"] == len(ids) == meta["train_tokens"] + meta["val_tokens"]
    assert meta["split"] == len(ids) - round(0.2 * len(ids)) == data.split
    assert meta["documents"] == 4 and meta["vocab_size"] == 400 == data.vocab_size
    assert len(ids) < len(TEXT.encode()) / 2  # merges were learned: BPE compresses
    assert meta["tokens_sha256"] == sha256_file(prepared / "tokens.bin")
    assert [s["documents"] for s in meta["sources"]] == [1, 3]
    assert (prepared / "tokens.bin").stat().st_size == 2 * len(ids)


def test_prepare_is_deterministic_and_reports_progress(prepared: Path, tmp_path: Path) -> None:
    """Preparing the same input again gives the same tokenizer and tokens, byte for byte;
    progress goes through check, train, merge and encode, each to its total."""
    again = tmp_path / "again"
    seen: list[tuple[str, int, int]] = []
    inputs = _inputs(tmp_path)
    prepare_tokens(PrepareConfig(inputs=tuple(inputs), out=str(again), vocab=400,
                                 val_fraction=0.2), progress=lambda *a: seen.append(a))
    for name in ("tokens.bin", "tokenizer.json"):
        assert sha256_file(again / name) == sha256_file(prepared / name), name
    stages = list(dict.fromkeys(s for s, _, _ in seen))
    assert stages == ["check", "train", "merge", "encode"]
    size = sum(Path(p).stat().st_size for p in inputs)
    for stage in stages:
        last = [(d, t) for s, d, t in seen if s == stage][-1]
        assert last == ((1, 1) if stage == "merge" else (size, size)), stage


def test_windows_are_non_overlapping_next_token_pairs() -> None:
    """Window i is tokens [i(T+1), (i+1)(T+1)): inputs its first T, targets its last T;
    a batch taken whole equals the same indices taken in two parts."""
    tokens = np.arange(1000, dtype=np.uint16)
    w = TokenWindows(tokens, 9)
    assert len(w) == 100
    x, y = w.take_batch(torch.tensor([3, 0, 99]))
    assert x[0].tolist() == list(range(30, 39)) and y[0].tolist() == list(range(31, 40))
    assert x.dtype == y.dtype == torch.int64 and x.shape == (3, 9)
    a, b = w.take_batch(torch.tensor([3])), w.take_batch(torch.tensor([0, 99]))
    assert torch.equal(torch.cat([a[0], b[0]]), x) and torch.equal(torch.cat([a[1], b[1]]), y)


def test_llama_reads_prepared_data_and_reports_perplexity(prepared: Path) -> None:
    """`data = DIR` gives llama the data's vocab and windows of the train split; the metric
    val_perplexity is exp(val_loss)."""
    opts = dict(dim=32, layers=1, heads=4, kv_heads=2, ffn_dim=64, seq_len=16,
                data=str(prepared), eval_samples=5)
    w = get_workload("llama", **opts)
    data = load_token_data(prepared)
    assert w.info["vocab"] == 400
    assert len(w.train_set) == data.split // 17
    x, _ = w.train_set.take(torch.tensor([2]))
    assert x[0].tolist() == np.asarray(data.tokens[34:50]).tolist()
    torch.manual_seed(0)
    model = w.build_model()
    loss = w.evaluate(model, torch.device("cpu"))  # type: ignore[misc]
    ppl = get_workload("llama", **opts, metric="val_perplexity").evaluate(  # type: ignore[misc]
        model, torch.device("cpu"))
    assert loss[0] == "val_loss" and ppl[0] == "val_perplexity"
    assert ppl[1] == pytest.approx(np.exp(loss[1]), rel=1e-6)


def test_uint32_above_65535_and_a_hand_made_uint32_file_loads(tmp_path: Path) -> None:
    """Ids are stored as uint16 up to vocab 65,535 and uint32 above; a uint32 token file
    with its meta.json loads and reads back the same ids."""
    assert dtype_for_vocab(65535) == "uint16" and dtype_for_vocab(65536) == "uint32"
    ids = np.array([0, 70000, 5, 69999, 1, 2, 3, 4], dtype="<u4")
    _write_dir(tmp_path, ids, vocab=70001, dtype="uint32")
    data = load_token_data(tmp_path)
    assert np.asarray(data.tokens).tolist() == ids.tolist()


def _write_dir(d: Path, ids: np.ndarray, *, vocab: int, dtype: str, **meta: object) -> None:
    (d / "tokens.bin").write_bytes(ids.tobytes())
    (d / "tokenizer.json").write_text("{}")
    m = {"format": FORMAT, "dtype": dtype, "n_tokens": len(ids), "split": len(ids) // 2,
         "vocab_size": vocab, "tokens_sha256": sha256_file(d / "tokens.bin"),
         "tokenizer_sha256": sha256_file(d / "tokenizer.json"), **meta}
    (d / "meta.json").write_text(json.dumps(m))


def _snapshot(d: Path) -> set[str]:
    return {str(p.relative_to(d)) for p in d.rglob("*")}


@pytest.mark.parametrize("case", ["empty", "missing", "latin1", "vocab", "not-empty",
                                  "suffix", "bad-json", "no-text", "folder"])
def test_bad_input_exits_2_naming_the_file_and_writes_nothing(tmp_path: Path, case: str,
                                                              capsys) -> None:  # type: ignore[no-untyped-def]
    """Empty input, a missing / non-UTF-8 / wrongly named file, a bad JSON line, a vocab
    below 257, a non-empty --out: exit 2, a message naming the culprit, nothing written."""
    good = tmp_path / "good.txt"
    good.write_text(TEXT)
    out = tmp_path / "out"
    args = [str(good)]
    vocab, needle = "300", ""
    if case == "empty":
        (tmp_path / "e.txt").write_text("")
        args, needle = [str(tmp_path / "e.txt")], "empty"
    elif case == "missing":
        args, needle = [str(good), str(tmp_path / "nope.txt")], "nope.txt"
    elif case == "latin1":
        (tmp_path / "l.txt").write_bytes("café au lait\n".encode("latin-1"))
        args, needle = [str(good), str(tmp_path / "l.txt")], "l.txt' is not UTF-8 (byte 3"
    elif case == "vocab":
        vocab, needle = "256", "--vocab"
    elif case == "not-empty":
        out.mkdir()
        (out / "keep.me").write_text("x")
        needle = "not empty"
    elif case == "suffix":
        (tmp_path / "x.csv").write_text("a,b\n")
        args, needle = [str(tmp_path / "x.csv")], ".csv"
    elif case == "bad-json":
        (tmp_path / "j.jsonl").write_text('{"text": "fine"}\n{"text": oops}\n')
        args, needle = [str(tmp_path / "j.jsonl")], "line 2 is not valid JSON"
    elif case == "no-text":
        (tmp_path / "j.jsonl").write_text('{"text": "fine"}\n{"body": "x"}\n')
        args, needle = [str(tmp_path / "j.jsonl")], "line 2 has no string field 'text'"
    elif case == "folder":
        (tmp_path / "empty_dir").mkdir()
        args, needle = [str(tmp_path / "empty_dir")], "no .txt or .jsonl"
    before = _snapshot(tmp_path)
    rc = main(["data", "prepare", *args, "--out", str(out), "--vocab", vocab])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert needle in err
    assert err.count("mixfleet: error:") == 1
    assert _snapshot(tmp_path) == before


def test_cli_prepares_and_prints_a_summary(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    """`mixfleet data prepare FILES --out DIR --json` exits 0, writes the three files and
    prints meta.json last."""
    out = tmp_path / "out"
    rc = main(["data", "prepare", *_inputs(tmp_path), "--out", str(out), "--vocab", "300",
               "--val-fraction", "0", "--json"])
    stdout = capsys.readouterr().out
    assert rc == 0
    meta = json.loads(stdout.strip().splitlines()[-1])
    assert sorted(os.listdir(out)) == ["meta.json", "tokenizer.json", "tokens.bin"]
    assert meta["val_tokens"] == 0 and meta["split"] == meta["n_tokens"]
    assert f'data = "{out}"' in stdout
    assert sorted(os.listdir(tmp_path)) == ["a.txt", "b.jsonl", "out"]  # no temp folder left


@pytest.mark.parametrize("damage, needle", [
    ("no-meta", "meta.json is missing"),
    ("no-tokens", "tokens.bin is missing"),
    ("flip", "sha256"),
    ("truncate", "bytes"),
    ("big-id", "outside vocab_size"),
    ("not-json", "cannot be read"),
])
def test_damaged_token_data_is_refused_with_the_fix(tmp_path: Path, damage: str,
                                                   needle: str) -> None:
    """A damaged token directory raises ConfigError naming the problem and the command that
    rebuilds it; llama refuses it the same way."""
    ids = np.arange(100, dtype="<u2") % 50
    if damage == "big-id":
        ids[7] = 60
    _write_dir(tmp_path, ids, vocab=50, dtype="uint16")
    if damage == "no-meta":
        (tmp_path / "meta.json").unlink()
    elif damage == "no-tokens":
        (tmp_path / "tokens.bin").unlink()
    elif damage == "flip":
        raw = bytearray((tmp_path / "tokens.bin").read_bytes())
        raw[10] ^= 1
        (tmp_path / "tokens.bin").write_bytes(bytes(raw))
    elif damage == "truncate":
        (tmp_path / "tokens.bin").write_bytes(ids[:-1].tobytes())
    elif damage == "not-json":
        (tmp_path / "meta.json").write_text("{not json")
    with pytest.raises(ConfigError, match=needle) as e:
        load_token_data(tmp_path)
    assert "mixfleet data prepare" in str(e.value)
    with pytest.raises(ConfigError, match=needle):
        get_workload("llama", data=str(tmp_path), seq_len=4, dim=32, heads=4, kv_heads=2,
                     layers=1, ffn_dim=32)


_VALUES = st.one_of(st.none(), st.booleans(), st.integers(-5, 300), st.text(max_size=8),
                    st.floats(allow_nan=True), st.lists(st.integers(), max_size=2),
                    st.sampled_from(["uint16", "uint32", "int8", FORMAT]))
_KEYS = ["format", "dtype", "n_tokens", "split", "vocab_size", "tokens_sha256",
         "tokenizer_sha256"]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(edits=st.dictionaries(st.sampled_from(_KEYS), _VALUES, max_size=4),
       drop=st.lists(st.sampled_from(_KEYS), max_size=2),
       raw=st.one_of(st.none(), st.binary(max_size=40)),
       n=st.integers(1, 64), seq_len=st.integers(1, 70))
def test_fuzzed_token_data_is_a_mixfleet_error_or_loads(edits, drop, raw, n, seq_len) -> None:  # type: ignore[no-untyped-def]
    """Any meta.json (fields of any type, missing, or not JSON at all) over any token file:
    loading and windowing raise MixfleetError or succeed, never another exception."""
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        _write_dir(d, (np.arange(n) % 40).astype("<u2"), vocab=40, dtype="uint16")
        meta = json.loads((d / "meta.json").read_text())
        meta.update(edits)
        for k in drop:
            meta.pop(k, None)
        if raw is not None:
            (d / "meta.json").write_bytes(raw)
        else:
            (d / "meta.json").write_text(json.dumps(meta))
        try:
            data = load_token_data(d)
            w = TokenWindows(data.train_tokens, seq_len)
            if len(w):
                x, y = w.take_batch(torch.arange(len(w)))
                assert int(x.max()) < data.vocab_size and x.shape[1] == seq_len
        except MixfleetError:
            pass
