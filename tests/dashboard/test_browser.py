"""The pages in headless Chromium (Debian's package, driven by Playwright): they load
without JavaScript errors, draw what the files hold, and update live."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mixfleet.report.timeline import run_report
from tests.dashboard.conftest import SCREENSHOTS, CliServer, get_json, step_record, write_jsonl


class Page:
    """A page with its console errors collected."""

    def __init__(self, browser: Any, base: str) -> None:
        self.ctx = browser.new_context(viewport={"width": 1300, "height": 900})
        self.page = self.ctx.new_page()
        self.base = base
        self.errors: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text)
                     if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))

    def open(self, hash_: str) -> Any:
        self.page.goto(f"{self.base}/{hash_}")
        self.page.wait_for_selector(f'body[data-ready="{hash_}"]', state="attached")
        return self.page

    def shot(self, name: str) -> Path:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        out = SCREENSHOTS / f"{name}.png"
        self.page.screenshot(path=str(out), full_page=True)
        return out


@pytest.fixture
def page(browser: Any, cli_server: CliServer) -> Iterator[Page]:
    p = Page(browser, cli_server.base)
    p.page.goto(cli_server.url)  # the printed URL: the token becomes an HttpOnly cookie
    assert "token=" not in p.page.url
    yield p
    p.ctx.close()


def _labels(p: Any, sel: str) -> list[str]:
    """The labels of the lines the uPlot chart in ``sel`` draws (its x series left out)."""
    return p.eval_on_selector(sel, "el => el.mfChart.series.slice(1).map(s => s.label)")


def _run_id(cli_server: CliServer, name: str) -> str:
    runs = get_json(cli_server.base + "/api/runs", token=cli_server.token)["runs"]
    return next(r["id"] for r in runs if r["name"] == name)


def test_every_page_loads_without_console_errors(page: Page, cli_server: CliServer,
                                                 trained_run: Path) -> None:
    """Runs, a run, Chips, Simulation and Fleet render with no JavaScript error (a
    screenshot of each is written for CI's artifacts)."""
    rid = _run_id(cli_server, trained_run.name)
    for name, hash_, ready in [("runs", "#/runs", "#runs-table"),
                               ("run", f"#/run/{rid}", "#run-loss .mf-chart[data-points]"),
                               ("chips", "#/chips", "#throughput-table"),
                               ("simulation", "#/sim", "#sim-table"),
                               ("fleet", "#/fleet", "#fleet-none")]:
        p = page.open(hash_)
        p.wait_for_selector(ready)
        assert page.shot(name).stat().st_size > 10_000
    assert page.errors == []


def test_runs_page_lists_runs_with_emulated_devices_labeled(page: Page,
                                                            trained_run: Path) -> None:
    """The trained run is listed as finished with its restart, each emulated device
    labeled; the run with a corrupt line says so."""
    p = page.open("#/runs")
    row = p.locator(f'#runs-table tr[data-run="{trained_run.name}"]')
    summary = json.loads((trained_run / "summary.json").read_text())
    cells = row.locator("td").all_inner_texts()
    assert "finished" in cells[3] and cells[6] == str(summary["restarts"]) != "0"
    assert row.locator(".devices .badge.b-emulated").count() == 2
    assert "corrupt line" in p.locator('#runs-table tr[data-run="corrupt"]').inner_text()
    assert page.errors == []


def test_run_page_draws_its_points_events_thresholds_and_lost_time(
        page: Page, cli_server: CliServer, trained_run: Path) -> None:
    """The loss chart has one point per step record; the temperature chart has the
    warning and critical lines and the events as markers with details on hover; the
    time lost by cause equals `mixfleet report --json`."""
    rid = _run_id(cli_server, trained_run.name)
    p = page.open(f"#/run/{rid}")
    p.wait_for_selector("#run-loss .mf-chart[data-points]")
    steps = [json.loads(x) for x in (trained_run / "metrics.jsonl").read_text().splitlines()
             if '"loss"' in x]
    assert p.get_attribute("#run-loss .mf-chart", "data-points") == str(len(steps))
    events = [json.loads(x) for x in (trained_run / "events.jsonl").read_text().splitlines()]
    warn = next(e["warn_c"] for e in events if e["event"] == "thermal_warning")
    label = p.locator('#run-temp .mf-hline[data-label="warning"]')
    assert label.count() == 1
    assert f"warning {warn:.1f}" in label.inner_text()
    assert p.locator('#run-temp .mf-hline[data-label="critical"]').count() == 1
    kill = p.locator('#run-temp .mf-marker[data-event^="fault_injected (kill)"]')
    assert kill.count() == 1
    assert p.locator('#run-temp .mf-marker[data-event^="thermal_warning"]').count() == 1
    kill.dispatch_event("mousemove", {"clientX": 300, "clientY": 300})
    tip = p.locator("#mf-tooltip").inner_text()
    assert "kind: kill" in tip and "step: 20" in tip
    ref = run_report(trained_run)["failure_time_s"]
    shown = {tr.get_attribute("data-cause"): tr.locator("td").nth(1).inner_text()
             for tr in p.locator("#failure-time tr[data-cause]").all()}
    assert shown == {k: f"{v:.3f} s" for k, v in ref.items()}
    assert ref["restart_downtime"] > 0 and ref["cooling"] > 0
    assert page.errors == []


def test_new_steps_appear_without_reload(page: Page, cli_server: CliServer,
                                         site: Path) -> None:
    """Steps appended to metrics.jsonl of an open run show up on the page by themselves."""
    run = site / "runs" / "live"
    p = page.open(f"#/run/{_run_id(cli_server, 'live')}")
    chart = "#run-loss .mf-chart"
    p.wait_for_selector(chart)
    n0 = int(p.get_attribute(chart, "data-points") or 0)
    assert n0 == sum('"loss"' in x for x in (run / "metrics.jsonl").read_text().splitlines())
    write_jsonl(run / "metrics.jsonl",
                [step_record(s, 1001.0 + 0.01 * s, loss=0.01) for s in range(n0 + 1,
                                                                           n0 + 11)], "a")
    p.wait_for_selector(f'{chart}[data-points="{n0 + 10}"]', timeout=20_000)
    assert _labels(p, "#run-shares") == ["rank 0 emu:kunlun-p800", "rank 1 emu:kunlun-p800"]
    assert p.url.endswith(f"#/run/{_run_id(cli_server, 'live')}")
    assert page.errors == []


def test_chips_page_labels_origins_and_compares_two_chips(page: Page,
                                                          cli_server: CliServer) -> None:
    """Each throughput row carries its origin, the emulated one labeled; comparing two
    chips gives the ratio of their samples/s and of each catalog figure."""
    p = page.open("#/chips")
    row = p.locator('#throughput-table tr[data-chip="kunlun-p800"]')
    cells = row.locator("td")
    assert cells.nth(1).inner_text().startswith("kunlun-p800")
    assert cells.nth(1).locator(".badge.b-emulated").inner_text() == "emulated"
    assert cells.nth(6).inner_text() == "emulated"
    assert p.locator('#throughput-table tr[data-chip="cpu"] .b-measured').count() == 1
    p.select_option("#cmp-a", "cpu")
    p.select_option("#cmp-b", "kunlun-p800")
    text = p.locator("#compare-table").inner_text()
    assert re.search(r"2\.50 \(emulated vs measured!\)", text), text
    p.select_option("#cmp-a", "nvidia-a100")
    p.select_option("#cmp-b", "nvidia-h100")
    ratio = p.locator('#compare-table tr[data-figure="bf16_tflops"] td').nth(3).inner_text()
    chips = get_json(f"{cli_server.base}/api/chips", token=cli_server.token)["catalog"]["chips"]
    a, b = (chips[c]["bf16_tflops"]["value"] for c in ("nvidia-a100", "nvidia-h100"))
    assert ratio == f"{b / a:.2f}"
    assert page.errors == []


def test_simulation_page_shows_policies_cdfs_and_assumptions(page: Page, site: Path) -> None:
    """One table row and one CDF line per policy; the assumed pool is flagged."""
    doc = json.loads((site / "sim" / "results.json").read_text())
    p = page.open("#/sim")
    rows = p.locator("#sim-table tbody tr").all_inner_texts()
    assert [r.split("\t")[0] for r in rows] == [x["policy"] for x in doc["policies"]]
    assert "2" in rows[0].split("\t")[1]  # fifo's average JCT: 7200 s = 2 h
    assert _labels(p, "#sim-cdf") == [x["policy"] for x in doc["policies"]]
    assert "ASSUMED: pool p800" in p.locator(".assumption").inner_text()
    assert page.errors == []


def test_charts_are_drawn_by_the_vendored_uplot(page: Page, cli_server: CliServer,
                                                trained_run: Path) -> None:
    """The run page's charts are uPlot canvases (the library served from the package, no
    other origin contacted); the temperature chart has one line per rank, and rank 1's line
    holds the reading behind its thermal warning."""
    rid = _run_id(cli_server, trained_run.name)
    p = page.open(f"#/run/{rid}")
    p.wait_for_selector("#run-temp .mf-chart canvas")
    assert p.evaluate("typeof uPlot") == "function"
    for sel in ("#run-loss", "#run-sps", "#run-temp", "#run-lost"):
        assert p.locator(f"{sel} .uplot canvas").count() == 1, sel
    labels = _labels(p, "#run-temp")
    assert labels == ["rank 0 · emu:nvidia-h20 (emulated)", "rank 1 · emu:nvidia-h20 (emulated)"]
    events = [json.loads(x) for x in (trained_run / "events.jsonl").read_text().splitlines()]
    warn = next(e for e in events if e["event"] == "thermal_warning")
    line = p.eval_on_selector("#run-temp", f"el => el.mfChart.data[{warn['rank'] + 1}]")
    assert warn["temp_c"] in line
    requests = p.evaluate("performance.getEntriesByType('resource').map(r => r.name)")
    assert any(u.endswith("/static/vendor/uplot/uPlot.iife.min.js") for u in requests)
    assert all(u.startswith(cli_server.base) for u in requests), requests
    assert page.errors == []


def test_a_loss_spanning_decades_is_drawn_on_a_log_axis(page: Page, cli_server: CliServer,
                                                        trained_run: Path) -> None:
    """The live run's loss falls from 2 to 0.05 (over a decade): log y axis; the trained
    run's loss stays within a decade: linear."""
    p = page.open(f"#/run/{_run_id(cli_server, 'live')}")
    p.wait_for_selector("#run-loss .mf-chart[data-points]")
    assert p.get_attribute("#run-loss .mf-chart", "data-log") == "y"
    assert p.eval_on_selector("#run-loss", "el => el.mfChart.scales.y.distr") == 3
    p = page.open(f"#/run/{_run_id(cli_server, trained_run.name)}")
    p.wait_for_selector("#run-loss .mf-chart[data-points]")
    assert p.get_attribute("#run-loss .mf-chart", "data-log") == ""
    assert page.errors == []


def test_a_pipeline_runs_page_shows_its_stages(page: Page, cli_server: CliServer) -> None:
    """A pipeline run's page lists its stages (chip, ranks, blocks, predicted and measured
    time per micro-batch, predicted memory) and the bubble predicted and measured, the
    measured figures labelled emulated, where other runs show their shares."""
    p = page.open(f"#/run/{_run_id(cli_server, 'pipeline')}")
    p.wait_for_selector("#stages-table")
    rows = p.locator("#stages-table tbody tr").all_inner_texts()
    assert len(rows) == 2 and "kunlun-p800" in rows[0] and "7" in rows[0]
    assert "0.85 s" in rows[1] and "60.1 GiB" in rows[1]
    measured = p.locator('#stages-table td[data-col="measured"]').all_inner_texts()
    assert measured == ["0.91 s", "0.875 s"]
    head = p.locator('#stages-table th[data-col="measured"]').inner_text()
    assert "measured per micro-batch" in head and "emulated" in head
    h3 = p.locator("#run-shares h3").inner_text()
    assert "bubble 3.0% predicted" in h3 and "5.2% measured [emulated]" in h3
    assert page.errors == []
