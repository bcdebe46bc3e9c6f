"""Weighted mixtures of data sources (migician.txt Table 12), reproducible by seed.

A mixture (`data.mixture`) names sources, each with a ratio: MIG-Synth tasks (generated here) or
a file in one of the formats. The split of `n` samples is composed as follows:

* counts: each source gets `n * ratio / sum(ratios)` rounded by the largest-remainder (Hamilton)
  rule: everyone gets the floor, and the samples left over go one each to the largest fractional
  parts, ties to the source listed first. Counts sum to `n` exactly and each is within 1 of its
  exact share. A source's tasks share its count by the same rule with equal weights.
* synth sources: sample k of task t of source s is generated from the seed of
  (seed, "<split>-<s>", t, k) alone, so two sources with the same task draw different samples, a
  source keeps its samples when other sources change, and a source of the same name in another
  mixture (stage-1 data replayed in stage 2) draws the same ones. `n_images: [lo, hi]` keeps only
  samples with lo..hi images (S- vs M-Understanding from the one `understanding` generator): the
  first fitting indices, the others' images deleted.
* file sources: `count` records drawn without replacement (seeded); when a file has fewer records
  than its count, every record is used `count // len` times plus a seeded draw of the rest
  (repetition rather than draws with replacement: records appear as evenly as possible), with a
  warning.
* the result is shuffled with a seed of its own, and every sample carries `meta["source"]`.
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from mig_data.formats.common import format_skips
from mig_data.loading import FILE_SOURCES, read_source
from mig_data.schema import Sample
from mig_lab.config import ConfigError

log = logging.getLogger("mig_data")


def largest_remainder(weights: list[float], total: int) -> list[int]:
    """Integer counts summing to `total`, proportional to `weights` (Hamilton's method)."""
    s = float(sum(weights))
    if total < 0 or not weights or s <= 0 or any(w < 0 for w in weights):
        raise ValueError(f"need total >= 0 and non-negative weights with a positive sum, got {weights}, {total}")
    exact = [total * w / s for w in weights]
    counts = [int(x) for x in exact]
    order = sorted(range(len(weights)), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in order[: total - sum(counts)]:
        counts[i] += 1
    return counts


def mixture_counts(mixture: DictConfig, total: int) -> dict[str, int]:
    """Samples per source for a split of `total` samples."""
    names = list(mixture.sources)
    return dict(zip(names, largest_remainder([float(mixture.sources[n].ratio) for n in names], total)))


def source_synth_cfg(data: DictConfig, name: str) -> DictConfig:
    """data.synth with the source's overrides merged (unknown keys fail, naming the source)."""
    overrides = OmegaConf.to_container(data.mixture.sources[name].synth, resolve=True)
    try:
        return OmegaConf.merge(data.synth, overrides)
    except OmegaConfBaseException as e:
        raise ConfigError(f"data.mixture.sources.{name}.synth: {e}") from e


def check_mixture(data: DictConfig) -> None:
    """Every source is well formed and every synth task has a generator, before any work starts."""
    from mig_data.synth.tasks import TASK_GENERATORS  # imported late: generators arrive one by one

    m = data.mixture
    if not m.sources:
        raise ConfigError("data.source=mixture needs data.mixture.sources (name -> {ratio, tasks | file})")
    if m.n_train < 0 or m.n_eval < 0 or m.n_train + m.n_eval == 0:
        raise ConfigError(f"data.mixture.n_train / n_eval must be >= 0 and not both 0, got {m.n_train} / {m.n_eval}")
    missing: dict[str, list[str]] = {}
    for name, src in m.sources.items():
        key = f"data.mixture.sources.{name}"
        if not src.ratio > 0:
            raise ConfigError(f"{key}.ratio must be > 0, got {src.ratio}")
        if src.source == "synth":
            if not src.tasks:
                raise ConfigError(f"{key}.tasks: a synth source needs at least one MIG-Synth task")
            if any(t not in TASK_GENERATORS for t in src.tasks):
                missing[f"{key}.tasks"] = [t for t in src.tasks if t not in TASK_GENERATORS]
            source_synth_cfg(data, name)
            if src.n_images is not None and not (len(src.n_images) == 2 and 1 <= src.n_images[0] <= src.n_images[1]):
                raise ConfigError(f"{key}.n_images must be [min, max] with 1 <= min <= max, got {list(src.n_images)}")
        elif src.source in FILE_SOURCES:
            if m.n_train > 0 and not src.file:
                raise ConfigError(f"{key}.file: a {src.source} source needs a file (data.mixture.n_train > 0)")
            if m.n_eval > 0 and not src.eval_file:
                raise ConfigError(f"{key}.eval_file: a {src.source} source needs an eval file "
                                  f"(data.mixture.n_eval > 0), or set data.mixture.n_eval=0")
        else:
            raise ConfigError(f"{key}.source is {src.source!r}; expected synth or one of {list(FILE_SOURCES)}")
    if missing:
        named = "; ".join(f"{k} names {v}" for k, v in missing.items())
        raise ConfigError(f"{named}: MIG-Synth has no generator for these tasks (yet); "
                          f"available: {sorted(TASK_GENERATORS)}")


def _make_chunk(args: tuple) -> list[Sample]:
    from mig_data.synth.generate import make_sample

    cfg_dict, seed, split, jobs, out_dir = args
    cfg = OmegaConf.create(cfg_dict)
    return [make_sample(cfg, seed, split, task, i, Path(out_dir)) for task, i in jobs]


def _generate(cfg: DictConfig, jobs: list[tuple[str, int]], seed: int, split: str, out_dir: Path) -> list[Sample]:
    args = (OmegaConf.to_container(cfg, resolve=True), seed, split, jobs, str(out_dir))
    if cfg.workers <= 0 or len(jobs) <= 64:
        return _make_chunk(args)
    size = max(16, len(jobs) // (cfg.workers * 8))
    chunks = [args[:3] + (jobs[i:i + size],) + args[4:] for i in range(0, len(jobs), size)]
    with ProcessPoolExecutor(max_workers=cfg.workers) as pool:
        return [s for part in pool.map(_make_chunk, chunks) for s in part]


def _discard(samples: list[Sample]) -> None:
    for s in samples:
        for p in s.images:
            Path(p).unlink(missing_ok=True)


def synth_samples(data: DictConfig, name: str, count: int, seed: int, split: str, out_dir: Path) -> list[Sample]:
    """`count` MIG-Synth samples of the source's tasks (sharing the count evenly). With the source's
    `n_images: [lo, hi]`, only samples with lo..hi images are kept: task t's samples are the first
    accepted ones in index order (so the result does not depend on batch sizes), the rejected
    ones are deleted."""
    cfg = source_synth_cfg(data, name)
    src = data.mixture.sources[name]
    tasks = list(src.tasks)
    part_split = f"{split}-{name}"
    if not src.n_images:
        jobs = [(t, i) for t, n in zip(tasks, largest_remainder([1.0] * len(tasks), count)) for i in range(n)]
        return _generate(cfg, jobs, seed, part_split, out_dir)
    lo, hi = src.n_images
    out: list[Sample] = []
    for task, n in zip(tasks, largest_remainder([1.0] * len(tasks), count)):
        kept: list[Sample] = []
        start = 0
        while len(kept) < n:
            if start > 50 * n + 100:
                raise ConfigError(f"data.mixture.sources.{name}.n_images={[lo, hi]}: MIG-Synth task {task!r} made "
                                  f"{len(kept)} such samples in {start} tries (of {n} needed); check the range")
            block = max(2 * (n - len(kept)), 16)
            made = _generate(cfg, [(task, i) for i in range(start, start + block)], seed, part_split, out_dir)
            start += block
            fits = [s for s in made if lo <= len(s.images) <= hi]
            kept += fits[: n - len(kept)]
            kept_now = {id(k) for k in kept}
            _discard([s for s in made if id(s) not in kept_now])
        out += kept
    return out


def draw(samples: list[Sample], count: int, rng: random.Random, name: str) -> list[Sample]:
    """`count` samples: without replacement when possible, else whole repeats plus a draw of the rest."""
    if not samples:
        raise ConfigError(f"data.mixture.sources.{name}: the file has no usable samples to draw {count} from")
    repeats, rest = divmod(count, len(samples))
    if repeats:
        log.warning("mixture source %s: %d samples requested from %d records: each used %d time(s), plus %d drawn",
                    name, count, len(samples), repeats, rest)
    return samples * repeats + rng.sample(samples, rest)


def build_mixture(data: DictConfig, seed: int, split: str, out_dir: Path) -> tuple[list[Sample], dict[str, Any]]:
    """The mixture's `split` ("train" or "eval"): shuffled samples tagged with `meta["source"]`, and a
    summary {samples, sources: name -> count, skipped: reason -> count}."""
    check_mixture(data)
    total = data.mixture.n_train if split == "train" else data.mixture.n_eval
    counts = mixture_counts(data.mixture, total)
    out: list[Sample] = []
    skipped: Counter = Counter()
    for name, count in counts.items():
        src = data.mixture.sources[name]
        if count == 0:
            continue
        if src.source == "synth":
            part = synth_samples(data, name, count, seed, split, Path(out_dir))
        else:
            file = src.file if split == "train" else src.eval_file
            ref_split = data.coco.train_split if split == "train" else data.coco.eval_split
            result = read_source(src.source, file, root=src.root or data.root, on_error=data.on_error,
                                 verify_images=data.verify_images,
                                 default_task=src.default_task or data.default_task,
                                 refs_file=src.refs_file, ref_split=ref_split)
            skipped.update(result.skipped)
            part = draw(result.samples, count, random.Random(f"mixture/{seed}/{split}/{name}"), name)
        for s in part:
            s.meta = {**s.meta, "source": name}
        out.extend(part)
    random.Random(f"mixture/{seed}/{split}/shuffle").shuffle(out)
    log.info("mixture %s: %d samples (%s)%s", split, len(out), ", ".join(f"{n} {c}" for n, c in counts.items()),
             f"; skipped {format_skips(skipped)}" if skipped else "")
    return out, {"samples": len(out), "sources": counts, "skipped": dict(skipped)}
