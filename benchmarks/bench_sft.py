"""SFT step time against TRL's SFTTrainer on the same work.

    pip install -e '.[bench]'        # TRL (make bench does it)
    python -m benchmarks sft

Both sides fine-tune the committed tiny base (fp32, every weight trainable) on the same MIG-Synth samples
(prompt: the images and the question; loss on the answer tokens only), batch 8, lr 1e-4, `run.threads`
CPU threads. Warm-up steps, then timed steps; the runs alternate (ours, TRL, ours, TRL) and the ratio is
of the median step times (wall time per optimizer step, data collation included).
"""

from __future__ import annotations

import csv
import os
import statistics
import tempfile
from pathlib import Path

import torch

from benchmarks.common import TINY_BASE, bench_cfg, synth_data, trl_step_timer

BATCH, LR = 8, 1e-4
WARMUP, TIMED, ROUNDS = 2, int(os.environ.get("MIG_BENCH_STEPS", "6")), 2


def _cfg(tmp: Path, steps: int):
    return bench_cfg(tmp, TINY_BASE, "train.freeze_vision=false", "train.freeze_projector=false",
                     f"train.batch_size={BATCH}", f"train.lr={LR}", f"train.max_steps={steps}", "train.warmup_steps=0",
                     "train.log_every=1", "train.ckpt_every=1000")


def ours(tmp: Path, data_dir: Path, out: Path) -> list[float]:
    from mig_rl import sft

    sft.setup(_cfg(tmp, WARMUP + TIMED), data_dir, out)
    rows = [r for r in csv.DictReader(open(next(out.rglob("metrics.csv")))) if r.get("train/samples_per_s")]
    return [BATCH / float(r["train/samples_per_s"]) for r in rows][WARMUP:]


def trl_run(tmp: Path, data_dir: Path, out: Path) -> list[float]:
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from mig_data.collate import image_hws, load_image, target_text, user_text
    from mig_data.loading import load_split
    from mig_models.builders import build_model

    cfg = _cfg(tmp, WARMUP + TIMED)
    model, processor = build_model(cfg.model, seed=cfg.seed)
    rows = []
    for s in load_split(data_dir, "train"):
        ims = [load_image(p, s.id) for p in s.images]
        content = [{"type": "image"} for _ in ims] + [{"type": "text", "text": user_text(s, cfg.model.family)}]
        answer = target_text(s, cfg.model.family, image_hws(ims, processor))
        rows.append({"prompt": [{"role": "user", "content": content}],
                     "completion": [{"role": "assistant", "content": [{"type": "text", "text": answer}]}],
                     "images": ims})
    times: list[float] = []

    args = SFTConfig(output_dir=str(out), per_device_train_batch_size=BATCH, learning_rate=LR,
                     lr_scheduler_type="constant", warmup_steps=0, max_steps=WARMUP + TIMED, max_grad_norm=1.0,
                     logging_steps=1, report_to=[], save_strategy="no", use_cpu=True, bf16=False, fp16=False,
                     seed=cfg.seed, dataloader_num_workers=0, max_length=None)
    trainer = SFTTrainer(model=model, processing_class=processor, args=args, train_dataset=Dataset.from_list(rows),
                         callbacks=[trl_step_timer(times)])
    trainer.train()
    return times[WARMUP:]


def main() -> str:
    from mig_lab import setup_env

    setup_env()
    from mig_lab.config import register_configs

    register_configs()
    with tempfile.TemporaryDirectory(prefix="bench_sft_") as tmp:
        tmp = Path(tmp)
        cfg = _cfg(tmp, 1)
        torch.set_num_threads(cfg.run.threads or torch.get_num_threads())
        data = synth_data(cfg, tmp / "data")
        mine, theirs = [], []
        for r in range(ROUNDS):
            mine += ours(tmp, data, tmp / f"ours{r}")
            theirs += trl_run(tmp, data, tmp / f"trl{r}")
    ours_s, trl_s = statistics.median(mine), statistics.median(theirs)
    print(f"SFT step, tiny base, batch {BATCH}, fp32, {torch.get_num_threads()} threads; "
          f"{ROUNDS} alternating rounds x {TIMED} timed steps each side")
    print(f"ours: median {ours_s:.3f} s/step; trl: median {trl_s:.3f} s/step")
    headline = f"sft vs trl: {trl_s / ours_s:.2f}x"
    print(headline)
    return headline


if __name__ == "__main__":
    main()
