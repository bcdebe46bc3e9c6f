"""Batched generation, per-row seeds, image features encoded once and `logits_to_keep`: faster, and the same
completions, log-probs, losses and gradients as the plain per-prompt path (real tiny Qwen2-VL, real processor)."""

from __future__ import annotations

import math

import pytest
import torch

from mig_data.collate import generation_prompts
from mig_data.loading import load_split
from mig_models.builders import build_tiny
from mig_models.generation import Sampling, hf_generate
from mig_models.sampling import sample_tokens, top_p_mask, uniform
from mig_rl.loss import completion_logprobs, grpo_loss
from mig_rl.rollout import generate_rollouts, sequence_logprobs
from mig_rl.sft import freeze_modules
from tests.conftest import compose_cfg


@pytest.fixture(scope="module")
def tiny():
    cfg = compose_cfg([])
    return build_tiny(cfg.model, seed=0)


@pytest.fixture(scope="module")
def samples(synth_data):
    return load_split(synth_data, "train")[:5]


def test_batched_greedy_generation_equals_one_prompt_at_a_time(tiny, samples):
    model, processor = tiny
    assert len({len(s.images) for s in samples}) > 1  # prompts of different lengths: left padding matters
    tok = processor.tokenizer
    greedy = Sampling(max_new_tokens=12)
    batched, _ = hf_generate(model, tok, generation_prompts(processor, "qwen2_vl", samples).tensors, greedy)
    alone = [hf_generate(model, tok, generation_prompts(processor, "qwen2_vl", [s]).tensors, greedy)[0][0]
             for s in samples]
    assert batched == alone


def test_a_sampled_completion_depends_only_on_its_own_seed(tiny, samples):
    model, processor = tiny
    tok = processor.tokenizer
    warm = Sampling(max_new_tokens=10, do_sample=True, temperature=1.0)
    three = generation_prompts(processor, "qwen2_vl", samples[:3]).tensors
    seeds = [11, 12, 21, 22, 31, 32]  # 3 prompts x n=2
    texts, ids = hf_generate(model, tok, three, warm, n=2, seeds=seeds)
    one = generation_prompts(processor, "qwen2_vl", samples[1:2]).tensors
    alone, _ = hf_generate(model, tok, one, warm, n=2, seeds=[21, 22])
    assert texts[2:4] == alone  # prompt 1 samples the same with or without batch mates
    assert hf_generate(model, tok, three, warm, n=2, seeds=seeds)[0] == texts  # reproducible
    assert texts[2] != texts[3]  # two seeds, two samples
    with pytest.raises(ValueError, match="one seed per completion"):
        hf_generate(model, tok, three, warm, n=2, seeds=[1, 2])


def test_generation_with_each_prompt_prefilled_once_equals_repeating_the_prompt(tiny, samples):
    model, processor = tiny
    tok = processor.tokenizer
    warm = Sampling(max_new_tokens=10, do_sample=True, temperature=1.0)
    prompts = generation_prompts(processor, "qwen2_vl", samples[:2])
    seeds = [3, 4, 5, 6, 7, 8]
    shared, _ = hf_generate(model, tok, prompts.tensors, warm, n=3, seeds=seeds)  # prefix prefilled once per prompt
    repeated = generation_prompts(processor, "qwen2_vl", [samples[0]] * 3 + [samples[1]] * 3)
    plain, _ = hf_generate(model, tok, repeated.tensors, warm, n=1, seeds=seeds)  # every row its own prompt
    assert shared == plain and len(set(shared)) > 1


def _plain_logprobs(model, r) -> torch.Tensor:
    """The straightforward forward: every row carries its own copy of its prompt's images, all logits kept."""
    p = r.prompt
    pixels = torch.cat([r.images.pixel_values[_patch_slice(r.images, b)] for b in r.rows])
    ids = torch.cat([p["input_ids"], r.completion_ids], 1)
    logits = model(input_ids=ids, attention_mask=torch.cat([p["attention_mask"], r.completion_mask], 1),
                   mm_token_type_ids=torch.cat([p["mm_token_type_ids"], torch.zeros_like(r.completion_ids)], 1),
                   pixel_values=pixels, image_grid_thw=p["image_grid_thw"]).logits  # [N, P+C, V]
    return completion_logprobs(logits, r.completion_ids)


def _patch_slice(images, prompt: int) -> slice:
    patches = images.grid.prod(-1).tolist()
    first = images.image_index([prompt])
    start = sum(patches[: first[0]])
    return slice(start, start + sum(patches[i] for i in first))


def test_logprobs_with_images_encoded_once_equal_the_plain_forward(tiny, samples):
    model, processor = tiny
    r = generate_rollouts(model, processor, "qwen2_vl", samples[:3], [0, 1, 2], 4, 8, 1.0, 1.0, seed=0, step=0)
    assert not r.images.keep  # the tiny default trains its vision tower: encoded once per forward
    with torch.no_grad():
        fast, plain = sequence_logprobs(model, r), _plain_logprobs(model, r)
    assert fast.shape == r.completion_ids.shape
    torch.testing.assert_close(fast, plain, atol=1e-5, rtol=0)


def test_a_frozen_vision_tower_encodes_each_prompt_once_per_batch(samples):
    model, processor = build_tiny(compose_cfg([]).model, seed=1)
    freeze_modules(model, True, True)
    calls = []
    hook = model.model.visual.register_forward_hook(lambda mod, args, out: calls.append(args[0].shape[0]))
    try:
        r = generate_rollouts(model, processor, "qwen2_vl", samples[:3], [0, 1, 2], 4, 8, 1.0, 1.0, seed=0, step=0)
        assert r.images.keep
        old = sequence_logprobs(model, r).detach()  # old/reference passes reuse the generation's features
        new = sequence_logprobs(model, r)  # the policy pass (with grad) too
    finally:
        hook.remove()
    assert len(calls) == 1 and calls[0] == r.images.pixel_values.shape[0]  # once, on the 3 prompts' patches
    with torch.no_grad():
        torch.testing.assert_close(new.detach(), _plain_logprobs(model, r), atol=1e-5, rtol=0)
    torch.testing.assert_close(old, new.detach(), atol=1e-5, rtol=0)  # no-grad passes: the shared-prefix path


def test_grpo_loss_and_gradients_are_the_same_with_logits_to_keep_and_a_shared_prompt_pass(tiny, samples):
    model, processor = tiny
    r = generate_rollouts(model, processor, "qwen2_vl", samples[:2], [0, 1], 3, 8, 1.0, 1.0, seed=0, step=1)
    adv = torch.tensor([1.0, -0.5, -0.5, 0.3, 0.2, -0.5])
    mask = r.completion_mask.float()

    def loss_and_grads(logp_fn):
        model.zero_grad(set_to_none=True)
        logp = logp_fn()
        ref = logp.detach() - 0.05  # a reference a little off the policy: the KL term has a gradient
        loss, _ = grpo_loss(logp, logp.detach(), ref, adv, mask, beta=0.04)
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    kept_loss, kept = loss_and_grads(lambda: sequence_logprobs(model, r))
    full_loss, full = loss_and_grads(lambda: _plain_logprobs(model, r))
    assert kept.keys() == full.keys() and len(kept) > 10
    torch.testing.assert_close(kept_loss, full_loss, atol=1e-6, rtol=0)
    for name in kept:
        torch.testing.assert_close(kept[name], full[name], atol=1e-6, rtol=0, msg=name)


def test_seeded_sampling_draws_from_the_softmax():
    logits = torch.tensor([2.0, 1.0, 0.0, -1.0, 0.5])
    n = 20000
    picks = sample_tokens(logits.expand(n, -1), torch.arange(n), step=3, temperature=0.7)
    freq = torch.bincount(picks, minlength=5).double() / n
    expected = (logits.double() / 0.7).softmax(-1)
    se = (expected * (1 - expected) / n).sqrt()
    assert ((freq - expected).abs() < 4 * se).all(), (freq, expected)
    # a row's draw is a function of (seed, step) only, uniform over (0, 1)
    u = uniform(torch.arange(n), 2)
    assert torch.equal(u[7:9], uniform(torch.tensor([7, 8]), 2)) and not torch.equal(u, uniform(torch.arange(n), 3))
    assert (u > 0).all() and (u < 1).all() and abs(u.mean().item() - 0.5) < 0.01
    assert torch.histc(u.float(), bins=10, min=0, max=1).min() > n / 10 * 0.9


def test_top_p_keeps_the_smallest_nucleus():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    assert top_p_mask(logits, 0.7).tolist() == [[True, True, False, False]]
    assert top_p_mask(logits, 0.8).tolist() == [[True, True, False, False]]
    assert top_p_mask(logits, 0.81).tolist() == [[True, True, True, False]]
    assert top_p_mask(logits, 0.1).tolist() == [[True, False, False, False]]
    picks = sample_tokens(logits.expand(2000, -1), torch.arange(2000), step=0, top_p=0.7)
    assert set(picks.tolist()) == {0, 1}
    assert math.isclose((picks == 0).double().mean().item(), 0.5 / 0.8, abs_tol=0.05)
