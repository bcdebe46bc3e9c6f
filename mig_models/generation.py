"""Generation backends. `hf` (transformers `generate`) runs everywhere; it is what the CPU default
and the tests use. Completions are decoded keeping the grounding special tokens (box and object-ref
markers) and dropping only end-of-turn and padding tokens.
"""

from __future__ import annotations

from typing import Any, Optional

import torch

_DROP = ("<|im_end|>", "<|endoftext|>")
# Vision placeholders are never generated: a completion is fed back through the model (RL log-probs,
# multi-turn CoT), where every <|image_pad|> claims image features that do not exist and the forward fails.
_VISION_PLACEHOLDERS = ("<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>")


def vision_placeholder_ids(tokenizer: Any) -> list[int]:
    """The ids of the vision placeholder tokens the tokenizer has."""
    ids = [tokenizer.convert_tokens_to_ids(t) for t in _VISION_PLACEHOLDERS]
    return [i for i in ids if i is not None and i != tokenizer.unk_token_id]


def decode_completions(tokenizer: Any, ids: torch.Tensor) -> list[str]:
    """Decode generated ids [N, T] to text, stopping at the first end-of-turn token."""
    stop = {tokenizer.convert_tokens_to_ids(t) for t in _DROP}
    texts = []
    for row in ids.tolist():
        cut = next((i for i, t in enumerate(row) if t in stop), len(row))
        texts.append(tokenizer.decode(row[:cut], skip_special_tokens=False))
    return texts


@torch.no_grad()
def generate(model: Any, tokenizer: Any, batch: dict[str, torch.Tensor], max_new_tokens: int,
             do_sample: bool = False, temperature: float = 1.0, top_p: float = 1.0,
             num_return_sequences: int = 1, seed: Optional[int] = None) -> tuple[list[str], torch.Tensor]:
    """Generate for a left-padded prompt batch. Returns the texts (prompt-major: the
    num_return_sequences completions of prompt 0 first) and the completion ids [N, T] (padded)."""
    kwargs: dict[str, Any] = dict(max_new_tokens=max_new_tokens, do_sample=do_sample,
                                  num_return_sequences=num_return_sequences,
                                  suppress_tokens=vision_placeholder_ids(tokenizer))
    if do_sample:
        kwargs.update(temperature=temperature, top_p=top_p, top_k=0)
    else:
        kwargs.update(temperature=None, top_p=None, top_k=None)
    device = next(model.parameters()).device
    batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
    fork = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=fork, enabled=seed is not None):
        if seed is not None:
            torch.manual_seed(seed)
        out = model.generate(**batch, **kwargs)
    completion = out[:, batch["input_ids"].shape[1]:]
    return decode_completions(tokenizer, completion), completion
