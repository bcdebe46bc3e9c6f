"""Contact sheets of MIG-Synth samples: each sample's images side by side (the pixels the model
sees, enlarged), the ground-truth box drawn in green on the answer image, and the question and
target text under them.

    python -m mig_data.synth.preview task=region n=8            # -> docs/synth_region.png
    python -m mig_data.synth.preview task=all n=8               # every task
    python -m mig_data.synth.preview task=diff seed=3 split=eval scale=3 out=/tmp/diff.png clutter=0.3

Keys: task, n, seed, split, scale, out, plus any `data.synth` field (image_size=..., clutter=...).
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path
from typing import Optional

from omegaconf import OmegaConf
from PIL import Image, ImageDraw, ImageFont

from mig_data.synth.generate import sample_rng
from mig_data.synth.items import SynthItem
from mig_data.synth.scene import render
from mig_data.synth.tasks import TASK_GENERATORS
from mig_lab.boxes import qwen2_box
from mig_lab.config import ConfigError, SynthConfig

GAP, LABEL_H, LINE_H, PAD = 8, 16, 15, 10
GT_COLOR = (0, 230, 60)
ASK_COLOR = (255, 200, 0)


def _font(size: int = 12) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)  # type: ignore[return-value]
    except TypeError:  # Pillow < 10.1: a fixed bitmap font
        return ImageFont.load_default()  # type: ignore[return-value]


def target_text(item: SynthItem) -> str:
    if item.answer is None:
        return f"answer: {item.response}"
    where = f"Image-{(item.answer_image or 0) + 1}"
    return f"answer ({where}, green): {qwen2_box(item.answer)}   target: {item.meta.get('target')}"


def sample_row(item: SynthItem, size: int, scale: int, width: int, font) -> Image.Image:
    """One sample: its images enlarged `scale`x (nearest) with labels, the answer box, the text."""
    images = [render(s, size) for s in item.scenes]
    big = [im.resize((im.width * scale, im.height * scale), Image.NEAREST) for im in images]
    text = [f"Q: {item.question.strip()}", target_text(item)]
    lines = [ln for t in text for ln in textwrap.wrap(t, width=max(40, width // 7))]
    height = LABEL_H + max(b.height for b in big) + PAD + LINE_H * len(lines) + PAD
    row = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(row)
    x = PAD
    for k, (im, b) in enumerate(zip(images, big)):
        row.paste(b, (x, LABEL_H))
        is_answer = item.answer is not None and k == item.answer_image
        draw.text((x, 1), f"Image-{k + 1}" + (" (answer)" if is_answer else ""), fill=(0, 0, 0), font=font)
        if is_answer:
            x1, y1, x2, y2 = item.answer  # type: ignore[misc]
            sx, sy = (im.width - 1) * scale, (im.height - 1) * scale
            draw.rectangle([x + x1 * sx, LABEL_H + y1 * sy, x + x2 * sx + scale - 1, LABEL_H + y2 * sy + scale - 1],
                           outline=GT_COLOR, width=max(2, scale))
        x += b.width + GAP
    y = LABEL_H + max(b.height for b in big) + PAD
    for ln in lines:
        draw.text((PAD, y), ln, fill=(0, 0, 0), font=font)
        y += LINE_H
    return row


def contact_sheet(task: str, cfg, n: int = 8, seed: int = 0, split: str = "train", scale: int = 2) -> Image.Image:
    if task not in TASK_GENERATORS:
        raise ConfigError(f"preview: unknown task {task!r}; MIG-Synth generates {sorted(TASK_GENERATORS)}")
    items = [TASK_GENERATORS[task](sample_rng(seed, split, task, i), cfg) for i in range(n)]
    font = _font()
    widest = max(sum(render(s, cfg.image_size).width * scale + GAP for s in it.scenes) for it in items)
    width = max(720, PAD * 2 + widest)
    rows = [sample_row(it, cfg.image_size, scale, width, font) for it in items]
    title_h = 24
    sheet = Image.new("RGB", (width, title_h + sum(r.height for r in rows) + GAP * len(rows)), (235, 235, 235))
    ImageDraw.Draw(sheet).text((PAD, 5), f"MIG-Synth {task}: {n} samples ({split}, seed {seed}, "
                               f"{cfg.image_size} px shown at {scale}x)", fill=(0, 0, 0), font=_font(14))
    y = title_h
    for r in rows:
        sheet.paste(r, (0, y))
        y += r.height + GAP
    return sheet


def parse_args(argv: list[str]) -> tuple[dict, object]:
    """`key=value` arguments: the preview's own keys, and data.synth fields for the rest."""
    own = {"task": "all", "n": 8, "seed": 0, "split": "train", "scale": 2, "out": None}
    synth: list[str] = []
    for arg in argv:
        if "=" not in arg:
            raise ConfigError(f"preview: expected key=value arguments, got {arg!r}")
        key, value = arg.split("=", 1)
        if key in own:
            own[key] = value if key in ("task", "split", "out") else int(value)
        else:
            synth.append(arg)
    base = OmegaConf.structured(SynthConfig)
    try:
        cfg = OmegaConf.merge(base, OmegaConf.from_dotlist(synth))
    except Exception as e:  # an unknown or mistyped key
        raise ConfigError(f"preview: bad data.synth override in {synth}: {e}") from None
    return own, cfg


def main(argv: Optional[list[str]] = None) -> list[Path]:
    own, cfg = parse_args(sys.argv[1:] if argv is None else argv)
    tasks = sorted(TASK_GENERATORS) if own["task"] == "all" else [own["task"]]
    written = []
    for task in tasks:
        out = Path(own["out"] if own["out"] and len(tasks) == 1 else f"docs/synth_{task}.png")
        out.parent.mkdir(parents=True, exist_ok=True)
        contact_sheet(task, cfg, own["n"], own["seed"], own["split"], own["scale"]).save(out, optimize=True)
        print(f"wrote {out}")
        written.append(out)
    return written


if __name__ == "__main__":
    main()
