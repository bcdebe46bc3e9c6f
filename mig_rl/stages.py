"""Training stages: SFT (full or LoRA) on Fabric."""

from __future__ import annotations

import logging
from typing import Optional

from omegaconf import DictConfig

from mig_lab.fabric import run_loop
from mig_lab.ranks import gather_objects
from mig_lab.stage_kind import StageContext, model_dir, stage_kind
from mig_models.builders import check_model_source
from mig_rl import sft
from mig_rl.rewards import check_rewards

log = logging.getLogger(__name__)


@stage_kind("sft", reads=("seed", "model", "run.threads", "data.on_error", "train", "fabric"), ranks="all", needs=("data",),
            batch="train", trains=True, checks=(check_model_source,),
            version=2)  # 2: Qwen2.5-VL targets turn canonical JSON boxes into pixels too (issue 15, item 1)
def sft_stage(ctx: StageContext) -> dict:
    """Fine-tune on the `data` input's train split, from the `model` input (or `model` config)."""
    init = model_dir(ctx.inputs["model"]) if "model" in ctx.inputs else None
    return sft.setup(ctx.cfg, ctx.input("data").dir, ctx.out_dir, init_model=init, group=ctx.group,
                     name=f"{ctx.name}-{ctx.key}")


@stage_kind("grpo", reads=("seed", "model", "run.threads", "data.on_error", "train.mode", "train.lora", "train.gradient_checkpointing",
                      "train.freeze_vision", "train.freeze_projector",
                      "rl", "generation", "fabric"), ranks="all", needs=("data",), batch="rl", trains=True,
            checks=(check_model_source, check_rewards),
            version=3)  # 3: rollouts sampled with a seed per completion in one batched call (issue 17)
def grpo_stage(ctx: StageContext) -> dict:
    """GRPO from the `model` input (the merged SFT model) on the `data` input's `rl.split` prompts."""
    from mig_rl import grpo

    init = model_dir(ctx.inputs["model"]) if "model" in ctx.inputs else None
    return grpo.setup(ctx.cfg, ctx.input("data").dir, ctx.out_dir, init_model=init, group=ctx.group,
                      name=f"{ctx.name}-{ctx.key}")


@stage_kind("rejection_sample", reads=("seed", "model", "run.threads", "data.on_error", "rl.rejection_k", "rl.split", "rl.temperature",
                                  "rl.top_p", "rl.max_new_tokens", "rl.no_answer_block", "rl.unnamed_image",
                                  "generation", "fabric"), ranks="all", needs=("data",),
            checks=(check_model_source,), version=2,  # 2: a seed per sample, prompts batched (issue 17)
            ignores=("fabric.devices", "fabric.num_nodes", "fabric.strategy"))  # sharded: same result on any ranks
def rejection_sample_stage(ctx: StageContext) -> Optional[dict]:
    """Keep the `data` input's `rl.split` prompts that the `model` input answers partly right (K samples);
    the prompts are sharded over the ranks and rank 0 writes the kept ones."""
    return run_loop(_rejection_sample, ctx.cfg, ctx.out_dir, f"{ctx.name}-{ctx.key}", ctx.group, ctx, log=False)


def _rejection_sample(fabric, cfg: DictConfig, ctx: StageContext) -> Optional[dict]:
    from mig_data.formats.mig_bench import write_mig_bench
    from mig_data.loading import load_split
    from mig_lab.records import atomic_write_json
    from mig_models.builders import build_model
    from mig_models.generation import make_backend
    from mig_rl.rejection import rejection_sample

    samples = [s for s in load_split(ctx.input("data").dir, cfg.rl.split, on_error=cfg.data.on_error)
               if s.answer is not None]
    path = model_dir(ctx.inputs["model"]) if "model" in ctx.inputs else None
    model, processor = build_model(cfg.model, seed=cfg.seed, path=path)
    model = fabric.to_device(model)
    result = rejection_sample(model, processor, cfg.model.family, samples, cfg.rl.rejection_k,
                              cfg.rl.temperature, cfg.rl.top_p, cfg.rl.max_new_tokens, cfg.seed,
                              cfg.model.system_prompt, rank=fabric.global_rank, world=fabric.world_size,
                              gather=gather_objects, no_answer_block=cfg.rl.no_answer_block,
                              unnamed_image=cfg.rl.unnamed_image, batch_size=cfg.generation.batch_size,
                              backend=make_backend(cfg, model, processor, str(path) if path else cfg.model.path,
                                                   rank=fabric.global_rank, world_size=fabric.world_size))
    if result is None:  # not rank 0
        return None
    kept, stats = result
    if not kept:  # reported, not silent: GRPO then sees the unfiltered prompts
        log.warning("rejection sampling kept no prompt of %d (%d all right, %d all wrong); passing all prompts "
                    "on unfiltered (stats.json: fallback=keep_all)", stats["prompts"], stats["all_right"],
                    stats["all_wrong"])
        kept, stats["fallback"] = samples, "keep_all"
    write_mig_bench(kept, ctx.out_dir / f"{cfg.rl.split}.json", root=ctx.out_dir)
    atomic_write_json(ctx.out_dir / "stats.json", stats)
    return stats


@stage_kind("merge", reads=("merge",))
def merge_stage(ctx: StageContext) -> dict:
    """Average the model inputs (in input order), or task-arithmetic them onto the input named `base`."""
    from mig_models.merging import merge_folders

    m = ctx.cfg.merge
    roles = [r for r in ctx.inputs if r != "base"]
    base = model_dir(ctx.inputs["base"]) if "base" in ctx.inputs else None
    merge_folders([model_dir(ctx.inputs[r]) for r in roles], ctx.out_dir / "model", method=m.method,
                  weights=list(m.weights) or None, base=base, scale=m.scale)
    return {"merged": roles, "method": m.method, "weights": list(m.weights)}
