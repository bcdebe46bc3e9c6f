"""MIG-Synth scenes: coloured shapes on a background, with exact boxes.

A scene is a list of objects (shape, colour, box normalised to [0, 1]) plus a background; it
renders deterministically with Pillow. Task generators build several related scenes (a change, a
viewpoint shift, a shared object...) and keep them as the sample's scene graph.
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass, field
from typing import Optional

import numpy as np
from PIL import Image, ImageDraw

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (215, 38, 38),
    "green": (34, 160, 60),
    "blue": (40, 80, 225),
    "yellow": (235, 205, 30),
    "purple": (140, 50, 185),
    "orange": (245, 135, 20),
    "cyan": (30, 200, 215),
    "pink": (245, 120, 185),
}
SHAPES = ("circle", "square", "triangle", "diamond", "star", "cross", "hexagon", "ring")


@dataclass
class Obj:
    shape: str
    color: str
    box: list[float]  # x1, y1, x2, y2 in [0, 1]
    oid: int = 0  # identity across the images of a sample (same object => same oid)

    @property
    def name(self) -> str:
        return f"{self.color} {self.shape}"

    @property
    def area(self) -> float:
        return (self.box[2] - self.box[0]) * (self.box[3] - self.box[1])

    @property
    def center(self) -> tuple[float, float]:
        return ((self.box[0] + self.box[2]) / 2, (self.box[1] + self.box[3]) / 2)


@dataclass
class Scene:
    objects: list[Obj] = field(default_factory=list)
    background: str = "gradient"  # flat | gradient | noise
    tint: tuple[int, int, int] = (128, 128, 128)  # base grey of the background
    clutter: list[list[float]] = field(default_factory=list)  # small grey blobs: x, y, r (normalised)
    marks: list[list[float]] = field(default_factory=list)  # red rectangles drawn on top (visual prompts)
    noise_seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def box_iou(a: list[float], b: list[float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _gap_ok(box: list[float], others: list[list[float]], gap: float) -> bool:
    for o in others:
        if not (box[2] + gap <= o[0] or o[2] + gap <= box[0] or box[3] + gap <= o[1] or o[3] + gap <= box[1]):
            return False
    return True


def place_box(rng: random.Random, others: list[list[float]], min_size: float = 0.2, max_size: float = 0.38,
              gap: float = 0.03, tries: int = 200) -> Optional[list[float]]:
    """A square-ish box that does not touch `others`; None when the image is full."""
    for _ in range(tries):
        w = rng.uniform(min_size, max_size)
        h = w * rng.uniform(0.85, 1.15)
        h = min(h, 0.95)
        x1 = rng.uniform(0.02, 0.98 - w)
        y1 = rng.uniform(0.02, 0.98 - h)
        box = [x1, y1, x1 + w, y1 + h]
        if _gap_ok(box, others, gap):
            return box
    return None


def _polygon(shape: str, x1: float, y1: float, x2: float, y2: float) -> list[tuple[float, float]]:
    cx, cy, rx, ry = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) / 2, (y2 - y1) / 2
    if shape == "square":
        return [(x1, y1), (x2, y1), (x2, y2), (x1, y2)]
    if shape == "triangle":
        return [(cx, y1), (x2, y2), (x1, y2)]
    if shape == "diamond":
        return [(cx, y1), (x2, cy), (cx, y2), (x1, cy)]
    if shape == "hexagon":
        return [(x1 + rx / 2, y1), (x2 - rx / 2, y1), (x2, cy), (x2 - rx / 2, y2), (x1 + rx / 2, y2), (x1, cy)]
    if shape == "star":
        pts = []
        for k in range(10):
            ang = -math.pi / 2 + k * math.pi / 5
            r = 1.0 if k % 2 == 0 else 0.45
            pts.append((cx + r * rx * math.cos(ang), cy + r * ry * math.sin(ang)))
        # stretch so the star touches its box on every side
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        sx, sy = (x2 - x1) / (max(xs) - min(xs)), (y2 - y1) / (max(ys) - min(ys))
        return [(x1 + (px - min(xs)) * sx, y1 + (py - min(ys)) * sy) for px, py in pts]
    if shape == "cross":
        tx, ty = rx * 0.38, ry * 0.38
        return [(cx - tx, y1), (cx + tx, y1), (cx + tx, cy - ty), (x2, cy - ty), (x2, cy + ty), (cx + tx, cy + ty),
                (cx + tx, y2), (cx - tx, y2), (cx - tx, cy + ty), (x1, cy + ty), (x1, cy - ty), (cx - tx, cy - ty)]
    raise ValueError(f"unknown shape {shape!r}")


def draw_object(draw: ImageDraw.ImageDraw, obj: Obj, size: int) -> None:
    x1, y1, x2, y2 = (v * (size - 1) for v in obj.box)
    fill = COLORS[obj.color]
    if obj.shape == "circle":
        draw.ellipse([x1, y1, x2, y2], fill=fill)
    elif obj.shape == "ring":
        width = max(2, int(round(min(x2 - x1, y2 - y1) * 0.22)))
        draw.ellipse([x1, y1, x2, y2], outline=fill, width=width)
    else:
        draw.polygon(_polygon(obj.shape, x1, y1, x2, y2), fill=fill)


def _background(scene: Scene, size: int) -> Image.Image:
    r0, g0, b0 = scene.tint
    if scene.background == "flat":
        return Image.new("RGB", (size, size), (r0, g0, b0))
    # A faint position cue: red rises with x and green with y (about 60 levels across the image).
    ramp = np.round(np.linspace(-30, 30, size)).astype(np.int16)
    arr = np.empty((size, size, 3), dtype=np.int16)
    arr[..., 0] = r0 + ramp[None, :]
    arr[..., 1] = g0 + ramp[:, None]
    arr[..., 2] = b0
    if scene.background == "noise":
        arr += np.random.default_rng(scene.noise_seed).integers(-6, 7, size=(size, size, 1), dtype=np.int16)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


def render(scene: Scene, size: int) -> Image.Image:
    img = _background(scene, size)
    draw = ImageDraw.Draw(img)
    for x, y, r in scene.clutter:
        cx, cy, rr = x * (size - 1), y * (size - 1), r * size
        draw.ellipse([cx - rr, cy - rr, cx + rr, cy + rr], fill=tuple(min(255, c + 25) for c in scene.tint))
    for obj in scene.objects:
        draw_object(draw, obj, size)
    for box in scene.marks:
        x1, y1, x2, y2 = (v * (size - 1) for v in box)
        draw.rectangle([x1, y1, x2, y2], outline=(255, 0, 0), width=max(1, size // 56))
    return img


def random_scene_background(rng: random.Random, background: str, clutter: float) -> Scene:
    tint = tuple(rng.randint(115, 140) for _ in range(3))
    blobs = [[rng.random(), rng.random(), rng.uniform(0.02, 0.05)] for _ in range(int(round(clutter * 10)))]
    return Scene(objects=[], background=background, tint=tint, clutter=blobs, noise_seed=rng.randint(0, 2**31))  # type: ignore[arg-type]
