"""Visual + textual reference (migician.txt A.2): `reasoning` (a relation, stated in words, to an
object shown in image 1) and `correspondence` (the part of an object marked in image 1, found on
another object of the same kind in image 2).
"""

from __future__ import annotations

import math
import random

from mig_data.synth.geometry import box_frame, part_box
from mig_data.synth.items import (
    KINDS,
    SynthItem,
    centred_obj,
    count_distractors,
    distractor_kind,
    n_objects,
    new_scene,
    place_kinds,
    query_meta,
    random_kind,
)
from mig_data.synth.scene import COLORS, SHAPES, Obj, Scene, place_box
from mig_lab.config import ConfigError

REASONING_SUFFIX = " Find it and locate it in the second image. "
CORRESPONDENCE_QUESTION = ("You are now presented with two objects. For the area marked by the red bounding box in "
                           "the first image, identify and locate the corresponding area in the second image that "
                           "serves a similar function or shares a similar meaning. ")
RELATIONS = ("same_color", "same_shape", "larger", "smaller", "nearest")
NEAREST_MARGIN = 1.3  # the runner-up must be this many times farther than the nearest object


def _plain_scene(rng: random.Random, cfg, objects: list[Obj]) -> Scene:
    """An image showing `objects` alone: no clutter (the reference picture of a visual prompt)."""
    return Scene(objects=objects, background=cfg.background, tint=tuple(rng.randint(115, 140) for _ in range(3)),  # type: ignore[arg-type]
                 noise_seed=rng.randint(0, 2**31))


def _relation_kinds(rng: random.Random, relation: str, ref: tuple[str, str], n_other: int, hard: float
                    ) -> list[tuple[str, str]]:
    """Kinds to place in image 2: the target (same_color / same_shape) or the reference's copies
    first, then the others."""
    color, shape = ref
    if relation == "same_color":
        target = (color, rng.choice([s for s in SHAPES if s != shape]))
        others = [random_kind(rng, exclude=[k for k in KINDS if k[0] == color]) for _ in range(n_other)]
        if rng.random() < hard:  # the reference itself: same colour but the same shape, so not the answer
            others[0] = ref
        return [target, *others]
    if relation == "same_shape":
        target = (rng.choice([c for c in COLORS if c != color]), shape)
        others = [random_kind(rng, exclude=[k for k in KINDS if k[1] == shape]) for _ in range(n_other)]
        if rng.random() < hard:
            others[0] = ref
        return [target, *others]
    # larger / smaller / nearest: copies of the reference among other kinds
    copies = 1 if relation == "nearest" else 2
    others = [distractor_kind(rng, ref, hard) for _ in range(n_other)]
    return [ref] * copies + others


def _place_reasoning(rng: random.Random, scene: Scene, relation: str, kinds: list[tuple[str, str]]
                     ) -> tuple[Obj, list[Obj]] | None:
    """Place image 2 so that the relation has exactly one answer; None when this layout fails."""
    if relation in ("larger", "smaller"):
        small = place_kinds(rng, scene, kinds[:1], first_oid=1, min_size=0.14, max_size=0.2)
        large = place_kinds(rng, scene, kinds[1:2], first_oid=2, min_size=0.3, max_size=0.4)
        rest = place_kinds(rng, scene, kinds[2:], first_oid=3)
        if not small or not large or not rest:
            return None
        return (large[0] if relation == "larger" else small[0]), small + large + rest
    placed = place_kinds(rng, scene, kinds, first_oid=1)
    if len(placed) < len(kinds):
        return None
    if relation != "nearest":
        return placed[0], placed
    anchor, others = placed[0], placed[1:]
    dist = sorted((math.dist(anchor.center, o.center), i) for i, o in enumerate(others))
    if len(dist) < 2 or dist[1][0] < NEAREST_MARGIN * dist[0][0]:
        return None
    return others[dist[0][1]], placed


def _relation_text(relation: str, ref: tuple[str, str]) -> str:
    color, shape = ref
    return {
        "same_color": f"Find the object in image-2 that has the color of the {shape} in image-1 but a different shape.",
        "same_shape": f"Find the object in image-2 that has the shape of the {color} object in image-1 "
                      f"but a different color.",
        "larger": "Image-2 shows two objects like the one in image-1. Find the larger of the two.",
        "smaller": "Image-2 shows two objects like the one in image-1. Find the smaller of the two.",
        "nearest": "Find the object in image-2 that is closest to the object like the one in image-1.",
    }[relation]


def gen_reasoning(rng: random.Random, cfg) -> SynthItem:
    """Image 1 shows a reference object; the question states a relation to it (same colour but
    another shape, same shape but another colour, the larger / smaller of two copies, the object
    nearest to its copy); exactly one object in image 2 satisfies it."""
    relation = rng.choice(RELATIONS)
    ref = random_kind(rng)
    source = _plain_scene(rng, cfg, [centred_obj(rng, ref, oid=0)])
    placed = None
    for attempt in range(40):
        if attempt == 20:
            relation = "same_color"  # the layout keeps failing (a crowded config): a relation that always fits
        n_other = n_objects(rng, cfg, at_least=3 if relation == "nearest" else 2) - 1
        kinds = _relation_kinds(rng, relation, ref, n_other, cfg.hard_negatives)
        scene = new_scene(rng, cfg)
        placed = _place_reasoning(rng, scene, relation, kinds)
        if placed is not None:
            break
    if placed is None:
        raise ConfigError(f"data.synth: no reasoning layout fits {n_other + 1} objects in one image; "
                          f"lower data.synth.max_objects")
    target, _ = placed
    rng.shuffle(scene.objects)
    scenes = [source, scene]
    return SynthItem(
        scenes=scenes, question=_relation_text(relation, ref) + REASONING_SUFFIX, answer=list(target.box),
        answer_image=1,
        meta={"target_oid": target.oid, "target": target.name, "relation": relation,
              "query": query_meta(0, source.objects[0]), "num_images": 2,
              "distractors": count_distractors(scenes, target.oid)},
    )


# Parts as windows of the object's unit frame ((0, 0) top-left, (1, 1) bottom-right).
HALVES = {"top half": (0.0, 0.0, 1.0, 0.5), "bottom half": (0.0, 0.5, 1.0, 1.0),
          "left half": (0.0, 0.0, 0.5, 1.0), "right half": (0.5, 0.0, 1.0, 1.0)}
QUARTERS = {"top-left quarter": (0.0, 0.0, 0.5, 0.5), "top-right quarter": (0.5, 0.0, 1.0, 0.5),
            "bottom-left quarter": (0.0, 0.5, 0.5, 1.0), "bottom-right quarter": (0.5, 0.5, 1.0, 1.0)}
# The cross's arms: its bars are 0.38 of the half-size thick, i.e. 0.31..0.69 of the unit frame.
ARMS = {"top arm": (0.31, 0.0, 0.69, 0.31), "bottom arm": (0.31, 0.69, 0.69, 1.0),
        "left arm": (0.0, 0.31, 0.31, 0.69), "right arm": (0.69, 0.31, 1.0, 0.69)}
MIN_PART = 0.12  # a part covers at least this share of its object's box (drops slivers, e.g. a triangle's corner)


def parts_of(shape: str) -> dict[str, tuple[float, float, float, float]]:
    """The named parts of a shape whose clipped outline is substantial."""
    candidates = {**HALVES, **QUARTERS, **(ARMS if shape == "cross" else {})}
    keep = {}
    for name, window in candidates.items():
        b = part_box(shape, (0.5, 0.5, 0.5, 0.5), window)
        if (b[2] - b[0]) * (b[3] - b[1]) >= MIN_PART:
            keep[name] = window
    return keep


def gen_correspondence(rng: random.Random, cfg) -> SynthItem:
    """Image 1: one object with a part (a half, a quarter, a cross's arm) marked by a red box.
    Image 2: another object of the same shape (other colour, size, place) among distractors of
    other shapes; the answer is the same part of it (the exact tight box of that part)."""
    color, shape = random_kind(rng)
    parts = parts_of(shape)
    part = rng.choice(sorted(parts))
    window = parts[part]
    ref = centred_obj(rng, (color, shape), oid=0, lo=0.55, hi=0.75)
    source = _plain_scene(rng, cfg, [ref])
    mark = part_box(shape, box_frame(ref.box), window)
    source.marks = [mark]
    scene = new_scene(rng, cfg)
    other_color = rng.choice([c for c in COLORS if c != color])
    box = place_box(rng, [], min_size=0.3, max_size=0.5)
    assert box is not None
    target = Obj(shape=shape, color=other_color, box=box, oid=1)
    scene.objects.append(target)
    kinds = [random_kind(rng, exclude=[k for k in KINDS if k[1] == shape]) for _ in range(n_objects(rng, cfg) - 1)]
    place_kinds(rng, scene, kinds, first_oid=2)
    rng.shuffle(scene.objects)
    answer = part_box(shape, box_frame(target.box), window)
    scenes = [source, scene]
    return SynthItem(
        scenes=scenes, question=CORRESPONDENCE_QUESTION, answer=answer, answer_image=1,
        meta={"target_oid": 1, "target": target.name, "part": part, "part_window": list(window),
              "query": query_meta(0, ref, box=mark, part=part), "num_images": 2,
              "distractors": count_distractors(scenes, 1)},
    )

