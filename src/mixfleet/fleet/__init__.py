"""Fleet model and placement (docs/fleet.md).

    model.py        Fleet, Pool, Job and their TOML files
    throughput.py   ThroughputTable: measured rows, roofline estimates, assumptions
    speeds.py       each pool's speed relative to the reference chip, and its origin
    reliability.py  ReliabilityProfile per chip, the documented defaults and their sources
    estimates.py    what a scheduler can know of a job's length
    workloads.py    the planner's workload classes
    plan.py         place a list of jobs on a fleet with one policy
    policies/       placement policies (fifo, srtf, gavel, goodput, sparing) and their base
"""

from mixfleet.fleet.model import Fleet, Job, Pool, load_fleet, load_jobs
from mixfleet.fleet.reliability import ReliabilityProfile, default_profile
from mixfleet.fleet.throughput import ThroughputTable

__all__ = ["Fleet", "Job", "Pool", "load_fleet", "load_jobs", "ReliabilityProfile",
           "default_profile", "ThroughputTable"]
