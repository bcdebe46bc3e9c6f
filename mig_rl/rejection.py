"""Rejection sampling before GRPO (coldstart_rl.txt 3.3): sample K answers per prompt with the merged
cold-start model and keep only prompts it answers partly right — all-right and all-wrong groups give
GRPO no relative advantage to learn from."""

from __future__ import annotations

from typing import Any, Optional

import torch

from mig_data.schema import Sample
from mig_lab import progress
from mig_rl.rewards import acc50_reward
from mig_rl.rollout import generate_rollouts, reward_columns


def partial_correct(correct: torch.Tensor) -> torch.Tensor:
    """correct: [B, K] of 0/1 -> [B] bool, True where 0 < (number right) < K."""
    n_right = correct.sum(dim=1)
    return (n_right > 0) & (n_right < correct.shape[1])


@torch.no_grad()
def rejection_sample(model: Any, processor: Any, family: str, samples: list[Sample], k: int, temperature: float,
                     top_p: float, max_new_tokens: int, seed: int, system_prompt: Optional[str] = None
                     ) -> tuple[list[Sample], dict]:
    """Returns the kept samples (each with `meta["rs_correct"]` = how many of K were right) and stats."""
    model.eval()
    kept, n_right_all = [], []
    for i in progress(range(len(samples)), desc="rejection sampling"):
        s = samples[i]
        r = generate_rollouts(model, processor, family, [s], [i], k, max_new_tokens, temperature, top_p,
                              seed, step=-1, system_prompt=system_prompt)
        correct = torch.tensor(acc50_reward(r.texts, **reward_columns(r, family))).view(1, k)
        n_right = int(correct.sum())
        n_right_all.append(n_right)
        if bool(partial_correct(correct)[0]):
            s.meta = {**s.meta, "rs_correct": n_right, "rs_k": k}
            kept.append(s)
    n = len(samples)
    stats = {
        "prompts": n,
        "kept": len(kept),
        "kept_fraction": len(kept) / n if n else 0.0,
        "all_wrong": sum(v == 0 for v in n_right_all),
        "all_right": sum(v == k for v in n_right_all),
        "k": k,
    }
    return kept, stats
