import json
from pathlib import Path

from mixfleet.cli import main
from mixfleet.sim import METRIC_KEYS

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_simulate_writes_results_and_plots(tmp_path, capsys):
    """simulate prints a table and writes results.json (every metric key, one record per
    policy) and PNG plots."""
    out = tmp_path / "out"
    rc = main(["simulate", "--fleet", str(EXAMPLES / "fleet-mixed.toml"), "--trace",
               "synthetic:300", "--policy", "fifo", "--policy", "goodput", "--out", str(out)])
    assert rc == 0
    doc = json.loads((out / "results.json").read_text())
    assert [r["policy"] for r in doc["policies"]] == ["fifo", "goodput"]
    for rec in doc["policies"]:
        assert set(METRIC_KEYS) <= set(rec)
    assert (out / "jct_cdf.png").stat().st_size > 1000
    assert (out / "utilization_goodput.png").stat().st_size > 1000
    text = capsys.readouterr().out
    assert "policy" in text and "goodput" in text
    # the example's P800 and PPU pools run on stated assumptions, labeled everywhere
    assert "ASSUMED throughput for pool 'p800'" in text and "assumed work" in text
    pools = {p["id"]: p for p in doc["fleet"]["pools"]}
    assert set(pools["ppu"]["throughput_origin"].values()) == {"assumed"}
    assert "CCTV" in pools["ppu"]["assumption"]["source"]
    assert pools["h800"]["assumption"] is None
    assert "assumed" not in pools["h800"]["throughput_origin"].values()
    assert all(0 <= r["assumed_work_share"] <= 1 for r in doc["policies"])


def test_bad_fleet_exits_2_and_writes_nothing(tmp_path, capsys):
    """An unknown chip exits 2 with one message naming file, pool and field; no output."""
    f = tmp_path / "f.toml"
    f.write_text('[[pool]]\nchip = "nvidia-h9000"\nnodes = 1\nper_node = 8\n')
    out = tmp_path / "out"
    rc = main(["simulate", "--fleet", str(f), "--trace", "synthetic:10", "--out", str(out)])
    assert rc == 2
    err = capsys.readouterr().err
    assert "f.toml: pool[0].chip = 'nvidia-h9000' is not a catalog chip" in err
    assert not out.exists()


def test_plan_prints_placement_and_reports_unfit_job(capsys):
    """plan prints each job's pool, the Nvidia hours replaced, and the job that fits
    nowhere with its reason."""
    rc = main(["plan", "--fleet", str(EXAMPLES / "fleet-mixed.toml"), "--jobs",
               str(EXAMPLES / "jobs.toml"), "--policy", "nvidia-sparing"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "big-embedding fits nowhere" in out
    assert "Nvidia device-hours replaced" in out
    assert "ASSUMED" in out and "on pools with ASSUMED throughput" in out


def _rows_file(tmp_path, origin):
    row = {"workload": "cnn", "chip": "kunlun-p800", "batch": 32, "samples_per_s": 900.0,
           "step_p50_s": None, "step_p90_s": None, "mfu": None, "peak_mem_bytes": None,
           "host": "h", "torch_version": "2.6", "date": "2026-01-01",
           "emulated": origin == "emulated", "origin": origin, "note": ""}
    f = tmp_path / "throughput.json"
    f.write_text(json.dumps({"schema": 1, "rows": [row]}))
    return f


def _simulate_rows(tmp_path, capsys, origin, *extra):
    out = tmp_path / "out"
    rc = main(["simulate", "--fleet", str(EXAMPLES / "fleet-mixed.toml"), "--trace",
               "synthetic:20", "--policy", "fifo", "--no-failures", "--throughput",
               str(_rows_file(tmp_path, origin)), "--out", str(out), *extra])
    text = capsys.readouterr()
    assert rc == 0, text.err
    doc = json.loads((out / "results.json").read_text())
    return " ".join(text.out.split()), doc


def test_row_without_reference_row_is_reported_not_dropped_silently(tmp_path, capsys):
    """The P800 cnn row of `mixfleet bench` with no H800 cnn row is not used, one line says
    why and how to fix it, results.json lists it, and the pool keeps its stated assumption
    (assumed, not a mix of the row and an estimate)."""
    text, doc = _simulate_rows(tmp_path, capsys, "emulated")
    assert ("kunlun-p800 cnn row (emulated) not used: no cnn row for the reference chip "
            "nvidia-h800; bench emu:nvidia-h800 in the same run") in text
    assert doc["throughput_rows"]["not_used"][0]["chip"] == "kunlun-p800"
    pools = {p["id"]: p for p in doc["fleet"]["pools"]}
    assert pools["p800"]["throughput_origin"]["cnn"] == "assumed"
    text, doc = _simulate_rows(tmp_path, capsys, "measured")
    assert "bench it too, or pass --reference-from catalog" in text


def test_reference_from_catalog_is_a_labelled_bridge(tmp_path, capsys):
    """With --reference-from catalog a measured P800 row is compared with the H800's
    roofline estimate, labelled BRIDGED and measured/estimated in the output and
    results.json."""
    text, doc = _simulate_rows(tmp_path, capsys, "measured", "--reference-from", "catalog")
    assert "BRIDGED: kunlun-p800 cnn: measured row over the reference chip nvidia-h800's " \
           "roofline ESTIMATE" in text
    assert "MEASURED/ESTIMATED" in text
    pools = {p["id"]: p for p in doc["fleet"]["pools"]}
    assert pools["p800"]["throughput_origin"]["cnn"] == "measured/estimated"
    assert doc["throughput_rows"]["reference_from"] == "catalog"
    assert doc["throughput_rows"]["bridged"][0]["chip"] == "kunlun-p800"
