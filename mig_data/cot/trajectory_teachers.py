"""Stages 1 and 2 of the MIRG-RL trajectory construction (mirg_rl.txt 2.2), by two teachers with the
same two methods, so either can replace the other (or one stage of it):

    draft(samples, seed) -> [CotDraft | None]                 stage 1, CoT generation
    map_objects(samples, drafts, seed) -> [[ObjectRef | None]] stage 2, image-object mapping

`OracleTrajectoryTeacher` writes both from MIG-Synth scene graphs (`sample.meta["scenes"]`): a few short
sentences per task naming the query/marked object, the target and at most one distractor (a hard
negative sharing the target's colour or shape where there is one), each mention's box read from the
scene graph. `ModelTrajectoryTeacher` asks a local VLM through the teacher interface
(`mig_data.cot.teachers.ModelTeacher.respond`): the paper used GPT-4o for stage 1 and Qwen2-VL-72B for
stage 2. Stage 3 (reassembly) and the validator are in `mig_data.cot.trajectory`.
"""

from __future__ import annotations

import dataclasses
import random
from typing import Any, Optional, Sequence

from mig_data.cot.teachers import model_teacher
from mig_data.cot.trajectory import CotDraft, ObjectRef, mentions, ref
from mig_data.schema import Sample, find_object, scene_objects
from mig_lab.boxes import parse_response, qwen2_box
from mig_lab.config import ConfigError


# --------------------------------------------------------------------- stage 1: oracle CoT
def obj_name(o: dict) -> str:
    return f"{o.get('color', '')} {o.get('shape', 'object')}".strip()


def pick_distractor(rng: random.Random, objects: list[dict], target: Optional[dict], exclude_oids=()) -> Optional[dict]:
    """A distractor, preferring a hard negative (sharing the target's colour or shape)."""
    pool = [o for o in objects if o.get("oid") not in exclude_oids and (target is None or o.get("oid") != target.get("oid"))]
    if not pool:
        return None
    if target is not None:
        hard = [o for o in pool if o.get("color") == target.get("color") or o.get("shape") == target.get("shape")]
        pool = hard or pool
    return rng.choice(pool)


class _Writer:
    """Collects stage-1 sentences and the hint of each mention, in text order."""

    def __init__(self):
        self.parts: list[str] = []
        self.hints: list[dict] = []

    def m(self, name: str, image0: int, **hint) -> str:
        self.hints.append({"image": image0 + 1, **hint})
        return ref(name, image0 + 1)

    def draft(self, think: str, answer: str) -> CotDraft:
        return CotDraft(text=f"<think>{think}</think><answer>{answer}</answer>", hints=self.hints)


def oracle_draft(sample: Sample, rng: random.Random, distractor: bool = True) -> Optional[CotDraft]:
    """Stage 1 from the scene graph: a few short sentences per task. None when the sample has no
    scene graph this task's reasoning can use (counted as `no_draft`)."""
    fn = _DRAFTS.get(sample.task)
    if fn is None or not sample.meta.get("scenes") or sample.answer is None:
        return None
    return fn(sample, rng, distractor, _Writer())


def _target(sample: Sample) -> Optional[dict]:
    return find_object(sample, sample.answer_image or 0, sample.meta.get("target_oid", -1))


def _draft_group_grounding(s: Sample, rng, distractor: bool, w: _Writer) -> Optional[CotDraft]:
    k = s.answer_image or 0
    t = _target(s)
    if t is None:
        return None
    others = [(i, o) for i in range(len(s.images)) for o in scene_objects(s, i) if o is not t]
    think = f"The query asks for the {obj_name(t)}. "
    if distractor and others:
        d_pool = [o for _, o in others]
        d = pick_distractor(rng, d_pool, t)
        i = next(i for i, o in others if o is d)
        think += f"{w.m(obj_name(d), i, oid=d['oid'])} is not it. "
    think += f"{w.m(obj_name(t), k, oid=t['oid'])} is."
    return w.draft(think, w.m(obj_name(t), k, oid=t["oid"]))


def _draft_common_object(s: Sample, rng, distractor: bool, w: _Writer) -> Optional[CotDraft]:
    k, oid = s.answer_image or 0, s.meta.get("target_oid", 0)
    t = find_object(s, k, oid)
    if t is None:
        return None
    j = 0 if k != 0 else 1
    other = find_object(s, j, oid)
    think = ""
    if distractor:
        d = pick_distractor(rng, scene_objects(s, k), t)
        if d is not None:
            think += f"{w.m(obj_name(d), k, oid=d['oid'])} is not in every image. "
    if other is not None:
        think += f"{w.m(obj_name(other), j, oid=oid)} is in every image. "
    think += f"Here it is {w.m(obj_name(t), k, oid=oid)}."
    return w.draft(think, w.m(obj_name(t), k, oid=oid))


def _draft_diff(s: Sample, rng, distractor: bool, w: _Writer) -> Optional[CotDraft]:
    change, oid = s.meta.get("change"), s.meta.get("target_oid", -1)
    before = find_object(s, 0, oid)
    answer_box = list(s.answer or [])
    think = "Despite the view change, " if s.task == "view_diff" else ""
    if distractor:
        unchanged = [o for o in scene_objects(s, 0) if o.get("oid") != oid and find_object(s, 1, o["oid"])]
        d = pick_distractor(rng, unchanged, None)
        if d is not None:
            think += f"{w.m(obj_name(d), 0, oid=d['oid'])} is unchanged. "
    if change == "added" or before is None:
        after = find_object(s, 1, oid)
        name = obj_name(after) if after else str(s.meta.get("target", "object"))
        think += f"{w.m(name, 1, box=answer_box)} is new."
        return w.draft(think, w.m(name, 1, box=answer_box))
    if change == "removed":
        think += f"{w.m(obj_name(before), 0, oid=oid)} is gone from {w.m('empty place', 1, box=answer_box)}."
        return w.draft(think, w.m("empty place", 1, box=answer_box))
    name = str(s.meta.get("after") or s.meta.get("target") or "object")
    think += f"{w.m(obj_name(before), 0, oid=oid)} became {w.m(name, 1, box=answer_box)}."
    return w.draft(think, w.m(name, 1, box=answer_box))


def _draft_marked(s: Sample, rng, distractor: bool, w: _Writer) -> Optional[CotDraft]:
    """object_tracking / multi_view: the object marked in image 1, found in image k."""
    k, oid = s.answer_image or 0, s.meta.get("target_oid", 0)
    q, t = find_object(s, 0, oid), find_object(s, k, oid)
    if q is None or t is None:
        return None
    think = f"The marked object is {w.m(obj_name(q), 0, oid=oid)}. "
    if distractor:
        d = pick_distractor(rng, scene_objects(s, k), t)
        if d is not None and (d.get("color") == t.get("color") or d.get("shape") == t.get("shape")):
            think += f"Not {w.m(obj_name(d), k, oid=d['oid'])}. "
    think += f"It is {w.m(obj_name(t), k, oid=oid)}."
    return w.draft(think, w.m(obj_name(t), k, oid=oid))


def _draft_region(s: Sample, rng, distractor: bool, w: _Writer) -> Optional[CotDraft]:
    regions = s.meta.get("regions") or []
    r = s.meta.get("ask_region", 0)
    if r >= len(regions):
        return None
    anchor = regions[r].get("anchor_oid")
    in_crop, in_source = find_object(s, r + 1, anchor), find_object(s, 0, anchor)
    box = list(s.answer or regions[r]["box"])
    think = ""
    if in_crop is not None and in_source is not None:
        think += (f"The region holds {w.m(obj_name(in_crop), r + 1, oid=anchor)}, "
                  f"which is {w.m(obj_name(in_source), 0, oid=anchor)}. ")
    think += f"So the region is {w.m('region', 0, box=box)}."
    return w.draft(think, w.m("region", 0, box=box))


def _draft_refer(s: Sample, rng, distractor: bool, w: _Writer) -> Optional[CotDraft]:
    t = _target(s)
    q = (s.meta.get("query") or {})
    qo = find_object(s, q.get("image", 0), q.get("oid", -1))
    if t is None or qo is None:
        return None
    think = f"The query is {w.m(obj_name(qo), 0, oid=qo['oid'])}. "
    if distractor:
        d = pick_distractor(rng, scene_objects(s, 1), t)
        if d is not None:
            think += f"{w.m(obj_name(d), 1, oid=d['oid'])} differs. "
    think += f"{w.m(obj_name(t), 1, oid=t['oid'])} matches."
    return w.draft(think, w.m(obj_name(t), 1, oid=t["oid"]))


def _draft_reasoning(s: Sample, rng, distractor: bool, w: _Writer) -> Optional[CotDraft]:
    t = _target(s)
    q = (s.meta.get("query") or {})
    qo = find_object(s, 0, q.get("oid", -1))
    if t is None or qo is None:
        return None
    relation = s.meta.get("relation")
    think = f"The reference is {w.m(obj_name(qo), 0, oid=qo['oid'])}. "
    objs = scene_objects(s, 1)
    copies = [o for o in objs if o.get("color") == qo.get("color") and o.get("shape") == qo.get("shape")]
    if relation in ("larger", "smaller") and len(copies) >= 2:
        a, b = copies[:2]
        think += (f"Its copies are {w.m(obj_name(a), 1, oid=a['oid'])} and {w.m(obj_name(b), 1, oid=b['oid'])}; "
                  f"the {relation} is {w.m(obj_name(t), 1, oid=t['oid'])}.")
    elif relation == "nearest" and copies:
        c = copies[0]
        think += f"Its copy is {w.m(obj_name(c), 1, oid=c['oid'])}; nearest to it is {w.m(obj_name(t), 1, oid=t['oid'])}."
    else:
        what = {"same_color": "Same colour, other shape", "same_shape": "Same shape, other colour"}.get(
            relation, "The relation points to")
        think += f"{what}: {w.m(obj_name(t), 1, oid=t['oid'])}."
    return w.draft(think, w.m(obj_name(t), 1, oid=t["oid"]))


def _draft_correspondence(s: Sample, rng, distractor: bool, w: _Writer) -> Optional[CotDraft]:
    t_oid = s.meta.get("target_oid", 1)
    whole = find_object(s, 1, t_oid)
    q = find_object(s, 0, (s.meta.get("query") or {}).get("oid", 0))
    part = str(s.meta.get("part", "part"))
    if whole is None or q is None:
        return None
    box = list(s.answer or [])
    think = (f"The mark is the {part} of {w.m(obj_name(q), 0, oid=q['oid'])}. "
             f"{w.m(obj_name(whole), 1, oid=t_oid)} has its shape; its {part} is {w.m(part, 1, box=box)}.")
    return w.draft(think, w.m(part, 1, box=box))


_DRAFTS = {
    "group_grounding": _draft_group_grounding,
    "common_object": _draft_common_object,
    "diff": _draft_diff,
    "view_diff": _draft_diff,
    "object_tracking": _draft_marked,
    "multi_view": _draft_marked,
    "region": _draft_region,
    "refer_grounding": _draft_refer,
    "reasoning": _draft_reasoning,
    "correspondence": _draft_correspondence,
}


# ------------------------------------------------------------------ stage 2: oracle mapping
def oracle_map(sample: Sample, draft: CotDraft) -> list[Optional[ObjectRef]]:
    """Stage 2 from the scene graph: each mention's image (as the reasoning states it) and box."""
    refs: list[Optional[ObjectRef]] = []
    hints = draft.hints or []
    for k, m in enumerate(mentions(draft.text)):
        hint = hints[k] if k < len(hints) else {}
        box = hint.get("box")
        if box is None and "oid" in hint:
            o = find_object(sample, m.image - 1, hint["oid"])
            box = o["box"] if o is not None else None
        refs.append(ObjectRef(m.image, tuple(min(max(float(v), 0.0), 1.0) for v in box)) if box else None)  # type: ignore[arg-type]
    return refs


# ------------------------------------------------------------------------------- teachers
class OracleTrajectoryTeacher:
    """Stages 1 and 2 from MIG-Synth scene graphs (exact ground truth)."""

    kind = "oracle"

    def __init__(self, distractor: bool = True):
        self.distractor = distractor

    def draft(self, samples: Sequence[Sample], seed: int) -> list[Optional[CotDraft]]:
        return [oracle_draft(s, random.Random(f"mirg-draft/{seed}/{s.id}"), self.distractor) for s in samples]

    def map_objects(self, samples: Sequence[Sample], drafts: Sequence[Optional[CotDraft]], seed: int
                    ) -> list[list[Optional[ObjectRef]]]:
        return [oracle_map(s, d) if d is not None else [] for s, d in zip(samples, drafts)]


# Stage-1 prompt for a model teacher (mirg_rl.txt 2.2: the question, the box and a task prompt).
STAGE1_PROMPT = (" The answer is the box {box} in Image-{k}. Task type: {task}. Explain step by step how to find it: "
                 "which objects in which images matter. Write every object you mention as "
                 "<|object_ref_start|>short description<|object_ref_end|> in Image-N. Reply as "
                 "<think>reasoning</think><answer>the target's mention</answer>.")
STAGE2_PROMPT = "Locate <|object_ref_start|>{name}<|object_ref_end|> in Image-{k}."


class ModelTrajectoryTeacher:
    """Stages 1 and 2 through a local VLM (`teacher.kind=model teacher.model_path=...`), asked through the
    teacher interface (`ModelTeacher.respond`): stage 1 writes the marked CoT from the question and the
    ground-truth box; stage 2 grounds every mention in the image the CoT names (one question each)."""

    kind = "model"

    def __init__(self, teacher: Any):
        self.teacher = teacher  # a mig_data.cot.teachers.ModelTeacher with instruction=""

    def draft(self, samples: Sequence[Sample], seed: int) -> list[Optional[CotDraft]]:
        asks = [dataclasses.replace(s, need_format=False, question=s.question + STAGE1_PROMPT.format(
            box=qwen2_box(s.answer or [0, 0, 1, 1]), k=(s.answer_image or 0) + 1, task=s.task)) for s in samples]
        return [CotDraft(r[0]) if r and mentions(r[0]) else None for r in self.teacher.respond(asks, 1, seed)]

    def map_objects(self, samples: Sequence[Sample], drafts: Sequence[Optional[CotDraft]], seed: int
                    ) -> list[list[Optional[ObjectRef]]]:
        from mig_data.collate import image_hws, load_image

        asks, owners = [], []
        for i, (s, d) in enumerate(zip(samples, drafts)):
            for m in mentions(d.text) if d is not None else []:
                asks.append(dataclasses.replace(s, need_format=True, question=STAGE2_PROMPT.format(name=m.name, k=m.image)))
                owners.append((i, m))
        replies = self.teacher.respond(asks, 1, seed) if asks else []
        out: list[list[Optional[ObjectRef]]] = [[] for _ in samples]
        sizes: dict[int, list] = {}
        for (i, m), reply in zip(owners, replies):
            s = samples[i]
            if not 1 <= m.image <= len(s.images):
                out[i].append(None)
                continue
            if self.teacher.family == "qwen2_5_vl" and i not in sizes:
                sizes[i] = image_hws([load_image(p, s.id) for p in s.images], self.teacher.processor)
            box = parse_response(reply[0], self.teacher.family, image_sizes=sizes.get(i),
                                 default_image=m.image - 1).box
            out[i].append(ObjectRef(m.image, tuple(min(max(v, 0.0), 1.0) for v in box)) if box else None)  # type: ignore[arg-type]
        return out


def make_trajectory_teacher(teacher_cfg: Any, model_cfg: Any, distractor: bool = True):
    """The teacher `cot.teacher` names. A model teacher samples (`cot.teacher.temperature`) through
    `ModelTeacher.respond`, for stage 2's grounding questions too."""
    if teacher_cfg.kind == "oracle":
        return OracleTrajectoryTeacher(distractor)
    if teacher_cfg.kind == "model":
        return ModelTrajectoryTeacher(model_teacher(teacher_cfg, model_cfg, instruction=""))
    raise ConfigError(f"cot.teacher.kind is {teacher_cfg.kind!r}; expected 'oracle' or 'model'")
