"""Fleet simulator: replays a trace on a fleet under placement policies, with failures and
throttling (docs/fleet.md).

    engine.py       Simulator: the event loop, one method per event, and the scheduling rounds
    events.py       the deterministic event queue (time, priority, seq) and the event kinds
    cluster.py      the state of pools and jobs during a run
    knowledge.py    what the fleet knows (table, estimated reliability) vs the truth drawn
    metrics.py      JCT, queueing, device-hours, goodput lost: SimResult
    report.py       results.json and the policy comparison table
    plots.py        JCT CDF and utilization plots
    sensitivity.py  reruns with each reliability figure halved and doubled
    traces.py       trace readers (Philly, openb, synthetic); gavel.py Gavel's formats
    elastic.py      elastic jobs: drains and freed devices replayed under fleet/elastic.py
"""

from mixfleet.sim.engine import SimConfig, Simulator, simulate
from mixfleet.sim.metrics import METRIC_KEYS, SimResult

__all__ = ["SimConfig", "Simulator", "simulate", "SimResult", "METRIC_KEYS"]
