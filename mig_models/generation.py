"""Generation backends behind one interface (`generation.backend`): evaluation, rejection sampling, CoT
teachers and GRPO rollouts all call `backend.generate(prompts, sampling, n, seeds)`.

- `hf` (transformers `generate`; runs everywhere, the CPU default and the tests): all B prompts x n
  completions in one batched call (left padding, KV cache, each row stops at its own end-of-turn), each
  prompt's images encoded once for its n rows, each row sampled with its own seed (`mig_models.sampling`),
  so completions do not depend on what else shares the batch.
- `vllm` (`mig_models.vllm_backend`, GPUs): an engine colocated with training, weights synced from the
  policy after each optimizer step.

Completions are decoded keeping the grounding special tokens (box and object-ref markers) and dropping
only end-of-turn and padding tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Protocol

import torch
from transformers import GenerationConfig

from mig_models.image_features import PromptImages
from mig_models.prefix import prefill
from mig_models.sampling import SeededSampler

BACKENDS = ("hf", "vllm")
_DROP = ("<|im_end|>", "<|endoftext|>")
# Vision placeholders are never generated: a completion is fed back through the model (RL log-probs,
# multi-turn CoT), where every <|image_pad|> claims image features that do not exist and the forward fails.
_VISION_PLACEHOLDERS = ("<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>")


@dataclass(frozen=True)
class Sampling:
    max_new_tokens: int
    do_sample: bool = False  # False: greedy
    temperature: float = 1.0
    top_p: float = 1.0


class Prompts(Protocol):
    """What a backend reads of a prompt batch (`mig_data.collate.PromptBatch`)."""

    texts: list[str]
    images: list[list[Any]]
    tensors: dict[str, torch.Tensor]


class Backend(Protocol):
    name: str

    def generate(self, prompts: Prompts, sampling: Sampling, n: int = 1, seeds: Optional[list[int]] = None,
                 images: Optional[PromptImages] = None) -> tuple[list[str], torch.Tensor]:
        """B prompts -> (N = B*n texts, completion ids [N, C] right-padded), prompt-major (the n completions
        of prompt 0 first). Sampling needs `seeds` [N], one per completion."""

    def sync_weights(self, model: Any) -> None:
        """Make the backend generate with `model`'s current weights."""


def vision_placeholder_ids(tokenizer: Any) -> list[int]:
    """The ids of the vision placeholder tokens the tokenizer has."""
    ids = [tokenizer.convert_tokens_to_ids(t) for t in _VISION_PLACEHOLDERS]
    return [i for i in ids if i is not None and i != tokenizer.unk_token_id]


def stop_ids(tokenizer: Any) -> set[int]:
    return {tokenizer.convert_tokens_to_ids(t) for t in _DROP}


def decode_completions(tokenizer: Any, ids: torch.Tensor) -> list[str]:
    """Decode generated ids [N, T] to text, stopping at the first end-of-turn token."""
    stop = stop_ids(tokenizer)
    texts = []
    for row in ids.tolist():
        cut = next((i for i, t in enumerate(row) if t in stop), len(row))
        texts.append(tokenizer.decode(row[:cut], skip_special_tokens=False))
    return texts


def prompt_images(tensors: dict[str, torch.Tensor], tokenizer: Any) -> Optional[PromptImages]:
    """The B prompts' images of a processor batch (None for a text-only batch)."""
    if tensors.get("pixel_values") is None:
        return None
    start = tokenizer.convert_tokens_to_ids("<|vision_start|>")
    per_prompt = (tensors["input_ids"] == start).sum(1).tolist()  # [B]
    return PromptImages(tensors["pixel_values"], tensors["image_grid_thw"], per_prompt)


@torch.no_grad()
def hf_generate(model: Any, tokenizer: Any, tensors: dict[str, torch.Tensor], sampling: Sampling, n: int = 1,
                seeds: Optional[list[int]] = None, images: Optional[PromptImages] = None
                ) -> tuple[list[str], torch.Tensor]:
    """transformers `generate` on B left-padded prompts x n completions in one call. `images`: the prompts'
    images (n > 1), to share their features with later forwards (`images.keep`, with a frozen tower)."""
    if sampling.do_sample and (seeds is None or len(seeds) != tensors["input_ids"].shape[0] * n):
        raise ValueError(f"sampling needs one seed per completion ({tensors['input_ids'].shape[0]} prompts x {n}), "
                         f"got {None if seeds is None else len(seeds)}")
    device = next(model.parameters()).device
    images = images if images is not None else prompt_images(tensors, tokenizer)
    prompt_len = tensors["input_ids"].shape[1]
    # a whole GenerationConfig: transformers then skips re-deriving one from the model config on every call
    config = GenerationConfig(max_new_tokens=sampling.max_new_tokens, do_sample=False, temperature=None, top_p=None,
                              top_k=None, suppress_tokens=vision_placeholder_ids(tokenizer))
    kwargs: dict[str, Any] = {"generation_config": config}
    if sampling.do_sample:  # the sampler leaves one finite logit per row: greedy decoding keeps it
        kwargs["logits_processor"] = [SeededSampler(seeds, prompt_len, sampling.temperature, sampling.top_p)]
    if n > 1:  # prefill each prompt once (all but its last token), its KV cache copied to its n rows
        cache, _, _ = prefill(model, tensors, images, n, prompt_len - 1)
        batch = {k: tensors[k].repeat_interleave(n, dim=0).to(device) for k in ("input_ids", "attention_mask")}
        out = model.generate(**batch, past_key_values=cache, **kwargs)
    else:  # one completion per prompt: the processor's batch as it is
        out = model.generate(**{k: v.to(device) for k, v in tensors.items()}, **kwargs)
    completion = out[:, prompt_len:]
    return decode_completions(tokenizer, completion), completion


class HFBackend:
    """transformers `generate` on the training model itself (nothing to sync)."""

    name = "hf"

    def __init__(self, model: Any, tokenizer: Any):
        self.model = model
        self.tokenizer = tokenizer

    def generate(self, prompts: Prompts, sampling: Sampling, n: int = 1, seeds: Optional[list[int]] = None,
                 images: Optional[PromptImages] = None) -> tuple[list[str], torch.Tensor]:
        return hf_generate(self.model, self.tokenizer, prompts.tensors, sampling, n, seeds, images)

    def sync_weights(self, model: Any) -> None:
        self.model = model


def make_backend(cfg: Any, model: Any, processor: Any, model_dir: Optional[str] = None, training: bool = False,
                 rank: int = 0, world_size: int = 1) -> Backend:
    """The backend `cfg.generation.backend` names: transformers `generate` on `model` (hf), or a vLLM engine
    started from `model_dir` (`model` saved to a temporary folder when there is none) in bf16 (vllm)."""
    gcfg = cfg.generation
    if gcfg.backend == "hf":
        return HFBackend(model, processor.tokenizer)
    if gcfg.backend == "vllm":
        from mig_models.vllm_backend import VLLMBackend

        return VLLMBackend(gcfg.vllm, processor, model_dir, model, seed=cfg.seed, max_images=6, dtype="bfloat16",
                           rank=rank, world_size=world_size, training=training)
    raise ValueError(f"generation.backend is {gcfg.backend!r}; expected one of {list(BACKENDS)}")
