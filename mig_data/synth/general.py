"""General data of the training mixtures (migician.txt Sec. 4.2, Appendix E): single-image
grounding (`single_grounding`, RefCOCO-like) and short-answer understanding questions
(`understanding`: counts, colours, which image; single- and multi-image, `meta["variant"]`).
"""

from __future__ import annotations

import random
from collections import Counter

from mig_data.synth.items import (
    KINDS,
    PLURALS,
    SynthItem,
    fill_scene,
    n_images,
    new_scene,
    place_kinds,
    random_kind,
)
from mig_data.synth.scene import COLORS, SHAPES, Obj, Scene, place_box, random_scene_background
from mig_lab.boxes import qwen2_box

SINGLE_QUESTIONS = ("count_color", "count_shape", "color_of", "exists")
MULTI_QUESTIONS = ("count_color", "which_image", "color_of", "count_images")


def gen_single_grounding(rng: random.Random, cfg) -> SynthItem:
    """RefCOCO-like single-image grounding: one image, a referring expression naming a unique object
    among min_objects..max_objects (distractors may share its colour or its shape, never both)."""
    color, shape = rng.choice(list(COLORS)), rng.choice(SHAPES)
    scene = random_scene_background(rng, cfg.background, cfg.clutter)
    scene.objects.append(Obj(shape=shape, color=color, box=place_box(rng, []), oid=0))  # type: ignore[arg-type]
    fill_scene(rng, scene, rng.randint(cfg.min_objects, cfg.max_objects) - 1, exclude={(color, shape)},
               distinct_colors=cfg.distinct_colors)
    # The first box is placed freely and the others around it, so the first box's position is not
    # distributed like the rest: the target takes a uniformly chosen box, or where it sits would hint
    # which object the query names.
    target, other = scene.objects[0], rng.choice(scene.objects)
    target.box, other.box = other.box, target.box
    rng.shuffle(scene.objects)
    return SynthItem(
        scenes=[scene],
        question=refer_question(target),
        answer=list(target.box),
        answer_image=0,
        need_format=True,
        meta={"target_oid": 0, "target": target.name, "num_images": 1, "distractors": len(scene.objects) - 1},
        turns=query_turns(rng, scene, target, cfg.queries_per_image) if cfg.queries_per_image > 1 else None,
    )


def refer_question(obj: Obj) -> str:
    return f"Locate <|object_ref_start|>the {obj.color} {obj.shape}<|object_ref_end|> in the image."


def query_turns(rng: random.Random, scene: Scene, target: Obj, n: int) -> list[dict]:
    """Several objects of one image asked in turn (`data.synth.queries_per_image`): up to n - 1 other
    objects whose colour + shape is unique in the image, in random order, then the target (the
    sample's answer). The image alone then never predicts an answer: only the query tells the turns
    apart."""
    counts = Counter((o.color, o.shape) for o in scene.objects)
    others = [o for o in scene.objects if o.oid != target.oid and counts[(o.color, o.shape)] == 1]
    rng.shuffle(others)
    turns = []
    for i, obj in enumerate([*others[: n - 1], target]):
        turns.append({"role": "user", "content": refer_question(obj), "image_offsets": [0] if i == 0 else []})
        turns.append({"role": "assistant", "content": qwen2_box(list(obj.box)), "image_offsets": []})
    return turns


def plural(shape: str) -> str:
    return PLURALS.get(shape, shape + "s")


def _where(variant: str, image: int) -> str:
    return "the image" if variant == "single" else f"Image-{image + 1}"


def _pick_color(rng: random.Random, scene: Scene) -> str:
    """Mostly a colour present in the image (so counts are not mostly 0), sometimes any colour."""
    present = [o.color for o in scene.objects]
    return rng.choice(present) if present and rng.random() < 0.8 else rng.choice(list(COLORS))


def _ask(rng: random.Random, kind: str, variant: str, scenes: list[Scene]) -> tuple[str, str, dict] | None:
    """(question, short answer, what was asked) for one question type; None if this scene set
    cannot pose it unambiguously."""
    img = rng.randrange(len(scenes))
    objs = scenes[img].objects
    where = _where(variant, img)
    if kind == "count_color":
        color = _pick_color(rng, scenes[img])
        n = sum(o.color == color for o in objs)
        return (f"How many {color} objects are there in {where}? Answer with a number.", str(n),
                {"image": img, "color": color})
    if kind == "count_shape":
        shape = rng.choice([o.shape for o in objs]) if objs and rng.random() < 0.8 else rng.choice(SHAPES)
        n = sum(o.shape == shape for o in objs)
        return (f"How many {plural(shape)} are there in {where}? Answer with a number.", str(n),
                {"image": img, "shape": shape})
    if kind == "color_of":
        counts = Counter(o.shape for o in objs)
        unique = [o for o in objs if counts[o.shape] == 1]
        if not unique:
            return None
        obj = rng.choice(unique)
        return (f"What color is the {obj.shape} in {where}?", obj.color,
                {"image": img, "shape": obj.shape, "color": obj.color, "oid": obj.oid})
    if kind == "exists":
        present = sorted({(o.color, o.shape) for o in objs})
        if present and rng.random() < 0.5:
            (color, shape), answer = rng.choice(present), "yes"
        else:
            (color, shape), answer = random_kind(rng, exclude=present), "no"
        return (f"Is there a {color} {shape} in {where}? Answer yes or no.", answer,
                {"image": img, "color": color, "shape": shape})
    if kind == "which_image":
        counts = Counter((o.color, o.shape) for s in scenes for o in s.objects)
        once = sorted(k for k, n in counts.items() if n == 1)
        if not once:
            return None
        color, shape = rng.choice(once)
        img, obj = next((i, o) for i, s in enumerate(scenes) for o in s.objects if (o.color, o.shape) == (color, shape))
        return (f"Which image contains the {color} {shape}?", f"Image-{img + 1}",
                {"image": img, "color": color, "shape": shape, "oid": obj.oid})
    if kind == "count_images":
        shape = rng.choice([o.shape for s in scenes for o in s.objects] or list(SHAPES))
        n = sum(any(o.shape == shape for o in s.objects) for s in scenes)
        return f"How many images contain a {shape}? Answer with a number.", str(n), {"shape": shape}
    raise ValueError(f"unknown understanding question {kind!r}")


def gen_understanding(rng: random.Random, cfg) -> SynthItem:
    """A short-answer question with an exact answer (`response`; no box): a count of a colour or a
    shape, the colour of a named shape, whether a kind is present (single image) or which image
    holds a kind, how many images hold a shape (multi-image)."""
    variant = rng.choice(["single", "multi"])
    n = 1 if variant == "single" else n_images(rng, cfg, "understanding", at_least=2)
    questions = SINGLE_QUESTIONS if variant == "single" else MULTI_QUESTIONS
    scenes = []
    oid = 0
    for _ in range(n):
        scene = new_scene(rng, cfg)
        count = rng.randint(cfg.min_objects, max(cfg.min_objects, cfg.max_objects + 1))
        place_kinds(rng, scene, [rng.choice(KINDS) for _ in range(count)], first_oid=oid)
        oid += count
        scenes.append(scene)
    qtype = rng.choice(questions)
    asked = _ask(rng, qtype, variant, scenes)
    if asked is None:
        qtype = "count_color"
        asked = _ask(rng, qtype, variant, scenes)
    assert asked is not None
    question, answer, what = asked
    return SynthItem(
        scenes=scenes, question=question, answer=None, answer_image=None, response=answer, need_format=False,
        meta={"variant": variant, "question_type": qtype, "asked": what, "answer_text": answer,
              "target": f"{what['color']} {what['shape']}" if "color" in what and "shape" in what else None,
              "target_oid": what.get("oid"), "num_images": n,
              "distractors": sum(len(s.objects) for s in scenes)},
    )
