"""How a step's gradients are reduced across ranks.

    strategy.py   ReductionStrategy (the loop's interface), ParallelConfig, DataParallel
    factory.py    make_strategy: the strategy of [parallel] mode (knows every strategy)
    flatopt.py    FlatSGD: dp's SGD step over the flat weight/gradient/momentum buffers
    fsdp.py       fsdp: FSDP2 (fully_shard per block), bf16 params with fp32 reduction
"""

__all__: list[str] = []
