"""Teachers write training text for samples: chain-of-thought answers (cold-start RL), free-form MIG
question-answer pairs (Migician stage 2) and MIRG trajectories.

A teacher is anything with `respond(samples, k, seed) -> list[list[str]]` (k responses per sample).
- `OracleTeacher` writes from MIG-Synth scene graphs (exact ground truth), the embedded default. Its
  `noise` makes it an imperfect teacher, as a 72B VLM is: with a probability that grows with the
  sample's difficulty (images, distractors) a response names a distractor instead of the target, so the
  4-sample consistency filter has real work to do.
- `ModelTeacher` asks a local VLM through our generation code (the papers used Qwen2.5-VL-72B); it is
  what a researcher plugs in for real data (`teacher.kind=model teacher.model_path=/data/Qwen2.5-VL-72B`).
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any, Optional, Protocol

from mig_data.schema import Sample, scene_objects
from mig_lab.boxes import to_grid
from mig_lab.config import ConfigError

# coldstart_rl.txt 3.2: the fixed instruction appended to each question for CoT data.
COT_INSTRUCTION = (" First output the thinking process in <think> </think> tags and then output the final "
                   "answer in <answer> </answer> tags. Output the bounding box coordinates in JSON format.")


class Teacher(Protocol):
    def respond(self, samples: list[Sample], k: int, seed: int) -> list[list[str]]: ...


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


class ModelTeacher:
    """A local VLM as teacher (k sampled answers per sample), through our generation code."""

    def __init__(self, model_cfg: Any, path: str, instruction: str = COT_INSTRUCTION, temperature: float = 0.7,
                 max_new_tokens: int = 512, batch_size: int = 4):
        from mig_models.builders import build_model

        self.model, self.processor = build_model(model_cfg, seed=0, path=path)
        self.family = model_cfg.family
        self.instruction, self.temperature = instruction, temperature
        self.max_new_tokens, self.batch_size = max_new_tokens, batch_size

    def respond(self, samples: list[Sample], k: int, seed: int) -> list[list[str]]:
        from mig_data.collate import generation_batch
        from mig_models.generation import generate

        out: list[list[str]] = []
        for start in range(0, len(samples), self.batch_size):
            chunk = samples[start:start + self.batch_size]
            questions = [s.question + self.instruction for s in chunk]
            batch, _ = generation_batch(self.processor, self.family, chunk, questions=questions)
            texts, _ = generate(self.model, self.processor.tokenizer, batch, self.max_new_tokens, do_sample=True,
                                temperature=self.temperature, num_return_sequences=k, seed=seed + start)
            out.extend(texts[i * k:(i + 1) * k] for i in range(len(chunk)))
        return out


def check_teacher(cfg: Any, inputs: dict[str, str]) -> None:
    """Planning: `cot.teacher` names a teacher that can run here (a model teacher's folder exists)."""
    t = cfg.cot.teacher
    if t.kind not in ("oracle", "model"):
        raise ConfigError(f"config key 'cot.teacher.kind' is {t.kind!r}; expected one of ['oracle', 'model']")
    if t.kind == "model":
        if not t.model_path:
            raise ConfigError("cot.teacher.kind=model needs cot.teacher.model_path (a local Hugging Face folder)")
        if not (Path(t.model_path) / "config.json").is_file():
            raise ConfigError(f"config key 'cot.teacher.model_path' is {t.model_path!r}: not a local Hugging Face "
                              f"model folder (no config.json there)")


def make_teacher(cfg: Any, model_cfg: Any) -> Teacher:
    if cfg.kind == "oracle":
        return OracleTeacher(noise=cfg.noise)
    if cfg.kind == "model":
        if not cfg.model_path:
            raise ValueError("teacher.kind=model needs teacher.model_path (a local Hugging Face folder)")
        return ModelTeacher(model_cfg, cfg.model_path, temperature=cfg.temperature,
                            max_new_tokens=cfg.max_new_tokens)
    raise ValueError(f"teacher.kind is {cfg.kind!r}; expected 'oracle' or 'model'")
