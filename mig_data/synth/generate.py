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
from mig_data.synth.scene import render
from mig_data.synth.tasks import TASK_GENERATORS
from mig_lab import progress

log = logging.getLogger(__name__)


def sample_rng(seed: int, split: str, task: str, index: int) -> random.Random:
    return random.Random(f"mig-synth/{seed}/{split}/{task}/{index}")


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
    return Sample(id=sid, task=task, images=paths, question=item.question, answer=item.answer,
                  answer_image=item.answer_image, response=item.response, need_format=item.need_format,
                  additional_info=item.additional_info, meta=meta)


def _make_chunk(args: tuple) -> list[Sample]:
    cfg_dict, seed, split, jobs, out_dir = args
    cfg = OmegaConf.create(cfg_dict)
    return [make_sample(cfg, seed, split, task, i, Path(out_dir)) for task, i in jobs]


def generate_split(cfg: DictConfig, seed: int, split: str, out_dir: Path) -> list[Sample]:
    """Generate `split` ("train" or "eval") for every task in `cfg.tasks`; returns the samples."""
    n = cfg.n_train if split == "train" else cfg.n_eval
    jobs = [(task, i) for task in cfg.tasks for i in range(n)]
    for task in cfg.tasks:
        if task not in TASK_GENERATORS:
            raise DataError(f"data.synth.tasks: unknown task {task!r}; MIG-Synth generates {sorted(TASK_GENERATORS)}")
    out_dir = Path(out_dir)
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
    log.info("MIG-Synth %s: %d samples (%s) -> %s", split, len(samples), ", ".join(cfg.tasks), out_dir)
    return samples
