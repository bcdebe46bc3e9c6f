"""Training stages: SFT (full or LoRA) on Fabric."""

from __future__ import annotations

from mig_lab.stages import StageContext, model_dir, stage
from mig_rl import sft


@stage("sft", reads=("seed", "model", "data.on_error", "train", "fabric"))
def sft_stage(ctx: StageContext) -> dict:
    """Fine-tune on the `data` input's train split, from the `model` input (or `model` config)."""
    init = model_dir(ctx.inputs["model"]) if "model" in ctx.inputs else None
    return sft.setup(ctx.cfg, ctx.input("data").dir, ctx.out_dir, init_model=init, group=ctx.group,
                     name=f"{ctx.name}-{ctx.key}")
