"""Saving and restoring a run's state (docs/trainer.md, "Checkpoints").

    manager.py      CheckpointManager: saves/restores every stateful object (one restore path);
                    CheckpointConfig, the [checkpoint] table
    stateful.py     the state_dict()/load_state_dict() protocol, adapters for what lacks it
    snapshotter.py  one rank's in-memory snapshots: sizing, (overlapped) copy, gasp, read back
    dcp.py          persistent checkpoints with torch.distributed.checkpoint (COMMIT, keep-k)
    safeload.py     DCP read without pickle (restricted .metadata, weights_only), file sha256
    snapshot.py     in-memory snapshots in host shared memory (survive a worker's crash)
    hostmem.py      host memory for snapshots: sizes, and stale snapshot files to clean
    rng.py          RNG states (python, numpy, torch, device) as JSON for the manifest
    export.py       a committed checkpoint's weights to safetensors (`mixfleet export`)
"""

__all__: list[str] = []
