"""The live fleet: real training jobs placed on the pools of a Ray cluster by the planner's
own policies (docs/fleet-live.md).

    spec.py       fleet pools and job files (validated), the vendors' visible-devices vars
    store.py      SQLite state: jobs, attempts, events, the fleet block list
    scheduler.py  the decision loop (Snapshot -> Policy.allocate -> placements, failures)
    elastic.py    elastic jobs: shrink on a drain or lost node, grow on free devices
    mixkind.py    mixed-kind jobs: started over several chip kinds when that beats waiting
    resizes.py    the resizes table (planned -> launching -> done), resumed after a kill
    preempt.py    the policy's stops and moves of running jobs (goodput's), carried out
    preempts.py   the preempts table (planned -> stopping -> [launching ->] done)
    estimate.py   throughput learnt from the attempts that ran (durations never known)
    backend.py    the backend interface, and local processes (the fake without Ray)
    raybackend.py placement groups and detached runner actors on Ray
    head.py       the embedded Ray head on 127.0.0.1; procs.py: processes by marker
    auth.py       Ray's token authentication, the fleet's private directory and files
    control.py    fleet up / down, the scheduler daemon's life; daemon.py its process
    report.py     `mixfleet fleet report`; demo.py: `make demo-fleet`

Ray is imported only by ``raybackend`` (the optional extra ``fleet``).
"""

__all__: list[str] = []
