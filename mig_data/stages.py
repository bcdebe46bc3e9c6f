"""Data stages: make (or import and validate) the train/eval splits of an experiment."""

from __future__ import annotations

import hashlib
import logging
import os
from collections import Counter
from pathlib import Path

from omegaconf import DictConfig

from mig_data.formats.common import LoadResult, format_skips
from mig_data.loading import read_source, save_split
from mig_data.schema import DataError
from mig_lab.config import ConfigError
from mig_lab.stage_kind import StageContext, stage_kind

log = logging.getLogger("mig_data")

SPLITS = ("train", "eval")


def _file_split(ctx: StageContext, split: str) -> LoadResult | None:
    """A split read from `data.train_file` / `data.eval_file` (None when that file is not set)."""
    d = ctx.cfg.data
    file = d.train_file if split == "train" else d.eval_file
    if not file:
        return None
    ref_split = d.coco.train_split if split == "train" else d.coco.eval_split
    return read_source(d.source, file, root=d.root, on_error=d.on_error, verify_images=d.verify_images,
                       default_task=d.default_task, refs_file=d.coco.refs_file, ref_split=ref_split)


def check_data_files(cfg: DictConfig, inputs: dict[str, str]) -> None:
    """Planning: a published-format source names its files, and every file the data config names exists."""
    d = cfg.data
    if d.source not in ("synth", "mixture") and not (d.train_file or d.eval_file):
        raise ConfigError(f"data.source={d.source} needs data.eval_file and/or data.train_file (local paths)")
    for name, path in _data_files(d).items():
        if path and not Path(path).is_file():
            key = name.replace("mixture.", "mixture.sources.", 1)
            raise ConfigError(f"config key 'data.{key}' is {path!r}, which is not a file")


def _data_files(data: DictConfig) -> dict:
    """Every external file the data config names (`mixture.<source>.<key>` for a mixture's sources)."""
    files = {"train_file": data.train_file, "eval_file": data.eval_file, "coco.refs_file": data.coco.refs_file}
    for name, src in data.mixture.sources.items():
        for key in ("file", "eval_file", "refs_file"):
            files[f"mixture.{name}.{key}"] = src[key]
    return files


@stage_kind("make_data", reads=("seed", "data"), version=3, fingerprint=lambda cfg: data_fingerprint(cfg.data),
            checks=(check_data_files,))
def make_data(ctx: StageContext) -> dict:
    """Write each split into the stage folder: an Arrow copy (`arrow/<split>/`, what `load_split`
    reads) and, when small, `<split>.json` in the MIG-Bench format. Returns per split the sample
    count, the file it came from and the skipped records by reason (data.on_error=skip)."""
    d = ctx.cfg.data
    if d.source not in ("synth", "mixture") and not (d.train_file or d.eval_file):
        raise DataError(f"data.source={d.source} needs data.eval_file and/or data.train_file (local paths)",
                        "missing_file")
    summary: dict = {}
    skipped: Counter = Counter()
    for split in SPLITS:
        info: dict = {}
        if d.source == "synth":
            if (d.synth.n_train if split == "train" else d.synth.n_eval) <= 0:
                continue
            from mig_data.synth.generate import generate_split  # late: the generators load on use

            samples = generate_split(d.synth, ctx.cfg.seed, split, ctx.out_dir)  # writes <split>.json itself
            save_split(samples, ctx.out_dir, split, write_json=False)
        else:
            if d.source == "mixture":
                if (d.mixture.n_train if split == "train" else d.mixture.n_eval) <= 0:
                    continue
                from mig_data.mixtures import build_mixture

                samples, info = build_mixture(d, ctx.cfg.seed, split, ctx.out_dir)
            else:
                result = _file_split(ctx, split)
                if result is None:
                    continue
                samples = result.samples
                info = {"file": str(d.train_file if split == "train" else d.eval_file),
                        "skipped": dict(result.skipped)}
            if not samples:
                raise DataError(f"data.source={d.source}: the {split} split has no samples left "
                                f"(skipped: {format_skips(Counter(info.get('skipped', {}))) or 'none'})", "empty")
            save_split(samples, ctx.out_dir, split, write_json=len(samples) <= d.json_max_samples)
        skipped.update(info.get("skipped", {}))
        summary[split] = {"samples": len(samples), **info}
    if skipped:
        log.warning("make_data: skipped %d bad record(s) in all (data.on_error=skip): %s",
                    sum(skipped.values()), format_skips(skipped))
    summary["skipped"] = dict(skipped)
    return summary


def data_fingerprint(data: DictConfig) -> dict:
    """Identity of every external file the data config names, so the stage key changes with them."""
    return {k: file_fingerprint(v) for k, v in _data_files(data).items() if v}


def file_fingerprint(path: str | None, sample_bytes: int = 1 << 20) -> dict | None:
    """Identity of an external data file for cache keys: path, size, modification time (ns) and a
    hash of its first and last MiB (so an edit within the same second, of the same size, shows)."""
    if not path:
        return None
    p = Path(path)
    if not p.is_file():
        return {"path": str(p), "missing": True}
    st = os.stat(p)
    h = hashlib.sha256()
    with open(p, "rb") as f:
        h.update(f.read(sample_bytes))
        if st.st_size > sample_bytes:
            f.seek(max(sample_bytes, st.st_size - sample_bytes))
            h.update(f.read(sample_bytes))
    return {"path": str(p.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256_ends": h.hexdigest()}
