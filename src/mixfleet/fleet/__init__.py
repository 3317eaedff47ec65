"""Fleet model and placement: Fleet, Pool, Job, ThroughputTable, ReliabilityProfile,
policies, and the cost model of one job.

    model.py        Fleet, Pool, Job and their TOML files
    workloads.py    the planner's workload classes (FLOPs, bytes, memory per sample)
    throughput.py   per-device throughput per (workload class, chip): measured or roofline
    reliability.py  failure and throttle profiles per chip
    estimates.py    what a scheduler knows of a job's length
    policies/       placement policies (a pure function of a snapshot)
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
