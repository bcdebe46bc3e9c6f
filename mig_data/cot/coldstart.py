"""Cold-start CoT data (coldstart_rl.txt 3.2): teacher answers in the R1 format, the consistency filter, and
the `make_cot_data` stage kind.

`OracleTeacher` writes `<think>...</think><answer>{"bbox_2d": [...]}</answer>` from MIG-Synth scene graphs. Its
`noise` makes it an imperfect teacher, as a 72B VLM is: with a probability that grows with the sample's
difficulty (images, distractors) a response names a distractor instead of the target, so the 4-sample
consistency filter has real work to do. A model teacher (`cot.teacher.kind=model`) is `teachers.ModelTeacher`.
The consistency filter asks the teacher for k (default 4) responses per sample and keeps the sample only when
every response is right (IoU accuracy 1.0, i.e. each IoU >= 0.5 with the ground truth), scored by the
evaluation scorer.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import random
from collections import Counter
from typing import Any, Optional

from mig_data.cot.teachers import Teacher, check_teacher, model_teacher, teacher_fingerprint
from mig_data.formats.mig_bench import write_mig_bench
from mig_data.loading import load_split
from mig_data.schema import Sample, scene_objects
from mig_lab.boxes import iou, parse_response, pixel_json_to_grid, to_grid
from mig_lab.records import atomic_write_json
from mig_lab.stage_kind import StageContext, stage_kind

log = logging.getLogger(__name__)

# coldstart_rl.txt 3.2: the fixed instruction appended to each question for CoT data.
COT_INSTRUCTION = (" First output the thinking process in <think> </think> tags and then output the final "
                   "answer in <answer> </answer> tags. Output the bounding box coordinates in JSON format.")


def json_box(box: list[float]) -> str:
    """A canonical (0-1000) JSON box; the Qwen2.5-VL codec rewrites it to pixels at collate time."""
    return json.dumps({"bbox_2d": list(to_grid(box))})


def where(box: list[float]) -> str:
    """Coarse position words for a normalised box ("top left", "center", ...)."""
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    col = "left" if cx < 0.36 else "right" if cx > 0.64 else ""
    row = "top" if cy < 0.36 else "bottom" if cy > 0.64 else ""
    return f"{row} {col}".strip() or "center"


def target_name(sample: Sample) -> str:
    name = sample.meta.get("target")
    if name:
        return str(name)
    return "target"


# One short clue per task: what a careful annotator would say before answering.
TASK_CLUES = {
    "group_grounding": "The query asks for the {t}. Image-{k} contains it.",
    "single_grounding": "The query asks for the {t}.",
    "common_object": "The {t} appears in every image.",
    "diff": "Image-2 differs from Image-1 at the {t}.",
    "view_diff": "Despite the view change, the real difference in Image-2 is the {t}.",
    "object_tracking": "The marked object is the {t}; it moved in Image-{k}.",
    "multi_view": "The marked object is the {t}; Image-{k} shows it from another view.",
    "region": "The region shows the {t} of the source image.",
    "refer_grounding": "Image-1 shows the {t}; Image-2 contains it.",
    "reasoning": "The relation in the question points to the {t} in Image-{k}.",
    "correspondence": "The marked part matches the {t} in Image-{k}.",
}


def oracle_cot(sample: Sample, name: str, box: list[float], image: int) -> str:
    clue = TASK_CLUES.get(sample.task, "The answer is the {t} in Image-{k}.").format(t=name, k=image + 1)
    return (f"<think>{clue} It is at the {where(box)} of Image-{image + 1}.</think>"
            f"<answer>{json_box(box)}</answer>")


class OracleTeacher:
    """Writes `<think>...</think><answer>{"bbox_2d": [...]}</answer>` from the sample's ground truth."""

    convention = "qwen2_vl"  # canonical JSON boxes on the 0-1000 grid

    def __init__(self, noise: float = 0.0):
        self.noise = noise

    def error_probability(self, sample: Sample) -> float:
        n_img = sample.meta.get("num_images", len(sample.images))
        distractors = sample.meta.get("distractors", 0)
        return min(0.9, self.noise * (0.5 + 0.25 * n_img + 0.1 * distractors))

    def respond(self, samples: list[Sample], k: int, seed: int) -> list[list[str]]:
        out = []
        for s in samples:
            rng = random.Random(f"oracle/{seed}/{s.id}")
            answers = []
            for _ in range(k):
                name, box, img = target_name(s), list(s.answer or [0, 0, 1, 1]), s.answer_image or 0
                if rng.random() < self.error_probability(s):
                    name, box = self._distractor(s, img, rng) or (name, _jitter(box, rng))
                answers.append(oracle_cot(s, name, box, img))
            out.append(answers)
        return out

    @staticmethod
    def _distractor(s: Sample, image: int, rng: random.Random) -> Optional[tuple[str, list[float]]]:
        others = [o for o in scene_objects(s, image) if list(o.get("box", [])) != list(s.answer or [])]
        if not others:
            return None
        o = rng.choice(others)
        return f"{o.get('color', '')} {o.get('shape', 'object')}".strip(), list(o["box"])


def _jitter(box: list[float], rng: random.Random) -> list[float]:
    w, h = box[2] - box[0], box[3] - box[1]
    dx, dy = rng.choice([-1, 1]) * w * 0.8, rng.choice([-1, 1]) * h * 0.8
    x1, y1 = min(max(box[0] + dx, 0.0), 1 - w), min(max(box[1] + dy, 0.0), 1 - h)
    return [x1, y1, x1 + w, y1 + h]




def make_teacher(cfg: Any, model_cfg: Any) -> Teacher:
    """The cold-start teacher `cot.teacher` names (checked at planning: `teachers.check_teacher`)."""
    if cfg.kind == "model":
        return model_teacher(cfg, model_cfg, instruction=COT_INSTRUCTION)
    return OracleTeacher(noise=cfg.noise)


def response_correct(sample: Sample, response: str, convention: str = "qwen2_vl", threshold: float = 0.5,
                     image_sizes: Optional[list] = None) -> bool:
    """Scored as evaluation scores: in the teacher's box convention, with the image sizes it saw."""
    parsed = parse_response(response, convention, image_sizes=image_sizes, default_image=sample.answer_image or 0)
    return sample.answer is not None and iou(sample.answer, parsed.box) >= threshold


def consistency_filter(samples: list[Sample], responses: list[list[str]], threshold: float = 0.5,
                       convention: str = "qwen2_vl", image_sizes: Optional[dict[str, list]] = None
                       ) -> tuple[list[tuple[Sample, str]], dict]:
    """Keep (sample, first response) where all of the sample's responses are right; count the rest.
    The kept response is stored canonical (boxes on the 0-1000 grid) whatever the teacher's convention."""
    if len(samples) != len(responses):
        raise ValueError(f"{len(samples)} samples but {len(responses)} response lists")
    kept, dropped = [], Counter()
    for s, answers in zip(samples, responses):
        sizes = (image_sizes or {}).get(s.id)
        n_right = sum(response_correct(s, a, convention, threshold, sizes) for a in answers)
        if answers and n_right == len(answers):
            first = answers[0] if convention != "qwen2_5_vl" else pixel_json_to_grid(answers[0], sizes or [],
                                                                                    s.answer_image or 0)
            kept.append((s, first))
        else:
            dropped[s.task] += 1
    stats = {"samples": len(samples), "kept": len(kept), "kept_fraction": len(kept) / max(1, len(samples)),
             "dropped_by_task": dict(dropped), "k": len(responses[0]) if responses else 0}
    return kept, stats



def with_cot_instruction(s: Sample, response: str | None = None) -> Sample:
    """The sample asked with the R1-style instruction (the format prompt is replaced by it)."""
    return dataclasses.replace(s, question=s.question + COT_INSTRUCTION, need_format=False, response=response)


@stage_kind("make_cot_data", reads=("seed", "cot", "data.on_error"), version=3, needs=("data",),
            checks=(check_teacher,), fingerprint=teacher_fingerprint)  # a model teacher is built from `model`
# 2: model teachers: no contradicting format prompt; pixel answers read right
# 3: writes direct.json (the SFT baseline's data)
def make_cot_data(ctx: StageContext) -> dict:
    """From the `data` input write: `train.json` (teacher CoT answers that pass the consistency filter),
    `direct.json` (the same samples with their direct answers and plain prompts: the SFT baseline's data,
    coldstart_rl.txt 4.2 "trained on the same dataset as our stage-1 CoT-SFT"), `rl.json` (held-out train
    prompts for RL, CoT-instructed, no text) and `eval.json` (CoT-instructed)."""
    cfg, cot = ctx.cfg, ctx.cfg.cot
    data_dir = ctx.input("data").dir
    train = [s for s in load_split(data_dir, "train", on_error=cfg.data.on_error) if s.answer is not None]
    order = list(range(len(train)))
    random.Random(f"cot-split/{cfg.seed}").shuffle(order)
    n_rl = int(round(cot.rl_fraction * len(train)))
    rl_prompts = [train[i] for i in sorted(order[:n_rl])]
    sft_pool = [train[i] for i in sorted(order[n_rl:])]

    teacher = make_teacher(cot.teacher, cfg.model)
    responses = teacher.respond(sft_pool, cot.teacher.samples, seed=cfg.seed)
    kept, stats = consistency_filter(sft_pool, responses, convention=teacher.convention,
                                     image_sizes=getattr(teacher, "image_sizes", None))
    log.info("CoT data: teacher %s kept %d of %d samples (all %d responses right)", cot.teacher.kind,
             stats["kept"], stats["samples"], cot.teacher.samples)
    write_mig_bench([with_cot_instruction(s, r) for s, r in kept], ctx.out_dir / "train.json", root=ctx.out_dir)
    write_mig_bench([s for s, _ in kept], ctx.out_dir / "direct.json", root=ctx.out_dir)
    write_mig_bench([with_cot_instruction(s) for s in rl_prompts], ctx.out_dir / "rl.json", root=ctx.out_dir)
    evals = load_split(data_dir, "eval", on_error=cfg.data.on_error)
    write_mig_bench([with_cot_instruction(s) for s in evals], ctx.out_dir / "eval.json", root=ctx.out_dir)
    stats.update(rl_prompts=len(rl_prompts), eval=len(evals))
    atomic_write_json(ctx.out_dir / "stats.json", stats)
    return stats
