"""Dashboard load: time to first chart of a 1,000,000-record run against a 1,000-record run.

Two synthetic runs (one step record plus a telemetry sample every 10 steps) are written to
a temporary directory. Each round starts a fresh dashboard server (uvicorn, in a thread, on
127.0.0.1), opens each run's page in headless Chromium (Debian's, via Playwright) and times
navigation until the loss chart is drawn. The server reads a bounded part of a long file
per request and samples the rest, so the big run's first chart should cost about the same
as the small one's. The ratio of the medians is printed last (target <= 3).

    .venv/bin/python benchmarks/dashboard_load.py [--rounds 5] [--records 1000000]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def write_run(root: Path, n: int) -> Path:
    root.mkdir(parents=True)
    (root / "events.jsonl").write_text('{"t":0.0,"event":"launch"}\n')
    step = '{"step":%d,"loss":%.6f,"lr":0.05,"step_s":0.01,"samples_per_s":6400.0,"t":%.3f}\n'
    tel = ('{"kind":"telemetry","t":%.3f,"device":"emu:kunlun-p800","chip":"kunlun-p800",'
           '"source":"emulated","temp_c":%.2f,"emulated":true}\n')
    with (root / "metrics.jsonl").open("w") as f:
        for lo in range(0, n, 100_000):
            parts = []
            for i in range(lo, min(n, lo + 100_000)):
                t = 0.01 * (i + 1)
                parts.append(step % (i + 1, 2.0 / (1 + i * 1e-4), t))
                if i % 10 == 0:
                    parts.append(tel % (t, 40 + 30 * (i % 1000) / 1000))
            f.write("".join(parts))
    return root


class Server:
    def __init__(self, runs: Path) -> None:
        import uvicorn

        from mixfleet.dashboard.app import create_app
        from mixfleet.dashboard.config import DashboardConfig, new_token
        from mixfleet.dashboard.server import bind

        self.token = new_token()
        cfg = DashboardConfig(runs=(runs,), port=0, token=self.token)
        self.sock = bind(cfg)
        host, port = self.sock.getsockname()[:2]
        self.base = f"http://{host}:{port}"
        self.server = uvicorn.Server(uvicorn.Config(create_app(cfg), log_level="warning",
                                                    lifespan="off"))
        self.thread = threading.Thread(target=self.server.run,
                                       kwargs={"sockets": [self.sock]}, daemon=True)
        self.thread.start()
        while not self.server.started:
            time.sleep(0.01)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join()
        self.sock.close()


def first_chart_s(page, srv: Server, rid: str) -> float:  # type: ignore[no-untyped-def]
    from mixfleet.dashboard.app import cookie_name

    page.goto("about:blank")
    page.context.add_cookies([{"name": cookie_name(int(srv.base.rsplit(":", 1)[1])),
                                 "value": srv.token, "url": srv.base}])
    t = time.perf_counter()
    page.goto(f"{srv.base}/#/run/{rid}")
    page.wait_for_selector("#run-loss .mf-chart[data-points]", timeout=120_000)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--records", type=int, default=1_000_000)
    args = ap.parse_args()
    if not Path(CHROMIUM).is_file():
        sys.exit(f"needs Chromium at {CHROMIUM} (apt-get install -y chromium)")
    from playwright.sync_api import sync_playwright

    from mixfleet.dashboard.discover import item_id

    with tempfile.TemporaryDirectory() as tmp:
        runs = Path(tmp) / "runs"
        t = time.perf_counter()
        small = write_run(runs / "small", 1_000)
        big = write_run(runs / "big", args.records)
        size = (big / "metrics.jsonl").stat().st_size
        print(f"wrote runs of 1,000 and {args.records:,} step records "
              f"({size / 1e6:.0f} MB) in {time.perf_counter() - t:.1f}s")
        small_t, big_t = [], []
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            page = browser.new_page(viewport={"width": 1300, "height": 900})
            first_chart_s(page, Server(runs), item_id(small))  # warm the browser
            for r in range(args.rounds):
                srv = Server(runs)  # a fresh server: nothing read yet
                try:
                    small_t.append(first_chart_s(page, srv, item_id(small)))
                    big_t.append(first_chart_s(page, srv, item_id(big)))
                finally:
                    srv.stop()
                print(f"round {r + 1}: first chart 1,000 records {small_t[-1]:.3f}s, "
                      f"{args.records:,} records {big_t[-1]:.3f}s")
            browser.close()
    a, b = statistics.median(small_t), statistics.median(big_t)
    print(f"median time to first chart: 1,000 records {a:.3f}s, {args.records:,} records "
          f"{b:.3f}s")
    print(f"first chart {args.records:,} / 1,000 records: {b / a:.2f} (target <= 3)")


if __name__ == "__main__":
    main()
