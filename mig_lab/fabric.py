"""Lightning Fabric from config. Scale-out (ddp, fsdp, deepspeed, multi-node) is configuration."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional

import torch
from lightning.fabric import Fabric
from lightning.fabric.loggers import Logger
from omegaconf import DictConfig


def resolve_accelerator(accelerator: str) -> str:
    if accelerator == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return accelerator


def resolve_precision(precision: str, accelerator: str) -> str:
    """`auto` is bf16-mixed on GPUs and 32-true on CPUs (bf16 is 20-180x slower on an AVX2 CPU)."""
    if precision != "auto":
        return precision
    return "bf16-mixed" if resolve_accelerator(accelerator) == "cuda" else "32-true"


def resolve_devices(devices: str) -> int | str:
    return int(devices) if str(devices).isdigit() else devices


def make_fabric(cfg: DictConfig, loggers: Optional[list[Logger]] = None) -> Fabric:
    accelerator = resolve_accelerator(cfg.fabric.accelerator)
    strategy = cfg.fabric.strategy
    if strategy == "fsdp":
        from lightning.fabric.strategies import FSDPStrategy
        from transformers.models.qwen2_vl.modeling_qwen2_vl import Qwen2VLDecoderLayer, Qwen2VLVisionBlock

        strategy = FSDPStrategy(auto_wrap_policy={Qwen2VLDecoderLayer, Qwen2VLVisionBlock},
                                state_dict_type="full", sharding_strategy="FULL_SHARD")
    return Fabric(
        accelerator=accelerator,
        devices=resolve_devices(cfg.fabric.devices),
        num_nodes=cfg.fabric.num_nodes,
        strategy=strategy,
        precision=resolve_precision(cfg.fabric.precision, cfg.fabric.accelerator),
        loggers=loggers or [],
    )


def run_loop(loop: Callable[..., Any], cfg: DictConfig, out_dir: Path, name: str, group: str, *args: Any) -> Any:
    """Loggers (CSV in `out_dir`, W&B per config) and Fabric, then `loop(fabric, cfg, *args)`; the loggers
    are finalized "success" or "failed" as the loop ends. The setup of every training loop."""
    from mig_lab.loggers import make_loggers
    from mig_lab.records import to_plain

    loggers = make_loggers(cfg, out_dir, name=name, group=group, config=to_plain(cfg))
    fabric = make_fabric(cfg, loggers)
    fabric.launch()
    status = "failed"
    try:
        result = loop(fabric, cfg, *args)
        status = "success"
        return result
    finally:
        for lg in loggers:
            lg.finalize(status)
