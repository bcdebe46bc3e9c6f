"""Answering forms: polling vs all-at-once (migician.txt Table 10 and Appendix F, "Polling-based
Evaluation"), `eval.answer_form`.

Four MIG-Bench tasks have several target images per image group: common object (the shared object
in every image), multi-view and object tracking (the object marked in image 1, in every later
image), and region locating (every region picture, located in the source image 1). The paper
compares two ways of asking for those boxes:

  polling (`eval.answer_form=polling`, the default and how MIG-Bench is scored in every table but
      Table 10's "All" rows): one prompt per target, all images shown, the question naming the one
      target ("Recognize and locate this object in the 3th image."). MIG-Bench's records ARE this
      form: one record per (image group, target), e.g. a 4-image common-object group is four
      records differing only in "1th" ... "4th", and the published `MIG_bench_eval.py` simply runs
      the records, so polling = evaluate each record as written.
  all (`eval.answer_form=all`): one prompt per image group asking for the boxes of ALL its targets
      at once ("...directly generating all the bounding box coordinates for all images", App. F).
      Records that share task, images and question (up to the target's ordinal) form one group; a
      MIG-Synth sample is a group of one, still asked for every target of its images. The question
      is the first record's, with its ordinal phrase ("in the 3th image", "the 2th region picture")
      replaced by the list of targets, plus a layout line ("one line per image, 'Image-k: ' and its
      box"). The public code has no all-at-once prompt, so this wording is ours.

Scoring the all form: every box of the response is found (Migician's cascade, or `bbox_2d` for
Qwen2.5-VL); a box goes to the target image named just before it (`Image-k`), unlabelled boxes fill
the remaining targets in order. Each record is then scored on its own box exactly as in polling
(Qwen2-VL boxes scaled as Migician scales a multi-box response; Qwen2.5-VL pixels mapped through
the size of the image the box lies in: the target image, or image 1 for region locating). Every
record gets one prediction in both forms, so task scores stay comparable. Tasks with one target per
image group (diff, group grounding, ...) are asked the same way in both forms.

With the multi-image CoT (`eval.cot=multi`, Table 10's "Polling+mCoT" / "All+mCoT"): polling runs the
CoT per record; all runs step 1 once per group (region locating: one description per region
picture) and step 2 once per group, all images shown, asking for every target with the same layout
line. The single-image CoT shows one image in step 2, which is polling by nature (the config
refuses `cot=single` with `answer_form=all`).
"""

from __future__ import annotations

import re
from typing import Optional, Sequence

from mig_data.schema import Sample
from mig_eval import cot_baselines as cot
from mig_eval.cot_baselines import region_picture
from mig_lab.boxes import (
    BBOX_2D,
    NUM_DIGITS,
    QWEN2_BOX,
    Box,
    answer_text,
    find_boxes_at,
    image_named_before,
    to_unit_box,
)

MULTI_TARGET_TASKS = ("common_object", "multi_view", "object_tracking", "region")
_IMAGE_NTH = re.compile(rf"(?:in )?the (\d{{1,{NUM_DIGITS}}})(?:st|nd|rd|th) (?:image|frame)")
_REGION_NTH = re.compile(rf"the (\d{{1,{NUM_DIGITS}}})(?:st|nd|rd|th) region picture")


def target_slots(sample: Sample) -> list[int]:
    """0-based images whose boxes an all-at-once question asks for (for region: region pictures)."""
    n = len(sample.images)
    return list(range(n)) if sample.task == "common_object" else list(range(1, n))


def sample_slot(sample: Sample) -> int:
    """The target (0-based image) a polling record asks about."""
    if sample.task == "region":
        return region_picture(sample) - 1
    return sample.answer_image or 0


def slot_box_image(sample: Sample, slot: int) -> int:
    """The image a target's box lies in (region locating: the source image)."""
    return 0 if sample.task == "region" else slot


def _group_key(s: Sample) -> tuple:
    masked = _REGION_NTH.sub("#", _IMAGE_NTH.sub("#", s.question))
    return s.task, tuple(s.images), masked


def plan_units(samples: Sequence[Sample], form: str) -> list[list[int]]:
    """Sample indices grouped into prompts: one per sample (polling), or one per image group of the
    multi-target tasks (all). Units are ordered by their first sample."""
    if form == "polling":
        return [[i] for i in range(len(samples))]
    if form != "all":
        raise ValueError(f"eval.answer_form={form!r}: expected polling or all")
    groups: dict[tuple, list[int]] = {}
    units: list[list[int]] = []
    for i, s in enumerate(samples):
        if s.task not in MULTI_TARGET_TASKS:
            units.append([i])
            continue
        key = _group_key(s)
        if key not in groups:
            groups[key] = []
            units.append(groups[key])
        groups[key].append(i)
    return units


def labels(sample: Sample) -> str:
    return ", ".join(f"Image-{k + 1}" for k in target_slots(sample))


def all_instruction(sample: Sample) -> str:
    """The answer-layout line of an all-at-once question."""
    if sample.task == "region":
        return ("Answer with one line per region picture, in this order, each as 'Image-k: ' followed by "
                "its box in the source image.")
    return "Answer with one line per image, in this order, each as 'Image-k: ' followed by the box."


def all_question(sample: Sample) -> str:
    """The all-at-once question for the image group `sample` belongs to."""
    q = sample.question
    if sample.task == "region" and _REGION_NTH.search(q):
        q = _REGION_NTH.sub(f"each region picture ({labels(sample)})", q, count=1)
    elif sample.task != "region" and _IMAGE_NTH.search(q):
        q = _IMAGE_NTH.sub(f"in each of these images: {labels(sample)}", q, count=1)
    else:
        q = f"{q.rstrip()} Answer for each of these images: {labels(sample)}."
    return f"{q.rstrip()} {all_instruction(sample)}"


def all_step1_question(sample: Sample) -> str:
    """All+mCoT step 1: the CoT step-1 question; region locating asks for every region picture."""
    if sample.task == "region":
        return (f"Describe the content of each of the pictures {labels(sample)} with simple phrase or words, "
                f"one line each as 'Image-k: ' followed by the description.")
    return cot.step1_question(sample)


def all_step2_question(sample: Sample, step1_response: str) -> str:
    """All+mCoT step 2 (all images shown): the CoT step-2 question for every target at once."""
    if sample.task == "region":
        text = (f"Please ground each of these objects in the source image (Image-1): "
                f"{cot.clean_description(step1_response)}.")
    else:
        text = f"{cot.step2_question(sample, step1_response, 'single', 0)} Do this in each of these images: " \
               f"{labels(sample)}."
    return f"{text} {all_instruction(sample)}"


def assign_boxes(response: str, members: Sequence[Sample], convention: str,
                 image_sizes: Optional[Sequence[tuple[int, int]]] = None
                 ) -> list[tuple[Optional[Box], int, bool]]:
    """(box, box_image, well_formed) for each member of a group from one all-at-once response."""
    scope = answer_text(response)
    found = find_boxes_at(scope, convention)
    slots = target_slots(members[0])
    assigned: dict[int, list[float]] = {}
    free: list[list[float]] = []
    prev = 0
    for start, values in found:
        named = image_named_before(scope, start, prev)
        prev = start + 1
        if named in slots and named not in assigned:
            assigned[named] = values
        else:
            free.append(values)
    for slot in slots:
        if slot not in assigned and free:
            assigned[slot] = free.pop(0)
    canonical = (BBOX_2D if convention == "qwen2_5_vl" else QWEN2_BOX).search(scope) is not None
    out = []
    for s in members:
        slot = sample_slot(s)
        img = slot_box_image(s, slot)
        values = assigned.get(slot)
        hw = image_sizes[img] if image_sizes and 0 <= img < len(image_sizes) else None
        box = to_unit_box(values, convention, hw, n_boxes=len(found)) if values is not None else None
        out.append((box, img, canonical and box is not None))
    return out
