"""Box text, the one place boxes are read and written: parsing and IoU (the one scorer: evaluation
metrics and RL rewards both call it, so training and evaluation can never disagree), the 0-1000 grid,
absolute pixels of the resized image, and each model family's box codec.

Default semantics are those of Migician's published MIG-Bench scorer (`eval/utils.py`):
  * the first box found in the response counts, trying box syntaxes in a fixed order
    (integer pairs `(x1,y1),(x2,y2)`, then float lists `[a, b, c, d]`, float pairs, float 4-tuples,
    integer lists `[a, b, c, d]`, then `<box>a b c d</box>`);
  * with exactly one match, coordinate values >= 1 are divided by 1000 (Qwen2-VL's 0-1000 space);
    with several matches the published code divides values > 1 (a value of exactly 1 stays 1.0).
    We keep that quirk so scores match the published ones to the last digit;
  * a response with no box scores IoU 0; swapped corners score IoU 0 (no reordering);
  * IoU >= 0.5 counts as correct.
The Qwen2.5-VL convention reads absolute pixel coordinates of the image the box belongs to, as the
model saw it after its own resize, and maps them back to [0, 1] per image. The box's image is the
one named most recently before the box (`Image-N` or a MIRG `<bbox_id>[N-M]</bbox_id>`, as the box
codec writes them), else the first image named anywhere, else the caller's default (the target image).

Responses are read inside the last `<answer>...</answer>` block when there is one (R1-style
reasoning output), else whole; a MIRG answer that names only a `<bbox_id>[N-M]</bbox_id>` is read as
that id's definition in the think part (`resolve_bbox_id`). Checked against the published
`extract_bbox` + `calculate_iou` (side by side on 192,275 random responses mixing every syntax,
several boxes, floats, values over 1000 and garbage: 0 IoU differences); `tests/mig_lab/test_boxes.py` pins
each rule on hand-made responses.

Box codecs per model family: how a normalised box is written in a model's text, and read back.
* Qwen2-VL: `<|box_start|>(x1,y1),(x2,y2)<|box_end|>`, integers in 0-1000 (relative to the image).
* Qwen2.5-VL: absolute pixel coordinates of the image *as the model saw it after its resize*,
  written as JSON `{"bbox_2d": [x1, y1, x2, y2]}`. Each image in a sample has its own resize, so a
  box is mapped with the size of the image it belongs to, never via image 0.
Stored data (MIG-Synth, MGrounding, trajectories) is canonical Qwen2-VL text; `transcode` rewrites
it for the sample's family at collate time.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Optional, Sequence

from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

Box = tuple[float, float, float, float]  # x1, y1, x2, y2
ImageHW = tuple[int, int]  # (height, width) after the processor's resize

# Numbers in model output are bounded: at most 9 digits before the point (a coordinate, image or object
# number of 10^9 or more is no box, not an overflow; `int()` refuses 4,300+ digits), so parsing any string
# gives finite values or nothing. Every pattern delimits its numbers, so a longer run is not cut short.
NUM_DIGITS = 9
_D = rf"\d{{1,{NUM_DIGITS}}}"
_INT = rf"({_D})"
_FLT = rf"({_D}\.\d+)"
_SIGNED = rf"(-?{_D}(?:\.\d+)?)"
# Migician's cascade, in order: the first syntax with any match wins.
MIGICIAN_PATTERNS: list[re.Pattern] = [
    re.compile(rf"\({_INT},\s*{_INT}\),\s*\({_INT},\s*{_INT}\)"),
    re.compile(rf"\[{_FLT},\s*{_FLT},\s*{_FLT},\s*{_FLT}\]"),
    re.compile(rf"\({_FLT},{_FLT}\),\({_FLT},{_FLT}\)"),
    re.compile(rf"\({_FLT},\s*{_FLT},\s*{_FLT},\s*{_FLT}\)"),
    re.compile(rf"\[{_INT},\s*{_INT},\s*{_INT},\s*{_INT}\]"),
    re.compile(rf"<box>{_INT}\s+{_INT}\s+{_INT}\s+{_INT}</box>"),
]
# Canonical, well-formed answers of each family.
QWEN2_BOX = re.compile(rf"<\|box_start\|>\({_INT},{_INT}\),\({_INT},{_INT}\)<\|box_end\|>")
GRID_JSON_BOX = re.compile(rf"\{{\s*\"bbox_2d\"\s*:\s*\[\s*{_INT}\s*,\s*{_INT}\s*,\s*{_INT}\s*,\s*{_INT}\s*\]\s*\}}")
BBOX_2D = re.compile(rf"\"bbox_2d\"\s*:\s*\[\s*{_SIGNED}\s*,\s*{_SIGNED}\s*,\s*{_SIGNED}\s*,\s*{_SIGNED}\s*\]")
ANSWER_BLOCK = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
THINK_ANSWER = re.compile(r"^\s*<think>.+?</think>\s*<answer>.+?</answer>\s*$", re.DOTALL)
BBOX_ID = re.compile(rf"<bbox_id>\s*\[{_INT}-{_INT}\]\s*</bbox_id>")
IMAGE_REF = re.compile(rf"\b(?:Image|image|Picture|picture)[\s-]?{_INT}\b")
# A MIRG bbox_id definition: the id, its object words (optional) and its box, in either family's syntax.
BBOX_ID_DEFINITION = re.compile(rf"<bbox_id>\s*\[{_INT}-{_INT}\]\s*</bbox_id>\s*"
                                r"(?:<\|object_ref_start\|>[^<]*<\|object_ref_end\|>\s*)?"
                                r"(?:<\|box_start\|>[^<]*<\|box_end\|>|\{\s*\"bbox_2d\"\s*:\s*\[[^\]]*\]\s*\})")


def to_grid(box: Sequence[float]) -> tuple[int, int, int, int]:
    """A [0, 1] box -> Qwen2-VL's 0-1000 integer grid (clipped to the image, rounded)."""
    x1, y1, x2, y2 = (int(round(min(max(float(v), 0.0), 1.0) * 1000)) for v in box)
    return x1, y1, x2, y2


def from_grid(values: Sequence) -> Box:
    """0-1000 grid integers (as written, possibly strings) -> a [0, 1] box."""
    x1, y1, x2, y2 = (int(v) / 1000 for v in values)
    return x1, y1, x2, y2


def grid_pair_text(box: Sequence[float]) -> str:
    """`(x1,y1),(x2,y2)` on the 0-1000 grid: the inside of a Qwen2-VL box."""
    return "({},{}),({},{})".format(*to_grid(box))


def qwen2_box(box: Sequence[float]) -> str:
    """A [0, 1] box as Qwen2-VL writes it: `<|box_start|>(x1,y1),(x2,y2)<|box_end|>` on the 0-1000 grid."""
    return f"<|box_start|>{grid_pair_text(box)}<|box_end|>"


def iou(a: Optional[Sequence[float]], b: Optional[Sequence[float]]) -> float:
    """IoU of two (x1, y1, x2, y2) boxes, as Migician computes it: no reordering of corners,
    no clamping; a missing box, an empty intersection or a zero union give 0."""
    if a is None or b is None or len(a) != 4 or len(b) != 4:
        return 0.0
    x_left, y_top = max(a[0], b[0]), max(a[1], b[1])
    x_right, y_bottom = min(a[2], b[2]), min(a[3], b[3])
    if x_right < x_left or y_bottom < y_top:
        return 0.0
    inter = (x_right - x_left) * (y_bottom - y_top)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def find_raw_boxes(text: str) -> list[list[float]]:
    """All boxes of the first syntax (in Migician's order) that matches, values as written."""
    return [values for _, values in find_raw_boxes_at(text)]


def find_raw_boxes_at(text: str) -> list[tuple[int, list[float]]]:
    """Like `find_raw_boxes`, with each box's start offset in `text`."""
    for pattern in MIGICIAN_PATTERNS:
        matches = list(pattern.finditer(text))
        if matches:
            return [(m.start(), [float(v) for v in m.groups()]) for m in matches]
    return []


def scale_0_1000(raw: list[list[float]]) -> list[Box]:
    """Migician's scaling: one match divides values >= 1 by 1000, several divide values > 1."""
    if len(raw) == 1:
        return [tuple(v / 1000 if v >= 1 else v for v in raw[0])]  # type: ignore[list-item]
    return [tuple(v / 1000 if v > 1 else v for v in box) for box in raw]  # type: ignore[misc]


def answer_text(text: str) -> str:
    """The content of the last `<answer>...</answer>` block, or the whole text when there is none."""
    blocks = ANSWER_BLOCK.findall(text)
    return blocks[-1] if blocks else text


def resolve_bbox_id(text: str, scope: str) -> str:
    """MIRG-RL answers name the target by its `<bbox_id>[N-M]</bbox_id>` alone. When `scope` (the
    answer) holds no box but an id, return the first definition of that id in `text` (the id, its
    object words, its box), so the box is read as if the answer had repeated it, in image N; else
    `scope` unchanged (an answer that writes a box is scored on that box)."""
    if find_raw_boxes_at(scope) or BBOX_2D.search(scope):
        return scope
    m = BBOX_ID.search(scope)
    if m is None:
        return scope
    wanted = (int(m.group(1)), int(m.group(2)))
    for d in BBOX_ID_DEFINITION.finditer(text):
        if (int(d.group(1)), int(d.group(2))) == wanted:
            return d.group(0)
    return scope


def image_index(text: str) -> Optional[int]:
    """0-based image a response points at: a MIRG `<bbox_id>[N-M]</bbox_id>` or an 'Image-N' mention."""
    m = BBOX_ID.search(text)
    if m:
        return int(m.group(1)) - 1
    m = IMAGE_REF.search(text)
    return int(m.group(1)) - 1 if m else None


def image_named_before(text: str, pos: int, start: int = 0) -> Optional[int]:
    """0-based image named most recently in text[start:pos] (`<bbox_id>[N-M]` or `Image-N`), if any."""
    best, best_pos = None, -1
    for pattern in (BBOX_ID, IMAGE_REF):
        for m in pattern.finditer(text, start, pos):
            if m.start() > best_pos:
                best, best_pos = int(m.group(1)) - 1, m.start()
    return best


def box_image(text: str, box_start: Optional[int]) -> Optional[int]:
    """The image a box at `box_start` belongs to: the one named last before it, else the first named."""
    named = image_named_before(text, box_start) if box_start is not None else None
    return named if named is not None else image_index(text)


@dataclass(frozen=True)
class Parsed:
    box: Optional[Box]  # normalised to [0, 1] (None: nothing parsed)
    image: Optional[int]  # 0-based image index the answer names, if any
    well_formed: bool  # the family's canonical syntax, in range, corners ordered


def parse_response(text: str, convention: str = "qwen2_vl",
                   image_sizes: Optional[Sequence[tuple[int, int]]] = None,
                   default_image: int = 0, use_answer_block: bool = True, single_image: bool = False) -> Parsed:
    """Parse the answer box of a response.

    convention: "qwen2_vl" (0-1000 or [0,1] floats, Migician scaling) or "qwen2_5_vl" (absolute
    pixels of the resized image; `image_sizes` are the per-image (height, width) the model saw;
    the box's image is the one the answer names, else `default_image`). `single_image`: the model
    saw one image only, so pixels map through `image_sizes[default_image]` whatever image it names.
    """
    scope = resolve_bbox_id(text, answer_text(text)) if use_answer_block else text
    if convention == "qwen2_5_vl":
        return _parse_qwen25(scope, image_sizes, default_image, single_image)
    if convention != "qwen2_vl":
        raise ValueError(f"unknown box convention {convention!r}; expected 'qwen2_vl' or 'qwen2_5_vl'")
    raw = find_raw_boxes_at(scope)
    if not raw:
        return Parsed(None, image_index(scope), False)
    box = scale_0_1000([values for _, values in raw])[0]
    canonical = QWEN2_BOX.search(scope)
    well = canonical is not None and _ordered_in_range([float(v) for v in canonical.groups()], 1000)
    return Parsed(box, box_image(scope, raw[0][0]), well)


def pixels_to_unit(values: Sequence[float], image_hw: tuple[int, int]) -> Box:
    """Absolute pixels (x1, y1, x2, y2) of an image resized to (h, w) -> normalised [0, 1]."""
    h, w = image_hw
    return (values[0] / w, values[1] / h, values[2] / w, values[3] / h)


def _qwen25_raw(scope: str) -> tuple[Optional[int], Optional[list[float]], bool]:
    """(start, values, is_json) of the answer's box: the first JSON `bbox_2d`, else Migician's cascade."""
    m = BBOX_2D.search(scope)
    if m:
        return m.start(), [float(v) for v in m.groups()], True
    raw = find_raw_boxes_at(scope)
    return (raw[0][0], raw[0][1], False) if raw else (None, None, False)


def _parse_qwen25(scope: str, image_sizes, default_image: int, single_image: bool = False) -> Parsed:
    start, values, is_json = _qwen25_raw(scope)
    if values is None:
        return Parsed(None, image_index(scope), False)
    named = box_image(scope, start)
    if all(v <= 1.0 for v in values) and any(v != int(v) for v in values):
        return Parsed(tuple(values), named, False)  # type: ignore[arg-type]  # already normalised
    img = default_image if single_image or named is None else named
    if not image_sizes or not (0 <= img < len(image_sizes)) or min(image_sizes[img]) <= 0:
        return Parsed(None, named, False)  # no image of that number, or one without a size: no box
    h, w = image_sizes[img]
    well = is_json and 0 <= values[0] <= values[2] <= w and 0 <= values[1] <= values[3] <= h
    return Parsed(pixels_to_unit(values, (h, w)), named, well)


def find_boxes_at(scope: str, convention: str) -> list[tuple[int, list[float]]]:
    """Every box in `scope` with its start offset, values as written: for Qwen2.5-VL the JSON
    `bbox_2d` boxes (else Migician's cascade), for Qwen2-VL the cascade's first matching syntax."""
    if convention == "qwen2_5_vl":
        found = [(m.start(), [float(v) for v in m.groups()]) for m in BBOX_2D.finditer(scope)]
        if found:
            return found
    return find_raw_boxes_at(scope)


def to_unit_box(values: Sequence[float], convention: str, image_hw: Optional[tuple[int, int]] = None,
                n_boxes: int = 1) -> Optional[Box]:
    """One box's values -> [0, 1]: Qwen2-VL by Migician's scaling (`n_boxes` = how many boxes the
    response has, for the multi-match rule), Qwen2.5-VL through its image's resized (h, w)."""
    if convention != "qwen2_5_vl":
        return scale_0_1000([list(values)] * max(n_boxes, 1))[0]
    if all(v <= 1.0 for v in values) and any(v != int(v) for v in values):
        return tuple(values)  # type: ignore[return-value]  # already normalised
    return pixels_to_unit(values, image_hw) if image_hw is not None and min(image_hw) > 0 else None


def _ordered_in_range(v: list[float], hi: float) -> bool:
    return 0 <= v[0] <= v[2] <= hi and 0 <= v[1] <= v[3] <= hi


def is_think_answer(text: str) -> bool:
    """`<think>...</think><answer>...</answer>` and nothing else (the R1-style format)."""
    return THINK_ANSWER.match(text) is not None


def json_box_in_answer(text: str) -> bool:
    """The answer block holds a JSON object (or list of objects) with a 4-number `bbox_2d`."""
    blocks = ANSWER_BLOCK.findall(text)
    if not blocks:
        return False
    body = blocks[-1].strip()
    body = re.sub(r"^```(?:json)?\s*|\s*```$", "", body)
    try:
        obj = json.loads(body)
    except (ValueError, RecursionError):  # not JSON; or an integer of 4,300+ digits; or nested too deep
        return False
    items = obj if isinstance(obj, list) else [obj]
    return bool(items) and all(
        isinstance(it, dict) and isinstance(it.get("bbox_2d"), list) and len(it["bbox_2d"]) == 4
        and all(isinstance(v, (int, float)) for v in it["bbox_2d"]) for it in items
    )


# --- box codecs per model family ---------------------------------------------------------------------


def resized_hw(width: int, height: int, min_pixels: int, max_pixels: int,
               patch_size: int = 14, merge_size: int = 2) -> ImageHW:
    """The (height, width) the Qwen2-VL / Qwen2.5-VL image processor resizes an image to."""
    h, w = smart_resize(height, width, factor=patch_size * merge_size, min_pixels=min_pixels, max_pixels=max_pixels)
    return int(h), int(w)


def _image_before_or(text: str, pos: int, n_images: int, default: int) -> int:
    """The image named most recently before `pos` when it is one of the sample's `n_images`, else `default`."""
    img = image_named_before(text, pos)
    return img if img is not None and 0 <= img < n_images else default


class Qwen2VLBoxCodec:
    family = "qwen2_vl"

    def encode(self, box: Box, image_hw: Optional[ImageHW] = None) -> str:
        return qwen2_box(box)

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
        x1, x2 = (int(round(min(max(v, 0.0), 1.0) * w)) for v in (box[0], box[2]))
        y1, y2 = (int(round(min(max(v, 0.0), 1.0) * h)) for v in (box[1], box[3]))
        return f'{{"bbox_2d": [{x1}, {y1}, {x2}, {y2}]}}'

    def decode(self, text: str, image_hw: Optional[ImageHW] = None) -> Optional[Box]:
        if image_hw is None:
            raise ValueError("Qwen2.5-VL boxes are absolute pixels: decode() needs the image's resized (h, w)")
        return parse_response(text, "qwen2_5_vl", image_sizes=[image_hw], default_image=0,
                              use_answer_block=False).box

    def transcode(self, text: str, image_hws: Sequence[ImageHW], default_image: int = 0) -> str:
        """Rewrite every canonical box in `text` (stored data: Qwen2-VL boxes and `{"bbox_2d": [...]}` JSON,
        both on the 0-1000 grid) as this family's box in absolute pixels, each with the size of its own
        image: the image named most recently before it (`Image-N` or `<bbox_id>[N-M]`), else `default_image`."""
        out, last = [], 0
        for m in sorted([*QWEN2_BOX.finditer(text), *GRID_JSON_BOX.finditer(text)], key=lambda m: m.start()):
            img = _image_before_or(text, m.start(), len(image_hws), default_image)
            out.append(text[last:m.start()])
            out.append(self.encode(from_grid(m.groups()), image_hws[img]))
            last = m.end()
        out.append(text[last:])
        return "".join(out)


def pixel_json_to_grid(text: str, image_hws: Sequence[ImageHW], default_image: int = 0) -> str:
    """The inverse of the Qwen2.5-VL transcode for JSON boxes: every `{"bbox_2d": [...]}` in absolute pixels of
    its own image (the image named most recently before it, else `default_image`) -> the canonical 0-1000 grid,
    so text a Qwen2.5-VL teacher wrote is stored like every other (and transcoded for each student family)."""
    out, last = [], 0
    for m in BBOX_2D.finditer(text):
        img = _image_before_or(text, m.start(), len(image_hws), default_image)
        box = pixels_to_unit([float(v) for v in m.groups()], image_hws[img])
        out += [text[last:m.start()], '"bbox_2d": ' + json.dumps(list(to_grid(box)))]
        last = m.end()
    out.append(text[last:])
    return "".join(out)


CODECS = {"qwen2_vl": Qwen2VLBoxCodec(), "qwen2_5_vl": Qwen25VLBoxCodec()}


def codec_for(family: str):
    try:
        return CODECS[family]
    except KeyError:
        raise ValueError(f"no box codec for model family {family!r}; known: {sorted(CODECS)}") from None
