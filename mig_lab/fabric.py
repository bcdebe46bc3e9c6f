"""Lightning Fabric from config. Scale-out (ddp, fsdp, deepspeed, multi-node) is configuration."""

from __future__ import annotations

from typing import Optional

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
