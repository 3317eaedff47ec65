"""Fleet model and placement: Fleet, Pool, Job, ThroughputTable, ReliabilityProfile,
policies."""

from mixfleet.fleet.model import Fleet, Job, Pool, load_fleet, load_jobs
from mixfleet.fleet.reliability import ReliabilityProfile, default_profile
from mixfleet.fleet.throughput import ThroughputTable

__all__ = ["Fleet", "Job", "Pool", "load_fleet", "load_jobs", "ReliabilityProfile",
           "default_profile", "ThroughputTable"]
