"""Processor-aware multi-image batches: prompts, targets in the model family's box syntax, and
labels on assistant tokens only.

Prompts go through the processor's own chat template, so the tiny model and a real Qwen2-VL folder
share this code. Images come first in the user turn, then the question, as MIG-Bench's Qwen2-VL
evaluation builds them.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, NamedTuple, Optional, Sequence

import torch
from PIL import Image, UnidentifiedImageError

from mig_data.schema import DataError, Sample
from mig_lab.boxes import ImageHW, codec_for, resized_hw

IGNORE_INDEX = -100

# The instruction appended to questions with need_format (Migician's evaluation prompt for Qwen2-VL).
FORMAT_PROMPTS = {
    "qwen2_vl": " Format:<|box_start|>(x1,y1),(x2,y2)<|box_end|>. Don't generate additional words.",
    "qwen2_5_vl": ' Format:{"bbox_2d": [x1, y1, x2, y2]} in pixels. Don\'t generate additional words.',
}


def load_image(path: str, sample_id: str = "?") -> Image.Image:
    """Open an image as RGB, or fail naming the file and the sample."""
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except FileNotFoundError:
        raise DataError(f"sample {sample_id}: image not found: {path}") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise DataError(f"sample {sample_id}: image {path} is unreadable or corrupt ({e})") from None


def image_hws(images: Sequence[Image.Image], processor: Any) -> list[ImageHW]:
    """The (height, width) each image has after the processor's resize (each image on its own)."""
    ip = processor.image_processor
    size = ip.size
    lo, hi = size["shortest_edge"], size["longest_edge"]
    return [resized_hw(im.width, im.height, lo, hi, ip.patch_size, ip.merge_size) for im in images]


def user_text(sample: Sample, family: str, question: Optional[str] = None) -> str:
    text = sample.question if question is None else question
    return text + (FORMAT_PROMPTS[family] if sample.need_format else "")


def prompt_messages(sample: Sample, family: str, question: Optional[str] = None, n_images: Optional[int] = None,
                    system_prompt: Optional[str] = None) -> list[dict]:
    n = len(sample.images) if n_images is None else n_images
    content = [{"type": "image"} for _ in range(n)]
    content.append({"type": "text", "text": user_text(sample, family, question)})
    msgs = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return msgs + [{"role": "user", "content": content}]


def target_text(sample: Sample, family: str, hws: Sequence[ImageHW]) -> str:
    """The assistant's answer in the family's box syntax (per-image sizes for absolute families)."""
    codec = codec_for(family)
    default = sample.answer_image or 0
    if sample.response is not None:
        return codec.transcode(sample.response, hws, default_image=default)
    if sample.answer is None:
        raise DataError(f"sample {sample.id}: nothing to train on (no answer box, no response)")
    return codec.encode(tuple(sample.answer), hws[default])  # type: ignore[arg-type]


def turn_content(text: str, image_offsets: Sequence[int], family: str, hws: Sequence[ImageHW],
                 default_image: int = 0) -> list[dict]:
    """A user turn's content parts: its text with an image part at each kept offset (where the
    `<image>` tags were), boxes in the text rewritten in the family's syntax."""
    codec = codec_for(family)

    def text_part(piece: str) -> dict:
        return {"type": "text", "text": codec.transcode(piece, hws, default_image=default_image)}

    parts, last = [], 0
    for off in image_offsets:
        if off > last:
            parts.append(text_part(text[last:off]))
        parts.append({"type": "image"})
        last = off
    if last < len(text):
        parts.append(text_part(text[last:]))
    return parts


def conversation_messages(sample: Sample, family: str, hws: Sequence[ImageHW], system_prompt: Optional[str] = None,
                          final_answer: bool = True) -> list[dict]:
    """Chat messages of a multi-turn sample (`sample.turns`, e.g. ShareGPT / MGrounding): every turn
    in order, images where their tags were, boxes in the family's syntax. With `need_format` the
    family's format instruction ends the last user turn. `final_answer=False` leaves the last
    assistant turn out (a generation prompt)."""
    turns = sample.turns if final_answer else sample.turns[:-1]
    last_user = max(i for i, t in enumerate(turns) if t["role"] == "user")
    default = sample.answer_image or 0
    msgs = [{"role": "system", "content": system_prompt}] if system_prompt and turns[0]["role"] != "system" else []
    for i, t in enumerate(turns):
        if t["role"] == "user":
            text = t["content"] + (FORMAT_PROMPTS[family] if sample.need_format and i == last_user else "")
            msgs.append({"role": "user", "content": turn_content(text, t["image_offsets"], family, hws, default)})
        elif t["role"] == "assistant":
            msgs.append({"role": "assistant", "content": codec_for(family).transcode(t["content"], hws, default)})
        else:
            msgs.append({"role": t["role"], "content": t["content"]})
    return msgs


@lru_cache(maxsize=8)
def _assistant_header(tokenizer: Any) -> tuple[tuple[int, ...], int]:
    header = tuple(tokenizer("<|im_start|>assistant\n", add_special_tokens=False)["input_ids"])
    return header, tokenizer.convert_tokens_to_ids("<|im_end|>")


def assistant_labels(input_ids: torch.Tensor, tokenizer: Any) -> torch.Tensor:
    """Labels equal to input_ids on assistant replies (through their <|im_end|>), IGNORE elsewhere."""
    header, im_end = _assistant_header(tokenizer)
    labels = torch.full_like(input_ids, IGNORE_INDEX)
    h = len(header)
    for row in range(input_ids.shape[0]):
        ids = input_ids[row].tolist()
        i = 0
        while i <= len(ids) - h:
            if tuple(ids[i:i + h]) == header:
                start = i + h
                end = start
                while end < len(ids) and ids[end] != im_end:
                    end += 1
                end = min(end + 1, len(ids))  # include <|im_end|>: the model must learn to stop
                labels[row, start:end] = input_ids[row, start:end]
                i = end
            else:
                i += 1
    return labels


class SFTCollator:
    """Samples -> a training batch (right padding, labels on assistant tokens only)."""

    def __init__(self, processor: Any, family: str, max_seq_len: int, system_prompt: Optional[str] = None):
        self.processor = processor
        self.family = family
        self.max_seq_len = max_seq_len
        self.system_prompt = system_prompt

    def __call__(self, samples: list[Sample]) -> dict[str, torch.Tensor]:
        texts, images = [], []
        for s in samples:
            ims = [load_image(p, s.id) for p in s.images]
            hws = image_hws(ims, self.processor)
            if s.turns is not None:  # multi-turn: labels cover every assistant turn
                msgs = conversation_messages(s, self.family, hws, self.system_prompt)
            else:
                msgs = prompt_messages(s, self.family, system_prompt=self.system_prompt)
                msgs.append({"role": "assistant", "content": target_text(s, self.family, hws)})
            texts.append(self.processor.apply_chat_template(msgs, tokenize=False))
            images.append(ims)
        batch = self.processor(text=texts, images=images, padding=True, padding_side="right", return_tensors="pt")
        lengths = batch["attention_mask"].sum(1)
        too_long = [(s.id, int(n)) for s, n in zip(samples, lengths) if n > self.max_seq_len]
        if too_long:
            raise DataError(f"samples longer than train.max_seq_len={self.max_seq_len}: {too_long} "
                            f"(raise train.max_seq_len or lower model.max_pixels)")
        batch["labels"] = assistant_labels(batch["input_ids"], self.processor.tokenizer)
        return dict(batch)


class PromptBatch(NamedTuple):
    """B generation prompts in the two forms the backends take: chat-templated text with its images
    (vLLM), and the processor's left-padded tensors (HF `generate`, and the RL log-prob forwards)."""

    texts: list[str]  # [B] prompts through the processor's chat template, ending with the assistant header
    images: list[list[Image.Image]]  # [B] each prompt's images, in the order of its image placeholders
    hws: list[list[ImageHW]]  # [B] per-image (h, w) after the processor's resize
    tensors: dict[str, torch.Tensor]  # input_ids/attention_mask/mm_token_type_ids [B, P]; pixel_values; image_grid_thw


def generation_prompts(processor: Any, family: str, samples: list[Sample], questions: Optional[list[str]] = None,
                       image_subsets: Optional[list[list[int]]] = None, system_prompt: Optional[str] = None
                       ) -> PromptBatch:
    """Samples -> generation prompts (texts, images, sizes, left-padded tensors).

    `questions` replaces the sample questions (CoT step prompts); `image_subsets` picks which of a
    sample's images to show (polling shows one at a time).
    """
    texts, images, hws_all = [], [], []
    for k, s in enumerate(samples):
        idx = image_subsets[k] if image_subsets else list(range(len(s.images)))
        ims = [load_image(s.images[i], s.id) for i in idx]
        hws_all.append(image_hws(ims, processor))
        q = questions[k] if questions else None
        # multi-turn samples asked their own question with all their images: the turns before the answer
        if s.turns is not None and q in (None, s.question) and idx == list(range(len(s.images))):
            msgs = conversation_messages(s, family, hws_all[-1], system_prompt, final_answer=False)
        else:
            msgs = prompt_messages(s, family, question=q, n_images=len(ims), system_prompt=system_prompt)
        texts.append(processor.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True))
        images.append(ims)
    batch = processor(text=texts, images=images, padding=True, padding_side="left", return_tensors="pt")
    return PromptBatch(texts, images, hws_all, dict(batch))

