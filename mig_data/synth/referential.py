"""Referential grounding (migician.txt A.2): the target is named by text (`group_grounding`) or
shown by a visual prompt: the object alone (`refer_grounding`), a region picture (`region`), a
red box in the first frame or view (`object_tracking`, `multi_view`).
"""

from __future__ import annotations

import math
import random

from mig_data.synth.geometry import boxes_apart, inside
from mig_data.synth.items import (
    ORDINALS,
    SynthItem,
    centred_obj,
    count_distractors,
    distractor_kind,
    fill_scene,
    n_images,
    n_objects,
    new_scene,
    place_kinds,
    query_meta,
    random_kind,
    sample_view,
)
from mig_data.synth.scene import COLORS, SHAPES, Obj, Scene, crop_scene, pixel_window, place_box, view_scene
from mig_lab.boxes import qwen2_box

REFER_QUESTION = "Find and locate where does the object in image-1 locate in the image-2."
REGION_QUESTION = ("You are given a source image followed by its several regions. "
                   "Please locate the {k}th region picture in the source image. ")
TRACKING_QUESTION = ("These are a sequence of images containing moving objects. For the object in the first "
                     "image marked with red bounding box({box}), please locate it in the {k}th image. ")
MULTI_VIEW_QUESTION = ("These images share one object in common(the object marked with red bounding box in the "
                       "first image({box})). Recognize and locate this object in the {k}th image. ")


def gen_group_grounding(rng: random.Random, cfg) -> SynthItem:
    """A textual query names one object; it is in exactly one of N images (migician.txt A.2)."""
    n_images_ = n_images(rng, cfg, "group_grounding")
    target_img = rng.randrange(n_images_)
    color, shape = rng.choice(list(COLORS)), rng.choice(SHAPES)
    scenes = []
    oid = 1
    for i in range(n_images_):
        scene = new_scene(rng, cfg)
        n_obj = rng.randint(cfg.min_objects, cfg.max_objects)
        if i == target_img:
            box = place_box(rng, [])
            scene.objects.append(Obj(shape=shape, color=color, box=box, oid=0))  # type: ignore[arg-type]
            n_obj -= 1
        fill_scene(rng, scene, n_obj, exclude={(color, shape)}, first_oid=oid)
        oid += n_obj
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
        meta={"target_oid": 0, "target": target.name, "num_images": n_images_,
              "distractors": sum(len(s.objects) for s in scenes) - 1},
    )


def gen_refer_grounding(rng: random.Random, cfg) -> SynthItem:
    """Image 1 shows the object alone, large and centred; image 2 holds it (same oid, its own
    place and size) among distractors, which may share its colour or its shape."""
    kind = random_kind(rng)
    source = Scene(objects=[centred_obj(rng, kind, oid=0)], background=cfg.background,
                   tint=tuple(rng.randint(115, 140) for _ in range(3)), noise_seed=rng.randint(0, 2**31))  # type: ignore[arg-type]
    scene = new_scene(rng, cfg)
    kinds = [kind] + [distractor_kind(rng, kind, cfg.hard_negatives) for _ in range(n_objects(rng, cfg, 2) - 1)]
    place_kinds(rng, scene, kinds, first_oid=0)
    rng.shuffle(scene.objects)
    target = scene.find(0)
    assert target is not None
    scenes = [source, scene]
    return SynthItem(
        scenes=scenes, question=REFER_QUESTION, answer=list(target.box), answer_image=1,
        meta={"target_oid": 0, "target": target.name, "query": query_meta(0, source.objects[0]),
              "num_images": 2, "distractors": count_distractors(scenes, 0)},
    )


def _grazes(window: list[float], boxes: list[list[float]], eps: float) -> bool:
    """Whether the window's border passes within `eps` of an object's border (the object would
    show as a sliver of a pixel or two, or be listed without a visible pixel)."""
    def hit(b: list[float], d: float) -> bool:
        return b[0] - d < window[2] and window[0] < b[2] + d and b[1] - d < window[3] and window[1] < b[3] + d
    return any(hit(b, eps) != hit(b, -eps) for b in boxes)


def region_window(rng: random.Random, anchor: list[float], others: list[list[float]], size: int,
                  tries: int = 100) -> list[float]:
    """A window holding `anchor` whole, on the pixel grid of a `size`-pixel image, with
    region-to-image area 0.2-0.49 and aspect 0.5-2 (Objects365 filters of migician.txt D.1),
    whose border keeps 2 px away from every object's border (an object is clearly in or out)."""
    a1x, a1y = math.floor(anchor[0] * (size - 1)) - 2, math.floor(anchor[1] * (size - 1)) - 2
    a2x, a2y = math.ceil(anchor[2] * (size - 1)) + 3, math.ceil(anchor[3] * (size - 1)) + 3  # exclusive
    for _ in range(tries):
        area, aspect = rng.uniform(0.2, 0.49), math.exp(rng.uniform(math.log(0.5), math.log(2.0)))
        w, h = round(math.sqrt(area * aspect) * size), round(math.sqrt(area / aspect) * size)
        if a2x - a1x <= w <= size and a2y - a1y <= h <= size:
            k1 = rng.randint(max(0, a2x - w), min(max(0, a1x), size - w))
            j1 = rng.randint(max(0, a2y - h), min(max(0, a1y), size - h))
            (x1, x2), (y1, y2) = pixel_window(k1, k1 + w, size), pixel_window(j1, j1 + h, size)
            if not _grazes([x1, y1, x2, y2], others, 2 / (size - 1)):
                return [x1, y1, x2, y2]
    # the anchor with a few pixels of context
    k1, j1 = max(0, a1x - 2), max(0, a1y - 2)
    (x1, x2), (y1, y2) = pixel_window(k1, min(size, a2x + 2), size), pixel_window(j1, min(size, a2y + 2), size)
    return [x1, y1, x2, y2]


def gen_region(rng: random.Random, cfg) -> SynthItem:
    """Image 1 is the source; images 2.. are 1-3 region pictures cut from it (pixel-identical
    crops, each holding one whole object and its surroundings); asks where region k is."""
    n = n_images(rng, cfg, "region", at_least=2)
    n_regions = n - 1
    source = new_scene(rng, cfg)
    fill_scene(rng, source, max(n_regions, n_objects(rng, cfg, 2)), exclude=set(), first_oid=0)
    anchors = rng.sample(source.objects, min(n_regions, len(source.objects)))
    windows = [region_window(rng, a.box, [o.box for o in source.objects if o is not a], cfg.image_size)
               for a in anchors]
    scenes = [source] + [crop_scene(source, w) for w in windows]
    k = rng.randrange(len(windows))
    return SynthItem(
        scenes=scenes, question=REGION_QUESTION.format(k=k + 1), answer=list(windows[k]), answer_image=0,
        meta={"target_oid": anchors[k].oid, "target": anchors[k].name, "ask_region": k,
              "query": {"image": k + 1, "box": [0.0, 0.0, 1.0, 1.0]},
              "regions": [{"box": w, "anchor_oid": a.oid} for w, a in zip(windows, anchors)],
              "num_images": len(scenes), "distractors": len(source.objects) - 1},
    )


def _trajectory(rng: random.Random, n_frames: int, speed: float) -> list[list[float]]:
    """Boxes of one object moving smoothly: start, velocity, a slight acceleration and zoom."""
    w = rng.uniform(0.16, 0.3)
    h = w * rng.uniform(0.85, 1.15)
    cx, cy = rng.uniform(0.1, 0.9), rng.uniform(0.1, 0.9)
    ang = rng.uniform(0, 2 * math.pi)
    vx, vy = speed * math.cos(ang), speed * math.sin(ang)
    ax, ay = rng.uniform(-0.01, 0.01), rng.uniform(-0.01, 0.01)
    zoom = rng.uniform(0.96, 1.04)
    boxes = []
    for t in range(n_frames):
        x, y, s = cx + vx * t + 0.5 * ax * t * t, cy + vy * t + 0.5 * ay * t * t, zoom ** t
        boxes.append([x - w * s / 2, y - h * s / 2, x + w * s / 2, y + h * s / 2])
    return boxes


def moving_objects(rng: random.Random, kinds: list[tuple[str, str]], n_frames: int,
                   tries: int = 100) -> list[list[Obj]]:
    """Per kind, its boxes over the frames: always in frame, never touching another object.
    The first kind (the target) always gets a path (slower on later tries, at worst standing still
    in the centre); the others are dropped when no path fits."""
    paths: list[list[Obj]] = []
    for oid, (color, shape) in enumerate(kinds):
        for attempt in range(tries):
            speed = rng.uniform(0.04, 0.1) * (1 - attempt / tries)
            boxes = _trajectory(rng, n_frames, speed)
            if all(inside(b, 0.02) for b in boxes) and all(
                    boxes_apart(b, p[t].box, 0.02) for p in paths for t, b in enumerate(boxes)):
                paths.append([Obj(shape=shape, color=color, box=b, oid=oid) for b in boxes])
                break
        else:
            if oid == 0:
                paths.append([Obj(shape=shape, color=color, box=[0.4, 0.4, 0.6, 0.6], oid=0) for _ in range(n_frames)])
    return paths


def gen_object_tracking(rng: random.Random, cfg) -> SynthItem:
    """4-6 frames of objects moving smoothly over a fixed background; the target is marked with a
    red box in frame 1 (its box also given in the question); asks for it in frame k >= 2."""
    n = n_images(rng, cfg, "object_tracking", at_least=2)
    kind = random_kind(rng)
    kinds = [kind] + [distractor_kind(rng, kind, cfg.hard_negatives) for _ in range(n_objects(rng, cfg, 2) - 1)]
    lookalikes = 1 if rng.random() < cfg.lookalike_prob else 0
    kinds += [kind] * lookalikes
    paths = moving_objects(rng, kinds, n)
    background = new_scene(rng, cfg)
    scenes = [Scene(objects=[p[t] for p in paths], background=background.background, tint=background.tint,
                    clutter=background.clutter, noise_seed=background.noise_seed) for t in range(n)]
    first = paths[0][0]
    scenes[0].marks = [list(first.box)]
    k = rng.randint(1, n - 1)
    target = paths[0][k]
    return SynthItem(
        scenes=scenes, question=TRACKING_QUESTION.format(box=qwen2_box(first.box), k=k + 1),
        answer=list(target.box), answer_image=k,
        meta={"target_oid": 0, "target": target.name, "query": query_meta(0, first), "ask_image": k,
              "num_images": n, "distractors": count_distractors(scenes, 0),
              "lookalikes": sum(1 for p in paths[1:] if (p[0].color, p[0].shape) == kind)},
    )


def gen_multi_view(rng: random.Random, cfg) -> SynthItem:
    """One world seen from 2-6 viewpoints (zoom, rotation, shift; objects may leave the view, the
    target never does); the target is marked in image 1; asks for it in image k >= 2."""
    n = n_images(rng, cfg, "multi_view", at_least=2)
    kind = random_kind(rng)
    kinds = [kind] + [distractor_kind(rng, kind, cfg.hard_negatives) for _ in range(n_objects(rng, cfg, 2))]
    kinds += [kind] * (1 if rng.random() < cfg.lookalike_prob else 0)
    world = new_scene(rng, cfg)
    place_kinds(rng, world, kinds, first_oid=0, min_size=0.18, max_size=0.32)
    target = world.find(0)
    assert target is not None
    views = [sample_view(rng, [target], cfg.view_change, max_zoom=0.25, max_angle=15.0, max_shift=0.15)
             for _ in range(n)]
    scenes = [view_scene(world, v) for v in views]
    first = scenes[0].find(0)
    assert first is not None
    scenes[0].marks = [list(first.box)]
    k = rng.randint(1, n - 1)
    answer = scenes[k].find(0)
    assert answer is not None
    return SynthItem(
        scenes=scenes, question=MULTI_VIEW_QUESTION.format(box=qwen2_box(first.box), k=k + 1),
        answer=list(answer.box), answer_image=k,
        meta={"target_oid": 0, "target": answer.name, "query": query_meta(0, first), "ask_image": k,
              "num_images": n, "distractors": count_distractors(scenes, 0),
              "lookalikes": sum(1 for o in world.objects if o.oid != 0 and (o.color, o.shape) == kind)},
    )
