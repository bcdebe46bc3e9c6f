"""Reading sources into samples, and a data stage's splits to and from disk.

A data stage folder holds each split twice over:
* `arrow/<split>/`: a Hugging Face `datasets` Arrow copy (`Dataset.save_to_disk`), which
  `load_split` memory-maps, so a 630k-record source is parsed and validated once, by `make_data`,
  never again per run;
* `<split>.json`: the same samples in the MIG-Bench format, for people to read, when the split is
  small (`data.json_max_samples`); MIG-Synth always writes it.
`load_split` prefers the Arrow copy and falls back to the JSON (folders written by hand or by an
older stage).
"""

from __future__ import annotations

import gc
import json
import logging
import os
from pathlib import Path
from typing import Any, Optional

from mig_data.formats.common import LoadResult
from mig_data.formats.mig_bench import read_mig_bench, write_mig_bench
from mig_data.schema import DataError, Sample

log = logging.getLogger("mig_data")

ARROW_DIR = "arrow"
FILE_SOURCES = ("mig_bench", "sharegpt", "coco")


def read_source(source: str, file: str | Path, root: Optional[str | Path] = None, on_error: str = "raise",
                verify_images: str = "none", default_task: str = "free_form", refs_file: Optional[str] = None,
                ref_split: Optional[str] = None) -> LoadResult:
    """Read one external file of format `source` (mig_bench | sharegpt | coco) into samples.

    coco: `file` is an instances JSON; with `refs_file` (a RefCOCO refs pickle) the samples are the
    referring expressions of the refs in `ref_split`, otherwise the uniquely named instances.
    """
    if source == "mig_bench":
        return read_mig_bench(file, root=root, on_error=on_error, verify_images=verify_images)
    if source == "sharegpt":
        from mig_data.formats.sharegpt import read_sharegpt

        return read_sharegpt(file, root=root, on_error=on_error, default_task=default_task,
                             verify_images=verify_images)
    if source == "coco":
        from mig_data.formats.coco import read_coco_instances, read_refcoco

        if refs_file:
            return read_refcoco(refs_file, file, root=root, split=ref_split, on_error=on_error,
                                verify_images=verify_images)
        return read_coco_instances(file, root=root, on_error=on_error, verify_images=verify_images)
    from mig_lab.config import ConfigError

    raise ConfigError(f"cannot read files of source {source!r}; file sources are {list(FILE_SOURCES)}")


# ------------------------------------------------------------------------------ Arrow split store
def _features():
    from datasets import Features, List, Value

    return Features({
        "id": Value("string"), "task": Value("string"), "images": List(Value("string")),
        "question": Value("string"), "answer": List(Value("float64")), "answer_image": Value("int32"),
        "response": Value("string"), "need_format": Value("bool"), "additional_info": Value("string"),
        "meta": Value("string"),  # JSON text: provenance and scene graphs differ in shape per source
        "turns": Value("string"),  # JSON text, or null for single-turn samples
    })


def _relative(path: str, data_dir: str) -> str:
    """Paths inside the data folder are stored relative to it (the folder can move); others absolute."""
    return os.path.relpath(path, data_dir) if path.startswith(data_dir + os.sep) else path


def samples_to_columns(samples: list[Sample], data_dir: Path) -> dict[str, list[Any]]:
    base = str(Path(data_dir).resolve())
    return {
        "id": [s.id for s in samples],
        "task": [s.task for s in samples],
        "images": [[_relative(p, base) for p in s.images] for s in samples],
        "question": [s.question for s in samples],
        "answer": [list(s.answer) if s.answer is not None else None for s in samples],
        "answer_image": [s.answer_image for s in samples],
        "response": [s.response for s in samples],
        "need_format": [s.need_format for s in samples],
        "additional_info": [s.additional_info for s in samples],
        "meta": [json.dumps(s.meta) for s in samples],
        "turns": [json.dumps(s.turns) if s.turns is not None else None for s in samples],
    }


def columns_to_samples(cols: dict[str, list[Any]], data_dir: Path) -> list[Sample]:
    base = str(Path(data_dir).resolve()) + os.sep
    out = []
    gc_was_on = gc.isenabled()
    gc.disable()  # hundreds of thousands of small objects: the cyclic GC would rescan them again and again
    try:
        for i in range(len(cols["id"])):
            turns = cols["turns"][i]
            out.append(Sample(
                id=cols["id"][i], task=cols["task"][i],
                images=[p if p.startswith(os.sep) else base + p for p in cols["images"][i]],
                question=cols["question"][i], answer=cols["answer"][i], answer_image=cols["answer_image"][i],
                response=cols["response"][i], need_format=cols["need_format"][i],
                additional_info=cols["additional_info"][i], meta=json.loads(cols["meta"][i]),
                turns=json.loads(turns) if turns is not None else None,
            ))
    finally:
        if gc_was_on:
            gc.enable()
    return out


def save_split(samples: list[Sample], data_dir: Path, split: str, write_json: bool = True) -> None:
    """Write a split into a data stage folder: the Arrow copy, and the MIG-Bench JSON if asked."""
    from datasets import Dataset

    data_dir = Path(data_dir)
    target = data_dir / ARROW_DIR / split
    tmp = data_dir / ARROW_DIR / f".{split}.tmp"
    Dataset.from_dict(samples_to_columns(samples, data_dir), features=_features()).save_to_disk(str(tmp))
    if target.exists():
        import shutil

        shutil.rmtree(target)
    os.replace(tmp, target)
    if write_json:
        write_mig_bench(samples, data_dir / f"{split}.json", root=data_dir)


def read_arrow_split(data_dir: Path, split: str) -> list[Sample]:
    from datasets import load_from_disk

    ds = load_from_disk(str(Path(data_dir) / ARROW_DIR / split))
    return columns_to_samples(ds.to_dict(), data_dir)


def available_splits(data_dir: Path) -> list[str]:
    data_dir = Path(data_dir)
    arrow = {p.name for p in (data_dir / ARROW_DIR).glob("*") if p.is_dir() and not p.name.startswith(".")}
    return sorted(arrow | {p.stem for p in data_dir.glob("*.json") if p.stem != "done"})


def load_split(data_dir: Path, split: str, on_error: str = "raise", tasks: Optional[list[str]] = None,
               max_per_task: Optional[int] = None) -> list[Sample]:
    """A split of a data stage folder (Arrow copy if present, else `<split>.json`), optionally only
    some tasks and at most `max_per_task` samples of each (in file order)."""
    data_dir = Path(data_dir)
    path = data_dir / f"{split}.json"
    if (data_dir / ARROW_DIR / split / "state.json").exists():
        samples = read_arrow_split(data_dir, split)
        path = data_dir / ARROW_DIR / split
    elif path.exists():
        samples = read_mig_bench(path, root=data_dir, on_error=on_error, check_images=False).samples
    else:
        raise DataError(f"{path}: no '{split}' split in {data_dir} (available: {available_splits(data_dir)})",
                        "missing_file")
    if tasks:
        unknown = sorted(set(tasks) - {s.task for s in samples})
        if unknown:
            raise DataError(f"{path}: requested task(s) {unknown} have no samples in this split")
        samples = [s for s in samples if s.task in tasks]
    if max_per_task is not None:
        seen: dict[str, int] = {}
        kept = []
        for s in samples:
            if seen.get(s.task, 0) < max_per_task:
                kept.append(s)
                seen[s.task] = seen.get(s.task, 0) + 1
        samples = kept
    return samples
