"""Rejection sampling before GRPO (coldstart_rl.txt 3.3): sample K answers per prompt with the merged
cold-start model and keep only prompts it answers partly right — all-right and all-wrong groups give
GRPO no relative advantage to learn from."""

from __future__ import annotations

import math
from typing import Any, Callable, Optional

import torch

from mig_data.schema import Sample
from mig_lab import progress
from mig_rl.rewards import acc50_reward
from mig_rl.rollout import generate_rollouts, reward_columns


def partial_correct(correct: torch.Tensor) -> torch.Tensor:
    """correct: [B, K] of 0/1 -> [B] bool, True where 0 < (number right) < K."""
    n_right = correct.sum(dim=1)
    return (n_right > 0) & (n_right < correct.shape[1])


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c are right (Chen et al. 2021): 1 - C(n-c, k) / C(n, k)."""
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def pass_rates(n_right: list[int], n: int) -> dict[str, float]:
    """pass@1 and pass@n, averaged over prompts, from how many of n samples each prompt got right."""
    if not n_right:
        return {}
    return {f"pass@{k}": sum(pass_at_k(n, c, k) for c in n_right) / len(n_right) for k in sorted({1, n})}


@torch.no_grad()
def count_right(model: Any, processor: Any, family: str, samples: list[Sample], k: int, temperature: float,
                top_p: float, max_new_tokens: int, seed: int, system_prompt: Optional[str] = None,
                rank: int = 0, world: int = 1, gather: Optional[Callable[[Any], list]] = None,
                no_answer_block: str = "whole_text", unnamed_image: str = "answer", desc: str = "sampling",
                batch_size: int = 8, backend: Any = None) -> Optional[list[int]]:
    """How many of k sampled answers to each prompt are right (IoU >= 0.5 by GRPO's reading rules
    `rl.no_answer_block`, `rl.unnamed_image`), in prompt order; rank 0 gets the list, other ranks None.

    Sharded over `world` ranks (prompt i on rank i % world; its rollouts are seeded by i, so the result is
    the one-process result); `batch_size` prompts x k per generate call; `gather` brings the counts to rank 0."""
    model.eval()
    mine: dict[int, int] = {}
    own = list(range(rank, len(samples), world))
    chunks = [own[j:j + batch_size] for j in range(0, len(own), batch_size)]
    for idx in progress(chunks, desc=desc, rank_zero=rank == 0):
        r = generate_rollouts(model, processor, family, [samples[i] for i in idx], idx, k, max_new_tokens,
                              temperature, top_p, seed, step=-1, system_prompt=system_prompt, backend=backend)
        right = torch.tensor(acc50_reward(r.texts, **reward_columns(r, family, no_answer_block, unnamed_image)))
        mine.update(zip(idx, right.view(len(idx), k).sum(1).int().tolist()))
    right: dict[int, int] = {}
    for shard in (gather(mine) if world > 1 else [mine]):
        right.update(shard)
    return [right[i] for i in range(len(samples))] if rank == 0 else None


def rejection_sample(model: Any, processor: Any, family: str, samples: list[Sample], k: int, temperature: float,
                     top_p: float, max_new_tokens: int, seed: int, system_prompt: Optional[str] = None,
                     rank: int = 0, world: int = 1, gather: Optional[Callable[[Any], list]] = None,
                     no_answer_block: str = "whole_text", unnamed_image: str = "answer", batch_size: int = 8,
                     backend: Any = None) -> Optional[tuple[list[Sample], dict]]:
    """Returns the kept samples (each with `meta["rs_correct"]` = how many of K were right) and stats,
    with the model's pass@1 and pass@K on all the prompts (the headroom GRPO has). Sharded as `count_right`."""
    n_right_all = count_right(model, processor, family, samples, k, temperature, top_p, max_new_tokens, seed,
                              system_prompt, rank, world, gather, no_answer_block, unnamed_image,
                              desc="rejection sampling", batch_size=batch_size, backend=backend)
    if n_right_all is None:  # not rank 0
        return None
    kept = []
    correct = torch.tensor([[1] * n + [0] * (k - n) for n in n_right_all]).view(len(samples), k)
    for s, n, partial in zip(samples, n_right_all, partial_correct(correct).tolist()):
        if partial:
            s.meta = {**s.meta, "rs_correct": n, "rs_k": k}
            kept.append(s)
    n = len(samples)
    stats = {
        "prompts": n,
        "kept": len(kept),
        "kept_fraction": len(kept) / n if n else 0.0,
        "all_wrong": sum(v == 0 for v in n_right_all),
        "all_right": sum(v == k for v in n_right_all),
        "k": k,
        **pass_rates(n_right_all, k),
    }
    return kept, stats
