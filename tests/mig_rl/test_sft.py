"""SFT on Fabric: it learns, it resumes exactly, LoRA merges exactly."""

from __future__ import annotations

import csv
import json

import pytest
import torch
from safetensors.torch import load_file

from mig_data.collate import IGNORE_INDEX, SFTCollator
from mig_data.loading import load_split
from mig_models.builders import build_tiny
from mig_models.lora import apply_lora, merge_lora
from mig_rl import sft
from tests.conftest import compose_cfg


def _cfg(tmp_path, *overrides):
    return compose_cfg(["logger=csv", "fabric=cpu", "train.log_every=1", *overrides], tmp_path)


def test_labels_cover_only_the_assistant_reply(synth_data):
    cfg = compose_cfg([])
    _, processor = build_tiny(cfg.model, seed=0)
    samples = load_split(synth_data, "train")[:3]
    batch = SFTCollator(processor, "qwen2_vl", 2048)(samples)
    tok = processor.tokenizer
    for row in range(3):
        labelled = batch["labels"][row][batch["labels"][row] != IGNORE_INDEX]
        text = tok.decode(labelled)
        assert text == samples[row].response + "<|im_end|>"
        assert (batch["labels"][row][batch["attention_mask"][row] == 0] == IGNORE_INDEX).all()


def test_overfits_a_fixed_tiny_batch(synth_data, tmp_path):
    # 4 training samples, batch 4: every step sees the same batch.
    data = tmp_path / "data"
    data.mkdir()
    records = json.loads((synth_data / "train.json").read_text())[:4]
    for r in records:
        r["images"] = [str((synth_data / p).resolve()) for p in r["images"]]
    (data / "train.json").write_text(json.dumps(records))
    cfg = _cfg(tmp_path, "train.max_steps=40", "train.batch_size=4", "train.lr=3e-3", "train.warmup_steps=5")
    summary = sft.setup(cfg, data, tmp_path / "out")
    assert summary["final_loss"] < 0.5 * summary["first_loss"], summary


@pytest.mark.parametrize("mode", ["full", "lora"])
def test_exact_resume_after_a_stop(synth_data, tmp_path, mode):
    common = ["train.max_steps=6", "train.batch_size=4", "train.ckpt_every=3", f"train.mode={mode}",
              "train.lora.dropout=0.1", "train.warmup_steps=2"]
    straight = tmp_path / "straight"
    resumed = tmp_path / "resumed"
    sft.setup(_cfg(tmp_path, *common), synth_data, straight)
    first = sft.setup(_cfg(tmp_path, *common), synth_data, resumed, stop_at_step=3)
    assert first["steps"] == 3 and "model_dir" not in first
    assert (resumed / "checkpoints" / "latest").read_text().strip() == "step-0000003"
    second = sft.setup(_cfg(tmp_path, *common), synth_data, resumed)
    assert second["steps"] == 6
    a = load_file(straight / "model" / "model.safetensors")
    b = load_file(resumed / "model" / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # the run record travels with the checkpoint
    rec = json.loads((resumed / "checkpoints" / "step-0000006" / "run.json").read_text())
    assert rec["git_sha"] and rec["seed"] == 0 and rec["config"]["train"]["mode"] == mode


def test_lora_merge_matches_adapter_logits(synth_data):
    cfg = compose_cfg([])
    model, processor = build_tiny(cfg.model, seed=0)
    peft_model = apply_lora(model, cfg.train.lora)
    torch.manual_seed(1)
    with torch.no_grad():  # non-zero adapters, else the merge test is trivial
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    batch = SFTCollator(processor, "qwen2_vl", 2048)(load_split(synth_data, "train")[:2])
    batch.pop("labels")
    peft_model.eval()
    with torch.no_grad():
        adapter_logits = peft_model(**batch).logits
        merged = merge_lora(peft_model)
        merged_logits = merged(**batch).logits
    assert not any("lora" in n for n, _ in merged.named_parameters())
    assert (adapter_logits - merged_logits).abs().max().item() < 1e-4
    assert adapter_logits.abs().max().item() > 0


def test_lora_with_trained_tied_embeddings_merges_into_the_same_model(tmp_path):
    """train.lora.modules_to_save=[embed_tokens, lm_head] on the tied tiny base: the merged, saved and
    reloaded model computes what the adapted model computes, and its embeddings stay tied."""
    from mig_models.builders import build_model
    from mig_models.lora import apply_lora

    cfg = compose_cfg(["model=tiny_base", "train.mode=lora", "train.lora.modules_to_save=[embed_tokens,lm_head]"])
    model, processor = build_model(cfg.model, seed=0)
    peft_model = apply_lora(model, cfg.train.lora)
    with torch.no_grad():
        for p in peft_model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.02)
    ids = torch.randint(0, 1000, (1, 12))
    with torch.no_grad():
        adapted = peft_model(input_ids=ids).logits
        merged = peft_model.merge_and_unload()
        assert merged.get_input_embeddings().weight.data_ptr() == merged.get_output_embeddings().weight.data_ptr()
        merged.save_pretrained(tmp_path)
        processor.save_pretrained(tmp_path)
        reloaded, _ = build_model(cfg.model, seed=0, path=tmp_path)
        assert torch.allclose(reloaded(input_ids=ids).logits, adapted, atol=1e-4)


def test_a_resumed_run_keeps_the_whole_history(synth_data, tmp_path):
    """Stopped after step 4 with the last checkpoint at step 3 (as a kill between checkpoints leaves it),
    then resumed: metrics.csv equals the unbroken run's row for row (losses to the bit; the re-run step 4
    replaces the first attempt's row), and the summary's first and final loss are the whole run's."""
    common = ["train.max_steps=6", "train.batch_size=4", "train.ckpt_every=3", "train.log_every=1",
              "train.warmup_steps=2"]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    whole = sft.setup(_cfg(tmp_path, *common), synth_data, straight)
    sft.setup(_cfg(tmp_path, *common), synth_data, resumed, stop_at_step=4)
    assert len((resumed / "csv" / "metrics.csv").read_text().splitlines()) == 1 + 4
    again = sft.setup(_cfg(tmp_path, *common), synth_data, resumed)

    def rows(folder):
        with open(folder / "csv" / "metrics.csv") as f:
            return [{k: v for k, v in r.items() if not k.endswith("_per_s")} for r in csv.DictReader(f)]

    assert [r["step"] for r in rows(resumed)] == ["1", "2", "3", "4", "5", "6"]
    assert rows(resumed) == rows(straight)  # the throughput columns are wall-clock, the rest is the run
    assert (again["first_loss"], again["final_loss"]) == (whole["first_loss"], whole["final_loss"])


def test_a_resumed_stage_continues_its_wandb_run(synth_data, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    common = ["logger=wandb", "logger.mode=offline", "train.max_steps=4", "train.batch_size=4", "train.ckpt_every=2",
              "train.log_every=1"]
    out = tmp_path / "run"
    sft.setup(compose_cfg(["fabric=cpu", *common], tmp_path), synth_data, out, stop_at_step=2)
    run_id = (out / "wandb_run_id").read_text().strip()
    sft.setup(compose_cfg(["fabric=cpu", *common], tmp_path), synth_data, out)
    runs = sorted((out / "wandb").glob("offline-run-*"))
    assert len(runs) == 2 and all(r.name.endswith(f"-{run_id}") for r in runs)  # one W&B run, resumed
