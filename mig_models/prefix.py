"""Run each prompt once for its n rows: a shared-prefix KV cache (inference passes only).

GRPO's rows are B prompts x G completions. The prompt (images and question, often most of a row's tokens)
is the same for the G rows of a prompt, so generation's prefill and every log-prob pass (policy, reference,
old policy) run the B prompts once, copy each prompt's KV cache to its G rows, and run only the completion
tokens on top. With grad, the copies' gradients sum back into the one prompt pass (the same gradients as
G separate prompt passes).

Qwen2-VL keeps the M-RoPE offset of each row (`rope_deltas`: where text positions resume after the images)
on its inner model between a prefill and the decode steps; a text token after the prompt sits at
(attention-mask position) + delta on all three axes. The prefill sets it for the B prompts; it is repeated
here for the N rows.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any, Optional

import torch

from mig_models.image_features import PromptImages, images_encoded_once, vision_host


def prefill(model: Any, tensors: dict[str, torch.Tensor], images: Optional[PromptImages], n: int, length: int
            ) -> tuple[Any, torch.Tensor, torch.Tensor]:
    """Run the first `length` tokens of the B left-padded prompts once; return the KV cache repeated for the
    N = B*n rows (prompt-major), the rows' M-RoPE deltas [N, 1] (also set on the model for `generate`), and
    the logits [N, V] at the last prefilled position."""
    b = tensors["input_ids"].shape[0]
    device = next(model.parameters()).device
    kwargs = {k: tensors[k][:, :length].to(device) for k in ("input_ids", "attention_mask", "mm_token_type_ids")}
    encoded = nullcontext()
    if images is not None:
        kwargs.update(pixel_values=images.pixel_values.to(device), image_grid_thw=images.grid.to(device))
        encoded = images_encoded_once(model, images, list(range(b)))
    host = vision_host(model)
    host.rope_deltas = None  # computed afresh for these prompts
    with encoded:
        out = model(**kwargs, use_cache=True, logits_to_keep=1)
    cache = out.past_key_values
    cache.batch_repeat_interleave(n)
    host.rope_deltas = host.rope_deltas.repeat_interleave(n, dim=0)  # [N, 1]
    return cache, host.rope_deltas, out.logits[:, -1].repeat_interleave(n, dim=0)


def shared_prefix_logits(model: Any, tensors: dict[str, torch.Tensor], images: Optional[PromptImages], n: int,
                         completion_ids: torch.Tensor, completion_mask: torch.Tensor) -> torch.Tensor:
    """Logits [N, C+1, V] of the last prompt position and the C completion positions (as a full forward with
    `logits_to_keep=C+1`), the B prompts run once. tensors: the B prompts [B, P]; completion ids, mask: [N, C]."""
    device = next(model.parameters()).device
    p = tensors["input_ids"].shape[1]
    cache, deltas, first = prefill(model, tensors, images, n, p)  # first: [N, V] predicts completion token 0
    mask = torch.cat([tensors["attention_mask"].repeat_interleave(n, dim=0), completion_mask], 1).to(device)  # [N, P+C]
    positions = (mask.long().cumsum(-1) - 1)[:, p:] + deltas.to(device)  # [N, C] text positions after the prompt
    out = model(input_ids=completion_ids.to(device), attention_mask=mask, position_ids=positions,
                past_key_values=cache, use_cache=True)
    return torch.cat([first[:, None], out.logits], 1)  # [N, C+1, V]
