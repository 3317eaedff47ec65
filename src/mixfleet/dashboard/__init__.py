"""``mixfleet dashboard``: a local, read-only web app over runs, chips, simulations and the
live fleet (docs/dashboard.md). The web app is in :mod:`mixfleet.dashboard.app`, the
socket and uvicorn in :mod:`mixfleet.dashboard.server`.

    app.py       Starlette routes, token check, read-only guard, security headers
    server.py    the socket and uvicorn
    config.py    the dashboard's typed config
    state.py     what the server keeps (found directories, one RunStore per run)
    discover.py  runs, bench tables and results.json under the given directories
    runstore.py  one run: columns read incrementally, report, downsampled series
    runinfo.py   a run's devices, state, thermal thresholds and shares over time
    temps.py     temperature lines per rank and device; where lines break
    series.py    growable columns and min/max downsampling
    tail.py      incremental JSON-lines reader
    chips.py, sim.py, fleet.py   the Chips, Simulation and Fleet pages' data
    static/      the page (app.js, chart.js on the vendored uPlot, style.css)
"""

from mixfleet.dashboard.config import DashboardConfig, is_loopback

__all__ = ["DashboardConfig", "is_loopback"]
