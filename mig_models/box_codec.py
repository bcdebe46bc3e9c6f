"""Box codecs per model family: how a normalised box is written in a model's text, and read back.

* Qwen2-VL: `<|box_start|>(x1,y1),(x2,y2)<|box_end|>`, integers in 0-1000 (relative to the image).
* Qwen2.5-VL: absolute pixel coordinates of the image *as the model saw it after its resize*,
  written as JSON `{"bbox_2d": [x1, y1, x2, y2]}`. Each image in a sample has its own resize, so a
  box is mapped with the size of the image it belongs to, never via image 0.

Stored data (MIG-Synth, MGrounding, trajectories) is canonical Qwen2-VL text; `transcode` rewrites
it for the sample's family at collate time.
"""

from __future__ import annotations

from typing import Optional, Sequence

from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

from mig_eval.boxes import BBOX_ID, IMAGE_REF, QWEN2_BOX, Box, parse_response

ImageHW = tuple[int, int]  # (height, width) after the processor's resize


def resized_hw(width: int, height: int, min_pixels: int, max_pixels: int,
               patch_size: int = 14, merge_size: int = 2) -> ImageHW:
    """The (height, width) the Qwen2-VL / Qwen2.5-VL image processor resizes an image to."""
    h, w = smart_resize(height, width, factor=patch_size * merge_size, min_pixels=min_pixels, max_pixels=max_pixels)
    return int(h), int(w)


def hw_from_grid(image_grid_thw, patch_size: int = 14) -> list[ImageHW]:
    """Per-image (height, width) from the processor's `image_grid_thw` rows (t, h, w in patches)."""
    return [(int(h) * patch_size, int(w) * patch_size) for _, h, w in image_grid_thw.tolist()]


def _clip(v: float, lo: float, hi: float) -> float:
    return min(max(v, lo), hi)


class Qwen2VLBoxCodec:
    family = "qwen2_vl"

    def encode(self, box: Box, image_hw: Optional[ImageHW] = None) -> str:
        x1, y1, x2, y2 = (int(round(_clip(v, 0.0, 1.0) * 1000)) for v in box)
        return f"<|box_start|>({x1},{y1}),({x2},{y2})<|box_end|>"

    def decode(self, text: str, image_hw: Optional[ImageHW] = None) -> Optional[Box]:
        return parse_response(text, "qwen2_vl", use_answer_block=False).box

    def transcode(self, text: str, image_hws: Sequence[ImageHW], default_image: int = 0) -> str:
        return text


class Qwen25VLBoxCodec:
    family = "qwen2_5_vl"

    def encode(self, box: Box, image_hw: Optional[ImageHW] = None) -> str:
        if image_hw is None:
            raise ValueError("Qwen2.5-VL boxes are absolute pixels: encode() needs the image's resized (h, w)")
        h, w = image_hw
        x1, x2 = (int(round(_clip(v, 0.0, 1.0) * w)) for v in (box[0], box[2]))
        y1, y2 = (int(round(_clip(v, 0.0, 1.0) * h)) for v in (box[1], box[3]))
        return f'{{"bbox_2d": [{x1}, {y1}, {x2}, {y2}]}}'

    def decode(self, text: str, image_hw: Optional[ImageHW] = None) -> Optional[Box]:
        if image_hw is None:
            raise ValueError("Qwen2.5-VL boxes are absolute pixels: decode() needs the image's resized (h, w)")
        return parse_response(text, "qwen2_5_vl", image_sizes=[image_hw], default_image=0,
                              use_answer_block=False).box

    def transcode(self, text: str, image_hws: Sequence[ImageHW], default_image: int = 0) -> str:
        """Rewrite every canonical Qwen2-VL box in `text` as this family's box, each with the size
        of its own image: the image named most recently before it (`Image-N` or `<bbox_id>[N-M]`),
        else `default_image`."""
        out, last = [], 0
        for m in QWEN2_BOX.finditer(text):
            img = _last_image_before(text, m.start(), default_image)
            img = img if 0 <= img < len(image_hws) else default_image
            box = tuple(int(v) / 1000 for v in m.groups())
            out.append(text[last:m.start()])
            out.append(self.encode(box, image_hws[img]))  # type: ignore[arg-type]
            last = m.end()
        out.append(text[last:])
        return "".join(out)


def _last_image_before(text: str, pos: int, default: int) -> int:
    best, best_pos = default, -1
    for pattern in (BBOX_ID, IMAGE_REF):
        for m in pattern.finditer(text, 0, pos):
            if m.start() > best_pos:
                best, best_pos = int(m.group(1)) - 1, m.start()
    return best


CODECS = {"qwen2_vl": Qwen2VLBoxCodec(), "qwen2_5_vl": Qwen25VLBoxCodec()}


def codec_for(family: str):
    try:
        return CODECS[family]
    except KeyError:
        raise ValueError(f"no box codec for model family {family!r}; known: {sorted(CODECS)}") from None



