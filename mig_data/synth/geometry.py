"""Pure geometry of MIG-Synth: shape outlines, rotation, tight boxes, clipping, views and crops.

Coordinates are normalised to the image ([0, 1] on both axes, y pointing down). A shape lives in
its *frame* (centre cx, cy and half-sizes rx, ry) and may be rotated by `angle` degrees about the
frame centre (clockwise on screen, since y points down). Every box here is the exact, tight
axis-aligned box of what is drawn, so ground truth stays exact under views, rotations and crops.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

Point = tuple[float, float]
Frame = tuple[float, float, float, float]  # cx, cy, rx, ry
ELLIPSE_VERTICES = 64  # outline resolution of rotated circles/rings and of clipped ellipse parts


def shape_polygon(shape: str, x1: float, y1: float, x2: float, y2: float) -> list[Point]:
    """Outline of an unrotated shape that touches its box (x1, y1, x2, y2) on every side."""
    cx, cy, rx, ry = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) / 2, (y2 - y1) / 2
    if shape in ("circle", "ring"):
        return [(cx + rx * math.cos(2 * math.pi * k / ELLIPSE_VERTICES),
                 cy + ry * math.sin(2 * math.pi * k / ELLIPSE_VERTICES)) for k in range(ELLIPSE_VERTICES)]
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


def rotate(points: list[Point], center: Point, degrees: float) -> list[Point]:
    """Rotate points about `center` by `degrees` (clockwise on screen: y points down)."""
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    ox, oy = center
    return [(ox + c * (x - ox) - s * (y - oy), oy + s * (x - ox) + c * (y - oy)) for x, y in points]


def frame_box(frame: Frame) -> list[float]:
    cx, cy, rx, ry = frame
    return [cx - rx, cy - ry, cx + rx, cy + ry]


def box_frame(box: list[float]) -> Frame:
    return ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2, (box[2] - box[0]) / 2, (box[3] - box[1]) / 2)


def outline(shape: str, frame: Frame, angle: float) -> list[Point]:
    """The drawn outline of a (possibly rotated) shape."""
    return rotate(shape_polygon(shape, *frame_box(frame)), frame[:2], angle)


def points_box(points: list[Point]) -> list[float]:
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    return [min(xs), min(ys), max(xs), max(ys)]


def tight_box(shape: str, frame: Frame, angle: float) -> list[float]:
    """Exact axis-aligned box of a rotated shape (closed form for ellipses)."""
    if angle == 0:
        return frame_box(frame)
    if shape in ("circle", "ring"):
        cx, cy, rx, ry = frame
        c, s = math.cos(math.radians(angle)), math.sin(math.radians(angle))
        hw, hh = math.hypot(rx * c, ry * s), math.hypot(rx * s, ry * c)
        return [cx - hw, cy - hh, cx + hw, cy + hh]
    return points_box(outline(shape, frame, angle))


def clip_polygon(points: list[Point], box: list[float]) -> list[Point]:
    """Sutherland-Hodgman: the part of a convex-or-not polygon inside an axis-aligned box."""
    def clip(pts: list[Point], inside, cross) -> list[Point]:
        out: list[Point] = []
        for i, cur in enumerate(pts):
            prev = pts[i - 1]
            if inside(cur):
                if not inside(prev):
                    out.append(cross(prev, cur))
                out.append(cur)
            elif inside(prev):
                out.append(cross(prev, cur))
        return out

    def at_x(x):
        return lambda p, q: (x, p[1] + (q[1] - p[1]) * (x - p[0]) / (q[0] - p[0]))

    def at_y(y):
        return lambda p, q: (p[0] + (q[0] - p[0]) * (y - p[1]) / (q[1] - p[1]), y)

    x1, y1, x2, y2 = box
    pts = points
    for inside, cross in ((lambda p: p[0] >= x1, at_x(x1)), (lambda p: p[0] <= x2, at_x(x2)),
                          (lambda p: p[1] >= y1, at_y(y1)), (lambda p: p[1] <= y2, at_y(y2))):
        if not pts:
            break
        pts = clip(pts, inside, cross)
    return pts


def sub_box(frame: Frame, window: tuple[float, float, float, float]) -> list[float]:
    """A window given in the unrotated frame's unit square ((0, 0) = top-left) as an image box."""
    bx1, by1, bx2, by2 = frame_box(frame)
    w, h = bx2 - bx1, by2 - by1
    return [bx1 + window[0] * w, by1 + window[1] * h, bx1 + window[2] * w, by1 + window[3] * h]


def part_box(shape: str, frame: Frame, window: tuple[float, float, float, float]) -> list[float]:
    """Tight box of the part of an unrotated shape inside `window` (unit-frame coordinates)."""
    return points_box(clip_polygon(shape_polygon(shape, *frame_box(frame)), sub_box(frame, window)))


def inside(box: list[float], margin: float = 0.0) -> bool:
    return box[0] >= margin and box[1] >= margin and box[2] <= 1 - margin and box[3] <= 1 - margin


def boxes_apart(a: list[float], b: list[float], gap: float) -> bool:
    return a[2] + gap <= b[0] or b[2] + gap <= a[0] or a[3] + gap <= b[1] or b[3] + gap <= a[1]


@dataclass(frozen=True)
class View:
    """A similarity view of a world: zoom `scale` and rotation `angle` (degrees) about the image
    centre, then a shift (tx, ty). World point p -> image point R(angle) (p - c) scale + c + t."""

    scale: float = 1.0
    angle: float = 0.0
    tx: float = 0.0
    ty: float = 0.0

    def point(self, p: Point) -> Point:
        x, y = (p[0] - 0.5) * self.scale, (p[1] - 0.5) * self.scale
        c, s = math.cos(math.radians(self.angle)), math.sin(math.radians(self.angle))
        return (0.5 + c * x - s * y + self.tx, 0.5 + s * x + c * y + self.ty)

    def frame(self, frame: Frame) -> Frame:
        cx, cy = self.point(frame[:2])
        return (cx, cy, frame[2] * self.scale, frame[3] * self.scale)

    def as_list(self) -> list[float]:
        return [self.scale, self.angle, self.tx, self.ty]


def crop_point(p: Point, crop: list[float]) -> Point:
    """Source-image point -> coordinates normalised to the crop window (x by its width, y by its height)."""
    return ((p[0] - crop[0]) / (crop[2] - crop[0]), (p[1] - crop[1]) / (crop[3] - crop[1]))


def uncrop_point(p: Point, crop: list[float]) -> Point:
    return (crop[0] + p[0] * (crop[2] - crop[0]), crop[1] + p[1] * (crop[3] - crop[1]))


def crop_box(box: list[float], crop: list[float]) -> list[float]:
    return [*crop_point((box[0], box[1]), crop), *crop_point((box[2], box[3]), crop)]


def uncrop_box(box: list[float], crop: list[float]) -> list[float]:
    return [*uncrop_point((box[0], box[1]), crop), *uncrop_point((box[2], box[3]), crop)]
