"""GRPO maths as pure functions: group-normalised advantages and the clipped policy loss with a
k3 KL penalty to a reference policy (DeepSeekMath's GRPO, with DAPO-style separate clip bounds)."""

from __future__ import annotations

import torch


def group_advantages(rewards: torch.Tensor, group_size: int, scale: str = "group", eps: float = 1e-4) -> torch.Tensor:
    """Advantages of B*G rewards ordered group by group (the G rollouts of prompt 0 first).

    scale="group": (r - group mean) / (group std + eps)   (torch's default, unbiased, std)
    scale="batch": (r - group mean) / (batch std + eps)
    scale="none":  r - group mean
    """
    if rewards.dim() != 1 or rewards.numel() % group_size != 0:
        raise ValueError(f"rewards must be 1-D with a length divisible by group_size={group_size}, "
                         f"got shape {tuple(rewards.shape)}")
    grouped = rewards.view(-1, group_size)  # [B, G]
    centered = grouped - grouped.mean(dim=1, keepdim=True)  # [B, G]
    if scale == "group":
        adv = centered / (grouped.std(dim=1, keepdim=True) + eps)
    elif scale == "batch":
        adv = centered / (rewards.std() + eps)
    elif scale == "none":
        adv = centered
    else:
        raise ValueError(f"scale must be 'group', 'batch' or 'none', got {scale!r}")
    return adv.reshape(-1)  # [B*G]


def k3_kl(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimator of KL(pi || pi_ref): exp(ref - logp) - (ref - logp) - 1 >= 0.  [N, L]"""
    delta = ref_logp - logp
    return torch.exp(delta) - delta - 1


def grpo_loss(logp: torch.Tensor, old_logp: torch.Tensor, ref_logp: torch.Tensor | None, advantages: torch.Tensor,
              mask: torch.Tensor, beta: float, eps_low: float = 0.2, eps_high: float = 0.2,
              loss_type: str = "grpo") -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clipped GRPO objective, negated for minimisation.

    logp, old_logp, ref_logp, mask: [N, L] (N = B*G completions, L completion tokens); advantages: [N].
    Per token: -(min(ratio*A, clip(ratio, 1-eps_low, 1+eps_high)*A) - beta*k3), ratio = exp(logp - old_logp).
    loss_type="grpo": mean over each sequence's unmasked tokens, then over sequences;
    loss_type="token": mean over all unmasked tokens of the batch.
    Returns the loss and detached stats: kl (mean k3 over tokens), clip_fraction, ratio (mean).
    """
    mask = mask.to(logp.dtype)
    adv = advantages.to(logp.dtype).unsqueeze(1)  # [N, 1]
    ratio = torch.exp(logp - old_logp)  # [N, L]
    clipped_ratio = torch.clamp(ratio, 1 - eps_low, 1 + eps_high)
    surrogate = torch.minimum(ratio * adv, clipped_ratio * adv)  # [N, L]
    per_token = -surrogate
    kl = None
    if beta != 0.0:
        if ref_logp is None:
            raise ValueError("grpo_loss: beta != 0 needs ref_logp")
        kl = k3_kl(logp, ref_logp)
        per_token = per_token + beta * kl
    if loss_type == "grpo":
        loss = ((per_token * mask).sum(1) / mask.sum(1).clamp(min=1)).mean()
    elif loss_type == "token":
        loss = (per_token * mask).sum() / mask.sum().clamp(min=1)
    else:
        raise ValueError(f"loss_type must be 'grpo' or 'token', got {loss_type!r}")

    n_tokens = mask.sum().clamp(min=1)
    with torch.no_grad():
        # the clipped branch is the one taken: ratio pushed past the bound in the advantage's direction
        is_clipped = ((ratio < 1 - eps_low) & (adv < 0)) | ((ratio > 1 + eps_high) & (adv > 0))
        stats = {
            "kl": (kl * mask).sum() / n_tokens if kl is not None else torch.zeros((), dtype=logp.dtype),
            "clip_fraction": (is_clipped.to(logp.dtype) * mask).sum() / n_tokens,
            "ratio": (ratio * mask).sum() / n_tokens,
        }
    return loss, {k: v.detach() for k, v in stats.items()}


def completion_logprobs(logits: torch.Tensor, completion_ids: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Log-probs of the completion tokens under the logits of a prompt (P, left-padded) + completion (C).

    logits: [N, K, V] of the last K >= C+1 positions (K = P+C for the full sequence, or C+1 with
    `logits_to_keep=C+1`); completion_ids: [N, C]. Token t of the completion is predicted at position
    P-1+t, i.e. at index K-C-1+t. Returns [N, C].
    """
    c = completion_ids.shape[1]
    pred = logits[:, -c - 1:-1, :].float() / temperature  # [N, C, V]
    return torch.gather(pred.log_softmax(-1), 2, completion_ids.unsqueeze(-1)).squeeze(-1)
