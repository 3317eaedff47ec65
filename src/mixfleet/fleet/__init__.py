"""Fleet model, placement and the cost model of one job (docs/fleet.md, docs/costmodel.md).

    model.py        Fleet, Pool, Job and the parsers of their TOML files
    files.py        the tables of a fleet file and a jobs file, as typed configs
    workloads.py    the planner's workload classes (FLOPs, bytes, memory per sample)
    throughput.py   ThroughputTable: measured rows, roofline estimates, assumptions
    speeds.py       each pool's speed relative to the reference chip, and its origin
    reliability.py  ReliabilityProfile per chip, the documented defaults and their sources
    estimates.py    what a scheduler can know of a job's length
    elastic.py      resizing elastic jobs: shrink vs requeue on a loss, grow on free devices
    mixing.py       mixed-kind jobs: start now over several kinds vs wait for one kind
    policies/       placement policies (fifo, srtf, gavel, goodput, sparing) and their base
    plan.py         `mixfleet plan`: one placement of a list of jobs
    jobshape.py     a job's model size (meta-device counts) and its ranks (chip, node)
    costterms.py    the cost model's terms and assumptions: compute, fixed, links, memory
    costmodel.py    one cost model: each parallel mode's step, memory and throughput
"""

from mixfleet.fleet.model import Fleet, Job, Pool, load_fleet, load_jobs
from mixfleet.fleet.reliability import ReliabilityProfile, default_profile
from mixfleet.fleet.throughput import ThroughputTable

__all__ = ["Fleet", "Job", "Pool", "load_fleet", "load_jobs", "ReliabilityProfile",
           "default_profile", "ThroughputTable"]
