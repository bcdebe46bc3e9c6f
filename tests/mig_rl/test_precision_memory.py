"""Precision and memory switches of the training loops: fp32 master weights under bf16-mixed, and
gradient checkpointing that changes nothing but memory."""

from __future__ import annotations

import copy

import pytest
import torch
from safetensors.torch import load_file

from mig_data.collate import SFTCollator
from mig_data.loading import load_split
from mig_models.builders import build_tiny
from mig_models.lora import apply_lora, enable_gradient_checkpointing
from mig_rl import sft
from tests.conftest import compose_cfg


def _changed_fraction(precision: str, synth_data, tmp_path) -> float:
    """One full fine-tuning step at lr 5e-6 (the 7B presets' rate); the share of weights that moved."""
    cfg = compose_cfg(["logger=csv", "fabric=cpu", f"fabric.precision={precision}", "fabric.allow_bf16_weights=true",
                       "train.lr=5e-6", "train.max_steps=1", "train.batch_size=2", "train.warmup_steps=0",
                       "train.grad_clip=0", "train.freeze_vision=true"], tmp_path / precision)
    model, _ = build_tiny(cfg.model, seed=0)
    model.save_pretrained(tmp_path / precision / "init")
    before = load_file(tmp_path / precision / "init" / "model.safetensors")
    sft.setup(cfg, synth_data, tmp_path / precision / "out")
    after = load_file(tmp_path / precision / "out" / "model" / "model.safetensors")
    lm = [k for k in after if "visual" not in k]  # the trained part
    moved = sum(int((after[k].float() != before[k].to(after[k].dtype).float()).sum()) for k in lm)
    return moved / sum(after[k].numel() for k in lm)


def test_bf16_mixed_keeps_fp32_master_weights_that_a_small_update_changes(synth_data, tmp_path):
    mixed = _changed_fraction("bf16-mixed", synth_data, tmp_path)
    true = _changed_fraction("bf16-true", synth_data, tmp_path)  # the old 7B preset
    assert mixed > 0.9, mixed  # AdamW moves (nearly) every weight by ~lr
    assert true < 0.2, true  # in bf16 weights most of those updates round away
    assert mixed > 4 * true


@pytest.mark.parametrize("mode", ["full", "lora"])
def test_gradient_checkpointing_gives_the_same_loss_and_gradients(synth_data, mode):
    cfg = compose_cfg([])
    model, processor = build_tiny(cfg.model, seed=0)
    if mode == "lora":
        model = apply_lora(model, cfg.train.lora)
        for name, p in model.named_parameters():  # non-zero B, so LoRA gradients flow everywhere
            if "lora_B" in name:
                torch.nn.init.normal_(p, std=0.02)
    checkpointed = copy.deepcopy(model)
    enable_gradient_checkpointing(checkpointed)
    batch = SFTCollator(processor, "qwen2_vl", 2048)(load_split(synth_data, "train")[:2])
    grads = []
    for m in (model, checkpointed):
        m.train()
        loss = m(**batch).loss
        loss.backward()
        grads.append((loss.item(), {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}))
    (loss_a, ga), (loss_b, gb) = grads
    assert checkpointed.get_base_model().is_gradient_checkpointing if mode == "lora" \
        else checkpointed.is_gradient_checkpointing
    assert loss_a == pytest.approx(loss_b, abs=1e-6)
    assert ga.keys() == gb.keys() and len(ga) > 0
    for n in ga:
        torch.testing.assert_close(ga[n], gb[n], atol=1e-6, rtol=1e-5)
