"""Rollouts for GRPO: G sampled completions per prompt, and their token log-probs under a model.

All B prompts x G completions are generated in one batched call of the generation backend. Each
completion is sampled with its own seed, derived from (seed, step, sample index, rollout index), so a run
is reproducible, a resumed run samples what the uninterrupted run would have, and a prompt's rollouts do
not depend on which other prompts share its batch (`mig_models.sampling`).

Log-prob forwards keep only the logits of completion positions (`logits_to_keep`) and encode each prompt's
images once for its G rows; with the vision tower frozen, once per batch for every forward
(`mig_models.image_features`).
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Optional

import torch

from mig_data.collate import generation_prompts
from mig_data.schema import Sample
from mig_models.generation import Backend, HFBackend, Sampling, prompt_images, stop_ids
from mig_models.image_features import PromptImages, images_encoded_once, vision_is_frozen
from mig_models.prefix import shared_prefix_logits
from mig_models.sampling import row_seed
from mig_rl.loss import completion_logprobs


def rollout_seeds(seed: int, step: int, sample_indices: list[int], group_size: int) -> list[int]:
    """[B*G] one seed per completion: prompt by prompt, its G rollouts in order."""
    return [row_seed("rollout", seed, step, i, g) for i in sample_indices for g in range(group_size)]


@dataclass
class Rollouts:
    """N = B*G completions, ordered prompt by prompt (the G rollouts of prompt 0 first)."""

    prompts_b: dict[str, torch.Tensor]  # the B prompts as the processor made them (input_ids etc. [B, P])
    group: int  # G completions per prompt
    images: Optional[PromptImages]  # the B prompts' images (encoded once; features kept when the tower is frozen)
    completion_ids: torch.Tensor  # [N, C] (padded after the first end-of-turn token)
    completion_mask: torch.Tensor  # [N, C] 1 up to and including the end-of-turn token
    texts: list[str]  # [N]
    samples: list[Sample]  # [N] the prompt's sample, repeated G times
    image_sizes: list[list[tuple[int, int]]]  # [N] per-image (h, w) the model saw

    @property
    def prompt_len(self) -> int:
        return self.prompts_b["input_ids"].shape[1]

    @property
    def rows(self) -> list[int]:
        """[N] the prompt of each row."""
        return [b for b in range(self.prompts_b["input_ids"].shape[0]) for _ in range(self.group)]

    @property
    def prompt(self) -> dict[str, torch.Tensor]:
        """The N rows' prompts for one plain forward: tokens [N, P], every row's image grids, the B prompts' pixels."""
        return repeat_rows(self.prompts_b, self.group, self.images)[0]


def repeat_rows(tensors: dict[str, torch.Tensor], n: int, images: Optional[PromptImages]
                ) -> tuple[dict[str, torch.Tensor], list[int]]:
    """B prompt rows -> N = B*n rows (prompt-major) for a forward under `images_encoded_once`: token tensors
    repeated, every row's image grids, the B prompts' pixel values once. Returns the batch and row -> prompt."""
    rows = [b for b in range(tensors["input_ids"].shape[0]) for _ in range(n)]
    out = {k: tensors[k][rows] for k in ("input_ids", "attention_mask", "mm_token_type_ids") if k in tensors}
    if images is not None:
        out["image_grid_thw"] = images.grid_for_rows(rows)
        out["pixel_values"] = images.pixel_values
    return out, rows


def completion_mask(ids: torch.Tensor, stop_ids: set[int]) -> torch.Tensor:
    """[N, C] mask of tokens up to and including the first stop token (all tokens if none)."""
    is_stop = torch.isin(ids, torch.tensor(sorted(stop_ids), dtype=ids.dtype))
    after_stop = (is_stop.cumsum(1) - is_stop.long()) > 0  # strictly after the first stop
    return (~after_stop).long()


@torch.no_grad()
def generate_rollouts(model: Any, processor: Any, family: str, samples: list[Sample], indices: list[int],
                      group_size: int, max_new_tokens: int, temperature: float, top_p: float, seed: int,
                      step: int, system_prompt: Optional[str] = None, backend: Optional[Backend] = None
                      ) -> Rollouts:
    """G sampled completions of each of the B `samples` (`indices`: their positions in the dataset, for the
    seeds), in one call of `backend` (default: transformers `generate` on `model`)."""
    tok = processor.tokenizer
    prompts = generation_prompts(processor, family, samples, system_prompt=system_prompt)
    images = prompt_images(prompts.tensors, tok)
    if images is not None:
        images.keep = vision_is_frozen(model)
    backend = backend or HFBackend(model, tok)
    texts, ids = backend.generate(prompts, Sampling(max_new_tokens, True, temperature, top_p), group_size,
                                  rollout_seeds(seed, step, indices, group_size), images=images)
    rows = [b for b in range(len(samples)) for _ in range(group_size)]
    ids = ids.cpu()
    return Rollouts(prompts_b=prompts.tensors, group=group_size, images=images, completion_ids=ids,
                    completion_mask=completion_mask(ids, stop_ids(tok)), texts=texts,
                    samples=[samples[b] for b in rows], image_sizes=[prompts.hws[b] for b in rows])


def sequence_logprobs(model: Any, r: Rollouts, temperature: float = 1.0) -> torch.Tensor:
    """Per-token log-probs [N, C] of the rollouts' completions under `model`: logits of the C completion
    positions only, each prompt's images encoded once for its rows, each prompt run once and its KV cache shared
    by its G rows (with gradient checkpointing, which runs without a cache: one forward of the N rows)."""
    device = next(model.parameters()).device
    if r.group > 1 and not getattr(unwrap(model), "is_gradient_checkpointing", False):
        logits = shared_prefix_logits(model, r.prompts_b, r.images, r.group, r.completion_ids, r.completion_mask)
        return completion_logprobs(logits, r.completion_ids.to(device), temperature)
    p = r.prompt
    ids = torch.cat([p["input_ids"], r.completion_ids], 1).to(device)  # [N, P+C]
    attn = torch.cat([p["attention_mask"], r.completion_mask], 1).to(device)
    mm = torch.cat([p["mm_token_type_ids"], torch.zeros_like(r.completion_ids)], 1).to(device)
    kwargs = {}
    if r.images is not None:
        kwargs = dict(pixel_values=p["pixel_values"].to(device), image_grid_thw=p["image_grid_thw"].to(device))
    n_keep = r.completion_ids.shape[1] + 1  # position P-1 predicts completion token 0
    encoded_once = images_encoded_once(model, r.images, r.rows) if r.images is not None else nullcontext()
    with encoded_once:
        logits = model(input_ids=ids, attention_mask=attn, mm_token_type_ids=mm, logits_to_keep=n_keep,
                       **kwargs).logits  # [N, C+1, V]
    return completion_logprobs(logits, r.completion_ids.to(device), temperature)


def unwrap(model: Any) -> Any:
    """The module under Fabric's wrapper (where `generate`, peft's adapter switches and model flags live)."""
    return model.module if hasattr(model, "module") else model


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
