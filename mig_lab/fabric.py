"""Lightning Fabric from config. Scale-out (ddp, fsdp, deepspeed, multi-node) is configuration.

Strategies (`fabric.strategy`):
- `auto` / `ddp`: data parallel; frozen modules (the GRPO reference) are moved to the device, not wrapped.
- `fsdp`: FSDP2 (`fully_shard`) through Fabric's `ModelParallelStrategy`; one shard unit per block the
  model itself names in `_no_split_modules` (Qwen2-VL, Qwen2.5-VL, the tiny models, any `model.path`),
  then the root. With `bf16-mixed` the parameters stay fp32 (master weights) and compute/all-gathers
  run in bf16, gradients reduce in fp32. Runs on CPU with gloo too (the tests).
- `deepspeed_zero2` / `deepspeed_zero3`: Fabric's DeepSpeed strategy (CUDA and the `deepspeed` package).

Precision: full fine-tuning keeps fp32 master weights (`bf16-mixed`). `bf16-true` stores the weights in
bf16, where an AdamW update of lr x ~1 is lost whenever it is below half a bf16 step of the weight
(about 2^-9 of its value): at lr 5e-6 almost every update rounds away. It is therefore refused for
training stages, as is full fine-tuning of bf16-loaded weights (`model.dtype=bfloat16`), and allowed for
evaluation, sampling and LoRA on a bf16 base (peft keeps the adapters in fp32) (`check_fabric`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from lightning.fabric import Fabric
from lightning.fabric.loggers import Logger
from omegaconf import DictConfig

from mig_lab.config import ConfigError

STRATEGIES = ("auto", "ddp", "fsdp", "deepspeed_zero2", "deepspeed_zero3")
PRECISIONS = ("auto", "32-true", "bf16-mixed", "16-mixed", "bf16-true")


def resolve_accelerator(accelerator: str) -> str:
    if accelerator == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return "cuda" if accelerator == "gpu" else accelerator


def resolve_precision(precision: str, accelerator: str) -> str:
    """`auto` is bf16-mixed on GPUs and 32-true on CPUs (bf16 is 20-180x slower on an AVX2 CPU)."""
    if precision != "auto":
        return precision
    return "bf16-mixed" if resolve_accelerator(accelerator) == "cuda" else "32-true"


def resolve_devices(devices: str, accelerator: str) -> int:
    """`fabric.devices` as a number: `auto` is every GPU of the node, or one process on a CPU."""
    if str(devices).isdigit():
        return int(devices)
    if devices == "auto":
        return max(1, torch.cuda.device_count()) if resolve_accelerator(accelerator) == "cuda" else 1
    raise ConfigError(f"config key 'fabric.devices' is {devices!r}; expected a number or 'auto'")


def check_fabric(f: DictConfig, training_kind: Optional[str] = None, train_mode: str = "full",
                 model_dtype: str = "float32") -> None:
    """What `fabric` settings a stage can run with (planning; any machine); one error naming the key.
    `training_kind`: the name of a stage kind that updates weights (None for the others)."""
    if f.strategy not in STRATEGIES:
        hint = " (ranks are started by the runner: use ddp)" if "spawn" in str(f.strategy) else ""
        raise ConfigError(f"config key 'fabric.strategy' is {f.strategy!r}; expected one of {list(STRATEGIES)}{hint}")
    if f.precision not in PRECISIONS:
        raise ConfigError(f"config key 'fabric.precision' is {f.precision!r}; expected one of {list(PRECISIONS)}")
    if f.accelerator not in ("auto", "cpu", "cuda", "gpu"):
        raise ConfigError(f"config key 'fabric.accelerator' is {f.accelerator!r}; expected auto, cpu or cuda")
    if f.strategy == "fsdp" and f.precision == "16-mixed":
        raise ConfigError("fabric.precision=16-mixed is not supported with fabric.strategy=fsdp; use bf16-mixed")
    if training_kind is None or f.allow_bf16_weights:
        return
    if resolve_precision(f.precision, f.accelerator) == "bf16-true" or (
            train_mode == "full" and model_dtype in ("bfloat16", "float16")):
        raise ConfigError(
            f"a '{training_kind}' stage ({train_mode} training) with fabric.precision={f.precision} and "
            f"model.dtype={model_dtype} keeps no fp32 master weights: AdamW updates below ~2^-9 of a weight round "
            f"away (at lr 5e-6, nearly all of them). Use model.dtype=float32 with fabric.precision=bf16-mixed, or "
            f"set fabric.allow_bf16_weights=true if you know the updates are large")


def check_hardware(f: DictConfig) -> None:
    """What `fabric` asks of this machine (run time, before any work): devices that exist, packages."""
    accelerator = resolve_accelerator(f.accelerator)
    devices = resolve_devices(f.devices, f.accelerator)
    if devices < 1 or f.num_nodes < 1:
        raise ConfigError("config keys 'fabric.devices' and 'fabric.num_nodes' must be >= 1")
    if accelerator == "cuda":
        have = torch.cuda.device_count()
        if have == 0:
            raise ConfigError("config key 'fabric.accelerator' is cuda but this machine has no CUDA device "
                              "(use fabric=cpu)")
        if devices > have:
            raise ConfigError(f"config key 'fabric.devices' is {devices} but this node has {have} GPU(s)")
    elif devices > (os.cpu_count() or 1):
        raise ConfigError(f"config key 'fabric.devices' is {devices} but this machine has {os.cpu_count()} CPU "
                          f"cores; start at most one rank per core")
    if f.strategy.startswith("deepspeed"):
        if accelerator != "cuda":
            raise ConfigError(f"fabric.strategy={f.strategy} needs CUDA GPUs (fabric.accelerator=cuda); on a CPU "
                              f"use ddp or fsdp")
        try:
            import deepspeed  # noqa: F401
        except ImportError as e:
            raise ConfigError(f"fabric.strategy={f.strategy} needs the deepspeed package: "
                              f"pip install -e '.[gpu]'") from e


def no_split_module_classes(model: torch.nn.Module) -> set[str]:
    """The block classes a model says must not be split across shards (`_no_split_modules`)."""
    names: set[str] = set()
    for m in model.modules():
        names.update(getattr(m, "_no_split_modules", None) or [])
    return names


def fully_shard_blocks(model: torch.nn.Module, device_mesh: Any, precision: str) -> torch.nn.Module:
    """FSDP2: one `fully_shard` unit per `_no_split_modules` block, then the root (shape-agnostic)."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    mesh = device_mesh["data_parallel"] if device_mesh.ndim > 1 else device_mesh
    mp = (MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
          if precision == "bf16-mixed" else MixedPrecisionPolicy())
    blocks = no_split_module_classes(model)
    if not blocks:
        raise ConfigError(f"fabric.strategy=fsdp: {type(model).__name__} names no `_no_split_modules`, so there "
                          f"is no block to shard by; use fabric.strategy=ddp")
    for m in model.modules():
        if type(m).__name__ in blocks:
            fully_shard(m, mesh=mesh, mp_policy=mp)
    fully_shard(model, mesh=mesh, mp_policy=mp)
    return model


def _strategy(f: DictConfig, precision: str) -> Any:
    if f.strategy == "fsdp":
        from lightning.fabric.strategies import ModelParallelStrategy

        def parallelize(model, device_mesh):
            return fully_shard_blocks(model, device_mesh, precision)

        # full (not distributed) checkpoints: one file, readable with any world size and by torch.load
        world = resolve_devices(f.devices, f.accelerator) * int(f.num_nodes)
        return ModelParallelStrategy(parallelize_fn=parallelize, data_parallel_size=world,
                                     tensor_parallel_size=1, save_distributed_checkpoint=False)
    if f.strategy.startswith("deepspeed"):
        from lightning.fabric.strategies import DeepSpeedStrategy

        return DeepSpeedStrategy(stage=2 if f.strategy.endswith("2") else 3)
    return f.strategy


def make_fabric(cfg: DictConfig, loggers: Optional[list[Logger]] = None) -> Fabric:
    """A launched Fabric for this process's rank (the runner has started the ranks already)."""
    f = cfg.fabric
    accelerator = resolve_accelerator(f.accelerator)
    precision = resolve_precision(f.precision, f.accelerator)
    fabric = Fabric(accelerator=accelerator, devices=resolve_devices(f.devices, f.accelerator),
                    num_nodes=f.num_nodes, strategy=_strategy(f, precision), precision=precision,
                    loggers=loggers or [])
    fabric.launch()  # the processes exist (ranks.start): this sets up the strategy, it starts nothing
    return fabric


def is_sharded(fabric: Fabric) -> bool:
    """Parameters split over ranks (FSDP, ZeRO-3): exports and generation need them gathered."""
    from lightning.fabric.strategies import DeepSpeedStrategy, ModelParallelStrategy

    s = fabric.strategy
    return isinstance(s, ModelParallelStrategy) or (isinstance(s, DeepSpeedStrategy) and s.zero_stage_3)


def setup_frozen(fabric: Fabric, module: torch.nn.Module) -> torch.nn.Module:
    """A module that never trains (the GRPO reference): sharded under FSDP, else only moved to the
    device (DDP refuses a module without trainable parameters, and needs none for it)."""
    if is_sharded(fabric):
        return fabric.setup_module(module)
    return fabric.to_device(module)


def full_state_dict(fabric: Fabric, model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The whole model's state dict on CPU, gathered from every rank (a collective: all ranks call it)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    module = model.module if hasattr(model, "module") else model
    if not is_sharded(fabric):
        return {k: v.detach().cpu() for k, v in module.state_dict().items()}
    return get_model_state_dict(module, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def run_loop(loop: Callable[..., Any], cfg: DictConfig, out_dir: Path, name: str, group: str, *args: Any,
             log: bool = True) -> Any:
    """Loggers (CSV in `out_dir`, W&B per config; none with `log=False`) and Fabric, then
    `loop(fabric, cfg, *args)`; the loggers are finalized "success" or "failed" as the loop ends.
    The one Fabric set-up of every stage that runs on Fabric (training, evaluation, sampling)."""
    from mig_lab.loggers import make_loggers
    from mig_lab.records import to_plain

    loggers = make_loggers(cfg, out_dir, name=name, group=group, config=to_plain(cfg)) if log else []
    fabric = make_fabric(cfg, loggers)
    status = "failed"
    try:
        result = loop(fabric, cfg, *args)
        status = "success"
        return result
    finally:
        for lg in loggers:
            lg.finalize(status)
