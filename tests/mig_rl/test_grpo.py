"""The GRPO loop on Fabric with the tiny model: runs, resumes exactly, references done right."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from safetensors.torch import load_file

from mig_data.loading import load_split
from mig_models.builders import build_tiny
from mig_rl import grpo
from mig_rl.rejection import pass_at_k, pass_rates, rejection_sample
from mig_rl.rollout import completion_mask, generate_rollouts, sequence_logprobs
from tests.conftest import compose_cfg

RL = ["rl.max_steps=2", "rl.num_generations=2", "rl.batch_size=2", "rl.max_new_tokens=6", "rl.ckpt_every=1",
      "rl.log_every=1", "rl.temperature=1.0"]


def _cfg(tmp_path, *overrides):
    return compose_cfg(["logger=csv", "fabric=cpu", *RL, *overrides], tmp_path)


def test_completion_mask_stops_after_first_end_token():
    ids = torch.tensor([[5, 6, 9, 9, 9], [5, 9, 6, 7, 9], [5, 6, 7, 8, 4]])
    assert completion_mask(ids, {9}).tolist() == [[1, 1, 1, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 1, 1]]


def test_rollouts_are_seeded_per_sample_not_per_batch(synth_data):
    cfg = compose_cfg([])
    model, processor = build_tiny(cfg.model, seed=0)
    samples = load_split(synth_data, "train")[:3]
    together = generate_rollouts(model, processor, "qwen2_vl", samples[:2], [0, 1], 2, 6, 1.0, 1.0, seed=0, step=3)
    alone = generate_rollouts(model, processor, "qwen2_vl", samples[1:2], [1], 2, 6, 1.0, 1.0, seed=0, step=3)
    assert together.texts[2:] == alone.texts  # sample 1's rollouts don't depend on its batch mates
    again = generate_rollouts(model, processor, "qwen2_vl", samples[1:2], [1], 2, 6, 1.0, 1.0, seed=0, step=3)
    assert torch.equal(again.completion_ids, alone.completion_ids)  # reproducible: same (seed, step, sample)
    other_steps = [generate_rollouts(model, processor, "qwen2_vl", samples[1:2], [1], 2, 6, 1.0, 1.0, seed=0,
                                     step=s).texts for s in (4, 5, 6)]
    assert any(t != alone.texts for t in other_steps)  # a new step draws new rollouts
    # log-probs of the sampled tokens are finite and the mask covers at least one token per row
    logp = sequence_logprobs(model, together)
    assert logp.shape == together.completion_ids.shape and torch.isfinite(logp).all()
    assert (together.completion_mask.sum(1) >= 1).all()


def test_one_grpo_step_moves_the_policy_up_the_advantage(synth_data, tmp_path, monkeypatch):
    """The loop end to end, checked against the policy gradient: regenerate step 0's rollouts (seeded by
    step and sample), score them with a reward that varies (shorter is better), and compare their log-probs
    under the initial policy and under the policy after one GRPO step. A loop that skips the update, flips
    the loss sign, zeroes or misorders the advantages or mixes up rollouts fails here."""
    from mig_data.sampler import ResumableBatchSampler
    from mig_models.builders import build_model
    from mig_rl.loss import group_advantages
    from mig_rl.rewards import REWARDS

    monkeypatch.setitem(REWARDS, "short", lambda completions, **_: [-len(c) / 50 for c in completions])
    cfg = _cfg(tmp_path, "rl.max_steps=1", "rl.kl_beta=0", "rl.lr=1e-4", "rl.warmup_steps=0", "rl.num_generations=4",
               "rl.max_new_tokens=12", "rl.rewards.iou=0", "rl.rewards.format=0", "+rl.rewards.short=1.0")
    grpo.setup(cfg, synth_data, tmp_path / "step")
    rl = cfg.rl
    before, processor = build_model(cfg.model, seed=cfg.seed)
    after, _ = build_model(cfg.model, seed=cfg.seed, path=tmp_path / "step" / "model")
    samples = [s for s in load_split(synth_data, rl.split) if s.answer is not None]
    idx = ResumableBatchSampler(len(samples), rl.batch_size, seed=cfg.seed).batch(0)
    r = generate_rollouts(before, processor, "qwen2_vl", [samples[i] for i in idx], idx, rl.num_generations,
                          rl.max_new_tokens, rl.temperature, rl.top_p, cfg.seed, 0, cfg.model.system_prompt)
    adv = group_advantages(torch.tensor([-len(t) / 50 for t in r.texts]), rl.num_generations)  # [N]
    assert adv.abs().sum() > 0, "the rewards must differ within a group for this test to mean anything"
    with torch.no_grad():
        delta = sequence_logprobs(after, r, rl.temperature) - sequence_logprobs(before, r, rl.temperature)  # [N, C]
    mask = r.completion_mask.float()
    per_seq = (delta * mask).sum(1) / mask.sum(1)  # [N] mean log-prob change per completion
    assert (adv * per_seq).sum() > 0, "the update must raise the log-prob of above-average completions"
    assert not torch.allclose(per_seq, torch.zeros_like(per_seq)), "the policy did not move"


def test_grpo_runs_logs_and_resumes_exactly(synth_data, tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    summary = grpo.setup(_cfg(tmp_path, "rl.kl_beta=0.1"), synth_data, straight)
    assert summary["steps"] == 2 and summary["reference"] == "frozen_copy"
    assert len(summary["reward_curve"]) == 2
    # diagnostics: every reward component's curve, pass@1 / pass@G per step and of the starting model
    assert {"total", "iou", "format"} <= summary["reward_curves"].keys()
    assert all(len(c) == 2 for c in summary["reward_curves"].values())
    assert set(summary["pass_curves"]) == {"pass@1", "pass@2"} and len(summary["pass_curves"]["pass@2"]) == 2
    start = summary["start_pass"]
    assert (start["prompts"], start["k"]) == (min(32, len(load_split(synth_data, "train"))), 2)
    assert 0 <= start["pass@1"] <= start["pass@2"] <= 1
    rows = (straight / "csv" / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    for col in ("reward/total", "reward/iou", "reward/format", "train/kl", "train/clip_fraction",
                "completion/mean_length", "acc50/group_grounding"):
        assert col in header, col
    first = grpo.setup(_cfg(tmp_path, "rl.kl_beta=0.1"), synth_data, resumed, stop_at_step=1)
    assert first["steps"] == 1
    second = grpo.setup(_cfg(tmp_path, "rl.kl_beta=0.1"), synth_data, resumed)
    assert second["start_pass"] == start  # read back
    # the summary's curves are the whole run's, not only the resumed process's steps
    assert second["reward_curve"] == summary["reward_curve"] and second["kl_curve"] == summary["kl_curve"]
    a = load_file(straight / "model" / "model.safetensors")
    b = load_file(resumed / "model" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resumed_run_never_measures_the_resumed_policy_as_the_starting_model(synth_data, tmp_path):
    out = tmp_path / "rl"
    first = grpo.setup(_cfg(tmp_path, "rl.kl_beta=0"), synth_data, out, stop_at_step=1)
    assert first["start_pass"]["k"] == 2 and (out / "start_pass.json").exists()
    (out / "start_pass.json").unlink()  # e.g. a checkpoint written before start_pass existed
    resumed = grpo.setup(_cfg(tmp_path, "rl.kl_beta=0"), synth_data, out)
    assert resumed["steps"] == 2 and "not_measured" in resumed["start_pass"]


def test_lora_policy_reference_is_the_base_with_adapters_disabled(synth_data, tmp_path):
    summary = grpo.setup(_cfg(tmp_path, "train.mode=lora", "rl.kl_beta=0.5", "rl.max_steps=1"), synth_data,
                         tmp_path / "lora")
    assert summary["reference"] == "adapters_disabled"
    # LoRA B starts at zero: before the first update the policy equals its reference, so KL is exactly 0
    assert summary["kl_curve"][0] == pytest.approx(0.0, abs=1e-7)
    assert (tmp_path / "lora" / "adapter" / "adapter_config.json").exists()


def test_kl_beta_zero_uses_no_reference(synth_data, tmp_path):
    summary = grpo.setup(_cfg(tmp_path, "rl.kl_beta=0", "rl.max_steps=1"), synth_data, tmp_path / "nokl")
    assert summary["reference"] == "none" and summary["kl_curve"] == [0.0]


def test_rejection_sampling_accounts_for_every_prompt(synth_data):
    cfg = compose_cfg([])
    model, processor = build_tiny(cfg.model, seed=0)
    samples = load_split(synth_data, "train")[:4]
    kept, stats = rejection_sample(model, processor, "qwen2_vl", samples, k=3, temperature=1.0, top_p=1.0,
                                   max_new_tokens=6, seed=0)
    assert stats["prompts"] == 4 and stats["k"] == 3
    assert stats["kept"] + stats["all_right"] + stats["all_wrong"] == 4 and len(kept) == stats["kept"]
    assert all(0 < s.meta["rs_correct"] < 3 for s in kept)
    # the model's pass rates on all prompts: pass@k = share of prompts with a right answer, pass@1 = share of
    # right answers
    assert stats["pass@3"] == pytest.approx(1 - stats["all_wrong"] / 4)
    assert stats["pass@1"] == pytest.approx((sum(s.meta["rs_correct"] for s in kept) + 3 * stats["all_right"]) / 12)
    json.dumps(stats)


def test_pass_at_k_matches_the_unbiased_estimator_by_hand():
    assert pass_at_k(8, 2, 1) == 0.25 and pass_at_k(8, 2, 8) == 1.0 and pass_at_k(8, 0, 8) == 0.0
    assert pass_at_k(8, 2, 4) == pytest.approx(1 - 15 / 70)  # 1 - C(6,4) / C(8,4)
    rates = pass_rates([0, 2, 8], 8)
    assert rates == {"pass@1": pytest.approx((0 + 0.25 + 1) / 3), "pass@8": pytest.approx(2 / 3)}


def test_rejection_keeps_exactly_the_prompts_answered_partly_right(synth_data):
    """With a known answer per prompt the rule is checkable: a prompt stays iff 0 < correct < k."""
    cfg = compose_cfg([])
    model, processor = build_tiny(cfg.model, seed=0)
    samples = load_split(synth_data, "train")[:6]
    # answers the tiny model cannot hit: every prompt is all wrong, none is kept
    far = [dataclasses.replace(s, answer=[0.0, 0.0, 0.001, 0.001]) for s in samples[:3]]
    kept, stats = rejection_sample(model, processor, "qwen2_vl", far, k=2, temperature=1.0, top_p=1.0,
                                   max_new_tokens=6, seed=0)
    assert kept == [] and stats["all_wrong"] == 3 and stats["kept"] == 0


def test_wandb_gets_rollout_table_and_box_images(synth_data, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = compose_cfg(["logger=wandb", "logger.mode=offline", "fabric=cpu", *RL, "rl.max_steps=1"], tmp_path)
    grpo.setup(cfg, synth_data, tmp_path / "wb")
    tables = list((tmp_path / "wb").rglob("media/table/rollouts/*.table.json"))
    assert tables, "no rollout table in the offline W&B run"
    table = json.loads(tables[0].read_text())
    assert table["columns"] == ["id", "task", "completion", "reward"]
    assert len(table["data"]) == 2 * 2  # batch 2 x 2 generations
    pngs = list((tmp_path / "wb").rglob("media/images/rollouts/boxes*.png"))
    assert len(pngs) == 4  # every rollout of the batch, drawn with its boxes


@pytest.mark.slow
def test_mean_reward_rises_over_a_short_run_from_the_tiny_base(tmp_path):
    """GRPO from the committed tiny base on single-image grounding with distractors (where the base is
    right about a third of the time), IoU reward: the mean reward of the last steps is above that of the
    first steps (~2 min on 2 CPU cores). On one-object images the base is already at ~0.8 mean IoU."""
    from mig_data.synth.generate import generate_split

    data = tmp_path / "data"
    synth = compose_cfg(["data.synth.tasks=[single_grounding]", "data.synth.min_objects=2",
                         "data.synth.max_objects=4", "data.synth.n_train=64"]).data.synth
    generate_split(synth, seed=0, split="train", out_dir=data)
    cfg = compose_cfg(["model=tiny_base", "logger=csv", "fabric=cpu", "rl.max_steps=30", "rl.batch_size=4",
                       "rl.num_generations=8", "rl.temperature=1.0", "rl.max_new_tokens=24", "rl.lr=2e-4",
                       "rl.kl_beta=0", "rl.rewards={iou: 1.0, format: 0.0}", "rl.ckpt_every=100"], tmp_path)
    summary = grpo.setup(cfg, data, tmp_path / "rl")
    curve = summary["reward_curve"]
    assert len(curve) == 30
    first, last = sum(curve[:10]) / 10, sum(curve[-10:]) / 10
    assert last > first + 0.02, (first, last, curve)


def test_rollouts_never_contain_vision_placeholders(synth_data):
    """A policy that prefers <|image_pad|> must still yield rollouts whose log-probs can be computed
    (an image_pad in a completion made the forward fail: 'image features and image tokens do not match')."""
    from mig_models.generation import vision_placeholder_ids

    cfg = compose_cfg([])
    model, processor = build_tiny(cfg.model, seed=0)
    pad_id = processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    head = torch.nn.Linear(model.lm_head.in_features, model.lm_head.out_features, bias=True)
    with torch.no_grad():
        head.weight.copy_(model.lm_head.weight)
        head.bias.zero_()
        head.bias[pad_id] = 100.0  # every step's argmax, unless suppressed
    model.lm_head = head
    samples = load_split(synth_data, "train")[:2]
    r = generate_rollouts(model, processor, "qwen2_vl", samples, [0, 1], 2, 6, 1.0, 1.0, seed=0, step=0)
    banned = set(vision_placeholder_ids(processor.tokenizer))
    assert pad_id in banned and not banned & set(r.completion_ids.flatten().tolist())
    logp = sequence_logprobs(model, r)
    assert torch.isfinite(logp).all()
