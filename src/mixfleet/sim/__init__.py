"""Fleet simulator: event core, cluster model, failures and throttling, traces, metrics."""

from mixfleet.sim.engine import SimConfig, Simulator, simulate, speed_matrix
from mixfleet.sim.metrics import METRIC_KEYS, SimResult

__all__ = ["SimConfig", "Simulator", "simulate", "speed_matrix", "SimResult", "METRIC_KEYS"]
