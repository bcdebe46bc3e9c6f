"""Teachers write training text for samples: chain-of-thought answers (cold-start RL), MIRG trajectory
drafts and object maps, free-form MIG question-answer turns (Migician stage 2).

One protocol, `Teacher.respond(samples, k, seed) -> list[list[str]]` (k responses per sample), with two
kinds of implementation, chosen by `cot.teacher.kind`:
- oracle: writes from MIG-Synth scene graphs (exact ground truth), the embedded default; one per method,
  beside its data preparation (`coldstart.OracleTeacher`, `trajectory_teachers.OracleTrajectoryTeacher`,
  the free-form template in `mig_data/synth/free_form.py`);
- model: `ModelTeacher` below, a local VLM through our generation code (the papers used 72B VLMs), the
  same class for every method (`cot.teacher.kind=model cot.teacher.model_path=/data/Qwen2.5-VL-72B`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Protocol

from omegaconf import OmegaConf

from mig_data.schema import Sample
from mig_lab.config import ConfigError


class Teacher(Protocol):
    convention: str  # the box convention of its responses ("qwen2_vl": 0-1000; "qwen2_5_vl": pixels)

    def respond(self, samples: list[Sample], k: int, seed: int) -> list[list[str]]: ...


class ModelTeacher:
    """A local VLM as teacher (k sampled answers per sample), through our generation code."""

    def __init__(self, model_cfg: Any, path: str, instruction: str = "", temperature: float = 0.7,
                 max_new_tokens: int = 512, batch_size: int = 4):
        from mig_models.builders import build_model

        self.model, self.processor = build_model(model_cfg, seed=0, path=path)
        self.family = model_cfg.family
        self.instruction, self.temperature = instruction, temperature
        self.max_new_tokens, self.batch_size = max_new_tokens, batch_size
        self.convention = self.family  # its boxes: 0-1000 (Qwen2-VL) or pixels of the resized image (Qwen2.5-VL)
        self.image_sizes: dict[str, list] = {}  # sample id -> per-image (h, w) it saw, to read its pixel boxes

    def asked(self, samples: list[Sample]) -> list[Sample]:
        """The samples as the teacher is asked them: an instruction replaces the format prompt (whose "Don't
        generate additional words" would contradict a request to reason first)."""
        return [dataclasses.replace(s, need_format=False) for s in samples] if self.instruction else list(samples)

    def respond(self, samples: list[Sample], k: int, seed: int) -> list[list[str]]:
        from mig_data.collate import generation_prompts
        from mig_models.generation import Sampling, hf_generate
        from mig_models.sampling import row_seed

        out: list[list[str]] = []
        for start in range(0, len(samples), self.batch_size):
            chunk = self.asked(samples[start:start + self.batch_size])
            questions = [s.question + self.instruction for s in chunk]
            prompts = generation_prompts(self.processor, self.family, chunk, questions=questions)
            self.image_sizes.update({s.id: h for s, h in zip(chunk, prompts.hws)})
            sampled = self.temperature > 0
            seeds = [row_seed("teacher", seed, start + i, j) for i in range(len(chunk)) for j in range(k)]
            texts, _ = hf_generate(self.model, self.processor.tokenizer, prompts.tensors,
                                   Sampling(self.max_new_tokens, sampled, self.temperature if sampled else 1.0), k,
                                   seeds if sampled else None)
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


def teacher_fingerprint(cfg: Any) -> Any:
    """A model teacher is built from the `model` config: then it is part of the data's identity (cache key),
    with the CPU thread count it generates with (`run.threads`: the summation order of its matmuls)."""
    if cfg.cot.teacher.kind != "model":
        return None
    return {"model": OmegaConf.to_container(cfg.model, resolve=True), "threads": cfg.run.threads,
            "sampler": "seed-per-row"}  # issue 17: each response sampled with its own seed


def model_teacher(teacher_cfg: Any, model_cfg: Any, instruction: str = "") -> ModelTeacher:
    """The `cot.teacher` model teacher (`kind=model`), asking each question followed by `instruction`."""
    if not teacher_cfg.model_path:
        raise ConfigError("cot.teacher.kind=model needs cot.teacher.model_path (a local Hugging Face folder)")
    return ModelTeacher(model_cfg, teacher_cfg.model_path, instruction=instruction,
                        temperature=teacher_cfg.temperature, max_new_tokens=teacher_cfg.max_new_tokens)
