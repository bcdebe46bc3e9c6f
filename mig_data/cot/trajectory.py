"""MIRG-RL trajectories (mirg_rl.txt 2.2): three construction stages with plain data between them,
the three data forms of Table 3, and the validator every trajectory passes before it is written.

Stage 1, CoT generation: `CotDraft` = R1-style text, `<think>...</think><answer>...</answer>`, whose
    object mentions are marked `<|object_ref_start|>red circle<|object_ref_end|> in Image-2` (the
    image 1-based, as the reasoning states it); the answer holds the target's mention.
Stage 2, image-object mapping: one `ObjectRef` (image, box) per mention, or None where the mapper
    cannot place the object (the trajectory is then rejected as `unmapped_object`).
Stage 3, reassembly (`reassemble`): ids `[N-M]` are assigned in order of first mention (N the image,
    M the M-th distinct object of image N; two mentions are the same object when they map to the
    same image and box). The first mention of an object becomes
    `<bbox_id>[N-M]</bbox_id><|object_ref_start|>red circle<|object_ref_end|><|box_start|>(x1,y1),(x2,y2)<|box_end|>`,
    later mentions `<bbox_id>[N-M]</bbox_id>` alone.

The answer is the target's bare `<bbox_id>[N-M]</bbox_id>`: the box is NOT repeated. Scoring resolves
the id to the box defined for it in the think part (`mig_lab.boxes.resolve_bbox_id`), so the object
reward, the image reward (N) and evaluation all read the same box, and the model is not trained to
write the same box twice. Qwen2.5-VL targets get every box in pixels of its own image N (the box
codec maps each box through the image named by the bbox_id before it).

Forms (`trajectory.form`, Table 3):
    grounded   reasoning + grounding: the structured trajectory above;
    reasoning  reasoning only: the same CoT with plain mentions ("red circle in Image-2"), no ids or
               boxes inside the reasoning; the answer is `Image-N: <box>`;
    answer     plain SFT data: `Image-N: <box>` alone, no reasoning.

Stages 1 and 2 come from a teacher (`mig_data.cot.trajectory_teachers`: the oracle writes them from
MIG-Synth scene graphs, `ModelTrajectoryTeacher` asks a local VLM, as the paper asked GPT-4o and
Qwen2-VL-72B). Stage 3 is rule-based here: with ids assigned by rule it cannot produce an inconsistent
reference. Trajectories stay short (the tiny model generates them during RL): they mention the
query/marked object, the target and at most one distractor (`trajectory.distractor`).
"""

from __future__ import annotations

import dataclasses
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any, Optional, Sequence

from mig_data.schema import Sample
from mig_lab.boxes import (
    BBOX_2D,
    BBOX_ID,
    NUM_DIGITS,
    answer_text,
    find_raw_boxes,
    iou,
    is_think_answer,
    parse_response,
    qwen2_box,
    resolve_bbox_id,
    to_grid,
)
from mig_lab.config import ConfigError

REF_START, REF_END = "<|object_ref_start|>", "<|object_ref_end|>"
FORMS = ("grounded", "reasoning", "answer")

# Appended to the question of every sample of a form (train, RL and eval prompts alike).
INSTRUCTIONS = {
    "grounded": (" Think in <think> </think>, giving each object you use as <bbox_id>[image-object]</bbox_id> "
                 "with its box, then answer in <answer> </answer> with the target's bbox_id."),
    "reasoning": " Think in <think> </think>, then answer in <answer> </answer> as Image-N: and the box.",
    "answer": " Answer as Image-N: and the box.",
}

# A stage-1 mention: the object's words, then the image the reasoning puts it in.
MENTION = re.compile(re.escape(REF_START) + r"([^<]*)" + re.escape(REF_END) + r"\s*in (?:Image|image)[\s-]?"
                     + rf"(\d{{1,{NUM_DIGITS}}})\b")
_NUM = rf"(-?\d{{1,{NUM_DIGITS}}}(?:\.\d+)?)"  # bounded, as mig_lab.boxes reads numbers
_BOX = (r"(?:<\|box_start\|>\(" + _NUM + r",\s*" + _NUM + r"\),\s*\(" + _NUM + r",\s*" + _NUM + r"\)<\|box_end\|>"
        r"|\{\s*\"bbox_2d\"\s*:\s*\[\s*" + _NUM + r"\s*,\s*" + _NUM + r"\s*,\s*" + _NUM + r"\s*,\s*" + _NUM
        + r"\s*\]\s*\})")
# A bbox_id followed by (optionally) its object words and a box: a definition; without a box: a use.
DEFINITION = re.compile(r"\s*(?:" + re.escape(REF_START) + r"([^<]*)" + re.escape(REF_END) + r")?\s*" + _BOX)


# ------------------------------------------------------------------------------- plain data
@dataclass
class CotDraft:
    """Stage 1 output. `hints` (oracle only, one per mention) name the scene object a mention is
    (`{"oid": 3}`) or give its box (`{"box": [...]}`: a region, a part, an empty place)."""

    text: str
    hints: Optional[list[dict]] = None


@dataclass(frozen=True)
class Mention:
    name: str
    image: int  # 1-based
    start: int
    end: int


@dataclass(frozen=True)
class ObjectRef:
    """Stage 2 output for one mention: the image (1-based) and the box (normalised [0, 1])."""

    image: int
    box: tuple[float, float, float, float]


def mentions(text: str) -> list[Mention]:
    return [Mention(m.group(1).strip(), int(m.group(2)), m.start(), m.end()) for m in MENTION.finditer(text)]


def ref(name: str, image: int) -> str:
    """A stage-1 mention of `name` in image `image` (1-based)."""
    return f"{REF_START}{name}{REF_END} in Image-{image}"


# --------------------------------------------------------------------- stage 3: reassembly
def assign_ids(refs: Sequence[ObjectRef]) -> list[tuple[int, int]]:
    """(N, M) per mention: M numbers the distinct objects (image, box on the 0-1000 grid) of image N
    in order of first mention."""
    ids: dict[tuple[int, tuple[int, ...]], tuple[int, int]] = {}
    per_image: Counter = Counter()
    out = []
    for r in refs:
        key = (r.image, to_grid(r.box))
        if key not in ids:
            per_image[r.image] += 1
            ids[key] = (r.image, per_image[r.image])
        out.append(ids[key])
    return out


def reassemble(draft_text: str, refs: Sequence[ObjectRef], form: str = "grounded") -> str:
    """Stage 3: the trajectory of `form` from the stage-1 text and the stage-2 objects."""
    if form not in FORMS:
        raise ConfigError(f"trajectory.form={form!r}: expected one of {list(FORMS)}")
    found = mentions(draft_text)
    if len(found) != len(refs):
        raise ValueError(f"{len(found)} mentions but {len(refs)} mapped objects")
    answer_ref = refs[-1]  # the answer block holds the last mention: the target
    final = f"Image-{answer_ref.image}: {qwen2_box(answer_ref.box)}"
    if form == "answer":
        return final
    ids = assign_ids(refs)
    defined: set[tuple[int, int]] = set()
    out, last = [], 0
    for m, r, (n, k) in zip(found, refs, ids):
        out.append(draft_text[last:m.start])
        if form == "reasoning":
            article = "" if re.search(r"\b(?:the|a|an)\s*$", draft_text[:m.start], re.IGNORECASE) else "the "
            out.append(f"{article}{m.name} in Image-{m.image}")
        elif (n, k) in defined:
            out.append(f"<bbox_id>[{n}-{k}]</bbox_id>")
        else:
            defined.add((n, k))
            out.append(f"<bbox_id>[{n}-{k}]</bbox_id>{REF_START}{m.name}{REF_END}{qwen2_box(r.box)}")
        last = m.end
    out.append(draft_text[last:])
    text = _capitalise_sentences("".join(out))
    if form == "reasoning":
        text = re.sub(r"<answer>.*?</answer>", lambda _: f"<answer>{final}</answer>", text, flags=re.DOTALL)
    return text


def _capitalise_sentences(text: str) -> str:
    return re.sub(r"(<think>|\. )([a-z])", lambda m: m.group(1) + m.group(2).upper(), text)


# ----------------------------------------------------------------------------- validator
# Rejection reasons, in the order they are reported. The first two come from construction (stage 1
# or 2 gave nothing usable), the middle ones from `trajectory_errors`, the last from `answer_correct`.
REASONS = ("no_draft", "unmapped_object", "missing_think_answer", "malformed_id", "image_out_of_range",
           "object_index_invalid", "undefined_id", "used_before_definition", "inconsistent_id", "box_out_of_range",
           "box_unordered", "answer_without_box", "wrong_answer")


def _definition_box(d: re.Match, image: int, image_sizes) -> tuple[tuple[float, ...], float, float]:
    """(values, max x, max y) of a definition's box: Qwen2-VL boxes live in 0-1000, Qwen2.5-VL JSON
    boxes in the pixels of their image N as the model saw it (unbounded when the sizes are unknown)."""
    if d.group(2) is not None:
        return tuple(float(v) for v in d.groups()[1:5]), 1000.0, 1000.0
    values = tuple(float(v) for v in d.groups()[5:9])
    if image_sizes and 1 <= image <= len(image_sizes):
        h, w = image_sizes[image - 1]
        return values, float(w), float(h)
    return values, float("inf"), float("inf")


def trajectory_errors(text: str, n_images: int, image_sizes: Optional[Sequence[tuple[int, int]]] = None,
                      require_think: bool = True) -> list[str]:
    """Why a trajectory is invalid, as reason names (empty: valid).

    missing_think_answer    not `<think>...</think><answer>...</answer>` and nothing else (when required)
    malformed_id            a `<bbox_id>` tag that is not `<bbox_id>[N-M]</bbox_id>`
    image_out_of_range      N outside 1..n_images
    object_index_invalid    M < 1
    undefined_id            a bare id that is never defined (with a box)
    used_before_definition  a bare id before its definition
    inconsistent_id         one id defined with two different objects or boxes, or one object (image and
                            box) defined under two ids
    box_out_of_range        a coordinate outside 0-1000 (Qwen2-VL) or outside image N's pixels (Qwen2.5-VL)
    box_unordered           x2 < x1 or y2 < y1
    answer_without_box      the answer resolves to no box (neither its bbox_id's nor one of its own)
    """
    errors: set[str] = set()
    if require_think and not is_think_answer(text):
        errors.add("missing_think_answer")
    ids = list(BBOX_ID.finditer(text))
    if text.count("<bbox_id>") != len(ids) or text.count("</bbox_id>") != len(ids):
        errors.add("malformed_id")
    defined: dict[tuple[int, int], tuple[str, tuple[float, ...], int]] = {}  # id -> (object, box, position)
    owner: dict[tuple[int, tuple[float, ...]], tuple[int, int]] = {}  # (image, box) -> id
    uses: list[tuple[int, tuple[int, int]]] = []
    for m in ids:
        key = n, k = int(m.group(1)), int(m.group(2))
        if not 1 <= n <= n_images:
            errors.add("image_out_of_range")
        if k < 1:
            errors.add("object_index_invalid")
        d = DEFINITION.match(text, m.end())
        if d is None:
            uses.append((m.start(), key))
            continue
        name = (d.group(1) or "").strip()
        values, max_x, max_y = _definition_box(d, n, image_sizes)
        x1, y1, x2, y2 = values
        if min(values) < 0 or max(x1, x2) > max_x or max(y1, y2) > max_y:
            errors.add("box_out_of_range")
        if x2 < x1 or y2 < y1:
            errors.add("box_unordered")
        if key in defined and defined[key][:2] != (name, values):
            errors.add("inconsistent_id")
        if owner.setdefault((n, values), key) != key:
            errors.add("inconsistent_id")
        defined.setdefault(key, (name, values, m.start()))
    for pos, key in uses:
        if key not in defined:
            errors.add("undefined_id")
        elif defined[key][2] > pos:
            errors.add("used_before_definition")
    if not has_box(resolve_bbox_id(text, answer_text(text) if require_think else text)):
        errors.add("answer_without_box")
    return [r for r in REASONS if r in errors]


def has_box(text: str) -> bool:
    return bool(find_raw_boxes(text) or BBOX_2D.search(text))


def answer_correct(sample: Sample, text: str, threshold: float = 0.5) -> bool:
    """The trajectory's answer (its bbox_id resolved) is the ground truth: IoU >= threshold, and the
    image it names, if any, is the target image."""
    parsed = parse_response(text, "qwen2_vl", default_image=sample.answer_image or 0)
    image_ok = parsed.image is None or sample.answer_image is None or parsed.image == sample.answer_image
    return sample.answer is not None and image_ok and iou(sample.answer, parsed.box) >= threshold


# ------------------------------------------------------------------------ the three stages
def trajectory_for(sample: Sample, draft: Optional[CotDraft], refs: Sequence[Optional[ObjectRef]], form: str
                   ) -> tuple[Optional[str], list[str]]:
    """Stage 3 plus the checks: (trajectory, []) or (None, rejection reasons)."""
    if draft is None or not mentions(draft.text):
        return None, ["no_draft"]
    if not refs or any(r is None for r in refs):
        return None, ["unmapped_object"]
    text = reassemble(draft.text, refs, form)  # type: ignore[arg-type]
    errors = trajectory_errors(text, len(sample.images), require_think=form != "answer")
    if errors:
        return None, errors
    if not answer_correct(sample, text):
        return None, ["wrong_answer"]
    return text, []


def build_trajectories(samples: Sequence[Sample], teacher: Any, form: str, seed: int
                       ) -> tuple[list[tuple[Sample, str]], dict]:
    """Run the three stages on `samples`; keep the valid trajectories. Every sample is either kept or
    counted under its rejection reasons (a sample may have several): nothing is dropped silently."""
    if form not in FORMS:
        raise ConfigError(f"trajectory.form={form!r}: expected one of {list(FORMS)}")
    drafts = teacher.draft(samples, seed)
    refs = teacher.map_objects(samples, drafts, seed)
    kept: list[tuple[Sample, str]] = []
    reasons: Counter = Counter()
    by_task: dict[str, Counter] = {}
    for s, d, r in zip(samples, drafts, refs):
        text, why = trajectory_for(s, d, r, form)
        counts = by_task.setdefault(s.task, Counter())
        counts["samples"] += 1
        if text is None:
            reasons.update(why)
            counts["rejected"] += 1
        else:
            kept.append((s, text))
            counts["kept"] += 1
    lengths = [len(t) for _, t in kept]
    stats = {"form": form, "teacher": getattr(teacher, "kind", type(teacher).__name__), "samples": len(samples),
             "kept": len(kept), "rejected_samples": len(samples) - len(kept),
             "rejected": {k: reasons[k] for k in REASONS if reasons[k]},
             "by_task": {t: dict(c) for t, c in sorted(by_task.items())},
             "mean_chars": sum(lengths) / len(lengths) if lengths else 0.0,
             "max_chars": max(lengths, default=0)}
    return kept, stats


def with_instruction(sample: Sample, form: str, response: Optional[str] = None) -> Sample:
    """The sample asked in `form` (the form's instruction replaces the family format prompt)."""
    meta = dict(sample.meta, trajectory_form=form)
    return dataclasses.replace(sample, question=sample.question.rstrip() + INSTRUCTIONS[form], need_format=False,
                               response=response, meta=meta)
