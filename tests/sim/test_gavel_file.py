"""Gavel's own simulation_throughputs.json (a cut of the real file, see fixtures/README.md)
loads whole, its *_unconsolidated worker types as the placement-sensitive variant, and
simulate says which worker types it used."""

import json
from pathlib import Path

import pytest

from mixfleet.cli import main
from mixfleet.errors import ConfigError
from mixfleet.sim.gavel import read_gavel_file, read_gavel_throughputs

FIXTURE = Path(__file__).parent / "fixtures" / "gavel_simulation_throughputs_cut.json"
RAW = json.loads(FIXTURE.read_text())
R18 = "ResNet-18 (batch size 16)"


def test_real_file_loads_every_worker_type():
    """All six worker types of Gavel's file load, with every job figure of the file."""
    every = read_gavel_file(FIXTURE)
    assert sorted(every) == sorted(RAW) == ["k80", "k80_unconsolidated", "p100",
                                            "p100_unconsolidated", "v100",
                                            "v100_unconsolidated"]
    for wt, table in RAW.items():
        assert len(every[wt]) == len(table)
    assert every["v100_unconsolidated"][(R18, 2)] == RAW["v100_unconsolidated"][
        f"('{R18}', 2)"]["null"]


def test_placement_picks_the_variant():
    """Consolidated (default) takes the plain worker types, unconsolidated their variants;
    one device is always on one server, so scale factor 1 agrees (a property of Gavel's
    data), while a 2-device job differs."""
    cons = read_gavel_throughputs(FIXTURE)
    unc = read_gavel_throughputs(FIXTURE, placement="unconsolidated")
    assert sorted(cons) == sorted(unc) == ["k80", "p100", "v100"]
    assert cons["v100"][(R18, 2)] == RAW["v100"][f"('{R18}', 2)"]["null"]
    assert unc["v100"][(R18, 2)] == RAW["v100_unconsolidated"][f"('{R18}', 2)"]["null"]
    assert unc["v100"][(R18, 2)] < cons["v100"][(R18, 2)]
    for acc in cons:
        assert {k: v for k, v in cons[acc].items() if k[1] == 1} == \
            {k: v for k, v in unc[acc].items() if k[1] == 1}


def test_unknown_worker_type_is_refused_with_the_known_ones(tmp_path):
    """A worker type Gavel does not have is refused, naming it and the accepted forms."""
    f = tmp_path / "tp.json"
    f.write_text(json.dumps({"a100": {f"('{R18}', 1)": {"null": 1.0}}}))
    with pytest.raises(ConfigError, match=r"'a100' is not one of v100, p100, k80 \(or one "
                       r"of them \+ '_unconsolidated'\)"):
        read_gavel_file(f)


def _replay(tmp_path, capsys, *extra):
    (tmp_path / "trace.txt").write_text(
        f"{R18}\tpython main.py\tdir\t--num_steps\t1\t10000\t2\t1\t-1\t0\n")
    (tmp_path / "fleet.toml").write_text(
        'name = "gavel"\nreference_chip = "nvidia-v100"\n'
        '[[pool]]\nchip = "nvidia-v100"\nnodes = 1\nper_node = 4\n'
        '[[pool]]\nchip = "nvidia-p100"\nnodes = 1\nper_node = 4\n')
    out = tmp_path / "out"
    rc = main(["simulate", "--fleet", str(tmp_path / "fleet.toml"), "--trace",
               f"gavel:{tmp_path / 'trace.txt'}", "--throughput", f"gavel:{FIXTURE}",
               "--no-failures", "--policy", "fifo", "--estimates", "oracle", "--out",
               str(out), *extra])
    text = capsys.readouterr()
    assert rc == 0, text.err
    return " ".join(text.out.split()), json.loads((out / "results.json").read_text())


def test_simulate_says_which_worker_types_it_used(tmp_path, capsys):
    """The real file replays; the output and results.json name the worker types used and
    say why each other one was not; a 2-device job on V100s takes its steps over the
    consolidated figure."""
    text, doc = _replay(tmp_path, capsys)
    assert "used p100, v100 (consolidated); not used: k80 (no nvidia-k80 pool" in text
    assert "k80_unconsolidated, p100_unconsolidated, v100_unconsolidated (unconsolidated " \
           "variant: a job's workers spread across servers; --gavel-placement " \
           "unconsolidated selects it)" in text
    g = doc["throughput_rows"]["gavel"]
    assert g["used"] == ["p100", "v100"] and g["placement"] == "consolidated"
    assert sorted(g["not_used"]) == ["k80", "k80_unconsolidated", "p100_unconsolidated",
                                     "v100_unconsolidated"]
    tput = RAW["v100"][f"('{R18}', 2)"]["null"]
    assert doc["policies"][0]["makespan_s"] == pytest.approx(10000 / tput)


def test_simulate_unconsolidated_uses_the_variant(tmp_path, capsys):
    """--gavel-placement unconsolidated takes the job's figure from v100_unconsolidated and
    says so."""
    text, doc = _replay(tmp_path, capsys, "--gavel-placement", "unconsolidated")
    assert "used p100_unconsolidated, v100_unconsolidated (unconsolidated)" in text
    tput = RAW["v100_unconsolidated"][f"('{R18}', 2)"]["null"]
    assert doc["policies"][0]["makespan_s"] == pytest.approx(10000 / tput)
