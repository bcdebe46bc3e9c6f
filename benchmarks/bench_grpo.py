"""GRPO step time against TRL's GRPOTrainer on the same work, and our cost curves.

    pip install -e '.[bench]'        # TRL and matplotlib (make bench does it)
    python -m benchmarks grpo

Both sides train the same tiny Qwen2-VL (the committed tiny base's architecture with random weights, saved to
one folder both load; fp32; the vision tower and projector frozen as in the cold-start paper's GRPO). Random
weights never say end-of-turn within 64 tokens, so every row of every step decodes exactly 64 tokens on both
sides: the same work by construction (a trained model's completion lengths differ from step to step and
from sampler to sampler, and the slowest row sets a step's decode time) on the same MIG-Synth prompts with the same rewards (IoU 1.0 + format 0.5,
our reward functions wrapped for TRL), B=2 prompts x G=4 rollouts per step, 64 new tokens at most,
temperature 0.7, KL beta 1e-3, lr 5e-5, one policy update per batch, `run.threads` CPU threads. Each side
runs warm-up steps, then timed steps; the runs alternate (ours, TRL, ours, TRL) and the ratio is of the
median step times. Step time is wall time per optimizer step including generation. TRL pads every
completion to the longest of its batch as we do; both stop each row at its end-of-turn token.

Cost curves (ours only): step time vs images per prompt (1-6) and vs G (2-16), written to
`outputs/bench/grpo_cost.csv` and `outputs/bench/grpo_cost.png`.

The last line printed is `grpo vs trl: X.XXx` (how many times faster our step is).
"""

from __future__ import annotations

import csv
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.common import bench_cfg, synth_data, trl_step_timer

B, G, NEW_TOKENS, BETA, LR, TEMPERATURE = 2, 4, 64, 1e-3, 5e-5, 0.7
WARMUP, TIMED, ROUNDS = 2, int(os.environ.get("MIG_BENCH_STEPS", "5")), 4


def random_model_dir(out: Path) -> str:
    """The tiny base's architecture, random weights, saved as a folder: it never says end-of-turn within 64
    tokens, so every step of both sides decodes exactly 64 tokens per row (the same work by construction)."""
    from hydra import compose, initialize_config_dir

    from mig_models.builders import build_model

    conf = Path(__file__).resolve().parent.parent / "conf"
    with initialize_config_dir(version_base="1.3", config_dir=str(conf)):
        cfg = compose(config_name="config", overrides=["model=tiny_qwen2_vl"])
    model, processor = build_model(cfg.model, seed=0)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return str(out)


def _cfg(tmp: Path, model_dir: str, *overrides: str):
    """The GRPO settings both sides run (and the cost curves vary)."""
    return bench_cfg(tmp, model_dir, "train.freeze_vision=true", "train.freeze_projector=true",
                     f"rl.batch_size={B}", f"rl.num_generations={G}", f"rl.max_new_tokens={NEW_TOKENS}",
                     f"rl.kl_beta={BETA}", f"rl.lr={LR}", f"rl.temperature={TEMPERATURE}", "rl.start_pass_prompts=0",
                     "rl.ckpt_every=1000", "rl.log_every=1", *overrides)


class GenerateTimer:
    """Wall time inside transformers' `generate` of Qwen2-VL (both sides call it), for the profile split."""

    def __init__(self):
        from transformers import Qwen2VLForConditionalGeneration

        self.cls, self.seconds = Qwen2VLForConditionalGeneration, 0.0
        original = self.cls.generate

        def timed(model, *args, **kwargs):
            t0 = time.perf_counter()
            try:
                return original(model, *args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - t0

        self.original, self.cls.generate = original, timed

    def close(self) -> None:
        self.cls.generate = self.original


def ours(cfg, data_dir: Path, out: Path, steps: int) -> tuple[list[float], list[float], float]:
    """Our GRPO loop (mig_rl.grpo): per-step times after the warm-up, generation times, mean length."""
    from omegaconf import open_dict

    from mig_rl import grpo

    with open_dict(cfg):
        cfg.rl.max_steps = WARMUP + steps
    grpo.setup(cfg, data_dir, out)
    rows = list(csv.DictReader(open(next(out.rglob("metrics.csv")))))
    rows = [r for r in rows if r.get("time/step_s")][WARMUP:]
    lengths = [float(r["completion/mean_length"]) for r in rows]
    return ([float(r["time/step_s"]) for r in rows], [float(r["time/generate_s"]) for r in rows],
            sum(lengths) / len(lengths))


def trl_run(cfg, data_dir: Path, out: Path, steps: int) -> tuple[list[float], float]:
    """TRL's GRPOTrainer on the same model, prompts, rewards and settings: per-step times, mean length."""
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from mig_data.collate import image_hws, load_image, user_text
    from mig_data.loading import load_split
    from mig_models.builders import build_model
    from mig_rl.rewards import REWARDS

    model, processor = build_model(cfg.model, seed=cfg.seed)
    for name, p in model.named_parameters():  # the same trainable set as ours (vision tower + projector frozen)
        p.requires_grad_(not name.startswith("model.visual."))
    samples = load_split(data_dir, "train")
    rows = []
    for s in samples:
        ims = [load_image(p, s.id) for p in s.images]
        content = [{"type": "image"} for _ in ims] + [{"type": "text", "text": user_text(s, cfg.model.family)}]
        rows.append({"prompt": [{"role": "user", "content": content}], "images": ims, "answer": list(s.answer),
                     "answer_image": s.answer_image, "task": s.task,
                     "image_sizes": [list(hw) for hw in image_hws(ims, processor)]})

    def wrap(name):
        def reward(completions, answer, answer_image, task, image_sizes, **_):
            texts = [c[0]["content"] if isinstance(c, list) else c for c in completions]
            n = len(texts)
            return REWARDS[name](texts, answer=answer, answer_image=answer_image, task=task,
                                 image_sizes=[[tuple(hw) for hw in s] for s in image_sizes],
                                 convention=[cfg.model.family] * n, no_answer_block=[cfg.rl.no_answer_block] * n,
                                 unnamed_image=[cfg.rl.unnamed_image] * n)
        reward.__name__ = name
        return reward

    times: list[float] = []

    args = GRPOConfig(output_dir=str(out), per_device_train_batch_size=B * G, num_generations=G,
                      max_completion_length=NEW_TOKENS, temperature=TEMPERATURE, top_p=1.0, beta=BETA,
                      learning_rate=LR, lr_scheduler_type="constant", warmup_steps=0, max_steps=WARMUP + steps,
                      num_iterations=1, loss_type="grpo", scale_rewards="group", epsilon=0.2, max_grad_norm=1.0,
                      weight_decay=0.0, reward_weights=list(cfg.rl.rewards.values()), remove_unused_columns=False,
                      logging_steps=1, report_to=[], save_strategy="no", use_cpu=True, bf16=False, fp16=False,
                      seed=cfg.seed, dataloader_num_workers=0, disable_dropout=True, log_completions=False)
    trainer = GRPOTrainer(model=model, processing_class=processor, reward_funcs=[wrap(n) for n in cfg.rl.rewards],
                          args=args, train_dataset=Dataset.from_list(rows), callbacks=[trl_step_timer(times)])
    trainer.train()
    lengths = [h["completions/mean_length"] for h in trainer.state.log_history if "completions/mean_length" in h]
    return times[WARMUP:], sum(lengths[WARMUP:]) / max(1, len(lengths[WARMUP:]))


def cost_curves(tmp: Path, model_dir: str, out_dir: Path, passes: int = 2, steps: int = 3) -> None:
    """Our step time vs images per prompt (G=4) and vs G (3 images): `passes` sweeps over all the points (so
    drift of the machine spreads over all of them), `steps` timed steps per point and pass; medians."""
    settings = [("images", k) for k in range(1, 7)] + [("G", g) for g in (2, 4, 8, 16)]
    data = {}
    for axis, v in settings:
        k = v if axis == "images" else 3
        if k not in data:
            cfg = _cfg(tmp, model_dir, f"data.synth.min_images={k}", f"data.synth.max_images={k}",
                       "data.synth.tasks=[group_grounding]", "data.synth.task_images={}")
            data[k] = synth_data(cfg, tmp / f"data_i{k}")
    runs: dict = {s: ([], [], []) for s in settings}
    for p in range(passes):
        for axis, v in settings:
            k, g = (v, G) if axis == "images" else (3, v)
            cfg = _cfg(tmp, model_dir, f"data.synth.min_images={k}", f"data.synth.max_images={k}",
                       "data.synth.tasks=[group_grounding]", "data.synth.task_images={}", f"rl.num_generations={g}")
            step, gen, length = ours(cfg, data[k], tmp / f"cost_{axis}{v}_{p}", steps)
            runs[(axis, v)][0].extend(step)
            runs[(axis, v)][1].extend(gen)
            runs[(axis, v)][2].append(length)
    points = [(axis, v, statistics.median(runs[(axis, v)][0]), statistics.median(runs[(axis, v)][1]),
               statistics.mean(runs[(axis, v)][2])) for axis, v in settings]
    for axis, v, step, gen, length in points:
        print(f"  {axis} {v}: step {step:.3f} s (generation {gen:.3f} s), mean length {length:.1f}")
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "grpo_cost.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["axis", "value", "step_s", "generate_s", "mean_length"])
        w.writerows(points)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for ax, axis, label in zip(axes, ("images", "G"), (f"images per prompt (G={G})", "G rollouts per prompt (3 images)")):
        xs = [p[1] for p in points if p[0] == axis]
        ax.plot(xs, [p[2] for p in points if p[0] == axis], "o-", label="step")
        ax.plot(xs, [p[3] for p in points if p[0] == axis], "s--", label="generation")
        ax.set_xlabel(label)
        ax.set_ylabel("seconds per GRPO step")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f"GRPO step cost, tiny Qwen2-VL (random weights), B={B}, {NEW_TOKENS} new tokens, {torch.get_num_threads()} CPU threads")
    fig.tight_layout()
    fig.savefig(out_dir / "grpo_cost.png", dpi=120)
    print(f"cost curves: {out_dir / 'grpo_cost.csv'}, {out_dir / 'grpo_cost.png'}")


def main() -> str:
    from mig_lab import setup_env

    setup_env()
    from mig_lab.config import register_configs

    register_configs()
    out_dir = Path(os.environ.get("MIG_BENCH_OUT", "outputs/bench"))
    with tempfile.TemporaryDirectory(prefix="bench_grpo_") as tmp:
        tmp = Path(tmp)
        model_dir = random_model_dir(tmp / "model")
        cfg = _cfg(tmp, model_dir)
        torch.set_num_threads(cfg.run.threads or torch.get_num_threads())
        data = synth_data(cfg, tmp / "data")
        mine, theirs, lens = [], [], {"ours": [], "trl": []}
        in_generate = {"ours": [], "trl": []}  # seconds in HF generate per timed step (warm-up included: a mean)
        for r in range(ROUNDS):
            timer = GenerateTimer()
            step, _, length = ours(_cfg(tmp, model_dir), data, tmp / f"ours{r}", TIMED)
            timer.close()
            in_generate["ours"].append(timer.seconds / (WARMUP + TIMED))
            mine += step
            lens["ours"].append(length)
            timer = GenerateTimer()
            step, length = trl_run(_cfg(tmp, model_dir), data, tmp / f"trl{r}", TIMED)
            timer.close()
            in_generate["trl"].append(timer.seconds / (WARMUP + TIMED))
            theirs += step
            lens["trl"].append(length)
        if os.environ.get("MIG_BENCH_CURVES", "1") != "0":
            cost_curves(tmp, model_dir, out_dir)
    ours_s, trl_s = statistics.median(mine), statistics.median(theirs)
    print(f"GRPO step, tiny Qwen2-VL (tiny base shape, random weights), B={B} x G={G}, {NEW_TOKENS} new tokens, beta {BETA}, fp32, "
          f"{torch.get_num_threads()} threads; {ROUNDS} alternating rounds x {TIMED} timed steps each side")
    for side, median in (("ours", ours_s), ("trl", trl_s)):
        g = statistics.mean(in_generate[side])
        print(f"{side:4}: median {median:.3f} s/step = HF generate {g:.3f} s + the rest {median - g:.3f} s "
              f"(rollout scoring, log-prob passes, backward, optimizer); mean completion length "
              f"{statistics.mean(lens[side]):.1f}")
    print(f"the rest alone (all but HF generate): {(trl_s - statistics.mean(in_generate['trl'])) / max(1e-9, ours_s - statistics.mean(in_generate['ours'])):.2f}x")
    headline = f"grpo vs trl: {trl_s / ours_s:.2f}x"
    print(headline)
    return headline


if __name__ == "__main__":
    main()
