"""Supervised fine-tuning on Fabric (full or LoRA): the cold start of every pipeline.

setup -> fabric -> main -> a plain `while step < max_steps` loop, as in litgpt's finetune scripts.
Loss on assistant tokens only; gradient accumulation; warmup + cosine; clipping; checkpoints that
resume exactly (model, optimizer, scheduler, data position, RNG).
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Callable, Optional

import torch
from lightning.fabric import Fabric
from omegaconf import DictConfig
from torch.utils.data import DataLoader

from mig_data.collate import SFTCollator
from mig_data.loading import load_split
from mig_data.sampler import ResumableBatchSampler
from mig_lab import progress
from mig_lab.config import split_batch
from mig_lab.fabric import full_state_dict, is_sharded, run_loop
from mig_lab.ranks import mean_over_ranks
from mig_lab.records import atomic_write_json, replace_dir, run_record
from mig_models.builders import build_model, count_parameters, save_model
from mig_models.lora import apply_lora, enable_gradient_checkpointing, freeze_modules, merge_lora
from mig_rl.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint, trainable_names
from mig_rl.schedule import warmup_cosine

log = logging.getLogger(__name__)


def total_steps(train: DictConfig, n_samples: int) -> int:
    """Optimizer steps: `train.max_steps`, else `train.epochs` passes of the global batch over the data."""
    if train.max_steps > 0:
        return int(train.max_steps)
    return max(1, math.ceil(train.epochs * n_samples / train.batch_size))


def warmup_steps(train: DictConfig, max_steps: int) -> int:
    """`train.warmup_ratio` of the run's steps (rounded up) when set, else `train.warmup_steps`."""
    if train.warmup_ratio > 0:
        return min(max_steps, math.ceil(train.warmup_ratio * max_steps))
    return int(train.warmup_steps)


def setup(cfg: DictConfig, data_dir: Path, out_dir: Path, init_model: Optional[Path] = None,
          group: str = "sft", name: str = "sft", stop_at_step: Optional[int] = None) -> dict:
    """Build loggers and Fabric, then run `main` in Fabric's processes. Returns the run summary."""
    return run_loop(main, cfg, Path(out_dir), name, group, Path(data_dir), Path(out_dir), init_model, stop_at_step)


def main(fabric: Fabric, cfg: DictConfig, data_dir: Path, out_dir: Path, init_model: Optional[Path],
         stop_at_step: Optional[int] = None) -> dict:
    fabric.seed_everything(cfg.seed)
    train = cfg.train
    samples = load_split(data_dir, train.split, on_error=cfg.data.on_error)
    max_steps = total_steps(train, len(samples))
    micro, accum = split_batch(train.batch_size, train.micro_batch_size, fabric.world_size, "train")
    lora = train.mode == "lora"
    model, processor = build_trainable(cfg, init_model, lora)
    n_trainable = count_parameters(model, trainable_only=True)
    fabric.print(f"SFT ({train.mode}): {count_parameters(model) / 1e6:.2f}M params, "
                 f"{n_trainable / 1e6:.3f}M trainable; {len(samples)} samples; {max_steps} steps of "
                 f"{train.batch_size} = {fabric.world_size} rank(s) x {micro} x {accum} accumulation")

    only_params = trainable_names(model) if lora else None  # LoRA checkpoints hold the adapters only
    model = fabric.setup_module(model)  # first: FSDP replaces the parameters the optimizer must hold
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = fabric.setup_optimizers(
        torch.optim.AdamW(params, lr=train.lr, weight_decay=train.weight_decay, betas=tuple(train.betas)))
    scheduler = warmup_cosine(optimizer, warmup_steps(train, max_steps), max_steps, train.min_lr_ratio)
    # `losses`: every step's loss so far, checkpointed with the rest, so a resumed run's summary is the whole run's
    state = {"model": model, "optimizer": optimizer, "scheduler": scheduler, "step": 0, "micro_batches": 0,
             "losses": []}

    ckpt_root = out_dir / "checkpoints"
    latest = latest_checkpoint(ckpt_root) if train.resume == "auto" else None
    if latest is not None:
        load_checkpoint(fabric, latest, state, only_params=only_params)

    sampler = ResumableBatchSampler(len(samples), micro, seed=cfg.seed, start=state["micro_batches"],
                                    num_replicas=fabric.world_size, rank=fabric.global_rank)
    collate = SFTCollator(processor, cfg.model.family, train.max_seq_len, cfg.model.system_prompt)
    # its own generator: creating the iterator must not draw from the global RNG (exact resume)
    loader = DataLoader(samples, batch_sampler=sampler, collate_fn=collate, num_workers=0,
                        generator=torch.Generator().manual_seed(cfg.seed))
    batches = iter(loader)
    record = run_record(cfg, stage="sft")

    model.train()
    bar = progress(total=max_steps, initial=state["step"], desc="sft", rank_zero=fabric.global_rank == 0)
    t_log, n_samples_win, n_tokens_win = time.perf_counter(), 0, 0
    while state["step"] < max_steps:
        if stop_at_step is not None and state["step"] >= stop_at_step:
            break  # simulate a kill (tests of exact resume)
        step_loss = 0.0
        for k in range(accum):
            batch = fabric.to_device(next(batches))  # the loader is not fabric-wrapped (exact resume)
            state["micro_batches"] += 1
            with fabric.no_backward_sync(model, enabled=k < accum - 1):
                loss = model(**batch).loss
                fabric.backward(loss / accum)
            step_loss += loss.item() / accum
            n_samples_win += batch["input_ids"].shape[0]
            n_tokens_win += int(batch["attention_mask"].sum())
        grad_norm = fabric.clip_gradients(model, optimizer, max_norm=train.grad_clip) if train.grad_clip > 0 else None
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        state["step"] += 1
        step_loss = mean_over_ranks({"loss": step_loss})["loss"]  # the global batch's loss, not rank 0's
        state["losses"].append(step_loss)
        bar.update(1)

        if state["step"] % train.log_every == 0 or state["step"] == max_steps:
            dt = max(time.perf_counter() - t_log, 1e-9)
            metrics = {"train/loss": step_loss, "train/lr": scheduler.get_last_lr()[0],
                       "train/samples_per_s": n_samples_win * fabric.world_size / dt,
                       "train/tokens_per_s": n_tokens_win * fabric.world_size / dt}
            if grad_norm is not None:
                metrics["train/grad_norm"] = float(grad_norm)
            fabric.log_dict(metrics, step=state["step"])
            bar.set_postfix(loss=f"{step_loss:.3f}")
            if bar.disable and fabric.global_rank == 0:  # no terminal: a log line instead of the bar
                log.info("sft step %d/%d loss %.4f lr %.2e %.1f samples/s", state["step"], max_steps, step_loss,
                         metrics["train/lr"], metrics["train/samples_per_s"])
            t_log, n_samples_win, n_tokens_win = time.perf_counter(), 0, 0
        if state["step"] % train.ckpt_every == 0 or state["step"] == max_steps:
            save_checkpoint(fabric, ckpt_root, state["step"], state, record, only_params=only_params)
    bar.close()

    summary = {"steps": state["step"], "max_steps": max_steps, "mode": train.mode, "split": train.split,
               "samples": len(samples), "first_loss": state["losses"][0] if state["losses"] else None,
               "final_loss": state["losses"][-1] if state["losses"] else None}
    if state["step"] >= max_steps:
        export_model(fabric, model, processor, out_dir, lora, record,
                     rebuild=lambda: build_trainable(cfg, init_model, lora)[0])
        summary["model_dir"] = str(out_dir / "model")
    return summary


def build_trainable(cfg: DictConfig, init_model: Optional[Path], lora: bool):
    """The model as a training loop starts it: built or loaded, frozen parts frozen, LoRA applied."""
    model, processor = build_model(cfg.model, seed=cfg.seed, path=init_model)
    freeze_modules(model, cfg.train.freeze_vision, cfg.train.freeze_projector)
    if lora:
        model = apply_lora(model, cfg.train.lora)
    if cfg.train.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    return model, processor


def export_model(fabric: Fabric, model, processor, out_dir: Path, lora: bool, record: dict,
                 rebuild: Optional[Callable[[], torch.nn.Module]] = None) -> None:
    """Write `model/` (LoRA merged into the base) and, for LoRA, `adapter/`; atomically, once.

    A collective: every rank joins. Sharded parameters (FSDP, ZeRO-3) are gathered into a full state dict
    that rank 0 loads into a fresh CPU copy (`rebuild`) and saves with `save_pretrained`."""
    if is_sharded(fabric):
        state = full_state_dict(fabric, model)
        if fabric.global_rank == 0:
            module = rebuild()
            module.load_state_dict(state, strict=True)
    else:
        module = model.module if hasattr(model, "module") else model
    if fabric.global_rank != 0:
        fabric.barrier()
        return
    if lora:
        tmp = out_dir / ".adapter.tmp"
        module.save_pretrained(tmp)
        replace_dir(tmp, out_dir / "adapter")
        module = merge_lora(module)
    tmp = out_dir / ".model.tmp"
    save_model(module, processor, tmp)
    atomic_write_json(tmp / "run.json", record)
    replace_dir(tmp, out_dir / "model")
    fabric.barrier()
