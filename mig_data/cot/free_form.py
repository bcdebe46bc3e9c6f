"""Free-form MIG data from a model teacher (migician.txt Appendix D.2): a local VLM is shown an image
group with its captions and annotated objects and the paper's instruction (Template 1), and writes
`Q: ... A: ...` pairs. Its answers are then held to the annotations: the first box of an answer must
lie in the image the answer names and match an annotated object there (IoU >= 0.5); that object's
exact box replaces the teacher's, so every kept turn has exact ground truth. Pairs that fail are
dropped and counted by reason (`ModelQATeacher.stats`), never silently.

The embedded default needs no model: `mig_data.synth.free_form.TemplateTeacher` writes the turns
(that is the `free_form` MIG-Synth task the stage-2 mixture uses). To make stage-2 data with a real
teacher, write it to a ShareGPT file and point the mixture's free-form source at it:

    python -m mig_data.cot.free_form --out /data/ff --n 20000 --teacher model \\
        --model-path /data/Qwen2-VL-72B-Instruct --family qwen2_vl --image-size 448
    python run.py experiment=migician \\
        stages.data_stage2.overrides.data.mixture.sources.m_grounding_stage2.source=sharegpt \\
        stages.data_stage2.overrides.data.mixture.sources.m_grounding_stage2.file=/data/ff/free_form.json \\
        stages.data_stage2.overrides.data.mixture.sources.m_grounding_stage2.root=/data/ff

(`--teacher template` writes the same samples the `free_form` task generates, seed for seed.)
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
from collections import Counter
from pathlib import Path
from typing import Any, Optional

from omegaconf import OmegaConf

from mig_data.schema import Sample
from mig_data.synth.free_form import QA, Group, GroupObject, build_group, free_form_item
from mig_lab.boxes import from_grid, grid_pair_text, image_index, image_named_before, iou, qwen2_box

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
ANY_BOX = re.compile(r"(?:<\|box_start\|>)?\((\d+),\s*(\d+)\)\s*(?:,|to|-)\s*\((\d+),\s*(\d+)\)(?:<\|box_end\|>)?")
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
    image = image_named_before(answer, m.start())
    if image is None:
        image = image_index(answer)
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


class ModelQATeacher:
    """A local VLM as the free-form teacher, through our generation code (the paper: Qwen2.5-72B on
    Qwen2-VL captions). It sees the images and the prompt; `stats` counts kept and dropped turns."""

    def __init__(self, model_cfg: Any, path: str, temperature: float = 0.7, max_new_tokens: int = 1024,
                 batch_size: int = 4):
        from mig_models.builders import build_model

        self.model, self.processor = build_model(model_cfg, seed=0, path=path)
        self.family = model_cfg.family
        self.temperature, self.max_new_tokens, self.batch_size = temperature, max_new_tokens, batch_size
        self.stats: Counter = Counter()

    def compose(self, groups: list[Group], rngs: list[random.Random]) -> list[list[QA]]:
        from mig_data.collate import generation_batch
        from mig_models.generation import generate

        out: list[list[QA]] = []
        for start in range(0, len(groups), self.batch_size):
            chunk = groups[start:start + self.batch_size]
            prompts = [Sample(id=f"group-{start + i}", task="free_form", images=g.images, question=teacher_prompt(g),
                              need_format=False) for i, g in enumerate(chunk)]
            batch, _ = generation_batch(self.processor, self.family, prompts)
            seed = rngs[start].randrange(2**31) if rngs else start
            texts, _ = generate(self.model, self.processor.tokenizer, batch, self.max_new_tokens,
                                do_sample=self.temperature > 0, temperature=self.temperature, seed=seed)
            for group, text in zip(chunk, texts):
                pairs = parse_qa(text)
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


def main(argv: Optional[list[str]] = None) -> int:
    from mig_data.formats.sharegpt import write_sharegpt
    from mig_lab.config import ModelConfig, SynthConfig
    from mig_lab.records import atomic_write_json

    ap = argparse.ArgumentParser(prog="python -m mig_data.cot.free_form",
                                 description="Free-form MIG data (Migician stage 2) as a ShareGPT file.")
    ap.add_argument("--out", type=Path, required=True, help="folder for free_form.json, images/ and stats.json")
    ap.add_argument("--n", type=int, default=100, help="image groups to make")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--split", default="train")
    ap.add_argument("--teacher", choices=("template", "model"), default="template")
    ap.add_argument("--model-path", help="local Hugging Face folder of the teacher VLM (--teacher model)")
    ap.add_argument("--family", choices=("qwen2_vl", "qwen2_5_vl"), default="qwen2_vl")
    ap.add_argument("--dtype", choices=("bfloat16", "float32", "float16"), default="bfloat16")
    ap.add_argument("--max-new-tokens", type=int, default=1024)
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--image-size", type=int, default=112)
    ap.add_argument("--min-images", type=int, default=2)
    ap.add_argument("--max-images", type=int, default=4)
    ap.add_argument("--max-objects", type=int, default=3)
    args = ap.parse_args(argv)
    out = args.out.resolve()

    cfg = OmegaConf.structured(SynthConfig(image_size=args.image_size, min_images=args.min_images,
                                           max_images=args.max_images, max_objects=args.max_objects))
    stats: dict[str, Any] = {"teacher": args.teacher, "groups": args.n}
    if args.teacher == "template":
        from mig_data.synth.generate import make_sample

        samples = [make_sample(cfg, args.seed, args.split, "free_form", i, out) for i in range(args.n)]
    else:
        if not args.model_path:
            ap.error("--teacher model needs --model-path (a local Hugging Face folder)")
        model_cfg = OmegaConf.structured(ModelConfig(name="teacher", family=args.family, pretrained=True,
                                                     path=args.model_path, dtype=args.dtype))
        teacher = ModelQATeacher(model_cfg, args.model_path, temperature=args.temperature,
                                 max_new_tokens=args.max_new_tokens)
        samples, dropped = model_teacher_samples(cfg, teacher, args.seed, args.split, args.n, out)
        stats.update(turns=dict(teacher.stats), dropped=dict(dropped))
    stats["samples"] = len(samples)
    write_sharegpt(samples, out / "free_form.json", root=out)
    atomic_write_json(out / "stats.json", stats)
    print(json.dumps(stats))
    return 0


if __name__ == "__main__":
    sys.exit(main())
