"""LoRA through peft: adapters on the language model's projections, merged back for evaluation."""

from __future__ import annotations

import torch
from omegaconf import DictConfig
from peft import LoraConfig as PeftLoraConfig
from peft import PeftModel, get_peft_model
from transformers import PreTrainedModel


def apply_lora(model: PreTrainedModel, lora: DictConfig) -> PeftModel:
    """Wrap `model` with LoRA adapters; only adapter weights stay trainable."""
    config = PeftLoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                            target_modules=lora.target_modules, bias="none",
                            modules_to_save=list(lora.modules_to_save) or None, ensure_weight_tying=bool(lora.modules_to_save))
    return get_peft_model(model, config)


def merge_lora(model: PeftModel) -> PreTrainedModel:
    """Fold the adapters into the base weights and return the plain transformers model."""
    return model.merge_and_unload()


def freeze_modules(model: torch.nn.Module, freeze_vision: bool, freeze_projector: bool) -> None:
    """Freeze the vision tower (its `merger` projector stays trainable unless freeze_projector)."""
    for name, p in model.named_parameters():
        if ".visual." in f".{name}":
            is_projector = ".merger." in name
            if (freeze_vision and not is_projector) or (freeze_projector and is_projector):
                p.requires_grad_(False)


def enable_gradient_checkpointing(model: torch.nn.Module) -> None:
    """Recompute each decoder/vision block's activations in backward (the non-reentrant variant, which
    needs no input gradients, so it works the same under LoRA with frozen embeddings)."""
    base = model.get_base_model() if isinstance(model, PeftModel) else model
    base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    base.config.use_cache = False
