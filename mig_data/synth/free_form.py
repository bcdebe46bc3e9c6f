"""Free-form MIG data for Migician's stage 2 (migician.txt Sec. 4.2, Appendix D.2 and its "Multi-image
Grounding Instruction Generation" Template 1), built from MIG-Synth scene graphs.

A sample is a conversation of 1-3 question-answer turns over an image group. Each question links an
object in one image to the target in another by an attribute (same colour, same shape, the same
object again), a contrast (the most different size) or a relation (the same place; the one object
with no counterpart in any other image), and refers to the target by that connection, never by its
name (the template's point 2). Each answer names the target and its box, then explains the link
(point 3); later turns may build on the previous answer ("...as the object you just found").

The pipeline follows the paper's, with MIG-Synth in place of Objects365:
  1. an image group, made the three ways the paper groups images: at random, around a common object,
     or from semantically similar images (here: objects drawn from a small palette of kinds, the
     stand-in for CLIP similarity) -> `build_group`;
  2. per image its objects with exact boxes and attributes and a caption (the paper: Qwen2-VL
     captions and refined boxes) -> `Group`;
  3. a teacher composes the turns from the group: `TemplateTeacher` here (the embedded default,
     `free_form` in `TASK_GENERATORS`), or a local VLM prompted with the paper's template
     (`mig_data.cot.free_form.ModelQATeacher`, whose answers are snapped to annotated objects).
A teacher is anything with `compose(groups, rngs) -> list[list[QA]]`.

Ground truth is exact: every turn's target is an annotated object (image, oid, box), listed in
`meta["turns"]`; the sample's `answer` / `answer_image` are the last turn's, as the ShareGPT reader
reads an MGrounding conversation. Everything is seeded by the generator's rng (deterministic).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Optional, Protocol

from mig_data.synth.items import KINDS, SynthItem, n_images, n_objects, new_scene, random_kind
from mig_data.synth.scene import COLORS, SHAPES, Obj, Scene, place_box
from mig_lab.boxes import qwen2_box

GROUPINGS = ("random", "common", "similar")
LINKS = ("same_color", "same_shape", "same_object", "size_contrast", "same_position", "odd_one_out")
SIZES = {"small": (0.13, 0.19), "medium": (0.2, 0.27), "large": (0.3, 0.4)}  # box side, share of the image
MAX_TURNS = 3
FOLLOW_UP = 0.5  # chance a later turn takes the previous target as its reference
BOX_REFERENCE = 0.15  # chance a reference object is given by its box (as in the paper's Figure 8)
CONTRAST_RATIO = 2.0  # size_contrast: the target's area differs from the reference's by >= 2x ...
CONTRAST_MARGIN = 1.5  # ... and by this factor more than any other object's does
SAME_PLACE = 0.2  # same_position: the target's centre is within this distance of the reference's ...
PLACE_MARGIN = 1.5  # ... and every other object is this many times farther
JUST_FOUND = "the object you just found"


# ------------------------------------------------------------------------------------ the group
@dataclass(frozen=True)
class GroupObject:
    """One annotated object of an image group (boxes normalised to its own image)."""

    image: int  # 0-based
    oid: int
    color: str
    shape: str
    box: tuple[float, float, float, float]

    @property
    def name(self) -> str:
        return f"{self.color} {self.shape}"

    @property
    def kind(self) -> tuple[str, str]:
        return self.color, self.shape

    @property
    def area(self) -> float:
        return (self.box[2] - self.box[0]) * (self.box[3] - self.box[1])

    @property
    def center(self) -> tuple[float, float]:
        return (self.box[0] + self.box[2]) / 2, (self.box[1] + self.box[3]) / 2


def position_words(box) -> str:
    """Where a box sits, in a 3 x 3 grid ("top left", "center", "bottom")."""
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    col = "left" if cx < 1 / 3 else "right" if cx > 2 / 3 else ""
    row = "top" if cy < 1 / 3 else "bottom" if cy > 2 / 3 else ""
    return f"{row} {col}".strip() or "center"


def size_words(obj: GroupObject) -> str:
    side = math.sqrt(obj.area)
    return "small" if side < 0.2 else "large" if side >= 0.29 else "medium-sized"


def caption(objects: list[GroupObject]) -> str:
    """A caption written from the scene graph (the paper captions with Qwen2-VL-7B)."""
    if not objects:
        return "A plain grey background."
    parts = [f"a {size_words(o)} {o.name} at the {position_words(o.box)}" for o in objects]
    return "A grey background with " + (", ".join(parts[:-1]) + " and " if len(parts) > 1 else "") + parts[-1] + "."


@dataclass
class Group:
    """An image group with its annotations: what a teacher composes questions from."""

    scenes: list[Scene]
    objects: list[list[GroupObject]]  # per image
    grouping: str  # random | common | similar
    images: list[str] = field(default_factory=list)  # rendered image paths (model teachers look at them)

    @property
    def captions(self) -> list[str]:
        return [caption(objs) for objs in self.objects]


def annotate(scenes: list[Scene]) -> list[list[GroupObject]]:
    return [[GroupObject(k, o.oid, o.color, o.shape, tuple(o.box)) for o in s.objects]  # type: ignore[arg-type]
            for k, s in enumerate(scenes)]


def build_group(rng: random.Random, cfg) -> Group:
    """2..max_images scenes grouped at random, around a common object (one kind in at least two
    images) or from a small palette of kinds (similar images). Objects get small, medium or large
    sizes so that size contrasts exist; oids are unique over the group (the images are distinct
    scenes, so two objects of one kind are two objects)."""
    n = n_images(rng, cfg, "free_form", at_least=2)
    grouping = rng.choice(GROUPINGS)
    palette = KINDS
    if grouping == "similar":
        colors, shapes = rng.sample(list(COLORS), 2), rng.sample(SHAPES, 3)
        palette = [(c, s) for c in colors for s in shapes]
    shared = random_kind(rng) if grouping == "common" else None
    scenes, oid = [], 0
    for i in range(n):
        scene = new_scene(rng, cfg)
        kinds = [rng.choice(palette) for _ in range(n_objects(rng, cfg, at_least=2))]
        if shared is not None and (i < 2 or rng.random() < 0.5):
            kinds[0] = shared
        for color, shape in kinds:
            lo, hi = SIZES[rng.choice(list(SIZES))]
            box = place_box(rng, [o.box for o in scene.objects], min_size=lo, max_size=hi)
            if box is None:
                continue
            scene.objects.append(Obj(shape=shape, color=color, box=box, oid=oid))
            oid += 1
        rng.shuffle(scene.objects)
        scenes.append(scene)
    return Group(scenes=scenes, objects=annotate(scenes), grouping=grouping)


# ------------------------------------------------------------------------------------ the links
def link_target(link: str, ref: Optional[GroupObject], candidates: list[GroupObject],
                group: list[list[GroupObject]]) -> Optional[GroupObject]:
    """The one object of `candidates` (one image's objects) that `link` to `ref` picks out; None when
    no object or several do (the question would be unanswerable or ambiguous)."""
    if link == "odd_one_out":
        image = candidates[0].image if candidates else -1
        elsewhere = {o.kind for objs in group for o in objs if o.image != image}
        hits = [c for c in candidates if c.kind not in elsewhere]
        return hits[0] if len(hits) == 1 else None
    assert ref is not None
    if link == "same_color":
        hits = [c for c in candidates if c.color == ref.color and c.shape != ref.shape]
    elif link == "same_shape":
        hits = [c for c in candidates if c.shape == ref.shape and c.color != ref.color]
    elif link == "same_object":
        hits = [c for c in candidates if c.kind == ref.kind]
    elif link == "size_contrast":
        ratios = sorted(((max(c.area, ref.area) / min(c.area, ref.area), i) for i, c in enumerate(candidates)),
                        reverse=True)
        if not ratios or ratios[0][0] < CONTRAST_RATIO:
            return None
        if len(ratios) > 1 and ratios[1][0] * CONTRAST_MARGIN > ratios[0][0]:
            return None
        return candidates[ratios[0][1]]
    elif link == "same_position":
        dists = sorted((math.dist(c.center, ref.center), i) for i, c in enumerate(candidates))
        if not dists or dists[0][0] > SAME_PLACE:
            return None
        if len(dists) > 1 and dists[1][0] < PLACE_MARGIN * dists[0][0] + 0.05:
            return None
        return candidates[dists[0][1]]
    else:
        raise ValueError(f"unknown free-form link {link!r}; expected one of {LINKS}")
    return hits[0] if len(hits) == 1 else None


def reference_phrases(ref: GroupObject, image_objects: list[GroupObject], link: str) -> list[str]:
    """Noun phrases that pick out `ref` in its image without naming what the link is about (a
    same-colour question never calls its reference "the red object")."""
    others = [o for o in image_objects if o.oid != ref.oid]
    where = f"Image-{ref.image + 1}"
    out = []
    if link not in ("same_shape", "same_object") and all(o.shape != ref.shape for o in others):
        out.append(f"the {ref.shape} in {where}")
    if link not in ("same_color", "same_object") and all(o.color != ref.color for o in others):
        out.append(f"the {ref.color} object in {where}")
    pos = position_words(ref.box)
    if link != "same_position" and all(position_words(o.box) != pos for o in others):
        out.append(f"the object at the {pos} of {where}")
    if link != "size_contrast" and others:
        if all(ref.area > 1.3 * o.area for o in others):
            out.append(f"the largest object in {where}")
        elif all(o.area > 1.3 * ref.area for o in others):
            out.append(f"the smallest object in {where}")
    return out


QUESTIONS = {
    "same_color": ["Ground the object in Image-{k} that has the same color as {ref}.",
                   "Which object in Image-{k} shares its color with {ref}, though its shape differs? Locate it.",
                   "Find the object in Image-{k} painted in the color of {ref}."],
    "same_shape": ["Locate the object in Image-{k} that has the same shape as {ref} but a different color.",
                   "Find the object in Image-{k} shaped like {ref}, in another color."],
    "same_object": ["Find the object in Image-{k} that looks exactly like {ref}.",
                    "{Ref} appears in Image-{k} as well. Where is it?"],
    "size_contrast": ["Ground the object in Image-{k} that contrasts most in size with {ref}.",
                      "Compared with {ref}, which object in Image-{k} differs most in size? Locate it."],
    "same_position": ["Which object in Image-{k} sits at about the same place as {ref}? Locate it.",
                      "Find the object in Image-{k} at the same position as {ref}."],
    "odd_one_out": ["Which object in Image-{k} has no counterpart of the same kind in any other image? Locate it.",
                    "One object in Image-{k} appears in none of the other images. Find it."],
}


def explanation(link: str, ref: Optional[GroupObject], target: GroupObject) -> str:
    """Why the target is the answer, naming the reference (the answer may say what the question may not)."""
    if link == "odd_one_out":
        return f"No other image contains a {target.name}."
    assert ref is not None
    of_ref = f"the {ref.name} in Image-{ref.image + 1}"
    if link == "same_color":
        return f"It is {target.color} like {of_ref}, but a {target.shape}."
    if link == "same_shape":
        return f"It is a {target.shape} like {of_ref}, but {target.color} instead of {ref.color}."
    if link == "same_object":
        return f"It is another {target.name}, like {of_ref}."
    if link == "size_contrast":
        rel = "much larger" if target.area > ref.area else "much smaller"
        return f"It is {rel} than {of_ref}, more so than any other object in its image."
    return f"It sits at about the same place as {of_ref}."


@dataclass
class QA:
    """One turn: the question, the answer (target box in canonical Qwen2-VL syntax), its ground truth."""

    question: str
    answer: str
    target: GroupObject
    link: str
    ref: Optional[GroupObject] = None

    def meta(self) -> dict:
        return {"link": self.link, "target_image": self.target.image, "target_oid": self.target.oid,
                "target": self.target.name, "box": list(self.target.box),
                "ref_image": self.ref.image if self.ref else None, "ref_oid": self.ref.oid if self.ref else None}


def answer_text(target: GroupObject, why: str) -> str:
    """The target named and boxed first (so its image is the last one named before the first box),
    then the explanation."""
    return (f"In Image-{target.image + 1}: <|object_ref_start|>the {target.name}<|object_ref_end|>"
            f"{qwen2_box(list(target.box))}. {why}")


class FreeFormTeacher(Protocol):
    def compose(self, groups: list[Group], rngs: list[random.Random]) -> list[list[QA]]: ...


class TemplateTeacher:
    """Composes free-form turns from a group's annotations with templates (the embedded default).

    Each turn picks a link uniformly among those the group offers, then uniformly one (reference,
    target image) for it that has exactly one answer and a reference phrase that does not give the
    link away; with `follow_up` a later turn takes the
    previous target as its reference ("...as the object you just found"). No target is asked twice.
    """

    def __init__(self, max_turns: int = MAX_TURNS, follow_up: float = FOLLOW_UP, box_reference: float = BOX_REFERENCE):
        self.max_turns, self.follow_up, self.box_reference = max_turns, follow_up, box_reference

    def compose(self, groups: list[Group], rngs: list[random.Random]) -> list[list[QA]]:
        return [self.conversation(g, rng) for g, rng in zip(groups, rngs)]

    def conversation(self, group: Group, rng: random.Random) -> list[QA]:
        turns: list[QA] = []
        for _ in range(rng.randint(1, self.max_turns)):
            used = {(t.target.image, t.target.oid) for t in turns}
            prev = turns[-1].target if turns and rng.random() < self.follow_up else None
            qa = self.turn(group, rng, used, prev)
            if qa is None and prev is not None:
                qa = self.turn(group, rng, used, None)
            if qa is None:
                break
            turns.append(qa)
        return turns

    def turn(self, group: Group, rng: random.Random, used: set, prev: Optional[GroupObject]) -> Optional[QA]:
        """A random valid question, or None when the group has none left."""
        objs = group.objects
        options = []  # (link, ref, target, ref phrase)
        for k, candidates in enumerate(objs):
            if not candidates:
                continue
            refs = [prev] if prev is not None else [o for i, image in enumerate(objs) if i != k for o in image]
            for link in LINKS:
                if link == "odd_one_out":
                    if prev is None:
                        t = link_target(link, None, candidates, objs)
                        if t is not None and (t.image, t.oid) not in used:
                            options.append((link, None, t, ""))
                    continue
                for ref in refs:
                    if ref.image == k:
                        continue
                    t = link_target(link, ref, candidates, objs)
                    if t is None or (t.image, t.oid) in used:
                        continue
                    phrases = [JUST_FOUND] if prev is not None else reference_phrases(ref, objs[ref.image], link)
                    if prev is None and (not phrases or rng.random() < self.box_reference):
                        phrases = [f"the object in Image-{ref.image + 1} at {qwen2_box(list(ref.box))}"]
                    options.append((link, ref, t, rng.choice(phrases)))
        if not options:
            return None
        link = rng.choice(sorted({o[0] for o in options}, key=LINKS.index))  # links equally likely
        link, ref, target, phrase = rng.choice([o for o in options if o[0] == link])
        template = rng.choice(QUESTIONS[link])
        question = template.format(k=target.image + 1, ref=phrase, Ref=phrase[:1].upper() + phrase[1:])
        return QA(question, answer_text(target, explanation(link, ref, target)), target, link, ref)


def conversation_turns(qas: list[QA], n_images: int) -> list[dict]:
    """`Sample.turns`: every image before the first question (MIG-Bench's order), then the turns."""
    turns = []
    for i, qa in enumerate(qas):
        turns.append({"role": "user", "content": qa.question, "image_offsets": [0] * n_images if i == 0 else []})
        turns.append({"role": "assistant", "content": qa.answer, "image_offsets": []})
    return turns


def free_form_item(group: Group, qas: list[QA]) -> SynthItem:
    """A SynthItem from a group and its turns; the last turn's target is the sample's answer."""
    last = qas[-1].target
    n_obj = sum(len(objs) for objs in group.objects)
    return SynthItem(
        scenes=group.scenes, question=qas[-1].question, answer=list(last.box), answer_image=last.image,
        response=qas[-1].answer, need_format=False, turns=conversation_turns(qas, len(group.scenes)),
        meta={"target_oid": last.oid, "target": last.name, "grouping": group.grouping,
              "turns": [qa.meta() for qa in qas], "captions": group.captions,
              "num_images": len(group.scenes), "distractors": n_obj - 1},
    )


def gen_free_form(rng: random.Random, cfg, teacher: Optional[FreeFormTeacher] = None, tries: int = 50) -> SynthItem:
    """The `free_form` MIG-Synth task: an image group and a 1-3 turn conversation about it, composed
    by `teacher` (default: the template teacher); a fresh group when one gets no turn (rare)."""
    teacher = teacher or TemplateTeacher()
    for _ in range(tries):
        group = build_group(rng, cfg)
        qas = teacher.compose([group], [rng])[0]
        if qas:
            return free_form_item(group, qas)
    raise RuntimeError(f"free_form: no image group with a valid cross-image question in {tries} tries "
                       f"(data.synth.min_objects/max_objects = {cfg.min_objects}/{cfg.max_objects})")
