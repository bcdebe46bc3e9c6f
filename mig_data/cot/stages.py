"""The cold-start CoT data stage: teacher responses + consistency filter, and CoT-prompted splits."""

from __future__ import annotations

import dataclasses
import logging
import random

from mig_data.cot.filter import consistency_filter
from mig_data.cot.teacher import COT_INSTRUCTION, check_teacher, make_teacher
from mig_data.formats.mig_bench import write_mig_bench
from mig_data.loading import load_split
from mig_data.schema import Sample
from mig_lab.records import atomic_write_json
from mig_lab.stage_kind import StageContext, stage_kind

log = logging.getLogger(__name__)


def with_cot_instruction(s: Sample, response: str | None = None) -> Sample:
    """The sample asked with the R1-style instruction (the format prompt is replaced by it)."""
    return dataclasses.replace(s, question=s.question + COT_INSTRUCTION, need_format=False, response=response)


@stage_kind("make_cot_data", reads=("seed", "cot", "data.on_error"), version=1, needs=("data",), checks=(check_teacher,))
def make_cot_data(ctx: StageContext) -> dict:
    """From the `data` input write: `train.json` (teacher CoT answers that pass the consistency filter),
    `rl.json` (held-out train prompts for RL, CoT-instructed, no text) and `eval.json` (CoT-instructed)."""
    cfg, cot = ctx.cfg, ctx.cfg.cot
    data_dir = ctx.input("data").dir
    train = [s for s in load_split(data_dir, "train", on_error=cfg.data.on_error) if s.answer is not None]
    order = list(range(len(train)))
    random.Random(f"cot-split/{cfg.seed}").shuffle(order)
    n_rl = int(round(cot.rl_fraction * len(train)))
    rl_prompts = [train[i] for i in sorted(order[:n_rl])]
    sft_pool = [train[i] for i in sorted(order[n_rl:])]

    teacher = make_teacher(cot.teacher, cfg.model)
    responses = teacher.respond(sft_pool, cot.teacher.samples, seed=cfg.seed)
    kept, stats = consistency_filter(sft_pool, responses)
    log.info("CoT data: teacher %s kept %d of %d samples (all %d responses right)", cot.teacher.kind,
             stats["kept"], stats["samples"], cot.teacher.samples)
    write_mig_bench([with_cot_instruction(s, r) for s, r in kept], ctx.out_dir / "train.json", root=ctx.out_dir)
    write_mig_bench([with_cot_instruction(s) for s in rl_prompts], ctx.out_dir / "rl.json", root=ctx.out_dir)
    evals = load_split(data_dir, "eval", on_error=cfg.data.on_error)
    write_mig_bench([with_cot_instruction(s) for s in evals], ctx.out_dir / "eval.json", root=ctx.out_dir)
    stats.update(rl_prompts=len(rl_prompts), eval=len(evals))
    atomic_write_json(ctx.out_dir / "stats.json", stats)
    return stats
