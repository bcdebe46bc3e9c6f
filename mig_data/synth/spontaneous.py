"""Spontaneous grounding (migician.txt A.1): the target is never named; the relation between the
images defines it. Static difference (`diff`), robust difference under a viewpoint change
(`view_diff`) and the one object common to every image (`common_object`).
"""

from __future__ import annotations

import copy
import random

from mig_data.synth.geometry import View, inside
from mig_data.synth.items import (
    SynthItem,
    count_distractors,
    fill_scene,
    n_images,
    n_objects,
    new_scene,
    next_oid,
    random_kind,
    sample_view,
    seen,
)
from mig_data.synth.scene import COLORS, SHAPES, Obj, Scene, place_box, view_scene

DIFF_QUESTION = "Compare these two images carefully and give me the coordinates of their difference. "
VIEW_DIFF_QUESTION = ("Compare these two images carefully and give me the coordinates of their real difference "
                      "in the second image.  Find it and locate it in the second image. ")
COMMON_QUESTION = "These images share one object in common. Recognize and locate this object in the {k}th image. "
CHANGES = ("added", "removed", "recolored", "reshaped")


def apply_change(rng: random.Random, before: Scene, fits=lambda box: True) -> tuple[Scene, str, Obj, Obj | None]:
    """Copy `before` and change exactly one object: add one, remove one, or swap one's colour or
    shape (same box). Returns (after, change, target as it is answered, target before the change).
    `fits(box)` limits where an added object may go. For `removed` the target is the object as it
    was: its box marks the now empty place."""
    after = copy.deepcopy(before)
    changes = list(CHANGES) if before.objects else ["added"]
    while True:
        change = rng.choice(changes)
        if change == "added":
            box = place_box(rng, [o.box for o in before.objects])
            if box is None or not fits(box):
                changes = [c for c in changes if c != "added"] or ["recolored"]
                continue
            color, shape = random_kind(rng)
            added = Obj(shape=shape, color=color, box=box, oid=next_oid([before]))
            after.objects.append(added)
            return after, change, added, None
        old = rng.choice(before.objects)
        idx = next(i for i, o in enumerate(after.objects) if o.oid == old.oid)
        if change == "removed":
            del after.objects[idx]
            return after, change, old, old
        new = after.objects[idx]
        if change == "recolored":
            new.color = rng.choice([c for c in COLORS if c != old.color])
        else:
            new.shape = rng.choice([s for s in SHAPES if s != old.shape])
        return after, change, new, old


def _diff_meta(change: str, target: Obj, old: Obj | None, scenes: list[Scene]) -> dict:
    return {"target_oid": target.oid, "target": target.name, "change": change,
            "before": old.name if old is not None else None,
            "after": None if change == "removed" else target.name,
            "num_images": 2, "distractors": count_distractors(scenes, target.oid)}


def gen_diff(rng: random.Random, cfg) -> SynthItem:
    """Two images identical except one object added, removed, recoloured or reshaped; the answer
    is that object's box in image 2 (for a removal: where it was)."""
    before = new_scene(rng, cfg)
    fill_scene(rng, before, n_objects(rng, cfg), exclude=set(), first_oid=0)
    after, change, target, old = apply_change(rng, before)
    scenes = [before, after]
    return SynthItem(scenes=scenes, question=DIFF_QUESTION, answer=list(target.box), answer_image=1,
                     meta=_diff_meta(change, target, old, scenes))


def _minor_changes(rng: random.Random, clutter: list[list[float]], n: int) -> tuple[list[list[float]], list[str]]:
    """n small clutter changes (a blob added, moved or removed; kept central so they stay in
    view): variations to be ignored. Only blobs of the first image are removed, so the changes
    never cancel out."""
    kept = [list(b) for b in clutter]
    added: list[list[float]] = []
    done = []
    for _ in range(n):
        op = rng.choice(["add", "move", "remove"] if kept else ["add", "move"] if added else ["add"])
        if op == "add":
            added.append([rng.uniform(0.15, 0.85), rng.uniform(0.15, 0.85), rng.uniform(0.02, 0.05)])
        elif op == "move":
            b = rng.choice(kept + added)
            b[0] = min(0.85, max(0.15, b[0] + rng.choice([-1, 1]) * rng.uniform(0.04, 0.1)))
            b[1] = min(0.85, max(0.15, b[1] + rng.choice([-1, 1]) * rng.uniform(0.04, 0.1)))
        else:
            kept.remove(rng.choice(kept))
        done.append(op)
    return kept + added, done


def gen_view_diff(rng: random.Random, cfg) -> SynthItem:
    """Robust difference: image 2 shows the scene from a slightly different viewpoint (zoom, small
    rotation, shift: every object moves) plus minor clutter changes, and one real change as in
    `diff`; the answer is the changed object in image 2. Every object stays fully in view."""
    world = new_scene(rng, cfg)
    fill_scene(rng, world, n_objects(rng, cfg), exclude=set(), first_oid=0)
    # the view is drawn before the change so an added object can be kept inside it
    view = sample_view(rng, world.objects, cfg.view_change, max_zoom=0.12, max_angle=8.0, max_shift=0.08)

    def fits(box: list[float]) -> bool:
        return inside(seen(Obj("square", "red", box), view).box, 0.02)

    changed, change, target, old = apply_change(rng, world, fits)
    changed.clutter, minor = _minor_changes(rng, world.clutter, cfg.minor_changes)
    scenes = [view_scene(world, View()), view_scene(changed, view)]
    answer = seen(target, view)
    meta = _diff_meta(change, answer, old, scenes)
    meta.update(minor_changes=minor, view=view.as_list())
    return SynthItem(scenes=scenes, question=VIEW_DIFF_QUESTION, answer=list(answer.box), answer_image=1, meta=meta)


def gen_common_object(rng: random.Random, cfg) -> SynthItem:
    """2-6 images; exactly one (colour, shape) is in every image (once each, oid 0, its own place
    and size per image); every image has at least one distractor; asks for it in image k."""
    n = n_images(rng, cfg, "common_object", at_least=2)
    kind = random_kind(rng)
    scenes: list[Scene] = []
    shared: set[tuple[str, str]] | None = None  # distractor kinds present in every image so far
    oid = 1
    for i in range(n):
        scene = new_scene(rng, cfg)
        scene.objects.append(Obj(shape=kind[1], color=kind[0], box=place_box(rng, []), oid=0))  # type: ignore[arg-type]
        exclude = {kind} | (shared if (i == n - 1 and shared) else set())
        count = n_objects(rng, cfg, at_least=2) - 1
        fill_scene(rng, scene, count, exclude=exclude, first_oid=oid)
        oid += count
        kinds = {(o.color, o.shape) for o in scene.objects if o.oid != 0}
        shared = kinds if shared is None else shared & kinds
        rng.shuffle(scene.objects)
        scenes.append(scene)
    k = rng.randrange(n)
    target = scenes[k].find(0)
    assert target is not None
    return SynthItem(
        scenes=scenes, question=COMMON_QUESTION.format(k=k + 1), answer=list(target.box), answer_image=k,
        meta={"target_oid": 0, "target": target.name, "num_images": n, "ask_image": k,
              "distractors": count_distractors(scenes, 0)},
    )
