"""FSDP2 (`fully_shard` per `_no_split_modules` block) with 2 gloo ranks on CPU: SFT whose export is the
model one process trains, and the cold-start pipeline (LoRA SFT, GRPO with a sharded frozen reference,
generation under FSDP) end to end."""

from __future__ import annotations

from safetensors.torch import load_file
from transformers import Qwen2VLForConditionalGeneration

from mig_lab.runner import run
from mig_models.builders import build_tiny
from tests.conftest import compose_cfg

FSDP = ["logger=csv", "fabric=cpu", "fabric.devices=2", "fabric.strategy=fsdp"]


def test_fsdp_sft_exports_the_full_model_one_process_would_train(tmp_path):
    two = run(compose_cfg(["experiment=smoke", "debug=tiny", *FSDP], tmp_path / "fsdp"))
    one = run(compose_cfg(["experiment=smoke", "debug=tiny", "logger=csv", "fabric=cpu"], tmp_path / "one"))
    a = load_file(two["sft"].dir / "model" / "model.safetensors")
    b = load_file(one["sft"].dir / "model" / "model.safetensors")
    assert a.keys() == b.keys()
    build_tiny(compose_cfg([]).model, seed=0)[0].save_pretrained(tmp_path / "init")
    init = load_file(tmp_path / "init" / "model.safetensors")
    moved = max((b[k] - init[k]).abs().max().item() for k in b)
    apart = max((a[k] - b[k]).abs().max().item() for k in a)
    # same global batch; only the loss's token weighting (mean of rank means) and float order differ
    assert apart < 0.25 * moved, (apart, moved)
    model = Qwen2VLForConditionalGeneration.from_pretrained(two["sft"].dir / "model")
    assert sum(p.numel() for p in model.parameters()) > 0


def test_fsdp_coldstart_pipeline_runs_lora_sft_and_grpo_with_a_sharded_reference(tmp_path):
    results = run(compose_cfg(["experiment=coldstart_rl_full", "debug=tiny", "rl.kl_beta=0.04", *FSDP],
                              tmp_path))
    assert (results["sft_lora"].dir / "adapter" / "adapter_config.json").exists()
    assert results["grpo_full"].summary["reference"] == "frozen_copy"
    assert len(results["grpo_full"].summary["kl_curve"]) == 2
    model = Qwen2VLForConditionalGeneration.from_pretrained(results["grpo_full"].dir / "model")
    assert model.config.model_type == "qwen2_vl"
    assert results["eval_full"].summary["overall"]["n"] > 0
