"""Box galleries: for the first `eval.gallery_per_task` samples of each task, one PNG with the
sample's images side by side (scaled to one height), the ground-truth box in green on the image it
belongs to and the predicted box in red on the image the prediction's coordinates refer to, with
the task, IoU and response printed underneath."""

from __future__ import annotations

import textwrap
from collections import defaultdict
from pathlib import Path
from typing import Sequence

from PIL import Image, ImageDraw, ImageFont

from mig_data.collate import load_image
from mig_data.schema import Sample

GT_COLOR = (0, 200, 0)
PRED_COLOR = (230, 0, 0)


def _draw_box(draw: ImageDraw.ImageDraw, box: Sequence[float], x0: int, w: int, h: int, color, width: int) -> None:
    x1, y1, x2, y2 = box
    # clamp and order only for drawing (scoring never reorders corners)
    xa, xb = sorted((min(max(x1, 0.0), 1.0), min(max(x2, 0.0), 1.0)))
    ya, yb = sorted((min(max(y1, 0.0), 1.0), min(max(y2, 0.0), 1.0)))
    draw.rectangle([x0 + xa * (w - 1), ya * (h - 1), x0 + xb * (w - 1), yb * (h - 1)], outline=color, width=width)


def render(sample: Sample, pred: dict, height: int = 224, gap: int = 6) -> Image.Image:
    """The gallery image of one sample and its prediction."""
    ims = [load_image(p, sample.id) for p in sample.images]
    scaled = [im.resize((max(1, round(im.width * height / im.height)), height)) for im in ims]
    width = sum(im.width for im in scaled) + gap * (len(scaled) - 1)
    font = ImageFont.load_default()
    caption = (f"{sample.task} | {sample.id} | IoU {pred.get('iou', 0.0):.2f} | "
               f"green = ground truth (image {(sample.answer_image or 0) + 1}), red = prediction"
               + (f" (image {pred['box_image'] + 1})" if pred.get("box") and pred.get("box_image") is not None else ""))
    lines = textwrap.wrap(caption, max(20, width // 6)) + textwrap.wrap(
        "response: " + " ".join(str(pred.get("response", "")).split())[:400], max(20, width // 6))
    canvas = Image.new("RGB", (max(width, 240), height + 14 * len(lines) + 8), "white")
    draw = ImageDraw.Draw(canvas)
    offsets, x = [], 0
    for im in scaled:
        canvas.paste(im, (x, 0))
        offsets.append(x)
        x += im.width + gap
    line_w = max(2, height // 100)
    if sample.answer is not None:
        k = sample.answer_image or 0
        _draw_box(draw, sample.answer, offsets[k], scaled[k].width, height, GT_COLOR, line_w)
    k = pred.get("box_image")
    if pred.get("box") is not None and k is not None and 0 <= k < len(scaled):
        _draw_box(draw, pred["box"], offsets[k], scaled[k].width, height, PRED_COLOR, line_w)
    for i, line in enumerate(lines):
        draw.text((4, height + 4 + 14 * i), line, fill=(0, 0, 0), font=font)
    return canvas


def write_gallery(samples: Sequence[Sample], preds: Sequence[dict], out_dir: Path, per_task: int,
                  height: int = 224) -> list[tuple[str, Path, str]]:
    """Write `<out_dir>/<task>_<k>.png` for the first `per_task` samples of each task.
    Returns (task, path, caption) for each image written."""
    if per_task <= 0:
        return []
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    seen: dict[str, int] = defaultdict(int)
    written = []
    for s, p in zip(samples, preds):
        k = seen[s.task]
        if k >= per_task:
            continue
        seen[s.task] += 1
        path = out_dir / f"{s.task}_{k}.png"
        render(s, p, height).save(path)
        written.append((s.task, path, f"{s.id}: IoU {p.get('iou', 0.0):.2f}"))
    return written

