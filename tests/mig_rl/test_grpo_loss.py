"""GRPO maths against hand-computed values, for every option."""

from __future__ import annotations

import math

import pytest
import torch

from mig_rl.loss import completion_logprobs, group_advantages, grpo_loss, k3_kl
from mig_rl.rejection import partial_correct

EPS = 1e-4
REWARDS = torch.tensor([1.0, 0.0, 0.5, 0.5, 2.0, 2.0, 0.0, 0.0])  # B=2 groups of G=4


def test_group_scale_divides_by_each_groups_unbiased_std():
    adv = group_advantages(REWARDS, 4, scale="group", eps=EPS)
    s1, s2 = math.sqrt((0.25 + 0.25) / 3), math.sqrt(4 / 3)  # unbiased (n-1) stds of each group
    expected = [0.5 / (s1 + EPS), -0.5 / (s1 + EPS), 0, 0, 1 / (s2 + EPS), 1 / (s2 + EPS), -1 / (s2 + EPS),
                -1 / (s2 + EPS)]
    assert adv.tolist() == pytest.approx(expected, rel=1e-6)


def test_batch_scale_divides_by_the_whole_batch_std():
    adv = group_advantages(REWARDS, 4, scale="batch", eps=EPS)
    mean = 6 / 8
    std = math.sqrt(sum((r - mean) ** 2 for r in REWARDS.tolist()) / 7)
    centered = [0.5, -0.5, 0, 0, 1, 1, -1, -1]
    assert adv.tolist() == pytest.approx([c / (std + EPS) for c in centered], rel=1e-6)


def test_none_scale_only_centres():
    assert group_advantages(REWARDS, 4, scale="none").tolist() == pytest.approx([0.5, -0.5, 0, 0, 1, 1, -1, -1])


def test_identical_rewards_give_zero_advantage_not_nan():
    adv = group_advantages(torch.ones(8), 4)
    assert torch.equal(adv, torch.zeros(8))


def test_group_advantages_rejects_bad_shapes():
    with pytest.raises(ValueError, match="divisible"):
        group_advantages(torch.ones(7), 4)
    with pytest.raises(ValueError, match="scale"):
        group_advantages(torch.ones(8), 4, scale="rank")


L = math.log
LOGP = torch.tensor([[L(0.5), L(0.25)], [L(0.8), L(0.1)]])
OLD = torch.tensor([[L(0.4), L(0.25)], [L(0.5), L(0.2)]])
REF = torch.tensor([[L(0.5), L(0.5)], [L(0.4), L(0.1)]])
ADV = torch.tensor([1.0, -1.0])
MASK = torch.tensor([[1, 1], [1, 0]])
# By hand, eps=0.2: ratios 1.25, 1 | 1.6, (0.5 masked). Surrogates: min(1.25, 1.2)=1.2, 1 | min(-1.6, -1.2)=-1.6.
# k3 = exp(d) - d - 1 with d = ref - logp: 0, 1 - ln2 | ln2 - 0.5, (0).
K3_01, K3_10 = 1 - math.log(2), math.log(2) - 0.5
TOK = [-(1.2 - 0.1 * 0), -(1.0 - 0.1 * K3_01), -(-1.6 - 0.1 * K3_10)]  # beta = 0.1


def test_k3_estimator():
    assert k3_kl(LOGP, REF)[0].tolist() == pytest.approx([0.0, K3_01], abs=1e-6)
    assert k3_kl(LOGP, REF)[1].tolist() == pytest.approx([K3_10, 0.0], abs=1e-6)


def test_grpo_loss_type_grpo_averages_per_sequence_then_sequences():
    loss, stats = grpo_loss(LOGP, OLD, REF, ADV, MASK, beta=0.1)
    expected = ((TOK[0] + TOK[1]) / 2 + TOK[2] / 1) / 2
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    assert stats["kl"].item() == pytest.approx((0 + K3_01 + K3_10) / 3, abs=1e-6)
    assert stats["clip_fraction"].item() == pytest.approx(1 / 3)  # only token (0,0) takes the clipped branch
    assert stats["ratio"].item() == pytest.approx((1.25 + 1 + 1.6) / 3, abs=1e-6)


def test_grpo_loss_type_token_averages_over_all_tokens():
    loss, _ = grpo_loss(LOGP, OLD, REF, ADV, MASK, beta=0.1, loss_type="token")
    assert loss.item() == pytest.approx(sum(TOK) / 3, abs=1e-6)


def test_separate_low_and_high_clip():
    # eps_high=0.3: ratio 1.25 is inside [.., 1.3] -> unclipped 1.25; eps_low=0.1 with A<0: ratio 0.85 -> 0.9
    logp = torch.tensor([[L(0.5)], [L(0.85)]])
    old = torch.tensor([[L(0.4)], [L(1.0)]])
    loss, stats = grpo_loss(logp, old, None, ADV, torch.ones(2, 1), beta=0.0, eps_low=0.1, eps_high=0.3)
    assert loss.item() == pytest.approx((-1.25 + 0.9) / 2, abs=1e-6)  # -(1.25) and -(min(-0.85, -0.9))
    assert stats["clip_fraction"].item() == pytest.approx(0.5)
    assert stats["kl"].item() == 0.0


def test_beta_zero_needs_no_reference_and_beta_needs_one():
    grpo_loss(LOGP, OLD, None, ADV, MASK, beta=0.0)
    with pytest.raises(ValueError, match="ref_logp"):
        grpo_loss(LOGP, OLD, None, ADV, MASK, beta=0.1)


def test_on_policy_gradient_is_minus_advantage_over_length():
    logp = LOGP.clone().requires_grad_(True)
    loss, _ = grpo_loss(logp, logp.detach(), None, ADV, MASK, beta=0.0)
    loss.backward()
    # d/dlogp of -(ratio*A) at ratio 1 is -A, averaged per sequence (lengths 2 and 1) then over 2 sequences
    assert logp.grad.flatten().tolist() == pytest.approx([-1 / 4, -1 / 4, 1 / 2, 0.0])


def test_completion_logprobs_picks_the_predicting_positions():
    # P=2 prompt tokens, C=2 completion tokens, V=3: completion token t is predicted at position P-1+t
    logits = torch.zeros(1, 4, 3)
    logits[0, 1] = torch.tensor([0.0, 5.0, 0.0])  # predicts completion token 0 (= id 1)
    logits[0, 2] = torch.tensor([0.0, 0.0, 5.0])  # predicts completion token 1 (= id 2)
    out = completion_logprobs(logits, torch.tensor([[1, 2]]))
    expected = 5 - math.log(math.exp(5) + 2)
    assert out.flatten().tolist() == pytest.approx([expected, expected], abs=1e-6)
    kept = completion_logprobs(logits[:, -3:], torch.tensor([[1, 2]]))  # logits_to_keep=C+1 gives the same
    assert torch.equal(kept, out)


def test_partial_correct_keeps_mixed_groups_only():
    correct = torch.tensor([[1, 1, 1, 1], [0, 0, 0, 0], [1, 0, 0, 0], [0, 1, 1, 1]])
    assert partial_correct(correct).tolist() == [False, False, True, True]
