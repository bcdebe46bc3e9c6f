"""MIG-Synth task generators: each builds the scenes, question and exact answer of one sample.

A generator is `gen(rng, cfg) -> SynthItem`; the registry maps MIG-Bench task names to them.
Answers are boxes normalised to the image they belong to (`answer_image`); responses are written
in the canonical Qwen2-VL syntax (the box codec rewrites them for other families).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Callable, Optional

from mig_data.synth.scene import COLORS, SHAPES, Obj, Scene, place_box, random_scene_background

ORDINALS = ["first", "second", "third", "fourth", "fifth", "sixth"]


def qwen2_box(box: list[float]) -> str:
    x1, y1, x2, y2 = (int(round(min(max(v, 0.0), 1.0) * 1000)) for v in box)
    return f"<|box_start|>({x1},{y1}),({x2},{y2})<|box_end|>"


@dataclass
class SynthItem:
    scenes: list[Scene]
    question: str
    answer: list[float]
    answer_image: int
    response: Optional[str] = None
    need_format: bool = True
    additional_info: str = ""
    meta: dict = field(default_factory=dict)


def fill_scene(rng: random.Random, scene: Scene, n: int, exclude: set[tuple[str, str]],
               first_oid: int = 1) -> Scene:
    """Add up to n objects whose (colour, shape) is not in `exclude`, without overlaps."""
    for k in range(n):
        box = place_box(rng, [o.box for o in scene.objects])
        if box is None:
            break
        while True:
            color, shape = rng.choice(list(COLORS)), rng.choice(SHAPES)
            if (color, shape) not in exclude:
                break
        scene.objects.append(Obj(shape=shape, color=color, box=box, oid=first_oid + k))
    return scene


def gen_group_grounding(rng: random.Random, cfg) -> SynthItem:
    """A textual query names one object; it is in exactly one of N images (migician.txt A.2)."""
    n_images = rng.randint(cfg.min_images, cfg.max_images)
    target_img = rng.randrange(n_images)
    color, shape = rng.choice(list(COLORS)), rng.choice(SHAPES)
    scenes = []
    for i in range(n_images):
        scene = random_scene_background(rng, cfg.background, cfg.clutter)
        n_obj = rng.randint(cfg.min_objects, cfg.max_objects)
        if i == target_img:
            box = place_box(rng, [])
            scene.objects.append(Obj(shape=shape, color=color, box=box, oid=0))  # type: ignore[arg-type]
            n_obj -= 1
        fill_scene(rng, scene, n_obj, exclude={(color, shape)})
        rng.shuffle(scene.objects)
        scenes.append(scene)
    target = next(o for o in scenes[target_img].objects if o.oid == 0)
    question = (f"Please find the bounding box coordinates for the area described by: "
                f"<|object_ref_start|>the {color} {shape}<|object_ref_end|>.")
    return SynthItem(
        scenes=scenes,
        question=question,
        answer=list(target.box),
        answer_image=target_img,
        response=f"Image-{target_img + 1}: {qwen2_box(target.box)}",
        need_format=False,
        additional_info=f"It is in the {ORDINALS[target_img]} image. {qwen2_box(target.box)}. ",
        meta={"target": target.name, "num_images": n_images,
              "distractors": sum(len(s.objects) for s in scenes) - 1},
    )


TASK_GENERATORS: dict[str, Callable[[random.Random, object], SynthItem]] = {
    "group_grounding": gen_group_grounding,
}
