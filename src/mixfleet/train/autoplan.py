"""A run config's plan from the cost model: what ``mixfleet plan-job`` prints and what
``[parallel] mode = "auto"`` trains with (docs/costmodel.md).

:func:`job_of` reads the job out of a :class:`RunConfig` (the model: the workload, or the
``[emulate] as_model`` preset it is paced as; the batch, optimizer, micro-batch limits and
shares; the ranks, their chips and nodes), :func:`plan_run` predicts every mode with
:mod:`mixfleet.fleet.costmodel` and picks the fastest that fits. Deterministic: the same
config gives the same plan.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from mixfleet.catalog.table import ThroughputRow
from mixfleet.emulate.pricing import LinkPrices
from mixfleet.errors import ConfigError
from mixfleet.fleet.costmodel import MODES, JobSpec, ModePlan, choose, predict
from mixfleet.fleet.jobshape import (
    ModelShape,
    RankSpec,
    as_model_shape,
    config_rank_specs,
    workload_shape,
)
from mixfleet.train.config import RunConfig
from mixfleet.train.mixed.shares import largest_remainder, start_speeds
from mixfleet.train.parallel.fsdp import param_bytes_for
from mixfleet.train.parallel.pipecost import PIPELINE  # registers the mode
from mixfleet.train.parallel.pipeplan import stage_fields

__all__ = ["RunPlan", "job_of", "plan_run", "resolve_auto", "plan_event"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class RunPlan:
    """Every mode's prediction for one job, the pick and why the others lose."""

    job: JobSpec
    ranks: tuple[RankSpec, ...]
    prices: LinkPrices
    plans: tuple[ModePlan, ...]
    pick: ModePlan | None
    why: dict[str, str]
    emulated: bool
    as_model: str | None
    time_scale: float | None

    def label(self) -> str:
        """``emulated as llama3-8b (time scale 0.001)``, ``emulated`` or ``""``."""
        if not self.emulated:
            return ""
        if self.as_model is None:
            return "emulated"
        ts = f"{self.time_scale:g}" if self.time_scale is not None else "chosen at run time"
        return f"emulated as {self.as_model} (time scale {ts})"

    def as_dict(self) -> dict[str, Any]:
        """A stable JSON shape: plan-job --json and the ``plan`` event."""
        m = self.job.model
        return {
            "emulated": self.emulated, "label": self.label(), "as_model": self.as_model,
            "time_scale": self.time_scale, "model": m.name, "params": m.params,
            "seq_len": m.seq_len, "global_batch": self.job.global_batch,
            "optimizer": self.job.optimizer, "unit": self.job.unit,
            "ranks": [{"device": r.device, "chip": r.chip, "node": r.node} for r in self.ranks],
            "links": {"bridge_gbps": self.prices.bridge_gbps,
                      "bridge_origin": self.prices.bridge_origin,
                      "nic_gbps": self.prices.nic_gbps, "nic_origin": self.prices.nic_origin},
            "plans": [p.as_dict() for p in self.plans],
            "pick": self.pick.mode if self.pick else None, "why": dict(self.why),
        }


def _model(cfg: RunConfig, as_model: str | None) -> ModelShape:
    if as_model is not None:  # its own sequence length unless set, as the emulator paces it
        return as_model_shape(as_model, cfg.emulate.as_model_seq_len or None)
    return workload_shape(cfg.workload.name, dict(cfg.workload.options), cfg.shares.sample_mib)


def job_of(cfg: RunConfig, *, ranks: Sequence[RankSpec] | None = None,
           as_model: str | None = None) -> tuple[JobSpec, list[RankSpec]]:
    """The job of ``cfg`` (``ranks`` / ``as_model`` override the config's)."""
    name = as_model if as_model is not None else cfg.emulate.as_model
    if ranks is None:
        devs = [r.device for r in cfg.ranks] or [cfg.launch.device] * cfg.launch.nproc
        chips = [r.chip for r in cfg.ranks] or [None] * len(devs)
        micro = [r.max_micro_batch for r in cfg.ranks] or [0] * len(devs)
        ranks = config_rank_specs(devs, chips, micro, cfg.launch.nproc,
                                  from_launch=not cfg.ranks,
                                  speeds=[r.speed for r in cfg.ranks] or None)
    ranks = list(ranks)
    if cfg.train.global_batch < len(ranks):
        raise ConfigError(f"train.global_batch ({cfg.train.global_batch}) must be >= the "
                          f"number of ranks ({len(ranks)}); raise global_batch")
    model = _model(cfg, name)
    micro = [r.max_micro_batch or cfg.shares.max_micro_batch for r in ranks]
    shares = None
    sc = cfg.shares
    if sc.mode == "equal" or (sc.mode == "speed" and not sc.rebalance_every):
        # the run keeps the shares it starts with: predict those (the trainer's own
        # weights, e.g. catalog speeds, not the shares the model would balance)
        caps = [m * sc.max_accum if m > 0 else None for m in micro]
        speeds = start_speeds(sc, [r.device for r in ranks],
                              overrides=[r.speed for r in ranks], workload=cfg.workload.name)
        shares = tuple(largest_remainder(speeds, cfg.train.global_batch, caps=caps))
    par = cfg.parallel
    job = JobSpec(model=model, global_batch=cfg.train.global_batch,
                  optimizer=cfg.train.optimizer, unit="tokens" if name else "samples",
                  param_bytes=param_bytes_for(par.param_dtype),
                  reshard_after_forward=par.reshard_after_forward,
                  activation_checkpointing=par.activation_checkpointing,
                  max_micro_batch=cfg.shares.max_micro_batch, max_accum=cfg.shares.max_accum,
                  sample_s=cfg.emulate.sample_s, shares=shares, microbatches=par.microbatches,
                  schedule=par.schedule, **_pipeline_fields(cfg))
    return job, ranks


def _pipeline_fields(cfg: RunConfig) -> dict[str, Any]:
    """The job's pipeline fields: under ``mode = "pipeline"`` its stage mode and given
    stages; else the stage modes the trained workload allows."""
    modes = _stage_modes(cfg)
    par = cfg.parallel
    if par.mode != "pipeline":
        return {"stage_modes": modes}
    return {"stage_modes": tuple(m for m in modes if m == par.stage_mode),
            "stages": tuple((s.chip, s.ranks, s.blocks) for s in par.stages)}


def _stage_modes(cfg: RunConfig) -> tuple[str, ...]:
    """What a pipeline of the trained workload may run inside its stages: none when it
    cannot be cut into stages, dp only when its head is tied to its embedding (fsdp inside
    stages refuses tied weights, docs/pipeline.md)."""
    from mixfleet.train.parallel.pipeplan import meta_model
    from mixfleet.train.parallel.stages import tied_parameters
    from mixfleet.workloads import get_workload

    w = get_workload(cfg.workload.name, **dict(cfg.workload.options))
    try:
        tied = tied_parameters(meta_model(w.build_model))
    except ConfigError:
        return ()
    return ("dp",) if tied else ("dp", "fsdp")


def plan_run(cfg: RunConfig, *, ranks: Sequence[RankSpec] | None = None,
             as_model: str | None = None, rows: Sequence[ThroughputRow] = (),
             modes: Sequence[str] | None = None) -> RunPlan:
    """Every mode's predicted step for ``cfg``'s job and the fastest plan that fits."""
    job, rs = job_of(cfg, ranks=ranks, as_model=as_model)
    prices = cfg.emulate.link_prices()
    plans = predict(job, rs, modes=tuple(modes or MODES), rows=rows, prices=prices)
    pick, why = choose(plans)
    name = as_model if as_model is not None else cfg.emulate.as_model
    return RunPlan(job=job, ranks=tuple(rs), prices=prices, plans=tuple(plans), pick=pick,
                   why=why, emulated=any(r.emulated for r in rs), as_model=name,
                   time_scale=cfg.emulate.time_scale)


def resolve_auto(cfg: RunConfig) -> tuple[RunConfig, RunPlan | None]:
    """``[parallel] mode = "auto"`` replaced by the plan's pick (and the plan); any other
    mode unchanged (and None). No plan that fits: ConfigError with each mode's refusal."""
    if cfg.parallel.mode != "auto":
        return cfg, None
    plan = plan_run(cfg)
    if plan.pick is None:
        raise ConfigError("parallel.mode = \"auto\" found no plan that fits: "
                          + "; ".join(plan.why.values())
                          + "; add ranks, set [parallel] activation_checkpointing = true or "
                            "lower [shares] max_micro_batch")
    fields: dict[str, Any] = {}
    if plan.pick.mode == PIPELINE:  # the run executes the predicted stages and split
        try:
            fields = stage_fields(plan.pick, _trained_blocks(cfg, plan),
                                  cfg.parallel.virtual_stages)
        except ConfigError as e:  # the model trained has fewer blocks than stages
            pick, why = choose([p for p in plan.plans if p.mode != PIPELINE])
            if pick is None:
                raise
            plan = dataclasses.replace(plan, pick=pick, why={**why, PIPELINE: str(e)})
    assert plan.pick is not None
    par = dataclasses.replace(cfg.parallel, mode=plan.pick.mode,  # type: ignore[arg-type]
                              **fields)
    return dataclasses.replace(cfg, parallel=par), plan


def _trained_blocks(cfg: RunConfig, plan: RunPlan) -> int:
    """Blocks of the model the run trains: the predicted model's, unless it is paced as
    another (``as_model``); then the workload's own."""
    if plan.as_model is None:
        return plan.job.model.blocks
    return workload_shape(cfg.workload.name, dict(cfg.workload.options)).blocks


def plan_event(plan: RunPlan) -> dict[str, Any]:
    """The fields of the run's ``plan`` event: the pick's predicted figures (chip seconds,
    and wall seconds under an as_model time scale) that ``mixfleet report`` sets against
    the measured step time."""
    p = plan.pick
    if p is None:
        raise ValueError("no plan was picked")
    scale = plan.time_scale if plan.as_model is not None else 1.0
    return {"mode": p.mode, "label": plan.label(), "predicted_step_s": p.step_s,
            "predicted_wall_step_s": p.step_s * scale if scale is not None else None,
            "compute_s": p.compute_s, "fixed_s": p.fixed_s, "comm_s": dict(p.comm),
            "samples_per_s": p.samples_per_s, "origins": dict(p.origins),
            "time_scale": scale, "why": dict(plan.why)}
