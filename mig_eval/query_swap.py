"""The query-swap test: does a model's box follow the query, or only the image?

Each single-image sample with a scene graph is asked twice about the same image: once for its target,
once (the "swap") for another object of the image whose colour + shape is unique there. A pair
*follows the query* when both boxes land on the object their query names (IoU >= 0.5). A model that
ignores the query gives the same box twice (`same_box`: the two boxes overlap at IoU >= 0.5) and follows
in at most half of the pairs it localises. Samples with no other uniquely named object are counted
(`no_swap`), not silently dropped.

Stage kind `query_swap` (inputs: `data` with single_grounding eval samples, optional `model`): writes
`predictions.jsonl` (both queries of every pair) and `metrics.json` (`query_swap`: the shares above).
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from typing import Optional

from lightning.fabric import Fabric
from omegaconf import DictConfig

from mig_data.loading import load_split
from mig_data.schema import Sample
from mig_data.synth.general import refer_question
from mig_data.synth.scene import Obj
from mig_eval.evaluate import aggregate, check_eval_config, evaluate_samples
from mig_lab.boxes import iou
from mig_lab.fabric import run_loop
from mig_lab.ranks import gather_objects
from mig_lab.records import atomic_write_json
from mig_lab.stage_kind import StageContext, model_dir, stage_kind
from mig_models.builders import build_model, check_model_source
from mig_models.generation import make_backend


def swapped(sample: Sample) -> Optional[Sample]:
    """The same image asked about another object whose colour + shape is unique in it (the first such
    object in the scene's order); None where the sample has no scene graph or no such object."""
    scenes, oid = sample.meta.get("scenes"), sample.meta.get("target_oid")
    if len(sample.images) != 1 or not scenes or oid is None:
        return None
    objects = scenes[0]["objects"]
    kinds = Counter((o["color"], o["shape"]) for o in objects)
    other = next((o for o in objects if o["oid"] != oid and kinds[(o["color"], o["shape"])] == 1), None)
    if other is None:
        return None
    meta = {**sample.meta, "target_oid": other["oid"], "target": f"{other['color']} {other['shape']}"}
    return dataclasses.replace(sample, id=f"{sample.id}-swap", question=refer_question(Obj(shape=other["shape"], color=other["color"], box=other["box"])), answer=list(other["box"]),
                               answer_image=0, meta=meta)


def swap_stats(first: list[dict], second: list[dict], no_swap: int) -> dict:
    """Shares over the pairs (prediction lists in pair order): both boxes on their named objects, each one
    alone, and the same box given for both queries."""
    n = len(first)
    if n == 0:
        return {"pairs": 0, "no_swap": no_swap}
    same = sum(a.get("box") is not None and b.get("box") is not None and iou(a["box"], b["box"]) >= 0.5
               for a, b in zip(first, second))
    return {"pairs": n, "no_swap": no_swap,
            "follows": sum(a["iou"] >= 0.5 and b["iou"] >= 0.5 for a, b in zip(first, second)) / n,
            "first_right": sum(a["iou"] >= 0.5 for a in first) / n,
            "swap_right": sum(b["iou"] >= 0.5 for b in second) / n,
            "same_box": same / n}


@stage_kind("query_swap", reads=("seed", "model", "run.threads", "data.on_error", "eval", "generation", "fabric"), ranks="all",
            needs=("data",), checks=(check_model_source, lambda cfg, inputs: check_eval_config(cfg.eval)),
            ignores=("fabric.devices", "fabric.num_nodes", "fabric.strategy"))  # sharded: same result on any ranks
def query_swap_stage(ctx: StageContext) -> Optional[dict]:
    """Ask the `model` input (or the `model` config) each eval sample's query and a swapped one."""
    return run_loop(_query_swap, ctx.cfg, ctx.out_dir, f"{ctx.name}-{ctx.key}", ctx.group, ctx)


def _query_swap(fabric: Fabric, cfg: DictConfig, ctx: StageContext) -> Optional[dict]:
    e = cfg.eval
    samples = load_split(ctx.input("data").dir, e.split, on_error=cfg.data.on_error, tasks=e.tasks,
                         max_per_task=e.max_samples)
    pairs = [(s, t) for s, t in ((s, swapped(s)) for s in samples) if t is not None]
    path = model_dir(ctx.inputs["model"]) if "model" in ctx.inputs else None
    model, processor = build_model(cfg.model, seed=cfg.seed, path=path)
    model = fabric.to_device(model)
    with fabric.autocast():
        preds = evaluate_samples(model, processor, cfg.model.family, [x for p in pairs for x in p], e,
                                 ctx.out_dir / "predictions.jsonl", seed=cfg.seed, system_prompt=cfg.model.system_prompt,
                                 rank=fabric.global_rank, world=fabric.world_size, gather=gather_objects,
                                 backend=make_backend(cfg, model, processor, str(path) if path else cfg.model.path,
                                                      rank=fabric.global_rank, world_size=fabric.world_size))
    if preds is None:  # not rank 0
        return None
    stats = swap_stats(preds[0::2], preds[1::2], no_swap=len(samples) - len(pairs))
    report = aggregate(preds)
    atomic_write_json(ctx.out_dir / "metrics.json", {**report.to_json(), "query_swap": stats})
    fabric.log_dict({f"query_swap/{k}": v for k, v in stats.items()})
    return stats
