"""Rollouts for GRPO: G sampled completions per prompt, and their token log-probs under a model.

Each prompt's rollouts are sampled with a seed derived from (seed, step, sample index), so a run is
reproducible, a resumed run samples what the uninterrupted run would have, and a prompt's rollouts do
not depend on which other prompts share its batch.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Optional

import torch

from mig_data.collate import generation_batch
from mig_data.schema import Sample
from mig_models.generation import generate
from mig_rl.loss import completion_logprobs


def rollout_seed(seed: int, step: int, sample_index: int) -> int:
    digest = hashlib.sha256(f"rollout/{seed}/{step}/{sample_index}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


@dataclass
class Rollouts:
    """N = B*G completions, ordered prompt by prompt (the G rollouts of prompt 0 first)."""

    prompt: dict[str, torch.Tensor]  # left-padded prompt batch, expanded to N rows
    completion_ids: torch.Tensor  # [N, C] (padded after the first end-of-turn token)
    completion_mask: torch.Tensor  # [N, C] 1 up to and including the end-of-turn token
    texts: list[str]  # [N]
    samples: list[Sample]  # [N] the prompt's sample, repeated G times
    image_sizes: list[list[tuple[int, int]]]  # [N] per-image (h, w) the model saw

    @property
    def prompt_len(self) -> int:
        return self.prompt["input_ids"].shape[1]


def completion_mask(ids: torch.Tensor, stop_ids: set[int]) -> torch.Tensor:
    """[N, C] mask of tokens up to and including the first stop token (all tokens if none)."""
    is_stop = torch.zeros_like(ids, dtype=torch.bool)
    for s in stop_ids:
        is_stop |= ids == s
    after_stop = (is_stop.cumsum(1) - is_stop.long()) > 0  # strictly after the first stop
    return (~after_stop).long()


def _left_pad(t: torch.Tensor, length: int, value: int) -> torch.Tensor:
    return torch.nn.functional.pad(t, (length - t.shape[1], 0), value=value)


def _right_pad(t: torch.Tensor, length: int, value: int) -> torch.Tensor:
    return torch.nn.functional.pad(t, (0, length - t.shape[1]), value=value)


@torch.no_grad()
def generate_rollouts(model: Any, processor: Any, family: str, samples: list[Sample], indices: list[int],
                      group_size: int, max_new_tokens: int, temperature: float, top_p: float, seed: int,
                      step: int, system_prompt: Optional[str] = None) -> Rollouts:
    tok = processor.tokenizer
    stop = {tok.convert_tokens_to_ids("<|im_end|>"), tok.convert_tokens_to_ids("<|endoftext|>")}
    pieces = []
    for sample, idx in zip(samples, indices):
        batch, hws = generation_batch(processor, family, [sample], system_prompt=system_prompt)
        texts, ids = generate(model, tok, batch, max_new_tokens, do_sample=True, temperature=temperature,
                              top_p=top_p, num_return_sequences=group_size, seed=rollout_seed(seed, step, idx))
        pieces.append((sample, batch, hws[0], texts, ids.cpu()))

    p_len = max(b["input_ids"].shape[1] for _, b, _, _, _ in pieces)
    c_len = max(ids.shape[1] for *_, ids in pieces)
    pad = tok.pad_token_id
    cols: dict[str, list[torch.Tensor]] = {"input_ids": [], "attention_mask": [], "mm_token_type_ids": [],
                                           "pixel_values": [], "image_grid_thw": []}
    comp_ids, texts, rows, sizes = [], [], [], []
    for sample, batch, hws, gen_texts, ids in pieces:
        for _ in range(group_size):  # every rollout row carries its prompt's tensors
            cols["input_ids"].append(_left_pad(batch["input_ids"], p_len, pad))
            cols["attention_mask"].append(_left_pad(batch["attention_mask"], p_len, 0))
            cols["mm_token_type_ids"].append(_left_pad(batch["mm_token_type_ids"], p_len, 0))
            cols["pixel_values"].append(batch["pixel_values"])
            cols["image_grid_thw"].append(batch["image_grid_thw"])
        comp_ids.append(_right_pad(ids, c_len, pad))
        texts.extend(gen_texts)
        rows.extend([sample] * group_size)
        sizes.extend([hws] * group_size)
    prompt = {k: torch.cat(v) for k, v in cols.items()}
    completion_ids = torch.cat(comp_ids)
    return Rollouts(prompt=prompt, completion_ids=completion_ids,
                    completion_mask=completion_mask(completion_ids, stop), texts=texts, samples=rows,
                    image_sizes=sizes)


def sequence_logprobs(model: Any, r: Rollouts, temperature: float = 1.0) -> torch.Tensor:
    """Per-token log-probs [N, C] of the rollouts' completions under `model` (with grad if enabled)."""
    p = r.prompt
    device = next(model.parameters()).device
    ids = torch.cat([p["input_ids"], r.completion_ids], 1).to(device)
    attn = torch.cat([p["attention_mask"], r.completion_mask], 1).to(device)
    mm = torch.cat([p["mm_token_type_ids"], torch.zeros_like(r.completion_ids)], 1).to(device)
    logits = model(input_ids=ids, attention_mask=attn, mm_token_type_ids=mm,
                   pixel_values=p["pixel_values"].to(device), image_grid_thw=p["image_grid_thw"].to(device)).logits
    return completion_logprobs(logits, r.completion_ids.to(device), r.prompt_len, temperature)


def reward_columns(r: Rollouts, convention: str, no_answer_block: str = "whole_text",
                   unnamed_image: str = "answer") -> dict[str, list]:
    """The per-completion columns the reward functions read (with the `rl` reading rules)."""
    n = len(r.samples)
    return {
        "no_answer_block": [no_answer_block] * n,
        "unnamed_image": [unnamed_image] * n,
        "answer": [s.answer for s in r.samples],
        "answer_image": [s.answer_image for s in r.samples],
        "image_sizes": r.image_sizes,
        "convention": [convention] * len(r.samples),
        "task": [s.task for s in r.samples],
    }
