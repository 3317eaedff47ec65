"""``mixfleet plan-job CONFIG``: each parallel mode's predicted step on the job's chips, and
the fastest plan that fits (docs/costmodel.md)."""

from __future__ import annotations

import argparse
import json
from typing import Any

__all__ = ["add_parser", "cmd_plan_job", "render"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "plan-job", help="predict each parallel mode's step time, memory and throughput",
        description="Predict, before the job runs, each parallel mode's step time (compute, "
        "fixed costs, exposed communication per link class), memory per chip against its "
        "HBM and throughput, each figure marked measured, emulated, catalog or assumed; "
        "name the fastest plan that fits and why the others lose. [parallel] mode = "
        "\"auto\" trains with this pick.")
    p.add_argument("config", help="a training config (TOML), as for `mixfleet train`")
    p.add_argument("--ranks", help="the job's ranks instead of the config's: devices or chip "
                   "ids, comma-separated, each optionally @NODE, e.g. "
                   "emu:nvidia-h20,emu:kunlun-p800,emu:ascend-910b@1")
    p.add_argument("--as-model", help="predict as if the job trained this model (a llama "
                   "preset, e.g. llama3-8b, or hf:<dir>); default: [emulate] as_model")
    p.add_argument("--table", help="throughput table (JSON/CSV from `mixfleet bench`): "
                   "measured seconds per sample where it has a row for the model and chip")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a config field (repeatable), validated like the file")
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    p.set_defaults(func=cmd_plan_job)


def cmd_plan_job(args: argparse.Namespace) -> int:
    from mixfleet.catalog.table import read_table
    from mixfleet.fleet.jobshape import parse_rank_specs
    from mixfleet.train.autoplan import plan_run
    from mixfleet.train.launch import resolve_config

    cfg = resolve_config(args.config, list(args.set))
    ranks = parse_rank_specs(args.ranks) if args.ranks is not None else None
    rows = read_table(args.table) if args.table else ()
    plan = plan_run(cfg, ranks=ranks, as_model=args.as_model, rows=rows)
    doc = plan.as_dict()
    if args.json:
        print(json.dumps(doc, sort_keys=True))
    else:
        print("\n".join(render(doc, args.config)))
    return 0


def _ms(s: float) -> str:
    return f"{s * 1e3:,.1f}"


def _pipeline_lines(p: dict[str, Any]) -> list[str]:
    """The pipeline plan's stages, transfers and the other stage orders tried."""
    d = p.get("pipeline")
    if not d:
        return [f"  pipeline: {p['refusal']}"]
    gib = 2**30
    stages = " > ".join(
        f"{s['chip']} x{s['ranks']} ({s['blocks']} blocks, slot {_ms(s['slot_s'])} ms, "
        f"{s['memory_bytes'] / gib:.1f} of "
        + (f"{s['hbm_bytes'] / gib:.1f} GiB)" if s["hbm_bytes"] else "unknown GiB)")
        for s in d["stages"])
    out = [f"  pipeline: {stages}",
           f"  pipeline: {d['stage_mode']} inside stages, {d['schedule']}, "
           f"{d['microbatches']} micro-batches of {d['micro_batch']} x {d['lanes']} lane(s); "
           f"bubble {d['bubble']:.1%} ({_ms(d['bubble_s'])} ms)"
           + (f"; {d['note']}" if d.get("note") else "")]
    out += [f"  pipeline transfer {t['from']} > {t['to']} on {t['link']}: "
            f"{t['bytes'] / 2**20:,.1f} MiB, {_ms(t['send_s'])} ms per micro-batch each way"
            for t in d["transfers"]]
    for o in sorted(d["options"], key=lambda o: (not o["fits"], o["step_s"])):
        fit = "fits" if o["fits"] else "DOES NOT FIT"
        out.append(f"  pipeline option {' > '.join(o['order'])}, {o['stage_mode']}: blocks "
                   f"{o['blocks']}, {_ms(o['step_s'])} ms per step, {fit}")
    return out


def render(doc: dict[str, Any], source: str) -> list[str]:
    """The plan as lines a person reads (deterministic: the same plan, the same lines)."""
    gib = 2**30
    label = f" [{doc['label']}]" if doc["label"] else ""
    seq = f" x {doc['seq_len']} tokens" if doc["seq_len"] else ""
    ranks = ", ".join(f"{r['device']}@{r['node']}" for r in doc["ranks"])
    lk = doc["links"]
    out = [f"plan for {source}{label}",
           f"  job: {doc['model']} ({doc['params'] / 1e9:.3g} B parameters), global batch "
           f"{doc['global_batch']}{seq}, {doc['optimizer']}; {len(doc['ranks'])} ranks: "
           f"{ranks}",
           f"  links: bridge {lk['bridge_gbps']:g} GB/s ({lk['bridge_origin']}), nic "
           f"{lk['nic_gbps']:g} GB/s ({lk['nic_origin']}), intra from the catalog",
           f"  {'mode':<9}{'step ms':>12}{'compute':>12}{'fixed':>9}{'intra':>10}"
           f"{'bridge':>10}{'nic':>10}{'samples/s':>12}{'tokens/s':>12}  memory"]
    for p in doc["plans"]:
        c = p["comm_s"]
        if not p["step_s"]:  # no layout at all (the reason is below)
            out.append(f"  {p['mode']:<9}{'-':>12}  {p['refusal']}")
            continue
        tok = f"{p['tokens_per_s']:,.0f}" if p["tokens_per_s"] else "-"
        worst = max(p["ranks"], key=lambda r: (r["need_bytes"] / (r["hbm_bytes"] or 1e30),
                                               -r["rank"]))
        hbm = f"{worst['hbm_bytes'] / gib:.1f}" if worst["hbm_bytes"] else "unknown"
        mem = (f"{'fits' if p['fits'] else 'DOES NOT FIT'} (max {worst['need_bytes'] / gib:.1f}"
               f" GiB of {hbm} usable on {worst['chip']})")
        out.append(f"  {p['mode']:<9}{_ms(p['step_s']):>12}{_ms(p['compute_s']):>12}"
                   f"{_ms(p['fixed_s']):>9}{_ms(c.get('intra', 0.0)):>10}"
                   f"{_ms(c.get('bridge', 0.0)):>10}{_ms(c.get('nic', 0.0)):>10}"
                   f"{p['samples_per_s']:>12,.2f}{tok:>12}  {mem}")
    for p in doc["plans"]:
        o = p["origins"]
        if p["mode"] == "pipeline":
            out += _pipeline_lines(p)
            if not o:
                continue
        out.append(f"  {p['mode']}: shares {[r['share'] for r in p['ranks']]}, micro-batches "
                   f"{[len(r['micro_batches']) for r in p['ranks']]}; origins: compute "
                   f"{o['compute']}, fixed {o['fixed']}, communication {o['comm']}, memory "
                   f"{o['memory']}")
    if doc["pick"] is None:
        out.append("  pick: none fits")
    else:
        best = next(p for p in doc["plans"] if p["mode"] == doc["pick"])
        out.append(f"  pick: {doc['pick']} (the fastest plan that fits: "
                   f"{_ms(best['step_s'])} ms per step)")
    out += [f"  {mode} loses: {why}" for mode, why in sorted(doc["why"].items())]
    return out
