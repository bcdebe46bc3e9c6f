"""Encode each prompt's images once, for every row that repeats the prompt.

GRPO feeds G completions of one prompt through the model (generation, old/reference/policy log-probs):
the vision tower would encode the same images G times per forward, in every forward. Inside
`images_encoded_once(model, images, rows)` the model's `get_image_features` encodes the B prompts' images
once and hands each of the N rows its prompt's features. With the vision tower frozen (the papers'
setting) the features are also kept across forwards (generation, old, reference and policy passes of one
batch), since they cannot change; with a trainable tower each forward encodes once, with grad.

The encoding happens inside the model's own forward (the call is swapped for the duration of the
`with`), so Fabric's DDP and FSDP wrappers see one ordinary forward: parameters are gathered as usual.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator, Optional

import torch
from transformers.modeling_outputs import BaseModelOutputWithPooling


class PromptImages:
    """The images of B prompts: pixel values, grids, how many images each prompt has, and (with `keep`, for a
    frozen tower) their features once computed."""

    def __init__(self, pixel_values: torch.Tensor, image_grid_thw: torch.Tensor, images_per_prompt: list[int],
                 keep: bool = False):
        self.pixel_values = pixel_values  # [patches of all B prompts' images, D]
        self.grid = image_grid_thw  # [I, 3] one row per image, prompt by prompt
        self.images_per_prompt = images_per_prompt  # [B]
        starts = torch.tensor([0, *images_per_prompt]).cumsum(0).tolist()
        self._first = starts[:-1]  # [B] index of each prompt's first image
        self.keep = keep  # reuse features across forwards: only valid when the tower is frozen and the same in
        # every model they are used with (the policy and its reference copy, or the base under LoRA adapters)
        self.features: Optional[tuple[torch.Tensor, ...]] = None  # I x [tokens_i, H], once computed with `keep`

    def grid_for_rows(self, rows: list[int]) -> torch.Tensor:
        """[images of the N rows, 3]: each row's prompt's image grids, row by row."""
        return self.grid[self.image_index(rows)]

    def image_index(self, rows: list[int]) -> list[int]:
        return [self._first[b] + j for b in rows for j in range(self.images_per_prompt[b])]


def vision_host(model: Any) -> Any:
    """The module whose forward calls `self.get_image_features` (Qwen2-VL's and Qwen2.5-VL's inner `Model`,
    the one holding `visual` as a child), through Fabric, DDP/FSDP and peft wrappers."""
    for m in model.modules():
        if "visual" in m._modules and hasattr(m, "get_image_features"):
            return m
    raise TypeError(f"{type(model).__name__} has no module holding a `visual` tower with get_image_features")


def vision_is_frozen(model: Any) -> bool:
    return not any(p.requires_grad for p in vision_host(model).visual.parameters())


@contextmanager
def images_encoded_once(model: Any, images: PromptImages, rows: list[int]) -> Iterator[None]:
    """While inside, a forward of N rows (row r repeats prompt `rows[r]`) encodes the B prompts' images once
    (and with `images.keep`, reuses the features of an earlier forward). The forward must be given `image_grid_thw=images.grid_for_rows(rows)`
    (M-RoPE positions need every row's grids) and any non-None `pixel_values` (e.g. `images.pixel_values`)."""
    host = vision_host(model)
    encode = host.get_image_features  # the bound method of the class
    expected = len(images.image_index(rows))

    def get_image_features(pixel_values: torch.Tensor, image_grid_thw: Optional[torch.Tensor] = None, **kwargs):
        if image_grid_thw is None or image_grid_thw.shape[0] != expected:
            raise ValueError(f"images_encoded_once: a forward asked for {None if image_grid_thw is None else image_grid_thw.shape[0]} "
                             f"images, expected {expected} (the rows' prompts' images)")
        feats = images.features
        if feats is None:
            feats = encode(images.pixel_values.to(pixel_values.device), images.grid.to(pixel_values.device),
                           **kwargs).pooler_output  # I x [tokens_i, H]
            if images.keep:
                images.features = tuple(f.detach() for f in feats)
        return BaseModelOutputWithPooling(pooler_output=tuple(feats[i] for i in images.image_index(rows)))

    host.get_image_features = get_image_features
    try:
        yield
    finally:
        del host.get_image_features  # the class's method again
