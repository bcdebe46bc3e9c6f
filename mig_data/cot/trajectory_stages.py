"""The MIRG-RL trajectory data stage: trajectories for SFT, held-out RL prompts, instructed eval prompts."""

from __future__ import annotations

import logging
import random

from mig_data.cot.teachers import check_teacher, teacher_fingerprint
from mig_data.cot.trajectory import build_trajectories, with_instruction
from mig_data.cot.trajectory_teachers import make_trajectory_teacher
from mig_data.loading import available_splits, load_split, save_split
from mig_data.schema import DataError
from mig_lab.records import atomic_write_json
from mig_lab.stage_kind import StageContext, stage_kind

log = logging.getLogger(__name__)



@stage_kind("make_trajectory_data", reads=("seed", "cot.teacher", "trajectory", "data.on_error"), version=1, needs=("data",), checks=(check_teacher,),
       fingerprint=teacher_fingerprint)
def make_trajectory_data(ctx: StageContext) -> dict:
    """From the `data` input's train split write, in `trajectory.form`:
    `train` (the SFT trajectories that pass the validator), `rl` (held-out train prompts for GRPO, no text;
    mirg_rl.txt 3.1: the RL samples are separate from the cold-start ones) and `eval` (the `eval` input's
    eval split, else the `data` input's, instructed in the same form). Rejections are counted by reason
    in `stats.json`."""
    cfg, t = ctx.cfg, ctx.cfg.trajectory
    on_error = cfg.data.on_error
    data_dir = ctx.input("data").dir
    loaded = load_split(data_dir, "train", on_error=on_error)
    train = [s for s in loaded if s.answer is not None]
    order = list(range(len(train)))
    random.Random(f"mirg-split/{cfg.seed}").shuffle(order)
    n_rl = int(round(t.rl_fraction * len(train)))
    rl_prompts = [train[i] for i in sorted(order[:n_rl])]
    sft_pool = [train[i] for i in sorted(order[n_rl:])]

    teacher = make_trajectory_teacher(cfg.cot.teacher, cfg.model, distractor=t.distractor)
    kept, stats = build_trajectories(sft_pool, teacher, t.form, seed=cfg.seed)
    log.info("MIRG trajectories (%s, %s teacher): kept %d of %d; rejected %s", t.form, stats["teacher"],
             stats["kept"], stats["samples"], stats["rejected"] or "none")
    if sft_pool and not kept:
        raise DataError(f"{data_dir}/train: the {stats['teacher']} teacher wrote no valid {t.form} trajectory for "
                        f"{len(sft_pool)} samples (rejected by reason: {stats['rejected']})", "no_trajectories")
    save_split([with_instruction(s, t.form, text) for s, text in kept], ctx.out_dir, "train")
    save_split([with_instruction(s, t.form) for s in rl_prompts], ctx.out_dir, "rl")

    eval_dir = ctx.input("eval").dir if "eval" in ctx.inputs else data_dir
    evals = []
    if "eval" in available_splits(eval_dir):
        evals = [with_instruction(s, t.form) for s in load_split(eval_dir, "eval", on_error=on_error)]
        save_split(evals, ctx.out_dir, "eval")
    elif "eval" in ctx.inputs:
        raise DataError(f"stage '{ctx.name}': its eval input {eval_dir} has no eval split", "missing_file")
    stats.update(train_split=len(loaded), no_answer_box=len(loaded) - len(train), sft_pool=len(sft_pool),
                 rl_prompts=len(rl_prompts), eval=len(evals))
    atomic_write_json(ctx.out_dir / "stats.json", stats)
    return {k: stats[k] for k in ("form", "teacher", "samples", "kept", "rejected", "rl_prompts", "eval",
                                  "no_answer_box", "mean_chars")}
