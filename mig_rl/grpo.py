"""GRPO on Fabric: rollouts -> rule-based rewards -> group-normalised advantages -> clipped policy
loss with a KL penalty to a frozen reference. One readable loop; the maths is in `mig_rl.loss`.

- The reference is the model GRPO starts from (the merged SFT model). With a LoRA policy the reference
  is the same base with its adapters disabled (no second copy); `rl.kl_beta=0` drops it entirely.
- Each step samples `rl.batch_size` prompts over all ranks (each rank `rl.micro_batch_size` at a time,
  accumulating), G rollouts each, then makes `rl.mu` policy updates on them (old log-probs from before
  the first update: with mu=1 the ratio is 1). Logged rewards, KL and loss are over every rank's rollouts.
- Checkpoints resume exactly (model/adapters, optimizer, scheduler, data position, RNG); rollout seeds
  derive from (seed, step, sample index).
"""

from __future__ import annotations

import copy
import logging
import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, NamedTuple, Optional

import torch
from lightning.fabric import Fabric
from omegaconf import DictConfig

from mig_data.loading import load_split
from mig_data.sampler import ResumableBatchSampler
from mig_eval.evaluate import score_response
from mig_eval.gallery import render
from mig_lab import progress
from mig_lab.config import split_batch
from mig_lab.fabric import run_loop, setup_frozen
from mig_lab.loggers import WandbLogger, log_images, log_table
from mig_lab.ranks import gather_objects, mean_over_ranks
from mig_lab.records import atomic_write_json, read_json, run_record
from mig_models.builders import count_parameters
from mig_models.generation import make_backend
from mig_rl.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint, trainable_names
from mig_rl.loss import group_advantages, grpo_loss
from mig_rl.rejection import count_right, pass_rates
from mig_rl.rewards import acc50_reward, score_rewards
from mig_rl.rollout import Rollouts, generate_rollouts, reward_columns, sequence_logprobs, unwrap
from mig_rl.schedule import warmup_cosine
from mig_rl.sft import build_trainable, export_model

log = logging.getLogger(__name__)


def setup(cfg: DictConfig, data_dir: Path, out_dir: Path, init_model: Optional[Path] = None,
          group: str = "grpo", name: str = "grpo", stop_at_step: Optional[int] = None) -> dict:
    return run_loop(main, cfg, Path(out_dir), name, group, Path(data_dir), Path(out_dir), init_model, stop_at_step)


def main(fabric: Fabric, cfg: DictConfig, data_dir: Path, out_dir: Path, init_model: Optional[Path],
         stop_at_step: Optional[int] = None) -> dict:
    fabric.seed_everything(cfg.seed)
    rl = cfg.rl
    samples = load_split(data_dir, rl.split, on_error=cfg.data.on_error)
    samples = [s for s in samples if s.answer is not None]
    if not samples:
        raise ValueError(f"{data_dir}/{rl.split}.json has no samples with an answer box to reward")
    convention = cfg.model.family

    micro, accum = split_batch(rl.batch_size, rl.micro_batch_size, fabric.world_size, "rl")
    lora = cfg.train.mode == "lora"
    policy, processor = build_trainable(cfg, init_model, lora)  # vision frozen per config: "we only train the LLM"
    reference = None
    if rl.kl_beta != 0 and not lora:
        reference = copy.deepcopy(policy).eval().requires_grad_(False)
    fabric.print(f"GRPO ({cfg.train.mode} policy): {count_parameters(policy, True) / 1e6:.3f}M trainable; "
                 f"{len(samples)} prompts; G={rl.num_generations}; beta={rl.kl_beta}; {rl.max_steps} steps")

    only_params = trainable_names(policy) if lora else None
    policy = fabric.setup_module(policy)  # first: FSDP replaces the parameters the optimizer must hold
    optimizer = fabric.setup_optimizers(
        torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad], lr=rl.lr, weight_decay=0.0))
    if reference is not None:
        reference = setup_frozen(fabric, reference)  # never wrapped in DDP; sharded under FSDP
    updates = rl.max_steps * rl.mu
    scheduler = warmup_cosine(optimizer, rl.warmup_steps, updates, min_lr_ratio=1.0)  # constant after warmup
    # `history`: every step's metrics so far, checkpointed, so a resumed run's summary curves are the whole run's
    state = {"model": policy, "optimizer": optimizer, "scheduler": scheduler, "step": 0, "micro_batches": 0,
             "history": []}
    ckpt_root = out_dir / "checkpoints"
    latest = latest_checkpoint(ckpt_root) if rl.resume == "auto" else None
    if latest is not None:
        load_checkpoint(fabric, latest, state, only_params=only_params)
    sampler = ResumableBatchSampler(len(samples), micro, seed=cfg.seed, num_replicas=fabric.world_size,
                                    rank=fabric.global_rank)
    record = run_record(cfg, stage="grpo")
    backend = make_backend(cfg, unwrap(policy), processor, str(init_model) if init_model else cfg.model.path,
                           training=True, rank=fabric.global_rank, world_size=fabric.world_size)
    start_pass = starting_pass_rates(fabric, cfg, policy, processor, samples, out_dir, state["step"], backend)

    bar = progress(total=rl.max_steps, initial=state["step"], desc="grpo", rank_zero=fabric.global_rank == 0)
    while state["step"] < rl.max_steps:
        if stop_at_step is not None and state["step"] >= stop_at_step:
            break
        t0 = time.perf_counter()
        times: dict[str, float] = defaultdict(float)  # seconds per phase of this step
        policy.eval()
        with phase(times, "sync"):
            backend.sync_weights(unwrap(policy))  # vllm: the engine gets the weights of the last update
        buffer = []
        for _ in range(accum):
            idx = sampler.batch(state["micro_batches"])
            state["micro_batches"] += 1
            with phase(times, "generate"):
                r = generate_rollouts(unwrap(policy), processor, cfg.model.family, [samples[i] for i in idx], idx,
                                      rl.num_generations, rl.max_new_tokens, rl.temperature, rl.top_p, cfg.seed,
                                      state["step"], cfg.model.system_prompt, backend=backend)
            with phase(times, "score"):
                columns = reward_columns(r, convention, rl.no_answer_block, rl.unnamed_image)
                total, parts = score_rewards(r.texts, dict(rl.rewards), **columns)
                parts["_acc50"] = torch.tensor(acc50_reward(r.texts, **columns), dtype=torch.float)
                adv = group_advantages(total, rl.num_generations, scale=rl.adv_scale)
            with phase(times, "logprobs"), torch.no_grad():  # old (mu > 1) and reference passes
                old_logp = sequence_logprobs(policy, r, rl.temperature).detach() if rl.mu > 1 else None
                ref_logp = _reference_logprobs(policy, reference, r, rl, lora)
            buffer.append(RolloutBatch(r, total, parts, adv, old_logp, ref_logp))

        policy.train()
        with phase(times, "update"):  # policy forward, backward, optimizer
            for _ in range(rl.mu):
                stats = defaultdict(float)
                for k, b in enumerate(buffer):
                    is_accumulating = k < len(buffer) - 1
                    with fabric.no_backward_sync(policy, enabled=is_accumulating):
                        logp = sequence_logprobs(policy, b.rollouts, rl.temperature)
                        mask = b.rollouts.completion_mask.to(logp.device)
                        old_logp = b.old_logp if b.old_logp is not None else logp.detach()
                        loss, s = grpo_loss(logp, old_logp, b.ref_logp, b.advantages.to(logp.device), mask,
                                            rl.kl_beta, rl.eps_low, rl.eps_high, rl.loss_type)
                        fabric.backward(loss / len(buffer))
                    stats["loss"] += loss.item() / len(buffer)
                    for key, v in s.items():
                        stats[key] += v.item() / len(buffer)
                if rl.grad_clip > 0:
                    stats["grad_norm"] = float(fabric.clip_gradients(policy, optimizer, max_norm=rl.grad_clip))
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
        state["step"] += 1
        bar.update(1)

        times["step"] = time.perf_counter() - t0
        metrics = step_metrics(gather_objects(rollout_summary(buffer, rl.num_generations)),
                               mean_over_ranks(dict(stats)), times, scheduler.get_last_lr()[0])
        state["history"].append({"step": state["step"], **metrics})
        if state["step"] % rl.log_every == 0 or state["step"] == rl.max_steps:
            fabric.log_dict(metrics, step=state["step"])
            bar.set_postfix(reward=f"{metrics['reward/total']:.3f}")
            if bar.disable and fabric.global_rank == 0:
                log.info("grpo step %d/%d reward %.4f kl %.4f len %.1f", state["step"], rl.max_steps,
                         metrics["reward/total"], metrics.get("train/kl", 0.0), metrics["completion/mean_length"])
        if state["step"] % max(1, rl.max_steps // 4) == 0 or state["step"] == rl.max_steps:
            _log_samples(fabric, buffer[0].rollouts, buffer[0].total, state["step"], convention)
        if state["step"] % rl.ckpt_every == 0 or state["step"] == rl.max_steps:
            save_checkpoint(fabric, ckpt_root, state["step"], state, record, only_params=only_params)
    bar.close()

    history = state["history"]
    summary = {"steps": state["step"], "reward_curve": [h["reward/total"] for h in history],
               "reward_curves": {k[len("reward/"):]: [h.get(k) for h in history]
                                 for k in (history[0] if history else {}) if k.startswith("reward/")},
               "pass_curves": {k[len("rollouts/"):]: [h.get(k) for h in history]
                               for k in (history[0] if history else {}) if k.startswith("rollouts/pass@")},
               "start_pass": start_pass,
               "kl_curve": [h.get("train/kl", 0.0) for h in history],
               "reference": "none" if rl.kl_beta == 0 else ("adapters_disabled" if lora else "frozen_copy")}
    if history:
        summary.update(first_reward=history[0]["reward/total"], final_reward=history[-1]["reward/total"])
    if state["step"] >= rl.max_steps:
        export_model(fabric, policy, processor, out_dir, lora, record,
                     rebuild=lambda: build_trainable(cfg, init_model, lora)[0])
        summary["model_dir"] = str(out_dir / "model")
    return summary


def starting_pass_rates(fabric: Fabric, cfg: DictConfig, policy, processor, samples: list, out_dir: Path,
                        step: int, backend=None) -> dict:
    """pass@1 and pass@G of the starting model on the first `rl.start_pass_prompts` prompts (sampled as the
    rollouts are, sharded over the ranks), measured once before step 1: a resumed run reads `start_pass.json`
    (a run resumed past step 0 without it says so rather than measure the resumed policy)."""
    rl = cfg.rl
    path = out_dir / "start_pass.json"
    if rl.start_pass_prompts <= 0:
        return {}
    if path.exists():
        return read_json(path)
    if step > 0:
        return {"not_measured": f"resumed at step {step} from a checkpoint written without start_pass.json"}
    prompts = samples[: rl.start_pass_prompts]
    if backend is not None:
        backend.sync_weights(unwrap(policy))
    right = count_right(unwrap(policy), processor, cfg.model.family,
                        prompts, rl.num_generations, rl.temperature, rl.top_p, rl.max_new_tokens, cfg.seed,
                        cfg.model.system_prompt, rank=fabric.global_rank, world=fabric.world_size,
                        gather=gather_objects, no_answer_block=rl.no_answer_block, unnamed_image=rl.unnamed_image,
                        desc="pass@k of the starting model", batch_size=cfg.generation.batch_size, backend=backend)
    out = gather_objects({"prompts": len(prompts), "k": rl.num_generations, **pass_rates(right, rl.num_generations)}
                         if right is not None else None)[0]  # rank 0's numbers, on every rank
    if fabric.global_rank == 0:
        atomic_write_json(path, out)
        log.info("starting model on %d RL prompts: %s", len(prompts),
                 ", ".join(f"{k} {v:.3f}" for k, v in out.items() if k.startswith("pass@")))
    return out


def _reference_logprobs(policy, reference, r: Rollouts, rl: DictConfig, lora: bool) -> Optional[torch.Tensor]:
    if rl.kl_beta == 0:
        return None
    if lora:  # the base with adapters disabled is the reference: no second copy in memory
        with unwrap(policy).disable_adapter():
            return sequence_logprobs(policy, r, rl.temperature).detach()
    return sequence_logprobs(reference, r, rl.temperature).detach()


class RolloutBatch(NamedTuple):
    """One micro-batch of a GRPO step: B prompts x G completions = N rows."""

    rollouts: Rollouts  # token ids, masks, texts, samples of the N completions
    total: torch.Tensor  # [N] weighted reward
    parts: dict[str, torch.Tensor]  # reward name -> [N] (NaN: not applicable); "_acc50" is logged, not summed
    advantages: torch.Tensor  # [N] group-normalised
    old_logp: Optional[torch.Tensor]  # [N, C] at generation time (mu > 1), else None
    ref_logp: Optional[torch.Tensor]  # [N, C] of the reference (kl_beta > 0), else None


def rollout_summary(buffer: list[RolloutBatch], group: int) -> dict:
    """What the step metrics need from one rank's rollouts, as plain lists (gathered over ranks)."""
    right = torch.cat([b.parts["_acc50"] for b in buffer]).view(-1, group)  # [prompts, G] of 0/1
    return {"right": right.sum(1).int().tolist(), "group": group,"totals": torch.cat([b.total for b in buffer]).tolist(),
            "parts": {name: torch.cat([b.parts[name] for b in buffer]).tolist()
                      for name in buffer[0].parts if not name.startswith("_")},
            "lengths": torch.cat([b.rollouts.completion_mask.sum(1).float() for b in buffer]).tolist(),
            "acc50": [(s.task, c) for b in buffer for s, c in zip(b.rollouts.samples, b.parts["_acc50"].tolist())]}


def step_metrics(summaries: list[dict], stats: dict, times: dict[str, float], lr: float) -> dict[str, float]:
    """Reward components, total reward, KL, clip fraction, completion length, per-task accuracy, over the
    rollouts of every rank (`summaries`: one `rollout_summary` per rank); this rank's seconds per phase."""
    totals = torch.tensor([v for s in summaries for v in s["totals"]])
    out = {"reward/total": totals.mean().item(), "reward/total_std": totals.std().item() if len(totals) > 1 else 0.0}
    for name in summaries[0]["parts"]:
        comp = torch.tensor([v for s in summaries for v in s["parts"][name]], dtype=torch.float)
        valid = comp[~comp.isnan()]
        if len(valid):
            out[f"reward/{name}"] = valid.mean().item()
    out.update({f"train/{k}": v for k, v in stats.items()})
    out["train/lr"] = lr
    out["completion/mean_length"] = sum(v for s in summaries for v in s["lengths"]) / sum(
        len(s["lengths"]) for s in summaries)
    by_task = defaultdict(list)
    for s in summaries:
        for task, correct in s["acc50"]:
            by_task[task].append(correct)
    out.update({f"acc50/{t}": sum(v) / len(v) for t, v in sorted(by_task.items())})
    out.update({f"rollouts/{k}": v for k, v in pass_rates([c for s in summaries for c in s["right"]],
                                                          summaries[0]["group"]).items()})
    out.update({f"time/{name}_s": seconds for name, seconds in times.items()})
    return out


@contextmanager
def phase(times: dict[str, float], name: str) -> Iterator[None]:
    """Add the wall time of the block to `times[name]` (after the GPU has finished the block's work)."""
    t0 = time.perf_counter()
    try:
        yield
    finally:
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.synchronize()
        times[name] += time.perf_counter() - t0


def _log_samples(fabric: Fabric, r: Rollouts, total: torch.Tensor, step: int, convention: str,
                 n_images: int = 4) -> None:
    """W&B: a table of the rollouts, and the first `n_images` drawn with the ground-truth (green) and
    predicted (red) boxes, as the evaluation galleries draw them."""
    if fabric.global_rank != 0 or not any(isinstance(lg, WandbLogger) for lg in fabric.loggers):
        return  # rendering is for W&B only, on rank 0
    rows = [[s.id, s.task, text, float(t)] for s, text, t in zip(r.samples, r.texts, total)]
    log_table(fabric.loggers, "rollouts/samples", ["id", "task", "completion", "reward"], rows, step=step)
    shown = range(min(n_images, len(r.samples)))
    images = [render(r.samples[i], score_response(r.samples[i], r.texts[i], r.image_sizes[i], convention), height=112)
              for i in shown]
    log_images(fabric.loggers, "rollouts/boxes", images, [f"{r.samples[i].id} reward {float(total[i]):.2f}" for i in shown],
               step=step)

