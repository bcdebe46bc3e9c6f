"""Sampling with a seed per row, for batched generation.

A batch of rollouts is sampled in one `generate` call, yet each completion must depend only on its own
seed, not on which other prompts share the batch (so a run is reproducible, a resumed run samples what the
unbroken run would have, and batching is a speed setting, not a change of results). torch's global RNG
cannot give that: one `multinomial` over the batch draws row r's noise after rows 0..r-1.

Here each row draws one uniform number u from a counter-based hash of (row seed, decode step) and takes the
token where the cumulative distribution of softmax(logits / T) (restricted to the top-p nucleus when
top_p < 1) first exceeds u: inverse-CDF sampling, exact, one hash per row and step, computed for the whole
batch at once on any device.
"""

from __future__ import annotations

import hashlib

import torch

_MASK32 = 0xFFFFFFFF


def row_seed(*parts: object) -> int:
    """A 32-bit seed from any parts (e.g. run seed, step, sample index, rollout index)."""
    digest = hashlib.sha256("/".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:4], "little")


def mix32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer hash (lowbias32) of int64 tensors holding values in [0, 2^32). Same shape."""
    x = x & _MASK32
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & _MASK32  # products wrap past 2^63; the low 32 bits are still exact
    x = x ^ (x >> 15)
    x = (x * 0x846CA68B) & _MASK32
    return x ^ (x >> 16)


def uniform(seeds: torch.Tensor, step: int) -> torch.Tensor:
    """[N] seeds -> [N] uniforms in (0, 1) (float64, 32 random bits), each a function of (seed, step) only."""
    x = mix32(mix32(seeds.to(torch.int64) * 0x9E3779B1 + 0x632BE5AB) ^ ((step * 0x85EBCA77 + 0x27D4EB2F) & _MASK32))
    return (x.to(torch.float64) + 0.5) / 2.0**32


def top_p_mask(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """[N, V] bool: the smallest set of tokens whose probability reaches top_p (at least the top one)."""
    if top_p >= 1.0:
        return torch.ones_like(logits, dtype=torch.bool)
    probs, order = logits.softmax(-1).sort(-1, descending=True)  # [N, V]
    before = probs.cumsum(-1) - probs  # probability mass ranked above each token
    keep_sorted = before < top_p  # [N, V]; the top token always (before = 0)
    return torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)


def sample_tokens(logits: torch.Tensor, seeds: torch.Tensor, step: int, temperature: float = 1.0,
                  top_p: float = 1.0) -> torch.Tensor:
    """logits [N, V], seeds [N] -> sampled token ids [N] (inverse CDF of softmax(logits / temperature))."""
    z = logits.float() / temperature  # [N, V]
    if top_p < 1.0:
        z = z.masked_fill(~top_p_mask(z, top_p), float("-inf"))
    cdf = z.softmax(-1).to(torch.float64).cumsum(-1)  # [N, V]
    u = uniform(seeds, step).to(logits.device)[:, None] * cdf[:, -1:]  # [N, 1], scaled to the cdf's own total
    return torch.searchsorted(cdf, u).squeeze(1).clamp(max=logits.shape[-1] - 1)


class SeededSampler:
    """A transformers logits processor that samples each row with its own seed and leaves only the chosen
    token finite, so `generate(do_sample=False)` keeps it. Runs last, after the model's suppressions."""

    def __init__(self, seeds: list[int], prompt_len: int, temperature: float = 1.0, top_p: float = 1.0):
        self.seeds = torch.tensor(seeds, dtype=torch.int64)  # [N]
        self.prompt_len = prompt_len
        self.temperature = temperature
        self.top_p = top_p

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        step = input_ids.shape[1] - self.prompt_len  # decode step, the same for every row
        picked = sample_tokens(scores, self.seeds.to(scores.device), step, self.temperature, self.top_p)  # [N]
        out = torch.full_like(scores, float("-inf"))
        return out.scatter(1, picked[:, None], 0.0)
