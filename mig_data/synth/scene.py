"""MIG-Synth scenes: coloured shapes on a background, with exact boxes.

A scene is a list of objects (shape, colour, box normalised to [0, 1]) plus a background; it
renders deterministically with Pillow. Task generators build several related scenes (a change, a
viewpoint shift, a shared object...) and keep them as the sample's scene graph.

Every scene is described in its own image's coordinates: `view_scene` maps a world scene through a
similarity view (zoom, small rotation, shift; objects rotate with it and their boxes stay tight),
and `crop_scene` describes a window of a source image, which `render` re-creates by rendering the
source and cutting the window's pixels out (a region picture is pixel-identical to its source area).
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass, field
from typing import Optional

import numpy as np
from PIL import Image, ImageDraw

from mig_data.synth.geometry import (
    View,
    box_frame,
    crop_box,
    crop_point,
    outline,
    shape_polygon,
    tight_box,
    uncrop_box,
    uncrop_point,
)

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
    box: list[float]  # x1, y1, x2, y2: tight box of what is drawn, normalised (beyond [0, 1] if cut off)
    oid: int = 0  # identity across the images of a sample (same object => same oid)
    angle: float = 0.0  # rotation in degrees about the frame centre (clockwise on screen)
    frame: Optional[list[float]] = None  # rotated objects: [cx, cy, rx, ry] of the unrotated shape

    def get_frame(self) -> tuple[float, float, float, float]:
        return tuple(self.frame) if self.frame is not None else box_frame(self.box)  # type: ignore[return-value]

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
    background: str = "gradient"  # flat | gradient | noise | position (the gradient over objects too)
    tint: tuple[int, int, int] = (128, 128, 128)  # base grey of the background
    clutter: list[list[float]] = field(default_factory=list)  # small grey blobs: x, y, r (normalised)
    marks: list[list[float]] = field(default_factory=list)  # red rectangles drawn on top (visual prompts)
    noise_seed: int = 0
    view: Optional[list[float]] = None  # [scale, angle, tx, ty]: the View of a world this image shows
    crop: Optional[list[float]] = None  # window of a source image this image is cut from (normalised)

    def to_dict(self) -> dict:
        return asdict(self)

    def find(self, oid: int) -> Optional[Obj]:
        return next((o for o in self.objects if o.oid == oid), None)


def posed_obj(shape: str, color: str, frame: tuple[float, float, float, float], angle: float, oid: int) -> Obj:
    """An object from its frame and rotation; `box` is its exact tight box."""
    if angle == 0:
        return Obj(shape=shape, color=color, box=tight_box(shape, frame, 0.0), oid=oid)
    return Obj(shape=shape, color=color, box=tight_box(shape, frame, angle), oid=oid, angle=angle, frame=list(frame))


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


def draw_object(draw: ImageDraw.ImageDraw, obj: Obj, size: int) -> None:
    if obj.angle != 0:
        _draw_rotated(draw, obj, size)
        return
    x1, y1, x2, y2 = (v * (size - 1) for v in obj.box)
    fill = COLORS[obj.color]
    if obj.shape == "circle":
        draw.ellipse([x1, y1, x2, y2], fill=fill)
    elif obj.shape == "ring":
        width = max(2, int(round(min(x2 - x1, y2 - y1) * 0.22)))
        draw.ellipse([x1, y1, x2, y2], outline=fill, width=width)
    else:
        draw.polygon(shape_polygon(obj.shape, x1, y1, x2, y2), fill=fill)


def _draw_rotated(draw: ImageDraw.ImageDraw, obj: Obj, size: int) -> None:
    """A rotated shape as a polygon (ellipses as 64-gons); a ring as the 64 quads between its
    outer and inner outlines, so the hole stays unpainted."""
    s = size - 1
    fill = COLORS[obj.color]
    cx, cy, rx, ry = obj.get_frame()
    outer = [(x * s, y * s) for x, y in outline(obj.shape, (cx, cy, rx, ry), obj.angle)]
    if obj.shape != "ring":
        draw.polygon(outer, fill=fill)
        return
    width = max(2, int(round(min(rx, ry) * 2 * s * 0.22))) / s  # as the unrotated ring's stroke
    inner = [(x * s, y * s) for x, y in outline("circle", (cx, cy, rx - width, ry - width), obj.angle)]
    for k in range(len(outer)):
        j = (k + 1) % len(outer)
        draw.polygon([outer[k], outer[j], inner[j], inner[k]], fill=fill)


def position_ramp(size: int) -> np.ndarray:
    """The faint position cue: about 60 levels across the image (red rises with x, green with y)."""
    return np.round(np.linspace(-30, 30, size)).astype(np.int16)


def add_position_tint(img: Image.Image) -> Image.Image:
    """Add the position ramp to every pixel (objects included): red + x, green + y."""
    size = img.width
    ramp = position_ramp(size)
    arr = np.asarray(img, dtype=np.int16).copy()
    arr[..., 0] += ramp[None, :]
    arr[..., 1] += ramp[:, None]
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


def _background(scene: Scene, size: int) -> Image.Image:
    r0, g0, b0 = scene.tint
    if scene.background in ("flat", "position"):  # "position": the ramp is added after the objects
        return Image.new("RGB", (size, size), (r0, g0, b0))
    ramp = position_ramp(size)
    arr = np.empty((size, size, 3), dtype=np.int16)
    arr[..., 0] = r0 + ramp[None, :]
    arr[..., 1] = g0 + ramp[:, None]
    arr[..., 2] = b0
    if scene.background == "noise":
        arr += np.random.default_rng(scene.noise_seed).integers(-6, 7, size=(size, size, 1), dtype=np.int16)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


def render(scene: Scene, size: int) -> Image.Image:
    """The scene as a size x size RGB image (a crop scene: its window of the source, at source scale)."""
    if scene.crop is not None:
        return _render_crop(scene, size)
    img = _background(scene, size)
    draw = ImageDraw.Draw(img)
    for x, y, r in scene.clutter:
        cx, cy, rr = x * (size - 1), y * (size - 1), r * size
        draw.ellipse([cx - rr, cy - rr, cx + rr, cy + rr], fill=tuple(min(255, c + 25) for c in scene.tint))
    for obj in scene.objects:
        draw_object(draw, obj, size)
    if scene.background == "position":  # objects carry the position cue too, not only the background
        img = add_position_tint(img)
        draw = ImageDraw.Draw(img)
    for box in scene.marks:
        x1, y1, x2, y2 = (v * (size - 1) for v in box)
        draw.rectangle([x1, y1, x2, y2], outline=(255, 0, 0), width=max(1, size // 56))
    return img


def random_scene_background(rng: random.Random, background: str, clutter: float) -> Scene:
    tint = tuple(rng.randint(115, 140) for _ in range(3))
    blobs = [[rng.random(), rng.random(), rng.uniform(0.02, 0.05)] for _ in range(int(round(clutter * 10)))]
    return Scene(objects=[], background=background, tint=tint, clutter=blobs, noise_seed=rng.randint(0, 2**31))  # type: ignore[arg-type]


def _render_crop(scene: Scene, size: int) -> Image.Image:
    img = render(uncrop_scene(scene), size).crop(crop_pixels(scene.crop, size))  # type: ignore[arg-type]
    draw = ImageDraw.Draw(img)
    w, h = img.size
    for box in scene.marks:
        x1, y1, x2, y2 = box[0] * (w - 1), box[1] * (h - 1), box[2] * (w - 1), box[3] * (h - 1)
        draw.rectangle([x1, y1, x2, y2], outline=(255, 0, 0), width=max(1, size // 56))
    return img


# ------------------------------------------------------------------------------- views and crops
def view_scene(world: Scene, view: View) -> Scene:
    """The world seen through `view`: objects move, scale and rotate with it (boxes stay tight).
    Objects the view cuts keep their full box (beyond [0, 1]); objects out of view are left out."""
    objects = [posed_obj(o.shape, o.color, view.frame(o.get_frame()), o.angle + view.angle, o.oid)
               for o in world.objects]
    objects = [o for o in objects if _overlaps(o.box, [0.0, 0.0, 1.0, 1.0])]
    clutter = [[*view.point((x, y)), r * view.scale] for x, y, r in world.clutter]
    return Scene(objects=objects, background=world.background, tint=world.tint, clutter=clutter,
                 noise_seed=world.noise_seed, view=view.as_list())


def pixel_window(k1: int, k2: int, size: int) -> tuple[float, float]:
    """Normalised edges of the pixel columns (or rows) k1..k2-1 of a `size`-pixel image, in the
    drawing convention (pixel k sits at k / (size - 1)), clipped to [0, 1]."""
    return max(0.0, (k1 - 0.5) / (size - 1)), min(1.0, (k2 - 0.5) / (size - 1))


def crop_pixels(crop: list[float], size: int) -> tuple[int, int, int, int]:
    """Pixel box (left, top, right, bottom; right/bottom exclusive) of a normalised window."""
    def edge(v: float) -> int:
        return size if v >= 1.0 else int(math.floor(v * (size - 1) + 0.5 + 1e-6))
    return edge(crop[0]), edge(crop[1]), edge(crop[2]), edge(crop[3])


def _overlaps(box: list[float], window: list[float]) -> bool:
    return box[0] < window[2] and window[0] < box[2] and box[1] < window[3] and window[1] < box[3]


def crop_scene(source: Scene, crop: list[float]) -> Scene:
    """The image cut from `source` at window `crop`, described in its own normalised coordinates
    (x by the window's width, y by its height). Objects the window cuts keep their full box, which
    then extends beyond [0, 1]; objects outside the window are left out."""
    w = crop[2] - crop[0]
    objects = []
    for o in source.objects:
        if not _overlaps(o.box, crop):
            continue
        obj = Obj(shape=o.shape, color=o.color, box=crop_box(o.box, crop), oid=o.oid, angle=o.angle)
        if o.frame is not None:
            cx, cy = crop_point((o.frame[0], o.frame[1]), crop)
            obj.frame = [cx, cy, o.frame[2] / w, o.frame[3] / (crop[3] - crop[1])]
        objects.append(obj)
    clutter = [[*crop_point((x, y), crop), r / w] for x, y, r in source.clutter
               if _overlaps([x - r, y - r, x + r, y + r], crop)]
    return Scene(objects=objects, background=source.background, tint=source.tint, clutter=clutter,
                 noise_seed=source.noise_seed, view=source.view, crop=list(crop))


def uncrop_scene(scene: Scene) -> Scene:
    """The source scene (in source coordinates) that a crop scene is cut from, without marks."""
    crop = scene.crop
    assert crop is not None
    w = crop[2] - crop[0]
    objects = []
    for o in scene.objects:
        obj = Obj(shape=o.shape, color=o.color, box=uncrop_box(o.box, crop), oid=o.oid, angle=o.angle)
        if o.frame is not None:
            cx, cy = uncrop_point((o.frame[0], o.frame[1]), crop)
            obj.frame = [cx, cy, o.frame[2] * w, o.frame[3] * (crop[3] - crop[1])]
        objects.append(obj)
    clutter = [[*uncrop_point((x, y), crop), r * w] for x, y, r in scene.clutter]
    return Scene(objects=objects, background=scene.background, tint=scene.tint, clutter=clutter,
                 noise_seed=scene.noise_seed, view=scene.view)
