"""One job on several kinds of chip (vendor + chip, never the torch device type alone).

    shares.py       shares of the global batch per rank, from speeds; shedding a rank;
                    SharesConfig, the [shares] table
    fleetstep.py    MixedFleetStep: a step in micro-batches, emulated pacing, the all-reduce
    rebalance.py    Rebalancer: shares from measured times; plan_fleet: a job's MixedFleet
    pacing.py       a job's emulated pace: as_model's plan, the pacer of emulated links
    collectives.py  the all-reduce across chip kinds (native inside a kind, gloo between)
    placement.py    which physical device each rank uses and what chip it is
    blocklist.py    devices drained from a run (blocklist.json) and the masks that skip them
"""

__all__: list[str] = []
