"""Free-form MIG data from a model teacher (migician.txt Appendix D.2): a local VLM is shown an image
group with its captions and annotated objects and the paper's instruction (Template 1), and writes
`Q: ... A: ...` pairs. Its answers are then held to the annotations: the first box of an answer must
lie in the image the answer names and match an annotated object there (IoU >= 0.5); that object's
exact box replaces the teacher's, so every kept turn has exact ground truth. Pairs that fail are
dropped and counted by reason (`FreeFormModelTeacher.stats`), never silently.

The `make_free_form_data` stage kind writes such data (`experiment=free_form_data`): `data.synth.n_train`
image groups as ShareGPT `free_form.json` with its images and `stats.json`. With `cot.teacher.kind=oracle`
(the embedded default) the template teacher writes the turns (`mig_data.synth.free_form.TemplateTeacher`:
the samples of the `free_form` MIG-Synth task the stage-2 mixture uses, seed for seed); with
`cot.teacher.kind=model cot.teacher.model_path=/data/Qwen2-VL-72B-Instruct` a local VLM does. Point a
stage-2 mixture's free-form source at the file:

    python run.py experiment=free_form_data cot.teacher.kind=model cot.teacher.model_path=/data/Qwen2-VL-72B \
        data.synth.n_train=20000 data.synth.image_size=448
    python run.py experiment=migician \
        stages.data_stage2.overrides.data.mixture.sources.m_grounding_stage2.source=sharegpt \
        stages.data_stage2.overrides.data.mixture.sources.m_grounding_stage2.file=<stage dir>/free_form.json \
        stages.data_stage2.overrides.data.mixture.sources.m_grounding_stage2.root=<stage dir>
"""

from __future__ import annotations

import json
import logging
import random
import re
from collections import Counter
from pathlib import Path
from typing import Any, Optional

from mig_data.cot.teachers import Teacher, check_teacher, model_teacher, teacher_fingerprint
from mig_data.formats.sharegpt import write_sharegpt
from mig_data.schema import Sample
from mig_data.synth.free_form import QA, Group, GroupObject, build_group, free_form_item
from mig_lab.boxes import NUM_DIGITS, box_image, from_grid, grid_pair_text, iou, qwen2_box
from mig_lab.records import atomic_write_json
from mig_lab.stage_kind import StageContext, stage_kind

log = logging.getLogger(__name__)

# migician.txt, "Multi-image Grounding Instruction Generation", Template 1 (the paper's wording).
TEMPLATE_1 = (
    "Based on the following detailed information of multiple images, please compose meaningful and flexible "
    "CROSS-IMAGE grounding questions that link different objects across the images by their attributes "
    "similarity/contrast—such as color, position, features, gender, size, shape, etc.—or by other potential "
    "logical connection between them.\n"
    "Specifically:\n"
    "1. The questions should include CROSS-IMAGE grounding requests that require the answer to identify and "
    "locate various potentially connected objects across different images. You can use the connection or "
    "similarity between these objects to refer to the target item.\n"
    "2. When referring to an object in the question, keep the reference description concise and avoid giving "
    "away unnecessary information (like bounding box or over-detailed caption) that could lead to answering too "
    "easily. You are encouraged to refer to the target object to be grounded by the connection of these objects, "
    "instead of explicitly pointing out the object.\n"
    "3. Include the bounding box coordinates of the referred object in the answer as well as the explanation. "
    "(Actually you can get a lot of information from the coordinates, which are formatted as (x1,y1),(x2,y2))\n"
    "4. Strictly format the output as simple Q: A:. In the answer, follow the format <ref>object</ref> for "
    "objects mentioned.\n"
    "Below are the detailed image captions and the objects in the corresponding images:"
)
QA_PAIR = re.compile(r"Q:\s*(.+?)\s*A:\s*(.+?)(?=\n\s*Q:|\Z)", re.DOTALL)
# A box as teachers write it: canonical, bare "(x1,y1),(x2,y2)", or "(x1,y1) to (x2,y2)" (Figure 8).
_N = rf"(\d{{1,{NUM_DIGITS}}})"  # bounded, as mig_lab.boxes reads numbers
ANY_BOX = re.compile(rf"(?:<\|box_start\|>)?\({_N},\s*{_N}\)\s*(?:,|to|-)\s*\({_N},\s*{_N}\)(?:<\|box_end\|>)?")
REF_TAG = re.compile(r"<ref>(.*?)</ref>", re.DOTALL)
MATCH_IOU = 0.5


def teacher_prompt(group: Group) -> str:
    """Template 1, then per image its caption and its objects with boxes in (x1,y1),(x2,y2), 0-1000."""
    lines = [TEMPLATE_1]
    for k, (cap, objs) in enumerate(zip(group.captions, group.objects)):
        lines.append(f"Image-{k + 1}: {cap}")
        lines += [f"  {o.name} {grid_pair_text(o.box)}" for o in objs]
    return "\n".join(lines)


def parse_qa(text: str) -> list[tuple[str, str]]:
    """The (question, answer) pairs of a teacher's `Q: ... A: ...` output."""
    return [(q.strip(), a.strip()) for q, a in QA_PAIR.findall(text)]


def ground_answer(question: str, answer: str, group: Group) -> tuple[Optional[QA], str]:
    """(a QA whose target is the annotated object the answer's first box matches, "ok"), or (None,
    reason): no_box | no_image (the answer names no image) | no_match (no object with IoU >= 0.5)."""
    m = ANY_BOX.search(answer)
    if m is None:
        return None, "no_box"
    image = box_image(answer, m.start())  # named last before the box, else the first named (the scorer's rule)
    if image is None and len(group.objects) == 1:
        image = 0
    if image is None or not 0 <= image < len(group.objects):
        return None, "no_image"
    box = list(from_grid(m.groups()))
    scored = sorted(((iou(box, o.box), i) for i, o in enumerate(group.objects[image])), reverse=True)
    if not scored or scored[0][0] < MATCH_IOU:
        return None, "no_match"
    target: GroupObject = group.objects[image][scored[0][1]]
    exact = qwen2_box(target.box)
    text = answer[:m.start()] + exact + answer[m.end():]
    def tags(s: str) -> str:
        return REF_TAG.sub(r"<|object_ref_start|>\1<|object_ref_end|>", s)
    return QA(question=tags(question), answer=tags(text), target=target, link="teacher"), "ok"


class FreeFormModelTeacher:
    """A local VLM as the free-form teacher (the paper: Qwen2.5-72B on Qwen2-VL captions), asked through the
    one teacher interface (`teachers.ModelTeacher.respond`): it sees the images and the Template-1 prompt;
    `stats` counts kept and dropped turns by reason."""

    def __init__(self, teacher: Teacher):
        self.teacher = teacher
        self.stats: Counter = Counter()

    def compose(self, groups: list[Group], rngs: list[random.Random]) -> list[list[QA]]:
        prompts = [Sample(id=f"group-{i}", task="free_form", images=g.images, question=teacher_prompt(g),
                          need_format=False) for i, g in enumerate(groups)]
        seed = rngs[0].randrange(2**31) if rngs else 0
        out: list[list[QA]] = []
        for group, texts in zip(groups, self.teacher.respond(prompts, 1, seed)):
            pairs = parse_qa(texts[0])
            if not pairs:
                self.stats["no_qa"] += 1
            kept = []
            for q, a in pairs:
                qa, reason = ground_answer(q, a, group)
                self.stats[reason] += 1
                if qa is not None:
                    kept.append(qa)
            out.append(kept)
        return out


def group_sample(group: Group, qas: list[QA], sid: str) -> Sample:
    """A Sample from a rendered group (images on disk) and its turns."""
    from mig_data.synth.generate import round_floats

    item = free_form_item(group, qas)
    meta = round_floats({**item.meta, "scenes": [s.to_dict() for s in item.scenes]})
    return Sample(id=sid, task="free_form", images=list(group.images), question=item.question, answer=item.answer,
                  answer_image=item.answer_image, response=item.response, need_format=False, meta=meta,
                  turns=item.turns)


def model_teacher_samples(cfg: Any, teacher: Any, seed: int, split: str, n: int, out_dir: Path
                          ) -> tuple[list[Sample], Counter]:
    """n MIG-Synth groups (seeded as the `free_form` task's samples), rendered to `out_dir`, with the
    teacher's turns; groups left without a grounded turn are dropped (counted as `empty_group`)."""
    from mig_data.synth.generate import sample_rng
    from mig_data.synth.scene import render

    groups, rngs = [], []
    for i in range(n):
        rng = sample_rng(seed, split, "free_form", i)
        group = build_group(rng, cfg)
        img_dir = Path(out_dir) / "images" / split / "free_form"
        img_dir.mkdir(parents=True, exist_ok=True)
        for k, scene in enumerate(group.scenes):
            path = img_dir / f"{i:06d}_{k}.png"
            render(scene, cfg.image_size).save(path)
            group.images.append(str(path))
        groups.append(group)
        rngs.append(rng)
    samples, dropped = [], Counter()
    for i, (group, qas) in enumerate(zip(groups, teacher.compose(groups, rngs))):
        if qas:
            samples.append(group_sample(group, qas, f"{split}-free_form-{i:06d}"))
        else:
            dropped["empty_group"] += 1
    return samples, dropped


@stage_kind("make_free_form_data", reads=("seed", "data.synth", "cot.teacher"), checks=(check_teacher,),
            fingerprint=teacher_fingerprint)
def make_free_form_data(ctx: StageContext) -> dict:
    """`data.synth.n_train` free-form image groups, written as ShareGPT `free_form.json` (images beside it)
    and `stats.json` (groups, samples, the teacher's kept and dropped turns by reason)."""
    cfg, out = ctx.cfg, ctx.out_dir
    synth, teacher_cfg, n = cfg.data.synth, cfg.cot.teacher, cfg.data.synth.n_train
    stats: dict[str, Any] = {"teacher": teacher_cfg.kind, "groups": n}
    if teacher_cfg.kind == "oracle":
        from mig_data.synth.generate import make_sample

        samples = [make_sample(synth, cfg.seed, "train", "free_form", i, out) for i in range(n)]
    else:
        teacher = FreeFormModelTeacher(model_teacher(teacher_cfg, cfg.model))
        samples, dropped = model_teacher_samples(synth, teacher, cfg.seed, "train", n, out)
        stats.update(turns=dict(teacher.stats), dropped=dict(dropped))
    stats["samples"] = len(samples)
    write_sharegpt(samples, out / "free_form.json", root=out)
    atomic_write_json(out / "stats.json", stats)
    log.info("free-form data: %s", json.dumps(stats))
    return stats
