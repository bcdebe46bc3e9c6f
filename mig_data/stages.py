"""Data stages: make (or import and validate) the train/eval splits of an experiment."""

from __future__ import annotations

import os
from pathlib import Path

from mig_data.formats.mig_bench import read_mig_bench, write_mig_bench
from mig_data.schema import DataError
from mig_data.synth.generate import generate_split
from mig_lab.stages import StageContext, stage


def _external_splits(ctx: StageContext) -> dict:
    d = ctx.cfg.data
    files = {"train": d.train_file, "eval": d.eval_file}
    if not any(files.values()):
        raise DataError(f"data.source={d.source} needs data.eval_file and/or data.train_file (local paths)")
    counts = {}
    for split, file in files.items():
        if not file:
            continue
        if d.source != "mig_bench":
            raise DataError(f"data.source={d.source}: reading this format arrives with the formats issue; "
                            f"use data.source=mig_bench or synth")
        result = read_mig_bench(file, root=d.root, on_error=d.on_error)
        write_mig_bench(result.samples, ctx.out_dir / f"{split}.json", root=ctx.out_dir)
        counts[split] = {"samples": len(result.samples), "skipped": dict(result.skipped), "file": str(file)}
    return counts


def _data_fingerprint(cfg) -> dict:
    return {"train": file_fingerprint(cfg.data.train_file), "eval": file_fingerprint(cfg.data.eval_file)}


@stage("make_data", reads=("seed", "data"), fingerprint=_data_fingerprint)
def make_data(ctx: StageContext) -> dict:
    """Write `train.json` / `eval.json` (MIG-Bench format) into the stage folder."""
    d = ctx.cfg.data
    if d.source == "synth":
        counts = {}
        for split in ("train", "eval"):
            if (d.synth.n_train if split == "train" else d.synth.n_eval) > 0:
                samples = generate_split(d.synth, ctx.cfg.seed, split, ctx.out_dir)
                counts[split] = {"samples": len(samples)}
        return counts
    return _external_splits(ctx)


def file_fingerprint(path: str | None) -> dict | None:
    """Identity of an external data file for cache keys (path, size, modification time)."""
    if not path:
        return None
    p = Path(path)
    if not p.exists():
        return {"path": str(p), "missing": True}
    st = os.stat(p)
    return {"path": str(p.resolve()), "size": st.st_size, "mtime": int(st.st_mtime)}
