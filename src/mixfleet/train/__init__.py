"""Training: one job's ranks, from launch to the last committed step (docs/architecture.md).

The core, at the top of the package:

    config.py     the run's typed config (one dataclass per section), TOML and --set
    launch.py     `mixfleet train`: validate, write the run directory, start the ranks
    autoplan.py   a config's plan from the cost model: plan-job, [parallel] mode = "auto"
    worker.py     one rank's process: device, process group, builds and runs the Trainer
    trainer.py    the loop: sampler -> step -> checks -> actions -> snapshot/checkpoint
    step.py       StepManager: one step's forward/backward, collectives and StepOutcome
    sampler.py    the global-batch sampler (data order from seed, epoch, step only)
    optim.py      the optimizer and the LR schedule
    device.py     devices through torch.accelerator: resolve, synchronize, backend
    clock.py      Clock, SystemClock, FakeClock (health logic runs under a fake clock)
    rundir.py     the run directory's training files (block list, skipped batches)
    rendezvous.py where ranks meet: file stores in a private dir, loopback-bound collectives
    agent.py      torchrun with its multi-machine rendezvous store bound to the endpoint only
    exchange.py   small values between ranks as JSON in uint8 tensors (never pickles)

Sub-packages, one concern each:

    checkpoint/   saving and restoring: the manager, DCP on disk, in-memory snapshots, export
    health/       checks, the actions they return, detectors, control signals, faults
    parallel/     how gradients are reduced: dp (flat buffers, FlatSGD) and fsdp (FSDP2)
    mixed/        one job on several chip kinds: shares, rebalance, collectives, placement
"""

__all__: list[str] = []
