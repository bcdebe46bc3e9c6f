"""What every MIG-Synth generator shares: the item it returns and the small sampling helpers.

A generator is `gen(rng, cfg) -> SynthItem`; `cfg` is `data.synth` (`mig_lab.config.SynthConfig`).
Object ids (`oid`) name one object across the images of a sample: the same object seen in two
images has the same oid, different objects never share one.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Optional

from mig_data.synth.geometry import View, inside
from mig_data.synth.scene import COLORS, SHAPES, Obj, Scene, place_box, posed_obj, random_scene_background

ORDINALS = ["first", "second", "third", "fourth", "fifth", "sixth"]
KINDS: list[tuple[str, str]] = [(c, s) for c in COLORS for s in SHAPES]  # (colour, shape), fixed order
PLURALS = {"cross": "crosses"}
MAX_IMAGES = 6  # MIG-Bench's largest image group
# Tasks whose image count comes from data.synth.min_images/max_images or data.synth.task_images;
# the other tasks are image pairs, as in MIG-Bench (or one image: single_grounding).
VARIABLE_IMAGE_TASKS = ("group_grounding", "common_object", "object_tracking", "multi_view", "region",
                        "understanding")


@dataclass
class SynthItem:
    scenes: list[Scene]
    question: str
    answer: Optional[list[float]]
    answer_image: Optional[int]
    response: Optional[str] = None
    need_format: bool = True
    additional_info: str = ""
    meta: dict = field(default_factory=dict)
    turns: Optional[list[dict]] = None  # multi-turn samples (free_form): `Sample.turns`


def fill_scene(rng: random.Random, scene: Scene, n: int, exclude: set[tuple[str, str]],
               first_oid: int = 1, distinct_colors: bool = False) -> Scene:
    """Add up to n objects whose (colour, shape) is not in `exclude`, without overlaps (and, with
    `distinct_colors`, in a colour no object of the scene has yet)."""
    for k in range(n):
        if distinct_colors:
            exclude = exclude | {(o.color, s) for o in scene.objects for s in SHAPES}
        box = place_box(rng, [o.box for o in scene.objects])
        if box is None:
            break
        while True:
            color, shape = rng.choice(list(COLORS)), rng.choice(SHAPES)
            if (color, shape) not in exclude:
                break
        scene.objects.append(Obj(shape=shape, color=color, box=box, oid=first_oid + k))
    return scene


# ------------------------------------------------------------------------------------ sampling
def new_scene(rng: random.Random, cfg) -> Scene:
    return random_scene_background(rng, cfg.background, cfg.clutter)


def image_range(cfg, task: str) -> tuple[int, int]:
    """[min, max] images of a variable-count task: data.synth.task_images[task], else min/max_images."""
    override = cfg.task_images.get(task) if cfg.task_images else None
    lo, hi = override if override else (cfg.min_images, cfg.max_images)
    return int(lo), int(hi)


def n_images(rng: random.Random, cfg, task: str, at_least: int = 1) -> int:
    lo, hi = image_range(cfg, task)
    return rng.randint(max(lo, at_least), max(hi, at_least))


def n_objects(rng: random.Random, cfg, at_least: int = 1) -> int:
    """Objects in one image (target included): min_objects..max_objects, raised to `at_least`."""
    return rng.randint(max(cfg.min_objects, at_least), max(cfg.max_objects, at_least))


def random_kind(rng: random.Random, exclude=()) -> tuple[str, str]:
    while True:
        kind = rng.choice(KINDS)
        if kind not in exclude:
            return kind


def distractor_kind(rng: random.Random, target: tuple[str, str], hard: float, exclude=()) -> tuple[str, str]:
    """A kind other than `target`; with probability `hard` a hard negative sharing its colour or shape."""
    while True:
        if rng.random() < hard:
            kind = (target[0], rng.choice(SHAPES)) if rng.random() < 0.5 else (rng.choice(list(COLORS)), target[1])
        else:
            kind = rng.choice(KINDS)
        if kind != target and kind not in exclude:
            return kind


def place_kinds(rng: random.Random, scene: Scene, kinds: list[tuple[str, str]], first_oid: int,
                min_size: float = 0.2, max_size: float = 0.38) -> list[Obj]:
    """Place one object per kind without overlaps; returns those placed (the image may fill up)."""
    placed = []
    for k, (color, shape) in enumerate(kinds):
        box = place_box(rng, [o.box for o in scene.objects], min_size=min_size, max_size=max_size)
        if box is None:
            break
        obj = Obj(shape=shape, color=color, box=box, oid=first_oid + k)
        scene.objects.append(obj)
        placed.append(obj)
    return placed


def centred_obj(rng: random.Random, kind: tuple[str, str], oid: int, lo: float = 0.5, hi: float = 0.7) -> Obj:
    """A large object near the image centre (the "object shown alone" of visual prompts)."""
    w = rng.uniform(lo, hi)
    h = min(0.9, w * rng.uniform(0.9, 1.1))
    cx, cy = 0.5 + rng.uniform(-0.05, 0.05), 0.5 + rng.uniform(-0.05, 0.05)
    return Obj(shape=kind[1], color=kind[0], box=[cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], oid=oid)


def sample_view(rng: random.Random, objects: list[Obj], strength: float, max_zoom: float = 0.15,
                max_angle: float = 10.0, max_shift: float = 0.1, margin: float = 0.02, tries: int = 60) -> View:
    """A random view (zoom, rotation, shift scaled by `strength`) under which every object in
    `objects` stays fully inside the image; a pure zoom-out when none of the tries fits."""
    if strength <= 0 or not objects:
        return View()
    for _ in range(tries):
        view = View(scale=math.exp(rng.uniform(-max_zoom, max_zoom) * strength),
                    angle=rng.uniform(-max_angle, max_angle) * strength,
                    tx=rng.uniform(-max_shift, max_shift) * strength, ty=rng.uniform(-max_shift, max_shift) * strength)
        if all(inside(seen(o, view).box, margin) for o in objects):
            return view
    return View(scale=1.0 - 0.15 * min(strength, 1.0))  # shrinks every in-image box towards the centre


def seen(obj: Obj, view: View) -> Obj:
    """An object as `view` shows it."""
    return posed_obj(obj.shape, obj.color, view.frame(obj.get_frame()), obj.angle + view.angle, obj.oid)


def count_distractors(scenes: list[Scene], target_oid: Optional[int]) -> int:
    """Object instances, over all images, that are not the target."""
    return sum(1 for s in scenes for o in s.objects if o.oid != target_oid)


def query_meta(image: int, obj: Obj, box: Optional[list[float]] = None, **extra) -> dict:
    """The visual prompt of a sample: which image, which object, the box shown."""
    return {"image": image, "oid": obj.oid, "name": obj.name, "box": list(box if box is not None else obj.box),
            **extra}


def next_oid(scenes: list[Scene]) -> int:
    return 1 + max((o.oid for s in scenes for o in s.objects), default=-1)
