"""How a step's gradients are reduced across ranks, and how a model is cut into stages.

    strategy.py   ReductionStrategy (the loop's interface), ParallelConfig, DataParallel
    factory.py    make_strategy: the strategy of [parallel] mode (knows every strategy)
    flatopt.py    FlatSGD: dp's SGD step over the flat weight/gradient/momentum buffers
    fsdp.py       fsdp: FSDP2 (fully_shard per block), bf16 params with fp32 reduction
    stages.py     pipeline: a model's stages under the model's own names, the stage loss
    pipeline.py   pipeline: layout (stages x ranks, lanes), PipelineRank on torch schedules
    stagefsdp.py  pipeline: FSDP2 inside a stage, gathered once per step (prefetched)
    split.py      pipeline: blocks per stage from per-block times and memory (exact DP)
    benchsplit.py pipeline: per-block times from `bench --class llama` rows (split_times)
    pipecost.py   pipeline: its prediction in the cost model (plan-job, mode = "auto")
    pipeconfig.py pipeline: the [parallel] pipeline fields and [[stages]] checks
    pipeplan.py   pipeline: a job's plan (stages, rank order, micro-batches, split)
    pipestrategy.py pipeline: the strategy the trainer runs (schedule, control sum, state)
    pipepace.py   pipeline: emulated chips' stage times (as_model figures, links)
    resplit.py    pipeline: re-split on measured stage times (a health check)
    stagetimes.py pipeline: measured time per micro-batch per stage, bubble (stage_times)
"""

__all__: list[str] = []
