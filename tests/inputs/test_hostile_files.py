"""Every input file is read safely: a hostile or broken file gives a MixfleetError naming
the file (exit 2, nothing written), never a traceback."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mixfleet.bench.table import read_table
from mixfleet.cli import main
from mixfleet.errors import ConfigError, MixfleetError
from mixfleet.fleet.model import load_fleet, load_jobs
from mixfleet.sim.traces import read_trace
from mixfleet.train.launch import resolve_config
from mixfleet.train.mixed.blocklist import read_entries
from tests.conftest import EXAMPLES

PHILLY = ("timestamp,duration,num_gpus,gpu_time,cluster\n"
          "2017-10-01 00:00:00,3600,2,7200,a\n2017-10-01 00:10:00,60,1,60,a\n")
OPENB = ("name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,qos,pod_phase,creation_time,"
         "deletion_time,scheduled_time\np1,1000,100,1,1000,,LS,Running,0,100,10\n"
         "p2,1000,100,2,500,,LS,Running,5,300,20\n")
TABLE_ROW = {"workload": "digits-cnn", "chip": "nvidia-h20", "batch": 64,
             "samples_per_s": 1000.0, "step_p50_s": 0.06, "step_p90_s": 0.07, "mfu": None,
             "peak_mem_bytes": 2, "host": "h", "torch_version": "2.13", "date": "2026-01-01",
             "emulated": False, "origin": "measured"}


def _run_config(p: Path) -> object:
    return resolve_config(p, [])


def _blocklist(p: Path) -> object:
    return read_entries(p.parent)


#: (loader, file name, a valid file's bytes)
LOADERS: dict[str, tuple[Callable[[Path], object], str, bytes]] = {
    "config": (_run_config, "c.toml", (EXAMPLES / "digits-cnn.toml").read_bytes()),
    "fleet": (load_fleet, "f.toml", (EXAMPLES / "fleet-mixed.toml").read_bytes()),
    "jobs": (load_jobs, "j.toml", (EXAMPLES / "jobs.toml").read_bytes()),
    "philly": (read_trace, "t.csv", PHILLY.encode()),
    "openb": (read_trace, "o.csv", OPENB.encode()),
    "table-json": (read_table, "t.json",
                   json.dumps({"schema": 1, "rows": [TABLE_ROW]}).encode()),
    "table-csv": (read_table, "t.csv",
                  (",".join(TABLE_ROW) + "\n" + ",".join(
                      "" if v is None else str(v) for v in TABLE_ROW.values()) + "\n").encode()),
    "blocklist": (_blocklist, "blocklist.json", b'[{"rank": 1, "step": 2, "pending": true}]'),
}


def _load(name: str, data: bytes) -> None:
    loader, fname, _ = LOADERS[name]
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / fname
        p.write_bytes(data)
        loader(p)


@pytest.mark.parametrize("name", sorted(LOADERS))
def test_valid_files_load(name):
    """The reference file of each loader loads (so the hostile cases below are mutations of
    something that works)."""
    _load(name, LOADERS[name][2])


HOSTILE = {
    "latin1": lambda b: b.replace(b"a", "\u00e9".encode("latin-1"), 1),
    "nul": lambda b: b[:10] + b"\x00" + b[10:],
    "garbage": lambda b: bytes(range(256)) * 4,
    "truncated": lambda b: b[: len(b) // 3],
    "empty": lambda b: b"",
}
TOML_HOSTILE = {
    "deep-array": lambda b: b + b"\nzz = " + b"[" * 5000 + b"]" * 5000 + b"\n",
    "deep-table": lambda b: b"x = " + b"{a = " * 200 + b"1" + b"}" * 200 + b"\n" + b,
    "huge-int": lambda b: b"big = " + b"9" * 5000 + b"\n" + b,
    "int-over-64-bits": lambda b: b"n = 99999999999999999999999\n" + b,
    "nan": lambda b: b"x = nan\n" + b,
    "inf": lambda b: b"x = -inf\n" + b,
    "date": lambda b: b"when = 1979-05-27T07:32:00Z\n" + b,
}


@pytest.mark.parametrize("name", ["config", "fleet", "jobs"])
@pytest.mark.parametrize("how", sorted(HOSTILE) + sorted(TOML_HOSTILE))
def test_hostile_toml_files_are_config_errors(name, how):
    """Wrong encoding, NUL bytes, garbage, deep nesting, huge integers, NaN, dates: a
    ConfigError naming the file, never another exception."""
    mutate = {**HOSTILE, **TOML_HOSTILE}[how]
    with pytest.raises(ConfigError, match=r"\.toml"):
        _load(name, mutate(LOADERS[name][2]))


CSV_HOSTILE = {
    **HOSTILE,
    "negative-count": lambda b: b.replace(b",2,", b",-2,", 1),
    "huge-count": lambda b: b.replace(b",2,", b"," + b"9" * 400 + b",", 1),
    "nan": lambda b: b.replace(b"3600", b"nan").replace(b",0,100,10", b",0,nan,10")
    .replace(b"1000.0", b"nan"),
    "missing-columns": lambda b: b.split(b"\n", 1)[0].rsplit(b",", 3)[0] + b"\n"
    + b.split(b"\n", 1)[1],
    "field-too-large": lambda b: b + b'"' + b"x" * 200_000 + b'"\n',
}


@pytest.mark.parametrize("name", ["philly", "openb", "table-csv"])
@pytest.mark.parametrize("how", sorted(CSV_HOSTILE))
def test_hostile_csv_files_are_config_errors(name, how):
    """The same for traces and CSV throughput tables, plus negative or huge counts, NaN and
    missing columns."""
    data = CSV_HOSTILE[how](LOADERS[name][2])
    if data == LOADERS[name][2]:
        pytest.skip("mutation does not apply to this file")
    with pytest.raises(ConfigError, match=r"\.csv"):
        _load(name, data)


def test_duplicate_ids_are_refused():
    """Two jobs, pods or throughput rows with one id: ConfigError naming the id."""
    jobs = LOADERS["jobs"][2].replace(b'id = "llama7b-sft"', b'id = "llama70b-pretrain"')
    with pytest.raises(ConfigError, match="llama70b-pretrain"):
        _load("jobs", jobs)
    with pytest.raises(ConfigError, match="p1"):
        _load("openb", OPENB.replace("p2,", "p1,").encode())
    rows = json.dumps({"schema": 1, "rows": [TABLE_ROW, TABLE_ROW]}).encode()
    with pytest.raises(ConfigError, match="repeats row 0"):
        _load("table-json", rows)
    bad = json.dumps({"schema": 1, "rows": [{**TABLE_ROW, "samples_per_s": -1}]}).encode()
    with pytest.raises(ConfigError, match="samples_per_s"):
        _load("table-json", bad)


def test_cli_exits_2_and_writes_nothing(tmp_path, capsys):
    """`mixfleet train` on a non-UTF-8 config or with a NaN override: exit 2, one message,
    no run directory."""
    cfg = tmp_path / "bad.toml"
    cfg.write_bytes((EXAMPLES / "digits-cnn.toml").read_bytes() + b"\nx = '\xff\xfe'\n")
    run = tmp_path / "run"
    assert main(["train", str(cfg), "--run-dir", str(run)]) == 2
    assert "not UTF-8 text" in capsys.readouterr().err
    good = EXAMPLES / "digits-cnn.toml"
    assert main(["train", str(good), "--run-dir", str(run), "--set", "train.lr=nan"]) == 2
    assert "train.lr" in capsys.readouterr().err
    assert main(["simulate", "--fleet", str(cfg), "--trace", "synthetic:-5"]) == 2
    assert not run.exists()


def _mutations(valid: bytes) -> st.SearchStrategy[bytes]:
    """Valid files with bytes inserted, replaced or cut; or arbitrary bytes."""
    pos = st.integers(0, max(0, len(valid)))
    junk = st.binary(min_size=1, max_size=40) | st.sampled_from(
        [b"\x00", b"nan", b"-1", b"[[[[", b"9" * 30, b'"', b"=", b"\n[x]\n", b",", b"\xff"])
    insert = st.tuples(pos, junk).map(lambda t: valid[: t[0]] + t[1] + valid[t[0]:])
    replace = st.tuples(pos, pos, junk).map(
        lambda t: valid[: min(t[:2])] + t[2] + valid[max(t[:2]):])
    return insert | replace | st.binary(max_size=200)


@pytest.mark.parametrize("name", sorted(LOADERS))
def test_fuzz_loaders_raise_only_mixfleet_errors(name):
    """Property: for any mutation of a valid file, a loader succeeds or raises a
    MixfleetError, never another exception."""
    @settings(max_examples=40, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(_mutations(LOADERS[name][2]))
    def prop(data: bytes) -> None:
        try:
            _load(name, data)
        except MixfleetError:
            pass
    prop()
