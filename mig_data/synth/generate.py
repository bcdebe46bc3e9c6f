"""Generate MIG-Synth splits to disk in the MIG-Bench file format (a JSON list + PNG images).

Every sample is seeded by (seed, split, task, index) alone, so any sample can be regenerated on
its own, generation parallelises over worker processes, and the eval split never overlaps train.
"""

from __future__ import annotations

import logging
import random
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from mig_data.formats.mig_bench import write_mig_bench
from mig_data.schema import DataError, Sample
from mig_data.synth.items import MAX_IMAGES, VARIABLE_IMAGE_TASKS
from mig_data.synth.scene import render
from mig_data.synth.tasks import TASK_GENERATORS
from mig_lab import progress
from mig_lab.config import ConfigError

log = logging.getLogger(__name__)


def sample_rng(seed: int, split: str, task: str, index: int) -> random.Random:
    return random.Random(f"mig-synth/{seed}/{split}/{task}/{index}")


def round_floats(value: Any, digits: int = 6) -> Any:
    if isinstance(value, float):
        return round(value, digits)
    if isinstance(value, dict):
        return {k: round_floats(v, digits) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [round_floats(v, digits) for v in value]
    return value


def make_sample(cfg: Any, seed: int, split: str, task: str, index: int, out_dir: Path) -> Sample:
    if task not in TASK_GENERATORS:
        raise DataError(f"data.synth.tasks: unknown task {task!r}; MIG-Synth generates {sorted(TASK_GENERATORS)}")
    item = TASK_GENERATORS[task](sample_rng(seed, split, task, index), cfg)
    sid = f"{split}-{task}-{index:06d}"
    img_dir = out_dir / "images" / split / task
    img_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, scene in enumerate(item.scenes):
        path = img_dir / f"{index:06d}_{k}.png"
        render(scene, cfg.image_size).save(path, optimize=False, compress_level=1)
        paths.append(str(path))
    meta = dict(item.meta)
    meta["scenes"] = [s.to_dict() for s in item.scenes]
    meta = round_floats(meta)  # 1e-6 of an image is far below a pixel; halves the JSON
    return Sample(id=sid, task=task, images=paths, question=item.question, answer=item.answer,
                  answer_image=item.answer_image, response=item.response, need_format=item.need_format,
                  additional_info=item.additional_info, meta=meta, turns=item.turns)


def split_tasks(cfg: Any, split: str) -> list[str]:
    """The tasks of a split: `eval_tasks` for the eval split when set, else `tasks`."""
    if split == "eval" and cfg.get("eval_tasks"):
        return list(cfg.eval_tasks)
    return list(cfg.tasks)


def check_synth_config(cfg: Any) -> None:
    """Fail early, naming the key, on a data.synth config the generators cannot honour."""
    for key in ("tasks", "eval_tasks"):
        for task in cfg.get(key) or []:
            if task not in TASK_GENERATORS:
                raise DataError(f"data.synth.{key}: unknown task {task!r}; MIG-Synth generates "
                                f"{sorted(TASK_GENERATORS)}")
    if not 1 <= cfg.min_images <= cfg.max_images <= MAX_IMAGES:
        raise ConfigError(f"data.synth.min_images/max_images = {cfg.min_images}/{cfg.max_images}: "
                          f"need 1 <= min_images <= max_images <= {MAX_IMAGES}")
    if cfg.queries_per_image < 1:
        raise ConfigError(f"data.synth.queries_per_image = {cfg.queries_per_image}: need >= 1 (1 = one query per image)")
    if not 1 <= cfg.min_objects <= cfg.max_objects:
        raise ConfigError(f"data.synth.min_objects/max_objects = {cfg.min_objects}/{cfg.max_objects}: "
                          f"need 1 <= min_objects <= max_objects")
    for task, span in (cfg.task_images or {}).items():
        if task not in VARIABLE_IMAGE_TASKS:
            raise ConfigError(f"data.synth.task_images.{task}: only {list(VARIABLE_IMAGE_TASKS)} have a variable "
                              f"image count (the other tasks are image pairs, as in MIG-Bench)")
        if len(span) != 2 or not 1 <= span[0] <= span[1] <= MAX_IMAGES:
            raise ConfigError(f"data.synth.task_images.{task} = {list(span)}: expected [min, max] with "
                              f"1 <= min <= max <= {MAX_IMAGES}")
    for key in ("hard_negatives", "lookalike_prob", "clutter"):
        if not 0.0 <= cfg[key] <= 1.0:
            raise ConfigError(f"data.synth.{key} = {cfg[key]}: expected a value in [0, 1]")
    if cfg.view_change < 0 or cfg.minor_changes < 0:
        raise ConfigError("data.synth.view_change and data.synth.minor_changes must be >= 0")


def _make_chunk(args: tuple) -> list[Sample]:
    cfg_dict, seed, split, jobs, out_dir = args
    cfg = OmegaConf.create(cfg_dict)
    return [make_sample(cfg, seed, split, task, i, Path(out_dir)) for task, i in jobs]


def generate_split(cfg: DictConfig, seed: int, split: str, out_dir: Path) -> list[Sample]:
    """Generate `split` ("train" or "eval") for every task of the split; returns the samples."""
    n = cfg.n_train if split == "train" else cfg.n_eval
    tasks = split_tasks(cfg, split)
    jobs = [(task, i) for task in tasks for i in range(n)]
    check_synth_config(cfg)
    out_dir = Path(out_dir).resolve()  # image paths are recorded absolute, then made relative to out_dir
    cfg_dict = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    if cfg.workers > 0 and len(jobs) > 64:
        chunk = max(16, len(jobs) // (cfg.workers * 8))
        chunks = [jobs[i:i + chunk] for i in range(0, len(jobs), chunk)]
        samples: list[Sample] = []
        with ProcessPoolExecutor(max_workers=cfg.workers) as pool:
            for part in progress(pool.map(_make_chunk, [(cfg_dict, seed, split, c, str(out_dir)) for c in chunks]),
                             total=len(chunks), desc=f"MIG-Synth {split}"):
                samples.extend(part)
    else:
        cfg_obj = OmegaConf.create(cfg_dict)
        samples = [make_sample(cfg_obj, seed, split, task, i, out_dir)
                   for task, i in progress(jobs, desc=f"MIG-Synth {split}")]
    write_mig_bench(samples, out_dir / f"{split}.json", root=out_dir)
    log.info("MIG-Synth %s: %d samples (%s) -> %s", split, len(samples), ", ".join(tasks), out_dir)
    return samples
